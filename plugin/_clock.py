"""The real clocks of the measured process, which a user's clock patching does not bend.

freezegun replaces, in every loaded module, each attribute that *is* one of ``time``'s
functions (a reference captured at import too); a ``functools.partial`` is none of them and
calls the real one. time-machine patches ``time.time`` itself (in C), not the monotonic clocks:
a moment is read from ``time.time`` and, when that is more than a second away from the moment
``perf_counter``'s advance since import gives (a clock travelled), from the latter.

Imports only the standard library.
"""

from __future__ import annotations

import functools
import time

real_time = functools.partial(time.time)
perf = functools.partial(time.perf_counter)
cpu = functools.partial(time.process_time)
_T0 = time.time()
_P0 = time.perf_counter()


def moment(t: float, p: float) -> float:
    """The wall-clock moment of ``t`` (``real_time()``) read at ``p`` (``perf()``)."""
    steady = _T0 + (p - _P0)
    return t if -1.0 < t - steady < 1.0 else steady


def now() -> float:
    """The wall-clock moment now (time.time's, unless a clock travelled)."""
    return moment(real_time(), perf())
