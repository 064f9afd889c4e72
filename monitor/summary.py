"""The report's ``summary`` block: the one implementation.

Used by report building (:func:`pytest_perfmon.monitor.report.build`), ``perfmon merge``, the
daemon's combined report (streamed, one session's tests at a time) and the terminal summary.
Standard library only; of the project it imports only :mod:`.units` (what a number is: NaN
and infinity count as not measured).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Optional, Union

from .units import number


class Summary:
    """Accumulates tests one at a time (a stream); :meth:`block` gives the summary dict."""

    __slots__ = ("total", "n", "max", "min", "dsum", "dn", "dmax", "outcomes")

    def __init__(self) -> None:
        self.total = 0.0
        self.n = 0
        self.max: Optional[float] = None
        self.min: Optional[float] = None
        self.dsum = 0.0
        self.dn = 0
        self.dmax: Optional[float] = None
        self.outcomes: dict = {}

    def add(self, t: dict) -> None:
        d = number(t.get("duration"))
        if d is not None:
            self.total += d
            self.n += 1
            self.max = d if self.max is None or d > self.max else self.max
            self.min = d if self.min is None or d < self.min else self.min
        mem = t.get("memory")
        delta = number(mem.get("delta_mb")) if isinstance(mem, dict) else None
        if delta is not None:
            self.dsum += delta
            self.dn += 1
            self.dmax = delta if self.dmax is None or delta > self.dmax else self.dmax
        outcome = t.get("outcome")
        if isinstance(outcome, str):
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def block(self, parallel_efficiency: Optional[float] = None) -> dict:
        return {
            "total_duration": round(self.total, 6),
            "avg_duration": round(self.total / self.n, 6) if self.n else 0.0,
            "max_duration": round(self.max, 6) if self.max is not None else 0.0,
            "min_duration": round(self.min, 6) if self.min is not None else 0.0,
            "avg_memory_delta_mb": round(self.dsum / self.dn, 3) if self.dn else 0.0,
            "max_memory_delta_mb": round(self.dmax, 3) if self.dmax is not None else 0.0,
            # outcome names sorted, everywhere: the same report gives the same text
            "outcomes": dict(sorted(self.outcomes.items())),
            "parallel_efficiency": parallel_efficiency,
        }


def summarize(
    tests: Union[Iterable[dict], Mapping[str, dict]], parallel_efficiency: Optional[float] = None
) -> dict:
    """The ``summary`` block of the tests in ``tests`` (any iterable of test dicts, read once).

    A mapping (a report's ``tests`` object) is taken by its values. Tests without a duration or
    a memory delta count in ``outcomes`` only; a test whose outcome is not a string is skipped
    there. Empty input gives zeros (the schema's numbers are never null).
    """
    if isinstance(tests, Mapping):
        tests = tests.values()
    s = Summary()
    for t in tests:
        s.add(t)
    return s.block(parallel_efficiency)


def outcomes_text(outcomes: dict) -> str:
    """``"3 failed, 25 passed"``: the outcome counts in the order of the summary block."""
    return ", ".join(f"{n} {k}" for k, n in outcomes.items()) or "none"
