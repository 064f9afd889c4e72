"""Balanced CI shards (``pytest --perf-shard K/N``, ``perfmon split``) and the check of a
sharded matrix (``perfmon merge``): pure functions, standard library only (and
:mod:`.predict`, read only).

Every job of a matrix computes the same split with no coordination, so the plan is a function
of its inputs only: the collected node ids (sorted, once each: never the order of collection),
the durations source's figures, N, the ``xdist_group`` names and the memory budget. Never of
the machine that plans it, nor of the time.

- **Predictions**: per test the median duration (and peak) of the source; a test without
  figures borrows from its function's other parameters, its class, its file or the suite
  (:func:`..predict.estimate_tests`), so that new tests spread like the others. With no figures
  for any test, every test counts the same (a split by count).
- **Units**: a test, or all the tests of one ``xdist_group`` (they stay on one shard).
- **Split**: longest processing time first (each unit, longest first, to the least loaded shard
  that stays within the memory budget), then moves and swaps between the busiest and the least
  loaded shard while they shorten the busiest (:func:`plan`).
- **Memory**: a shard running its tests on ``workers`` processes may hold at once
  ``workers x baseline + its workers largest test peaks above the baseline`` (the model of
  ``perfmon predict`` without worker high-waters); a unit goes to a shard where that stays
  within the budget, where there is one.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from . import __version__, argtypes
from . import predict as prediction
from .files import JSONFileError, read_json
from .schema import version_problem
from .units import number

#: A unit's planned duration is never 0 (a zero would let one shard take every new test).
MIN_DURATION = 1e-4
#: Rounds of moves and swaps after LPT, at most per shard (each strictly shortens the busiest).
REFINE_ROUNDS = 8
#: The largest units of the busiest shard tried in a swap, per round.
SWAP_CANDIDATES = 256
#: Tests listed as not run in a shard's report, at most.
MAX_NOT_RUN = 1000
#: Most shards a matrix may have.
MAX_SHARDS = argtypes.MAX_SHARDS


#: The labels of a shard's run in the history store (``--perf-history``): its K/N, and the CI
#: run it belongs to. The shards of one matrix leave these runs out of their plans.
LABEL_SHARD = "perf_shard"
LABEL_CI_RUN = "ci_run"
#: The variable holding the id of the CI run (the workflow or pipeline, the same for every job
#: of a matrix and for a re-run of some of its jobs), first match wins.
CI_RUN_VARIABLES = (
    "GITHUB_RUN_ID",  # GitHub Actions
    "CI_PIPELINE_ID",  # GitLab CI
    "CIRCLE_WORKFLOW_ID",  # CircleCI
    "BUILDKITE_BUILD_ID",  # Buildkite
    "BITBUCKET_BUILD_NUMBER",  # Bitbucket Pipelines
    "BUILD_BUILDID",  # Azure Pipelines
    "TRAVIS_BUILD_ID",  # Travis CI
    "DRONE_BUILD_NUMBER",  # Drone
    "BUILD_TAG",  # Jenkins
)
#: The runs of the history a shard of N plans from: the newest max(HISTORY_RUNS, 3 x N) (a
#: shard's run holds about 1/N of the tests).
HISTORY_RUNS = 10


def history_runs(n: int) -> int:
    return max(HISTORY_RUNS, 3 * n)


def ci_run(env: Mapping[str, str], labels: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """This CI run's id: the ``ci_run`` label (``--perf-label ci_run=ID``), else the first CI
    variable of :data:`CI_RUN_VARIABLES` that is set; None outside CI."""
    if labels and labels.get(LABEL_CI_RUN):
        return str(labels[LABEL_CI_RUN])
    for var in CI_RUN_VARIABLES:
        if env.get(var):
            return f"{var}={env[var]}"
    return None


def shard_labels(k: int, n: int, env: Mapping[str, str], labels: Mapping[str, str]) -> dict:
    """The labels a shard's run is recorded with (the user's ``--perf-label`` win)."""
    out = {LABEL_SHARD: f"{k}/{n}"}
    run = ci_run(env, labels)
    if run is not None:
        out[LABEL_CI_RUN] = run
    out.update(labels)
    return out


class SplitError(ValueError):
    """Input that cannot be split (one line for the user)."""


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N), 1 <= K <= N. Raises ValueError (one line)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not K/N (shard K of N, K from 1), e.g. 1/3")
    k, n = int(m.group(1)), int(m.group(2))
    if not 1 <= n <= MAX_SHARDS:
        raise ValueError(f"{text!r}: N must be 1 to {MAX_SHARDS}")
    if not 1 <= k <= n:
        raise ValueError(f"{text!r}: K must be 1 to N ({n})")
    return k, n


_TIME = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)
_TIME_UNIT = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_time(text: str) -> float:
    """``90s``, ``10m``, ``1.5h``, ``600`` (seconds) -> seconds > 0. Raises ValueError."""
    m = _TIME.match(str(text))
    if not m:
        raise ValueError(f"not a time like 90s, 10m or 1.5h: {text!r}")
    value = float(m.group(1)) * _TIME_UNIT[(m.group(2) or "s").lower()]
    if value <= 0:
        raise ValueError(f"a time must be > 0: {text!r}")
    return value


def base_nodeid(key: str, job: Any = None) -> str:
    """A report's test key as a node id: without a merged report's ``JOB::`` prefix and an old
    report's `` [gwN]`` suffix."""
    if isinstance(job, str) and key.startswith(job + "::"):
        key = key[len(job) + 2 :]
    if key.endswith("]") and " [gw" in key:
        key = key.rsplit(" [gw", 1)[0]
    return key


#: The largest figure (seconds or MB) a plan takes: past it a value is no measurement, and a
#: few such values sum past a float's range in the plan's arithmetic.
MAX_FIGURE = 1e12


def _num(v: Any) -> Optional[float]:
    v = number(v)
    return None if v is None or abs(v) > MAX_FIGURE else float(v)


def load_figures(path: str) -> dict:
    """:func:`durations_data` of the JSON file at ``path`` (a report or ``.test_durations``);
    SplitError, one line, when it cannot be read or used."""
    try:
        obj = read_json(path)
    except JSONFileError as exc:
        raise SplitError(str(exc)) from None
    return durations_data(obj, os.path.basename(path))


def durations_data(obj: Any, name: str) -> dict:
    """The figures of one file, in the shape of the history's answer:
    ``{"tests": {nodeid: [duration s, peak MB or None]}, "baseline_mb": b or None,
    "run_stats": [[workers, session s, busiest worker s], ...], "source": words}``.

    ``obj``: a parsed pytest-perfmon report (a single run or ``perfmon merge``'s), or a
    pytest-split ``.test_durations`` file (``{nodeid: seconds}``). A test run more than once
    gets the median. Raises SplitError."""
    if isinstance(obj, dict) and isinstance(obj.get("tests"), dict) and "session" in obj:
        return report_durations(obj, name)
    if isinstance(obj, dict) and obj and all(_num(v) is not None for v in obj.values()):
        tests = {str(k): [max(0.0, float(v)), None] for k, v in obj.items()}
        return {
            "tests": tests,
            "baseline_mb": None,
            "runs": [],
            "source": f"{name} ({len(tests)} tests)",
        }
    raise SplitError(
        f"{name}: neither a pytest-perfmon report nor a .test_durations file ({{nodeid: seconds}})"
    )


def report_durations(report: Mapping, name: str) -> dict:
    """:func:`durations_data` of one parsed report (its ``tests`` a map): per test the median
    of its executions' durations and peaks; the baseline is the median over the workers of
    each one's lowest RSS at a test's start. Raises SplitError when no test has a duration."""
    if "schema_version" in report:
        problem = version_problem(dict(report), __version__)
        if problem is not None:
            raise SplitError(f"{name}: {problem}")
    per: dict = {}
    starts: dict = {}
    for key, t in report["tests"].items():
        if not isinstance(t, dict):
            continue
        dur = _num(t.get("duration"))
        if dur is None:
            continue
        mem = t.get("memory")
        if not isinstance(mem, dict):
            mem = {}
        job = t.get("job") if isinstance(t.get("job"), str) else None
        per.setdefault(base_nodeid(key, job), []).append((dur, _num(mem.get("peak_mb"))))
        start = _num(mem.get("start_mb"))
        if start is not None:
            w = t.get("worker") if isinstance(t.get("worker"), str) else None
            w = (job, w)
            starts[w] = min(starts.get(w, start), start)
    if not per:
        raise SplitError(f"{name}: the report has no measured tests")
    tests = {}
    for nodeid, pts in per.items():
        peaks = [p for _, p in pts if p is not None]
        tests[nodeid] = [
            prediction.median(d for d, _ in pts),
            prediction.median(peaks) if peaks else None,
        ]
    jobs = report.get("jobs")
    if not isinstance(jobs, dict):
        jobs = {"": report}
    runs = []
    for job in jobs.values():
        session = job.get("session") if isinstance(job, dict) else None
        workers = job.get("workers") if isinstance(job, dict) else None
        if not isinstance(workers, dict):
            workers = None
        wall = _num(session.get("duration")) if isinstance(session, dict) else None
        times = (_num(w.get("busy_time")) for w in (workers or {}).values() if isinstance(w, dict))
        busy = [b for b in times if b is not None]
        if wall is not None and busy:
            runs.append([len(busy), wall, max(busy)])
    return {
        "tests": tests,
        "baseline_mb": prediction.median(starts.values()) if starts else None,
        "run_stats": runs,
        "source": f"{name} ({len(tests)} tests)",
    }


def run_stats(data: Mapping) -> list:
    """The runs of a figures answer as :class:`..predict.RunStats` (for the start-up overhead)."""
    out = []
    for r in data.get("run_stats") or ():
        if isinstance(r, (list, tuple)) and len(r) == 3 and all(_num(v) is not None for v in r):
            out.append(prediction.RunStats(workers=max(1, int(r[0])), duration=r[1], busy_max=r[2]))
    return out


@dataclass(frozen=True)
class Predictions:
    """Per node id its planned duration and its peak above a worker's baseline."""

    durations: dict  # nodeid -> s (>= MIN_DURATION)
    extras: dict  # nodeid -> MB above the baseline at the test's peak
    baseline_mb: float
    unknown: int  # tests predicted without figures of their own
    by_count: bool  # no figures for any test: every test counts the same
    overhead_s: float  # the runs' start-up (session minus the busiest worker's tests), median


def predict_tests(nodeids: Iterable[str], data: Mapping, workers: int = 1) -> Predictions:
    """Predictions for ``nodeids`` from a figures answer (:func:`durations_data`, or the
    history's), as ``perfmon predict`` makes them."""
    ids = sorted(set(nodeids))
    series = {}
    for nodeid, pair in (data.get("tests") or {}).items():
        dur, peak = (list(pair) + [None, None])[:2]
        if _num(dur) is None:
            continue
        series[nodeid] = {"duration": [dur], "peak_mb": [] if _num(peak) is None else [peak]}
    base = _num(data.get("baseline_mb")) or 0.0
    overhead = prediction.overhead(run_stats(data), workers)[0]
    try:
        estimates, unknown = prediction.estimate_tests(ids, series)
    except prediction.PredictError:
        ones = dict.fromkeys(ids, 1.0)
        return Predictions(ones, dict.fromkeys(ids, 0.0), base, len(ids), True, overhead)
    return Predictions(
        {e.nodeid: max(MIN_DURATION, e.duration) for e in estimates},
        {e.nodeid: max(0.0, (e.peak_mb or 0.0) - base) for e in estimates},
        base,
        unknown,
        False,
        overhead,
    )


# --------------------------------------------------------------------------- the split


class _Unit:
    __slots__ = ("key", "tests", "duration", "extra")

    def __init__(self, key: tuple, tests: list, duration: float, extra: float) -> None:
        self.key = key  # (0, nodeid) or (1, group name): a total order, for ties
        self.tests = tests
        self.duration = duration
        self.extra = extra


def _units(nodeids: Sequence[str], pred: Predictions, groups: Mapping[str, Optional[str]]) -> list:
    members: dict = {}
    for nid in nodeids:
        g = groups.get(nid)
        members.setdefault((0, nid) if g is None else (1, g), []).append(nid)
    units = []
    for key in sorted(members):
        tests = members[key]
        units.append(
            _Unit(
                key,
                tests,
                math.fsum(pred.durations[t] for t in tests),
                max(pred.extras[t] for t in tests),
            )
        )
    units.sort(key=lambda u: (-u.duration, u.key))
    return units


class _Shards:
    """The shards being filled: loads, and each one's largest unit extras (its peak)."""

    def __init__(self, n: int, workers: int, base: float, budget: Optional[float]) -> None:
        self.units: list = [[] for _ in range(n)]
        self.loads = [0.0] * n
        self.workers = max(1, workers)
        self.top: list = [[] for _ in range(n)]  # each shard's `workers` largest extras
        self.base = base
        self.budget = budget

    def _top(self, extras: Iterable[float]) -> list:
        return sorted(extras, reverse=True)[: self.workers]

    def peak(self, i: int, add: Sequence = (), drop: Sequence = ()) -> float:
        if drop:
            extras = [u.extra for u in self.units[i] if u not in drop]
        else:
            extras = list(self.top[i])
        top = self._top(extras + [u.extra for u in add])
        return self.workers * self.base + math.fsum(top)

    def fits(self, i: int, add: Sequence = (), drop: Sequence = ()) -> bool:
        """Whether shard ``i`` stays within the budget after the change; or, over it already
        (a unit over the budget alone), whether units that fit the budget alone leave its
        peak where it is: light units may run beside the heavy one (the shards a heavy unit
        made over the budget took nothing else, the light ones all went to the others). One
        worker a shard only (there the peak is its largest unit); a unit over the budget alone
        is never placed by that clause: those spread by peak, as before."""
        if self.budget is None:
            return True
        after = self.peak(i, add, drop)
        if after <= self.budget:
            return True
        if self.workers > 1:  # two heavy units side by side take any light one without a
            return False  # higher peak: the light ones piled there (strict, as before)
        light = self.base + max((u.extra for u in add), default=0.0) <= self.budget
        return light and after <= self.peak(i)

    def place(self, u: _Unit) -> None:
        n = len(self.loads)
        order = sorted(range(n), key=lambda i: (self.loads[i], i))
        if self.budget is not None:
            fit = [i for i in order if self.fits(i, (u,))]
            if fit:
                order = fit
            else:  # over the budget anywhere: where the peak is smallest
                order = sorted(order, key=lambda i: (self.peak(i, (u,)), self.loads[i], i))
        i = order[0]
        self.units[i].append(u)
        self.loads[i] += u.duration
        self.top[i] = self._top(self.top[i] + [u.extra])

    def refine(self, rounds: int) -> None:
        """Moves and swaps from the busiest to the least loaded shard, each shortening the
        busiest (so the sum of squared loads falls: it ends)."""
        n = len(self.loads)
        for _ in range(rounds):
            hi = max(range(n), key=lambda i: (self.loads[i], -i))
            lo = min(range(n), key=lambda i: (self.loads[i], i))
            gap = self.loads[hi] - self.loads[lo]
            if hi == lo or gap <= 1e-12 * max(1.0, self.loads[hi]):
                return
            best = self._best_change(hi, lo, gap)
            if best is None:
                return
            _, give, take = best
            for u in give:
                self.units[hi].remove(u)
                self.units[lo].append(u)
            for v in take:
                self.units[lo].remove(v)
                self.units[hi].append(v)
            for i in (hi, lo):
                self.loads[i] = math.fsum(u.duration for u in self.units[i])
                self.top[i] = self._top(u.extra for u in self.units[i])

    def _best_change(self, hi: int, lo: int, gap: float) -> Optional[tuple]:
        """The move (one unit hi -> lo) or swap whose moved difference is nearest gap / 2,
        within (0, gap): (distance, units given, units taken), or None."""
        his = sorted(self.units[hi], key=lambda u: (u.duration, u.key))
        los = sorted(self.units[lo], key=lambda u: (u.duration, u.key))
        lo_durs = [u.duration for u in los]
        half = gap / 2
        best: Optional[tuple] = None

        def consider(diff: float, give: tuple, take: tuple) -> None:
            nonlocal best
            if not 0 < diff < gap:
                return
            dist = abs(diff - half)
            tie = (dist, [u.key for u in give], [v.key for v in take])
            if best is not None and tie >= best[0]:
                return
            if self.budget is not None and not (
                self.fits(lo, give, take) and self.fits(hi, take, give)
            ):
                return
            best = (tie, give, take)

        durs = [u.duration for u in his]
        j = bisect.bisect_left(durs, half)
        for u in his[max(0, j - 2) : j + 2]:
            consider(u.duration, (u,), ())
        for u in his[-SWAP_CANDIDATES:]:
            j = bisect.bisect_left(lo_durs, u.duration - half)
            for v in los[max(0, j - 1) : j + 1]:
                consider(u.duration - v.duration, (u,), (v,))
        if best is None:
            return None
        return best[0][0], best[1], best[2]


@dataclass(frozen=True)
class ShardPlan:
    """One shard of a split: its tests (sorted), predicted test time and peak."""

    index: int  # from 1
    tests: list
    predicted_s: float  # the sum of its tests' predicted durations
    peak_mb: Optional[float]  # predicted peak of its workers (None: no peaks known)


@dataclass(frozen=True)
class Split:
    shards: list  # ShardPlan per shard, index 1..N
    total: int  # tests split
    unknown: int
    by_count: bool
    source: str
    digest: str  # 16 hex digits of the whole assignment: the same plan gives the same digest
    overhead_s: float
    workers: int
    over_budget: list = field(default_factory=list)  # units over the memory budget alone
    durations: dict = field(default_factory=dict)  # nodeid -> planned s

    @property
    def imbalance(self) -> Optional[float]:
        """The slowest shard's predicted test time over the mean (1.0 = even)."""
        loads = [s.predicted_s for s in self.shards]
        mean = math.fsum(loads) / len(loads)
        return round(max(loads) / mean, 4) if mean > 0 else None

    def shard_of(self) -> dict:
        return {t: s.index for s in self.shards for t in s.tests}

    def wall(
        self, index: int, order: Optional[Sequence[str]] = None, scheduled: bool = False
    ) -> float:
        """Predicted wall time of shard ``index`` on ``workers`` processes: its tests'
        sum (one process), else longest first (``scheduled``: --perf-schedule) or xdist's
        hand-out in ``order`` (the collection order; default sorted), plus the start-up."""
        shard = self.shards[index - 1]
        ids = list(order) if order is not None else shard.tests
        durs = [self.durations[t] for t in ids if t in self.durations]
        if self.workers <= 1:
            busiest = math.fsum(durs)
        elif scheduled:
            busiest = max(prediction.lpt(durs, self.workers), default=0.0)
        else:
            busiest = max(prediction.xdist_load(durs, self.workers), default=0.0)
        return round(busiest + self.overhead_s, 3)

    def info(self, index: int, wall: Optional[float] = None) -> dict:
        """The report's ``session.shard`` object of shard ``index`` (without ``not_run``)."""
        s = self.shards[index - 1]
        return {
            "k": index,
            "n": len(self.shards),
            "source": self.source,
            "tests": len(s.tests),
            "total_tests": self.total,
            "predicted_s": round(s.predicted_s, 3),
            "predicted_wall_s": self.wall(index) if wall is None else wall,
            "workers": self.workers,
            "unknown_tests": self.unknown,
            "by_count": self.by_count,
            "plan": self.digest,
            "imbalance": self.imbalance,
            "shards": [[len(x.tests), round(x.predicted_s, 3)] for x in self.shards],
        }


def digest(shards: Sequence[Sequence[str]]) -> str:
    h = hashlib.sha256()
    for i, tests in enumerate(shards, 1):
        for t in sorted(tests):
            h.update(f"{i}\t{t}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def split(
    nodeids: Iterable[str],
    data: Mapping,
    n: int,
    groups: Optional[Mapping[str, Optional[str]]] = None,
    budget_mb: Optional[float] = None,
    workers: int = 1,
) -> Split:
    """Split ``nodeids`` (any order; each once) into ``n`` shards from a figures answer
    (:func:`durations_data` or the history's). ``groups``: node id -> its ``xdist_group``
    name (tests of one group stay together). ``budget_mb``: each shard's memory budget with
    ``workers`` processes."""
    if n < 1:
        raise SplitError("the number of shards must be >= 1")
    ids = sorted(set(nodeids))
    pred = predict_tests(ids, data, workers)
    shards = _Shards(n, workers, pred.baseline_mb, budget_mb)
    over = []
    for u in _units(ids, pred, groups or {}):
        if budget_mb is not None and workers * pred.baseline_mb + u.extra > budget_mb:
            over.append(u.tests[0] if u.key[0] == 0 else f"xdist_group {u.key[1]}")
        shards.place(u)
    shards.refine(REFINE_ROUNDS * n)
    peaks_known = any(pred.extras.values()) or pred.baseline_mb > 0
    plans = []
    for i in range(n):
        tests = sorted(t for u in shards.units[i] for t in u.tests)
        plans.append(
            ShardPlan(
                i + 1,
                tests,
                math.fsum(pred.durations[t] for t in tests),
                round(shards.peak(i), 1) if peaks_known and tests else None,
            )
        )
    source = data.get("source") or "?"
    if pred.by_count:
        source = f"{source}: no figures for these tests, split by count"
    return Split(
        plans,
        len(ids),
        pred.unknown,
        pred.by_count,
        str(source),
        digest([p.tests for p in plans]),
        pred.overhead_s,
        max(1, workers),
        over,
        pred.durations,
    )


def by_count(nodeids: Iterable[str], n: int) -> list:
    """What a split by test count gives (pytest-split without durations, pytest-test-groups):
    the sorted node ids in ``n`` consecutive runs of nearly equal length."""
    ids = sorted(set(nodeids))
    size, extra = divmod(len(ids), n)
    out, at = [], 0
    for i in range(n):
        step = size + (1 if i < extra else 0)
        out.append(ids[at : at + step])
        at += step
    return out


def auto_shards(
    nodeids: Iterable[str], data: Mapping, target_s: float, workers: int = 1, most: int = 256
) -> tuple[Optional[int], list]:
    """The smallest N whose slowest shard's predicted wall is within ``target_s``, and per N
    tried (N, slowest wall, imbalance). None when no N up to ``most`` (or the number of tests)
    meets it, or when the longest test with the start-up alone passes the target (the search
    stops there: more shards cannot help)."""
    ids = sorted(set(nodeids))
    if not ids:
        raise SplitError("no tests to split")
    rows = []
    for n in range(1, min(most, len(ids)) + 1):
        s = split(ids, data, n, workers=workers)
        slowest = max(s.wall(i) for i in range(1, n + 1))
        rows.append((n, slowest, s.imbalance))
        if slowest <= target_s:
            return n, rows
        longest = max(s.durations.values())
        if longest + s.overhead_s > target_s:  # one test alone passes the target
            return None, rows
    return None, rows


# --------------------------------------------------------------------------- the matrix


def _epoch(text: Any) -> Optional[float]:
    try:  # a report's timestamps are ISO 8601 with Z
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def matrix_check(jobs: Mapping[str, Any], tests: Mapping[str, Mapping]) -> Optional[dict]:
    """The check of a sharded matrix from a merged report's jobs and tests (``"LABEL::nodeid"``
    keys with ``"job"``): None when no job ran a shard. Every shard's planned and measured
    tests, wall time (measured and predicted) and start; the shards without a report; the
    tests that ran in two shards or more, and those that ran in none (the planned tests each
    shard reports as not run, and the count the shards' totals say is missing); the imbalance
    (slowest wall over the mean); the critical path (the slowest shard and its longest tests)."""
    shard_jobs: list[tuple[str, Mapping, Mapping]] = []
    for label, job in jobs.items():
        session = job.get("session") if isinstance(job, Mapping) else None
        shard = session.get("shard") if isinstance(session, Mapping) else None
        if isinstance(session, Mapping) and isinstance(shard, Mapping):
            shard_jobs.append((label, session, shard))
    if not shard_jobs:
        return None
    ran: dict = {}  # label -> {nodeid: duration}
    for key, t in tests.items():
        job_label = t.get("job")
        if job_label in jobs:
            ran.setdefault(job_label, {})[base_nodeid(key, job_label)] = (
                _num(t.get("duration")) or 0.0
            )
    starts = [_epoch(s.get("timestamp")) for _, s, _ in shard_jobs]
    first = min((x for x in starts if x is not None), default=None)
    rows: list[dict[str, Any]] = []
    where: dict = {}
    not_run: list = []
    for (label, session, shard), start in zip(shard_jobs, starts):
        mine = ran.get(label, {})
        for nodeid in mine:
            where.setdefault(nodeid, []).append(label)
        missed = [str(x) for x in shard.get("not_run") or ()]
        not_run.extend(missed)
        wall = _num(session.get("duration"))
        predicted = _num(shard.get("predicted_wall_s"))
        rows.append(
            {
                "job": label,
                "k": shard.get("k"),
                "n": shard.get("n"),
                "planned": shard.get("tests"),
                "tests": len(mine),
                "test_time_s": round(math.fsum(mine.values()), 3),
                "predicted_s": _num(shard.get("predicted_s")),
                "wall_s": wall,
                "predicted_wall_s": predicted,
                "error": round(wall / predicted - 1, 4) if wall and predicted else None,
                "start_s": round(start - first, 3)
                if start is not None and first is not None
                else None,
                "not_run": len(missed)
                if shard.get("not_run_count") is None
                else shard["not_run_count"],
                "exit_status": session.get("exit_status"),
            }
        )
    rows.sort(key=lambda r: (r["k"] if isinstance(r["k"], int) else 0, r["job"]))
    ns = sorted({r["n"] for r in rows if isinstance(r["n"], int)})
    plans = sorted({str(s.get("plan")) for _, _, s in shard_jobs if s.get("plan")})
    totals = sorted(
        {x for x in (s.get("total_tests") for _, _, s in shard_jobs) if isinstance(x, int)}
    )
    n = ns[-1] if ns else len(rows)
    present = {r["k"] for r in rows}
    absent = []
    plan_rows = next(
        (s.get("shards") for _, _, s in shard_jobs if isinstance(s.get("shards"), list)), None
    )
    for k in range(1, n + 1):
        if k not in present:
            planned = plan_rows[k - 1][0] if plan_rows and len(plan_rows) >= k else None
            absent.append({"k": k, "planned": planned})
    duplicated = {nid: sorted(labels) for nid, labels in sorted(where.items()) if len(labels) > 1}
    seen = len(where)
    total = totals[-1] if totals else None
    missing_count = max(0, total - seen) if total is not None and len(totals) == 1 else None
    walls = [r["wall_s"] for r in rows if r["wall_s"] is not None]
    mean = math.fsum(walls) / len(walls) if walls else 0.0
    slowest = max(rows, key=lambda r: (r["wall_s"] or 0.0, r["job"]))
    longest = sorted(ran.get(slowest["job"], {}).items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    problems = []
    if len(ns) > 1:
        problems.append(f"the shards were planned for different N: {', '.join(map(str, ns))}")
    if len(plans) > 1:
        problems.append(
            f"the shards planned {len(plans)} different splits (different tests collected, or "
            "different figures read): tests may be missing or run twice"
        )
    if absent:
        problems.append(
            f"{len(absent)} shard(s) without a report: "
            + ", ".join(f"{a['k']}/{n}" for a in absent)
        )
    if missing_count:
        problems.append(f"{missing_count} test(s) of {total} ran in no shard")
    if duplicated:
        problems.append(f"{len(duplicated)} test(s) ran in more than one shard")
    return {
        "shards": n,
        "plans": plans,
        "jobs": rows,
        "absent": absent,
        "total_tests": total,
        "tests_seen": seen,
        "missing_count": missing_count,
        "not_run": sorted(set(not_run))[:MAX_NOT_RUN],
        "duplicated": duplicated,
        "imbalance": round(max(walls) / mean, 4) if walls and mean > 0 else None,
        "critical_path": {
            "job": slowest["job"],
            "k": slowest["k"],
            "wall_s": slowest["wall_s"],
            "longest": [[nid, round(d, 3)] for nid, d in longest],
        },
        "problems": problems,
    }
