"""The positions of a test record (the list the plugin builds per test), without msgpack.

:mod:`pytest_perfmon.monitor.protocol` documents the record on the wire; report building reads
records through these names, and imports nothing heavy for them (``pytest --help`` must not
import msgpack). tests/test_report.py checks that both modules agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeGuard  # new in Python 3.10: named in annotations only, never evaluated

RECORD_FIELDS = (
    "nodeid",
    "start",
    "stop",
    "setup",
    "call",
    "teardown",
    "outcome",
    "rss_start",
    "rss_peak",
    "rss_end",
    "cpu",
    "wall",
    "extra",
)
N_FIELDS = len(RECORD_FIELDS)

(
    NODEID,
    START,
    STOP,
    SETUP,
    CALL,
    TEARDOWN,
    OUTCOME,
    RSS_START,
    RSS_PEAK,
    RSS_END,
    CPU,
    WALL,
    EXTRA,
) = range(N_FIELDS)

#: One execution of a test told twice (by its process, and by the xdist controller or a slot)
#: starts within this many seconds in both.
SAME_START = 1.0


def amount(v: Any) -> TypeGuard[float]:
    """A finite number >= 0 (not a bool): what EXTRA's figures must be to reach the report; the
    wire checks EXTRA's shape only, so NaN, infinity or a string from a broken client stop here."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < float("inf")
