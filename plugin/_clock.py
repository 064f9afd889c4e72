"""The real clocks of the measured process, which a user's clock patching does not bend.

freezegun replaces, in every loaded module, each attribute that *is* one of ``time``'s
functions (a reference captured at import too); a ``functools.partial`` is none of them and
calls the real one. time-machine patches ``time.time`` itself (in C), not the monotonic clocks:
a moment is read from ``time.time``; when that is more than a second away from the moment the
monotonic clock's advance gives and time-machine is travelling, from its escape hatch (its
real clock). Any other jump (the system clock stepped, a suspend) is the real clock's, as the
monitor, in its own process, sees it: taken, and the anchor follows it.

Imports only the standard library.
"""

from __future__ import annotations

import functools
import sys
import time

real_time = functools.partial(time.time)
perf = functools.partial(time.perf_counter)
cpu = functools.partial(time.process_time)
#: time.time - perf_counter at the last moment time.time was taken.
_anchor = time.time() - time.perf_counter()


def moment(t: float, p: float) -> float:
    """The wall-clock moment of ``t`` (``real_time()``) read at ``p`` (``perf()``)."""
    global _anchor
    if not -1.0 < t - (p + _anchor) < 1.0:
        hatch = getattr(sys.modules.get("time_machine"), "escape_hatch", None)
        try:
            if hatch is not None and hatch.is_travelling():
                return float(hatch.time.time())
        except Exception:  # another time_machine, or one that changed: the time as read
            pass
    _anchor = t - p
    return t


def now() -> float:
    """The wall-clock moment now (time.time's, unless a clock travelled)."""
    return moment(real_time(), perf())
