"""Kernel counters read at a test's boundaries, in the measured process (no sampling).

Imports only the standard library.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional


def _none() -> None:
    return None


class Counters:
    """Kernel counters read at test boundaries: RSS, peak RSS since the last reset.

    Linux: /proc/self/statm for RSS, VmHWM of /proc/self/status for the peak, reset by writing
    "5" to /proc/self/clear_refs. Elsewhere (or where /proc refuses), every reader returns None
    and the monitor's samples decide; ``methods`` tells the monitor which is which.
    """

    def __init__(self) -> None:
        self.rss: Callable[[], Optional[int]] = _none
        self.peak: Callable[[], Optional[int]] = _none
        self.reset: Callable[[], Optional[int]] = _none
        self.fds: list = []
        self.methods = {"rss": False, "peak": False}
        if not sys.platform.startswith("linux"):
            return
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
