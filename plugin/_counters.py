"""Kernel counters read at a test's boundaries, in the measured process (no sampling).

Imports only the standard library.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional


def _none() -> None:
    return None


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
        """RUSAGE_CHILDREN around each test: CPU of the children it started and reaped (and
        of what they reaped). The descendants still running are the collector's to sample."""
        self.methods["children"] = True
        try:
            import resource

            getrusage = resource.getrusage
            who = resource.RUSAGE_CHILDREN
            getrusage(who)
        except (ImportError, AttributeError, OSError, ValueError):  # Windows: sampling only
            return
        base = self.reset
        start = [0.0]

        def reset() -> Optional[int]:
            ru = getrusage(who)
            start[0] = ru.ru_utime + ru.ru_stime
            return base()

        def extra(x: Optional[dict]) -> Optional[dict]:
            ru = getrusage(who)
            used = ru.ru_utime + ru.ru_stime - start[0]
            if self.fixtures:
                x = self._extra(x)
            if used > 0:
                if x is None:
                    return {"children_cpu": round(used, 6)}
                x["children_cpu"] = round(used, 6)
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
