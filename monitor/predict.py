"""Resource prediction from run history: pure functions, no I/O (``perfmon predict``).

Input: per test node id its series over the last runs (``duration`` in s, ``peak_mb``), and per
run a few facts (:class:`RunStats`: worker count, session duration, the busiest worker's test
time, the workers' baseline RSS, each worker's RSS high-water). Output, per worker count n:

- ``wall_s``: what a plain ``pytest -n N`` takes: the per-test predicted durations (medians),
  in collection order, handed out as pytest-xdist's ``--dist load`` does (:func:`xdist_load`),
  plus the start-up overhead the history shows for that worker count (session duration minus
  the busiest worker's test time);
- ``wall_low_s`` / ``wall_high_s``: the same with each test's 10th / 90th percentile and the
  smallest / largest overhead;
- ``wall_scheduled_s`` (and ``_low_s`` / ``_high_s``): the same durations longest first, each
  on the least loaded worker (LPT: what ``--perf-schedule`` aims at);
- ``peak_mb``: n workers' baseline RSS, plus the largest growth a worker showed above it, plus
  n - 1 times the typical growth of the other workers (:func:`worker_peak`).

A test without history is predicted from tests of the same function (other parameters), the
same class, the same file, or else the suite median, and counted in ``unknown_tests``.
"""

from __future__ import annotations

import heapq
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

from .argtypes import MAX_SHARDS as MAX_WORKERS  # a worker count is planned like a shard count

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
    # per worker its largest test peak: the worker's RSS high-water over its tests, which keeps
    # what its earlier tests left behind, MB
    worker_peaks_mb: tuple = ()

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
    nodeids: Sequence[str], series: Mapping[str, Mapping[str, Sequence[Optional[float]]]]
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


#: xdist's LoadScheduling does not refill a worker that still holds two tests after one that
#: took at least this long (s).
XDIST_LONG_TEST = 0.1


def xdist_load(durations: Sequence[float], workers: int) -> list[float]:
    """The workers' summed test time under pytest-xdist's ``--dist load`` (see
    :func:`xdist_order`). The makespan is the maximum: a worker never waits for work."""
    durs = [float(d) for d in durations]
    return [sum((durs[i] for i in ran), 0.0) for ran in xdist_order(durs, workers)]


def xdist_order(durations: Sequence[float], workers: int) -> list[list[int]]:
    """Which tests (indices into ``durations``, in the order run) each worker runs when
    pytest-xdist's ``--dist load`` (LoadScheduling, xdist 3.x, default ``--maxschedchunk``)
    hands out tests that take ``durations``, given in collection order.

    The model of xdist's rules: every worker starts with the next ``max(2, tests // n // 4)``
    consecutive tests (with fewer than 2n tests, one at a time round robin). When a worker
    finishes a test it is refilled from the front of the queue, up to ``max(2, left // n //
    2)`` tests held, if it holds fewer than ``max(2, left // n // 4)``, except when the test
    took >= 0.1 s and it still holds two or more. A worker runs the tests it holds in order;
    the finish events are taken in time order (a tie: the lower worker first). The time between
    tests (messages, the worker's own work) is not modelled: it is in the overhead."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    durs = [float(d) for d in durations]
    total = len(durs)
    ran: list[list[int]] = [[] for _ in range(workers)]
    held: list[deque] = [deque() for _ in range(workers)]
    given = 0  # tests [0, given) are handed out

    def hand(w: int, count: int) -> None:
        nonlocal given
        stop = min(total, given + max(0, count))
        held[w].extend(range(given, stop))
        given = stop

    if total < 2 * workers:
        for i in range(total):
            held[i % workers].append(i)
        given = total
    else:
        first = max(2, total // workers // 4)
        for w in range(workers):
            hand(w, first)
    events = [(durs[q[0]], w) for w, q in enumerate(held) if q]
    heapq.heapify(events)
    while events:
        now, w = heapq.heappop(events)
        q = held[w]
        done = q.popleft()
        ran[w].append(done)
        left = total - given
        if left:
            low = max(2, left // workers // 4)
            high = max(2, left // workers // 2)
            waits = durs[done] >= XDIST_LONG_TEST and len(q) >= 2
            if len(q) < low and not waits:
                hand(w, high - len(q))
        if q:
            heapq.heappush(events, (now + durs[q[0]], w))
    return ran


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
    """n workers' baseline plus the n largest test peaks above it (the model without worker
    high-waters: every test's peak counted as if on a worker of its own)."""
    extra = sorted((max(0.0, p - base) for p in peaks if p is not None), reverse=True)
    return workers * base + sum(extra[:workers])


def _growths(run: RunStats, base: float) -> list[float]:
    """The run's workers' high-waters above their baseline, largest first."""
    b = run.baseline_mb if run.baseline_mb is not None else base
    return sorted((max(0.0, p - b) for p in run.worker_peaks_mb), reverse=True)


def worker_peak(
    runs: Sequence[RunStats], workers: int, base: float, test_peaks: Iterable[Optional[float]]
) -> Optional[float]:
    """The concurrent peak of ``workers`` workers from the runs' worker high-waters:
    ``n x base + largest + (n - 1) x others``, where ``largest`` is the median over the runs
    (those with the nearest worker count) of their largest worker growth above the baseline,
    never below the largest test peak's growth, and ``others`` the median over the runs with
    the nearest count of two or more workers of the median growth of their other workers.
    With serial runs only, ``others`` is the median test peak's growth: what one process had
    grown to at a typical test of the suite. None when no run has worker high-waters."""
    rs = [r for r in runs if r.worker_peaks_mb]
    if not rs:
        return None
    extras = [max(0.0, p - base) for p in test_peaks if p is not None]
    largest = median(_growths(r, base)[0] for r in _runs_for(rs, workers))
    largest = max([largest, *extras])
    if workers == 1:
        return base + largest
    multi = _runs_for([r for r in rs if len(r.worker_peaks_mb) >= 2], workers)
    if multi:
        others = median(median(_growths(r, base)[1:]) for r in multi)
    else:
        others = median(extras) if extras else 0.0
    return workers * base + largest + (workers - 1) * others


def _wall(loads: Sequence[float], oh: float) -> float:
    return round(max(loads, default=0.0) + oh, 3)


def predict(
    estimates: Sequence[Estimate], runs: Sequence[RunStats], workers: Sequence[int]
) -> list[dict]:
    """One prediction per worker count, in the JSON shape of ``perfmon predict``; the
    estimates in collection order (xdist hands tests out in that order)."""
    base = baseline_mb(runs)
    peaks = [e.peak_mb for e in estimates]
    mid = [e.duration for e in estimates]
    low = [e.low for e in estimates]
    high = [e.high for e in estimates]
    out = []
    for n in workers:
        oh, oh_lo, oh_hi = overhead(runs, n)
        peak = worker_peak(runs, n, base, peaks)
        if peak is None:
            peak = concurrent_peak(peaks, n, base)
        out.append(
            {
                "workers": n,
                "wall_s": _wall(xdist_load(mid, n), oh),
                "wall_low_s": _wall(xdist_load(low, n), oh_lo),
                "wall_high_s": _wall(xdist_load(high, n), oh_hi),
                "peak_mb": round(peak, 1),
                "wall_scheduled_s": _wall(lpt(mid, n), oh),
                "wall_scheduled_low_s": _wall(lpt(low, n), oh_lo),
                "wall_scheduled_high_s": _wall(lpt(high, n), oh_hi),
            }
        )
    return out


def recommend(
    predictions: Sequence[dict], budget_mb: Optional[float], wall: str = "wall_s"
) -> tuple[int, bool]:
    """The fastest worker count (by the key ``wall``) whose peak stays under the budget (fewer
    workers on a tie). Returns (workers, fits); when none fits, the one with the smallest peak
    and False."""
    if not predictions:
        raise ValueError("no predictions")
    fit = [p for p in predictions if budget_mb is None or p["peak_mb"] <= budget_mb]
    if fit:
        return min(fit, key=lambda p: (p[wall], p["workers"]))["workers"], True
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
        if not part.isdigit() or not 1 <= int(part) <= MAX_WORKERS:
            raise ValueError(
                f"worker counts are integers from 1 to {MAX_WORKERS} separated by commas: {text!r}"
            )
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
