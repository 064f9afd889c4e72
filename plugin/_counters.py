"""Kernel counters read at a test's boundaries, in the measured process (no sampling).

Imports only the standard library.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional


def _none() -> None:
    return None


#: The audit events by which this process starts another (Python 3.8+, every platform):
#: subprocess (any platform), os.fork (multiprocessing's "fork", os.spawn* on POSIX),
#: os.forkpty (pty), os.system, os.spawn* (Windows), os.startfile (Windows).
#: Not audited: multiprocessing's "spawn" and "forkserver" start the child (the forkserver)
#: through _posixsubprocess directly, and C extensions may fork or spawn on their own: the
#: collector's samples count those (see monitor/children.py).
STARTS = frozenset(
    ("subprocess.Popen", "os.fork", "os.forkpty", "os.system", "os.spawn", "os.startfile")
)
#: os.posix_spawn[p]: a start of its own, or the one subprocess.Popen just announced.
SPAWNS = frozenset(("os.posix_spawn", "os.posix_spawnp"))

#: [processes started by this process since the hook was added], or None before.
_started: Optional[list] = None


def start_counter() -> Optional[list]:
    """``[n]``: how many processes this process has started, counted by an audit hook added on
    first use (once per process: an audit hook cannot be removed). The hook runs on every
    audited event of the process (an import, an ``open``): one set lookup unless the event
    starts a process. None where ``sys.addaudithook`` is missing."""
    global _started
    if _started is not None:
        return _started
    add = getattr(sys, "addaudithook", None)
    if add is None:  # pragma: no cover - Python < 3.8
        return None
    count = [0]
    popen: list = [None]  # the argv of the subprocess.Popen announced last

    def hook(event: str, args: tuple) -> None:
        if event in STARTS:
            count[0] += 1
            if event == "subprocess.Popen":
                popen[0] = args[1] if len(args) > 1 else None
        elif event in SPAWNS:
            # subprocess.Popen may start its child with os.posix_spawn: one process, two events.
            # An exception here would fail the spawn: never let one out.
            try:
                mine = popen[0] is None or (len(args) > 1 and bool(args[1] != popen[0]))
            except Exception:
                mine = True
            if mine:
                count[0] += 1
            popen[0] = None

    add(hook)
    _started = count
    return count


#: Whether the next :class:`Counters` built measures child processes (RUSAGE_CHILDREN, and asks
#: the collector to sample its descendants). Set by :func:`._fixtures.configure` around the
#: measurer's construction only, so that a Counters built anywhere else keeps the old methods.
CHILDREN = False


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

    def _children(self) -> None:
        """Around each test: RUSAGE_CHILDREN (CPU of the children it started and reaped, and of
        what they reaped) and the count of processes it started (:func:`start_counter`). The
        descendants still running are the collector's to sample. ``child_base`` holds both
        counts at the test's start; a shared fixture's setup or teardown moves it by what it
        used (``._fixtures``), so the fixture's children are never the test's."""
        self.methods["children"] = True
        started = start_counter()
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
            used = cpu - child_base[0]
            n -= child_base[1]
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
