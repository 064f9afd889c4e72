"""The real clocks of the measured process, which a user's clock patching does not bend.

freezegun replaces, in every loaded module, each attribute that *is* one of ``time``'s
functions (a reference captured at import too); a ``functools.partial`` is none of them and
calls the real one. time-machine patches ``time.time`` itself (in C), not the monotonic clocks:
a wall-clock moment is ``time.time``'s unless time-machine is travelling (near or far, ticking
or not), then its escape hatch's (its real clock). A step of the system clock is taken as it
is: the monitor, in its own process, sees it too.

Imports only the standard library.
"""

from __future__ import annotations

import functools
import sys
import time

real_time = functools.partial(time.time)
perf = functools.partial(time.perf_counter)
cpu = functools.partial(time.process_time)


def moment(t: float) -> float:
    """The wall-clock moment ``t`` (``real_time()``) stands for: itself, or time-machine's real
    clock while it travels (about 0.1 us a call without it loaded)."""
    hatch = getattr(sys.modules.get("time_machine"), "escape_hatch", None)
    if hatch is not None:
        try:
            if hatch.is_travelling():
                return float(hatch.time.time())
        except Exception:  # another time_machine, or one that changed: the time as read
            pass
    return t


def now() -> float:
    """The wall-clock moment now (time.time's, unless a clock travelled)."""
    return moment(real_time())
