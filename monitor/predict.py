"""Resource prediction from run history: pure functions, no I/O (``perfmon predict``).

Input: per test node id its series over the last runs (``duration`` in s, ``peak_mb``), and per
run a few facts (:class:`RunStats`: worker count, session duration, the busiest worker's test
time, the workers' baseline RSS). Output, per worker count n:

- ``wall_s``: the per-test predicted durations (medians) list-scheduled longest first over n
  workers (LPT), plus the start-up overhead the history shows for that worker count (session
  duration minus the busiest worker's test time);
- ``wall_low_s`` / ``wall_high_s``: the same with each test's 10th / 90th percentile and the
  smallest / largest overhead;
- ``peak_mb``: n workers' baseline RSS plus the n largest test peaks above the baseline (the
  tests that can be live at once).

A test without history is predicted from tests of the same function (other parameters), the
same class, the same file, or else the suite median, and counted in ``unknown_tests``.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

LOW_Q = 0.1
HIGH_Q = 0.9


class PredictError(ValueError):
    """Input that cannot be predicted from (one line for the user)."""


@dataclass(frozen=True)
class RunStats:
    workers: int  # worker processes of the run (1 without xdist)
    duration: float  # the session's wall time, s
    busy_max: float  # the busiest worker's summed test durations, s
    baseline_mb: Optional[float] = None  # the workers' RSS before their tests (median), MB

    @property
    def overhead(self) -> float:
        return max(0.0, self.duration - self.busy_max)


@dataclass(frozen=True)
class Estimate:
    nodeid: str
    duration: float
    low: float
    high: float
    peak_mb: Optional[float]
    known: bool


def quantile(values: Iterable[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method)."""
    xs = sorted(values)
    if not xs:
        raise ValueError("quantile of nothing")
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float:
    return quantile(values, 0.5)


def _groups(nodeid: str) -> list[str]:
    """The keys a test without history borrows from, most specific first: its function
    (other parameters), its class, its file."""
    out = []
    base = nodeid.split("[", 1)[0]
    if base != nodeid:
        out.append(base)
    parts = base.split("::")
    if len(parts) > 2:
        out.append("::".join(parts[:-1]) + "::")
    out.append(parts[0] + "::")
    return out


def estimate_tests(
    nodeids: Sequence[str], series: Mapping[str, Mapping[str, Sequence[float]]]
) -> tuple[list[Estimate], int]:
    """Per node id its predicted duration (median), low-high (10th-90th percentile) and peak
    (median), and how many had no history. ``series`` may hold more tests than ``nodeids``:
    all of them inform the guesses for tests without history. Raises :class:`PredictError`
    when none of ``nodeids`` has history."""
    known: dict[str, Estimate] = {}
    for nid, s in series.items():
        durs = [float(v) for v in s.get("duration") or () if v is not None]
        if not durs:
            continue
        peaks = [float(v) for v in s.get("peak_mb") or () if v is not None]
        known[nid] = Estimate(
            nid,
            median(durs),
            quantile(durs, LOW_Q),
            quantile(durs, HIGH_Q),
            median(peaks) if peaks else None,
            True,
        )
    if not any(nid in known for nid in nodeids):
        raise PredictError(f"the history has no data for any of these {len(nodeids)} tests")
    pools: dict[str, list[Estimate]] = {}
    for e in known.values():
        for key in _groups(e.nodeid):
            pools.setdefault(key, []).append(e)
    suite = list(known.values())
    out = []
    unknown = 0
    for nid in nodeids:
        if nid in known:
            out.append(known[nid])
            continue
        unknown += 1
        pool = next((pools[k] for k in _groups(nid) if k in pools), suite)
        peaks = [e.peak_mb for e in pool if e.peak_mb is not None]
        out.append(
            Estimate(
                nid,
                median(e.duration for e in pool),
                median(e.low for e in pool),
                median(e.high for e in pool),
                median(peaks) if peaks else None,
                False,
            )
        )
    return out, unknown


def lpt(durations: Iterable[float], workers: int) -> list[float]:
    """Longest-processing-time-first list scheduling: each test, longest first, goes to the
    least loaded worker. Returns the workers' loads (the makespan is their maximum)."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    loads = [0.0] * workers
    heap = [(0.0, i) for i in range(workers)]
    for d in sorted(durations, reverse=True):
        load, i = heapq.heappop(heap)
        load += d
        loads[i] = load
        heapq.heappush(heap, (load, i))
    return loads


def _runs_for(runs: Sequence[RunStats], workers: int) -> list[RunStats]:
    """The runs with this worker count, else those with the nearest count (fewer on a tie)."""
    if not runs:
        return []
    best = min({r.workers for r in runs}, key=lambda w: (abs(w - workers), w))
    return [r for r in runs if r.workers == best]


def overhead(runs: Sequence[RunStats], workers: int) -> tuple[float, float, float]:
    """Start-up overhead for ``workers`` (median, min, max), 0 without runs."""
    xs = [r.overhead for r in _runs_for(runs, workers)]
    if not xs:
        return 0.0, 0.0, 0.0
    return median(xs), min(xs), max(xs)


def baseline_mb(runs: Sequence[RunStats]) -> float:
    """A worker's RSS before its tests: the median over the runs that tell, else 0."""
    xs = [r.baseline_mb for r in runs if r.baseline_mb is not None]
    return median(xs) if xs else 0.0


def concurrent_peak(peaks: Iterable[Optional[float]], workers: int, base: float) -> float:
    """n workers' baseline plus the n largest test peaks above it."""
    extra = sorted((max(0.0, p - base) for p in peaks if p is not None), reverse=True)
    return workers * base + sum(extra[:workers])


def predict(
    estimates: Sequence[Estimate], runs: Sequence[RunStats], workers: Sequence[int]
) -> list[dict]:
    """One prediction per worker count, in the JSON shape of ``perfmon predict``."""
    base = baseline_mb(runs)
    peaks = [e.peak_mb for e in estimates]
    out = []
    for n in workers:
        oh, oh_lo, oh_hi = overhead(runs, n)
        out.append(
            {
                "workers": n,
                "wall_s": round(max(lpt((e.duration for e in estimates), n)) + oh, 3),
                "wall_low_s": round(max(lpt((e.low for e in estimates), n)) + oh_lo, 3),
                "wall_high_s": round(max(lpt((e.high for e in estimates), n)) + oh_hi, 3),
                "peak_mb": round(concurrent_peak(peaks, n, base), 1),
            }
        )
    return out


def recommend(predictions: Sequence[dict], budget_mb: Optional[float]) -> tuple[int, bool]:
    """The fastest worker count whose peak stays under the budget (fewer workers on a tie).
    Returns (workers, fits); when none fits, the one with the smallest peak and False."""
    if not predictions:
        raise ValueError("no predictions")
    fit = [p for p in predictions if budget_mb is None or p["peak_mb"] <= budget_mb]
    if fit:
        return min(fit, key=lambda p: (p["wall_s"], p["workers"]))["workers"], True
    return min(predictions, key=lambda p: (p["peak_mb"], p["workers"]))["workers"], False


def auto_workers(cpu_count: int) -> list[int]:
    """1, 2, 4, ... below the CPU count, and the CPU count."""
    cpu = max(1, cpu_count)
    out = []
    n = 1
    while n < cpu:
        out.append(n)
        n *= 2
    out.append(cpu)
    return out


def parse_workers(text: str) -> list[int]:
    """``1,2,4,8`` -> [1, 2, 4, 8] (sorted, once each). Raises ValueError."""
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"worker counts are integers >= 1 separated by commas: {text!r}")
        out.add(int(part))
    return sorted(out)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt])(?:i?b)?\s*$", re.IGNORECASE)
_UNIT_MB = {"k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0 * 1024}


def parse_size(text: str) -> float:
    """``8G``, ``512M``, ``1.5GiB``, ``300000K`` -> MB (binary units). Raises ValueError."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size like 8G or 512M (units K, M, G, T): {text!r}")
    mb = float(m.group(1)) * _UNIT_MB[m.group(2).lower()]
    if mb <= 0:
        raise ValueError(f"a memory budget must be > 0: {text!r}")
    return mb


def parse_nodeids(text: str) -> list[str]:
    """Node ids as ``pytest --collect-only -q`` prints them: one per line; the summary and
    blank lines (no ``::``) are ignored. Order kept, duplicates once."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        line = line.strip()
        if "::" in line and not line.startswith(("=", "-")):
            seen.setdefault(line, None)
    return list(seen)
