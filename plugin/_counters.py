"""Kernel counters read at a test's boundaries, in the measured process (no sampling).

Imports only the standard library.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional


def _none() -> None:
    return None


#: The functions by which this process starts another, wrapped to count (each name of ``os``
#: where it exists): os.system, os.posix_spawn[p] and, on Windows, os.spawnv[e] (the other
#: os.spawn* call these; on POSIX they fork). subprocess.Popen is counted once per child in
#: ``Popen._execute_child``, whatever it starts the child with; os.fork and os.forkpty
#: (multiprocessing's "fork", pty, os.spawn* on POSIX) by an ``os.register_at_fork`` handler.
#: Not seen: multiprocessing's "spawn" and "forkserver" start the child (the forkserver)
#: through _posixsubprocess directly (Windows: _winapi), a C extension may fork or spawn on
#: its own, and a function imported by name before the wrapping (``from os import system``):
#: the collector's samples count those (see monitor/children.py).
WRAPPED = ("system", "posix_spawn", "posix_spawnp") + (
    ("spawnv", "spawnve") if os.name == "nt" else ()
)

#: [processes started by this process since counting began], or None before.
_started: Optional[list] = None


def start_counter() -> list:
    """``[n]``: how many processes this process has started, counted from the first call on
    (once per process: the wrappers stay). Nothing runs but when a process is started (an
    audit hook would cost about 0.2 us on each of the 20 audited events pytest raises per
    test: scripts/bench_children.py --audit-hook)."""
    global _started
    if _started is not None:
        return _started
    import functools
    import subprocess
    import threading

    count = [0]
    inside = threading.local()  # in Popen._execute_child: its posix_spawn or fork is its own

    def mine() -> bool:
        return not getattr(inside, "depth", 0)

    def before_fork() -> None:
        if mine():
            count[0] += 1

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(before=before_fork)

    execute = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    @functools.wraps(execute)
    def _execute_child(self: Any, *args: Any, **kwargs: Any) -> Any:
        if mine():
            count[0] += 1
        inside.depth = getattr(inside, "depth", 0) + 1
        try:
            return execute(self, *args, **kwargs)
        finally:
            inside.depth -= 1

    subprocess.Popen._execute_child = _execute_child  # type: ignore[attr-defined]

    def counting(func: Any) -> Any:
        @functools.wraps(func)
        def start(*args: Any, **kwargs: Any) -> Any:
            if mine():
                count[0] += 1
            return func(*args, **kwargs)

        return start

    for name in WRAPPED:
        func = getattr(os, name, None)
        if func is not None:
            setattr(os, name, counting(func))
    _started = count
    return count


#: Whether the next :class:`Counters` built measures child processes (RUSAGE_CHILDREN, and asks
#: the collector to sample its descendants). Set by :func:`._fixtures.configure` around the
#: measurer's construction only, so that a Counters built anywhere else keeps the old methods.
CHILDREN = False


def not_counted() -> Any:
    """A context in which the processes this process starts are not counted as the running
    test's (the plugin's own: a collector started again mid-run)."""
    import contextlib

    @contextlib.contextmanager
    def context() -> Any:
        before = _started[0] if _started is not None else None
        try:
            yield
        finally:
            if _started is not None and before is not None:
                _started[0] = before

    return context()


class Counters:
    """Kernel counters read at test boundaries: RSS, peak RSS since the last reset.

    Linux: /proc/self/statm for RSS, VmHWM of /proc/self/status for the peak, reset by writing
    "5" to /proc/self/clear_refs. Elsewhere (or where /proc refuses), every reader returns None
    and the monitor's samples decide; ``methods`` tells the monitor which is which.
    """

    def __init__(self, children: Optional[bool] = None) -> None:
        self.rss: Callable[[], Optional[int]] = _none
        self.peak: Callable[[], Optional[int]] = _none
        self.reset: Callable[[], Optional[int]] = _none
        self.fds: list = []
        self.methods = {"rss": False, "peak": False}
        # Shared fixtures of the running test, filled by ._fixtures: [name, scope, location,
        # "setup" | "teardown", seconds], and the seconds of its setup phase spent in them.
        self.fixtures: list = []
        self.shared = 0.0
        #: With children on: [RUSAGE_CHILDREN CPU s, processes started] at the test's start,
        #: moved by what its shared fixtures used, and the function that reads both now.
        self.child_base: Optional[list] = None
        self.children_now: Optional[Callable[[], tuple[float, int]]] = None
        #: extra(x): the record's EXTRA from ``x`` (what others put there during the test, or
        #: None) plus what these counters add; None when nothing.
        self.extra: Callable[[Optional[dict]], Optional[dict]] = self._extra
        if sys.platform.startswith("linux"):
            self._kernel()
        if CHILDREN if children is None else children:
            self._children()

    def _extra(self, x: Optional[dict]) -> Optional[dict]:
        """The record's EXTRA: ``x`` plus the shared fixtures of this test (children off)."""
        if not self.fixtures:
            return x
        if x is None:
            x = {}
        x["fixtures"] = self.fixtures
        self.fixtures = []
        if self.shared:
            x["shared_setup"] = round(self.shared, 6)
            self.shared = 0.0
        return x

    def _kids(self, x: Optional[dict], used: float, n: int) -> Optional[dict]:
        """The record's EXTRA with children on: the shared fixtures, the children's CPU and
        the processes started."""
        if self.fixtures:
            x = self._extra(x)
        if used > 0 or n > 0:
            if x is None:
                x = {}
            if used > 0:
                x["children_cpu"] = round(used, 6)
            if n > 0:
                x["started"] = n
        return x

    def _children(self) -> None:
        """Around each test: RUSAGE_CHILDREN (CPU of the children it started and reaped, and of
        what they reaped) and the count of processes it started (:func:`start_counter`). The
        descendants still running are the collector's to sample. ``child_base`` holds both
        counts at the test's start; a shared fixture's setup or teardown moves it by what it
        used (``._fixtures``), so the fixture's children are never the test's."""
        self.methods["children"] = True
        started: Optional[list] = start_counter()
        try:
            import resource

            getrusage: Any = resource.getrusage
            who = resource.RUSAGE_CHILDREN
            getrusage(who)
        except (ImportError, AttributeError, OSError, ValueError):  # Windows: no RUSAGE
            getrusage = None
        if getrusage is None and started is None:
            return

        def now() -> tuple[float, int]:
            ru = getrusage(who) if getrusage is not None else None
            cpu = ru.ru_utime + ru.ru_stime if ru is not None else 0.0
            return cpu, (started[0] if started is not None else 0)

        base_reset = self.reset
        child_base = self.child_base = [0.0, 0]
        self.children_now = now

        def reset() -> Optional[int]:
            child_base[0], child_base[1] = now()
            return base_reset()

        def extra(x: Optional[dict]) -> Optional[dict]:
            cpu, n = now()
            return self._kids(x, cpu - child_base[0], n - child_base[1])

        if getrusage is not None and started is not None:  # now(), inlined: the measured path

            def reset() -> Optional[int]:
                ru = getrusage(who)
                child_base[0] = ru.ru_utime + ru.ru_stime
                child_base[1] = started[0]
                return base_reset()

            def extra(x: Optional[dict]) -> Optional[dict]:
                ru = getrusage(who)
                used = ru.ru_utime + ru.ru_stime - child_base[0]
                n = started[0] - child_base[1]
                if used > 0 or n or self.fixtures:
                    return self._kids(x, used, n)
                return x

        self.reset, self.extra = reset, extra

    def _kernel(self) -> None:
        pread = os.pread
        try:
            statm = os.open("/proc/self/statm", os.O_RDONLY)
            self.fds.append(statm)
            page = os.sysconf("SC_PAGE_SIZE")

            def rss() -> int:
                return int(pread(statm, 96, 0).split()[1]) * page

            rss()
            self.rss = rss
            self.methods["rss"] = True
        except (OSError, ValueError, IndexError):
            return
        try:
            status = os.open("/proc/self/status", os.O_RDONLY)
            self.fds.append(status)
            clear = os.open("/proc/self/clear_refs", os.O_WRONLY)
            self.fds.append(clear)
            write = os.write

            def reset() -> int:
                return write(clear, b"5")

            def vmhwm() -> int:
                data = pread(status, 4096, 0)
                i = data.index(b"VmHWM:") + 6
                return int(data[i : data.index(b"kB", i)]) * 1024

            reset()
            if vmhwm() <= 0:
                raise ValueError("VmHWM not maintained")
            # getrusage's ru_maxrss is max(VmHWM, a floor the kernel set at exec from the
            # process we were spawned from), and costs a fraction of parsing /proc/self/status.
            # Read right after a reset it is an upper bound of that floor: any value above it
            # is VmHWM itself; at or below it, /proc/self/status decides.
            import resource

            getrusage = resource.getrusage
            me = resource.RUSAGE_SELF
            floor = getrusage(me).ru_maxrss

            def peak() -> int:
                kb = getrusage(me).ru_maxrss
                return kb * 1024 if kb > floor else vmhwm()

            self.reset, self.peak = reset, peak
            self.methods["peak"] = True
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
