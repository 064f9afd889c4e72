"""The real clocks of the measured process, which a user's clock patching does not bend.

freezegun replaces, in every loaded module, each attribute that *is* one of ``time``'s
functions (a reference captured at import too); a ``functools.partial`` is none of them and
calls the real one. time-machine patches ``time.time`` itself (in C), not the monotonic clocks:
a moment is read from ``time.time`` and, when that is more than an hour away from the moment
``perf_counter``'s advance gives (a clock travelled), from the latter. Within the hour (the
system clock stepped by NTP: the monitor's samples, in another process, see the same step)
``time.time`` is taken and the anchor follows it.

Imports only the standard library.
"""

from __future__ import annotations

import functools
import time

real_time = functools.partial(time.time)
perf = functools.partial(time.perf_counter)
cpu = functools.partial(time.process_time)
#: time.time - perf_counter at the last moment time.time was taken.
_anchor = time.time() - time.perf_counter()

#: How far from the monotonic clock's moment time.time may be and still be the real one.
TRAVELLED = 3600.0


def moment(t: float, p: float) -> float:
    """The wall-clock moment of ``t`` (``real_time()``) read at ``p`` (``perf()``)."""
    global _anchor
    steady = p + _anchor
    if -TRAVELLED < t - steady < TRAVELLED:
        _anchor = t - p
        return t
    return steady


def now() -> float:
    """The wall-clock moment now (time.time's, unless a clock travelled)."""
    return moment(real_time(), perf())
