"""Read, analyse, compare and merge perfmon reports (schema_version 1).

The engine behind the ``perfmon`` console script (:mod:`pytest_perfmon.monitor.cli`),
usable on its own::

    from pytest_perfmon.monitor import analysis

    report = analysis.load_report("performance_metrics.json")
    for nodeid, test in analysis.slowest(report, 10):
        print(nodeid, test["duration"])

Standard library only: it never imports pytest, zmq or psutil.

Merged reports (``perfmon merge``) are ordinary reports with one addition, a top-level ``jobs``
object keyed by job label, each job keeping its own ``session``, ``system``, ``summary`` and
``workers``. Their tests are keyed ``"LABEL::nodeid"`` and carry ``"job": LABEL``. Merging splits
every input back into its jobs first, so ``merge(merge(a, b), c) == merge(a, b, c)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from typing import TypeGuard  # new in Python 3.10: named in annotations only, never evaluated

from . import __version__
from .files import JSONFileError, read_json
from .schema import METHOD_CPU, METHOD_TIME, SCHEMA_VERSION, first_problem, version_problem
from .summary import summarize
from .units import number
from .vocabulary import BY_NAME, COMPARED, lost_in_entry, without_wait

#: Separates the job label from the node id in a merged report's test keys.
JOB_SEP = "::"


class ReportError(Exception):
    """Bad input: a file that is missing, not JSON, not a perfmon report, or incompatible.

    The message is one line, fit to print as is.
    """


def write_text(path: str, text: str) -> None:
    """A command's output into ``path``; a one-line ReportError when it cannot be written."""
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ReportError(f"{path}: cannot write ({e.strerror or e})") from None


# --------------------------------------------------------------------------- loading


def _is_num(v: Any) -> TypeGuard[float]:
    return number(v) is not None


def load_report(path: str, check: bool = True) -> dict:
    """Read and check the report at ``path``; raise :class:`ReportError` when it is not one.
    ``check=False``: JSON only, the caller checks what it uses (no schema walk)."""
    try:
        data = read_json(path)
    except JSONFileError as e:
        raise ReportError(str(e)) from None
    if check:
        check_report(data, path)
    return data


def check_report(data: Any, source: str = "report") -> None:
    """Raise :class:`ReportError` unless ``data`` has the shape the analyses rely on.

    Checks ``data`` against the shipped JSON schema (NaN and infinity are never valid), then
    what the schema cannot say: that every test of a merged report belongs to one of its jobs.
    """
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "null"
        raise ReportError(f"{source}: not a perfmon report (top level is {kind}, not an object)")
    if "schema_version" not in data:
        raise ReportError(f"{source}: not a perfmon report (no schema_version)")
    problem = version_problem(data, __version__)
    if problem is not None:
        raise ReportError(f"{source}: {problem}")
    for key in ("session", "tests"):
        if not isinstance(data.get(key), dict):
            raise ReportError(f"{source}: not a perfmon report (no '{key}' object)")
    problem = first_problem(data)
    if problem is not None:
        raise ReportError(f"{source}: not a valid perfmon report: {problem}")
    jobs = data.get("jobs")
    if jobs is not None:
        if not isinstance(jobs, dict):
            raise ReportError(f"{source}: not a perfmon report ('jobs' is not an object)")
        for label, job in jobs.items():
            if not isinstance(job, dict) or not isinstance(job.get("session"), dict):
                raise ReportError(f"{source}: job {label!r} has no 'session' object")
            if not isinstance(job.get("workers", {}), dict):
                raise ReportError(f"{source}: job {label!r}: 'workers' is not an object")
        for nodeid, t in data["tests"].items():
            label = t.get("job")
            if (
                not isinstance(label, str)
                or label not in jobs
                or not nodeid.startswith(f"{label}{JOB_SEP}")
            ):
                raise ReportError(
                    f"{source}: merged report: test {nodeid!r} does not belong to one of its jobs"
                )


# --------------------------------------------------------------------------- metrics


duration = BY_NAME["duration"].get
memory_delta = BY_NAME["delta_mb"].get
#: How far the test's memory rose above where it started: ``peak_mb - start_mb``.
memory_growth = BY_NAME["growth_mb"].get
cpu_percent = BY_NAME["cpu_percent"].get


def children(t: dict) -> Optional[dict]:
    """The test's ``children`` block (what its child processes used), or None."""
    c = t.get("children")
    return c if isinstance(c, dict) else None


def has_children(tests: Any) -> bool:
    """Whether any test of ``tests`` (a report's tests object) had child processes measured."""
    return any(isinstance(t, dict) and children(t) is not None for t in tests.values())


def cpu_with_children(t: dict) -> Optional[float]:
    """``cpu_percent`` plus the test's children's CPU time as a share of its duration (the
    process's own figure when it has no children): may exceed 100 % per core used."""
    own = cpu_percent(t)
    c = children(t)
    d = duration(t)
    spent = number(c.get("cpu_time")) if c is not None else None
    if not spent or not d:
        return own
    return round((own or 0.0) + 100.0 * spent / d, 1)


def growth_with_children(t: dict) -> Optional[float]:
    """``peak_mb - start_mb`` plus the largest RSS its children had together (sampled)."""
    own = memory_growth(t)
    c = children(t)
    peak = number(c.get("peak_rss_mb")) if c is not None else None
    if peak is None:
        return own
    return round((own or 0.0) + peak, 3)


def costliest_fixtures(report: dict, top: int) -> list:
    """The ``top`` shared fixture setups (the report's ``fixtures`` block) by setup plus
    teardown time, costliest first."""

    def cost(f: dict) -> float:
        return (number(f.get("setup_time")) or 0.0) + (number(f.get("teardown_time")) or 0.0)

    fx = [f for f in report.get("fixtures") or () if isinstance(f, dict)]
    fx.sort(key=lambda f: (-cost(f), str(f.get("name")), str(f.get("worker"))))
    return [(f, round(cost(f), 6)) for f in fx[:top]]


def executions(t: dict) -> list:
    """The test's ``executions`` (present when pytest executed its node id more than once:
    pytest-rerunfailures attempts, ``--keep-duplicates``, ``--dist each``, a crashed worker's
    test run again), else ``[]``."""
    ex = t.get("executions")
    return [x for x in ex if isinstance(x, dict)] if isinstance(ex, list) else []


def runs(t: dict) -> int:
    """How many times pytest executed the test (1 for an entry without ``executions``)."""
    return len(executions(t)) or 1


def reruns(t: dict) -> int:
    """How many of the test's attempts pytest-rerunfailures ran again (outcome ``rerun``)."""
    return sum(1 for x in executions(t) if x.get("outcome") == "rerun")


def outcome_runs(t: dict) -> str:
    """The outcomes of the test's executions in order, repeats counted:
    ``"rerun x2, passed"``; the test's outcome when it ran once."""
    seq = [str(x.get("outcome")) for x in executions(t)] or [str(t.get("outcome"))]
    out: list = []
    for o in seq:
        if out and out[-1][0] == o:
            out[-1][1] += 1
        else:
            out.append([o, 1])
    return ", ".join(o if n == 1 else f"{o} x{n}" for o, n in out)


def subtests(t: dict) -> Optional[dict]:
    """The test's subtest counts ``{"passed", "failed", "skipped"}``, or None without any."""
    s = t.get("subtests")
    return s if isinstance(s, dict) else None


def subtests_text(s: dict) -> str:
    """``"3 passed, 1 failed, 0 skipped"``."""
    return ", ".join(f"{s.get(k, 0)} {k}" for k in ("passed", "failed", "skipped"))


def repeated(report: dict) -> list:
    """The tests pytest executed more than once, as ``(nodeid, test)`` pairs, the most
    executions first (then by node id)."""
    hits = [(k, t) for k, t in report["tests"].items() if runs(t) > 1]
    hits.sort(key=lambda kv: (-runs(kv[1]), kv[0]))
    return hits


def with_subtests(report: dict) -> list:
    """The tests that had subtests, as ``(nodeid, test)`` pairs: most failed subtests first."""
    hits = [(k, t) for k, t in report["tests"].items() if subtests(t) is not None]
    hits.sort(key=lambda kv: (-(subtests(kv[1]) or {}).get("failed", 0), kv[0]))
    return hits


@dataclass(frozen=True)
class Metric:
    name: str  # key in JSON output
    title: str  # for people
    unit: str
    group: str  # which Threshold applies: "time", "memory" or "cpu"
    get: Any
    #: the vocabulary's row (its noise discount: :func:`.vocabulary.without_wait`)
    row: Any = None


#: What compare compares: :data:`.vocabulary.COMPARED`.
METRICS = tuple(
    Metric(m.compare.name, m.compare.title, m.unit, m.compare.group, m.get, m)
    for m in COMPARED
    if m.compare
)

#: The title of a figure judged without the test's waiting for a CPU (``--noise on``).
UNWAITED_TITLE = {"time": "{} less wait", "cpu": "{} of time not waiting"}


def unwaited(metric: Metric) -> Metric:
    """``metric`` as compare shows it when judged without the wait (same JSON name)."""
    title = UNWAITED_TITLE.get(metric.group, "{}").format(metric.title)
    return Metric(metric.name, title, metric.unit, metric.group, metric.get, metric.row)


# --------------------------------------------------------------------------- analyses


def _valued(
    report: dict, value: Callable[[dict], Optional[float]]
) -> list[tuple[str, dict, float]]:
    """``(nodeid, test, value)`` of the tests whose ``value(test)`` is not None, in order."""
    return [(k, t, v) for k, t in report["tests"].items() if (v := value(t)) is not None]


def _ranked(hits: Iterable[tuple[str, dict, float]], size: Callable[[float], float]) -> list:
    """``(nodeid, test)`` pairs, largest ``size(value)`` first (then by node id)."""
    return [(k, t) for k, t, _ in sorted(hits, key=lambda h: (-size(h[2]), h[0]))]


def slowest(report: dict, top: int) -> list:
    """The ``top`` slowest tests, as ``(nodeid, test)`` pairs, slowest first."""
    return _ranked(_valued(report, duration), float)[:top]


def memory_over(report: dict, threshold_mb: float) -> list:
    """Tests whose ``memory.delta_mb`` exceeds ``threshold_mb`` (possible leaks), largest first."""
    return _ranked((h for h in _valued(report, memory_delta) if h[2] > threshold_mb), float)


#: One floor for every CPU table and analysis (terminal summary, ``perfmon report``): the CPU
#: share of a test shorter than this (seconds) is mostly noise - a few ms of CPU either way.
CPU_MIN_DURATION = 0.01

#: One floor for the terminal summary's memory tables: moves under this many MB are noise.
MEMORY_MIN_MB = 0.1


def cpu_over(
    report: dict, threshold_percent: float, min_duration: float = CPU_MIN_DURATION
) -> list:
    """CPU-intensive tests: CPU above ``threshold_percent``, highest first; only tests that
    took at least ``min_duration`` seconds (see :data:`CPU_MIN_DURATION`). The CPU of a test
    with child processes is its own plus its children's (:func:`cpu_with_children`)."""
    hits = (
        (k, t, v)
        for k, t, v in _valued(report, cpu_with_children)
        if v > threshold_percent and (duration(t) or 0.0) >= min_duration
    )
    return _ranked(hits, float)


def largest_deltas(report: dict, top: int, floor_mb: float = MEMORY_MIN_MB) -> list:
    """Tests whose ``|memory.delta_mb|`` is at least ``floor_mb``, largest ``|delta|`` first."""
    hits = (h for h in _valued(report, memory_delta) if abs(h[2]) >= floor_mb)
    return _ranked(hits, abs)[:top]


def largest_rises(report: dict, top: int, floor_mb: float = MEMORY_MIN_MB) -> list:
    """Tests whose memory rose at least ``floor_mb`` above where it started (``peak - start``),
    largest rise first: a temporary spike shows here even when the delta is 0. A test with
    child processes adds its children's sampled peak (:func:`growth_with_children`)."""
    hits = (h for h in _valued(report, growth_with_children) if h[2] >= floor_mb)
    return _ranked(hits, float)[:top]


def tests_span(tests: dict) -> Optional[float]:
    """Seconds from the first test's start to the last test's end (None without start times)."""
    starts, ends = [], []
    for t in tests.values():
        start, dur = number(t.get("start")), duration(t)
        if start is not None:
            starts.append(start)
            ends.append(start + (dur or 0.0))
    return round(max(ends) - min(starts), 6) if starts else None


def host_totals(report: dict) -> dict:
    """Per host, when some worker ran on another host (the workers' ``host``): its workers,
    tests, CPUs and concurrent memory peak. Empty for a run on one host."""
    workers = report.get("workers") or {}
    out: dict = {}
    for w in workers.values():
        if isinstance(w, dict) and isinstance(w.get("host"), str):
            h = out.setdefault(
                w["host"], {"workers": 0, "tests": 0, "cpu_count": None, "peak_mb": None}
            )
            h["workers"] += 1
            h["tests"] += w.get("tests") or 0
    jobs = report.get("jobs")
    blocks = [report.get("hosts") or {}]
    if isinstance(jobs, dict):  # a merged report: each job's hosts, the highest peak
        blocks += [j.get("hosts") or {} for j in jobs.values() if isinstance(j, dict)]
    for hosts in blocks:
        for name, block in hosts.items():
            if name not in out or not isinstance(block, dict):
                continue
            h = out[name]
            h["cpu_count"] = h["cpu_count"] or (block.get("system") or {}).get("cpu_count")
            peak = (block.get("concurrent_memory_peak") or {}).get("total_rss_mb")
            if _is_num(peak) and (h["peak_mb"] is None or peak > h["peak_mb"]):
                h["peak_mb"] = peak
    return out


def totals(report: dict) -> dict:
    """Session totals: what ran, how long, how much memory, who measured it; ``hosts`` when
    the workers ran on several (:func:`host_totals`)."""
    out = _totals(report)
    hosts = host_totals(report)
    if hosts:
        out["hosts"] = hosts
    return out


def _totals(report: dict) -> dict:
    session = report["session"]
    summary = summarize(report["tests"])
    workers = report.get("workers") or {}
    peaks = [
        p
        for p in (w.get("peak_rss_mb") for w in workers.values() if isinstance(w, dict))
        if _is_num(p)
    ]
    warnings = session.get("warnings")
    jobs = report.get("jobs")
    eff = (report.get("summary") or {}).get("parallel_efficiency")
    again = repeated(report)
    subs = [s for s in (subtests(t) for t in report["tests"].values()) if s is not None]
    return {
        "tests": len(report["tests"]),
        "outcomes": summary["outcomes"],
        "session_duration": number(session.get("duration")),
        "tests_span": tests_span(report["tests"]),
        "total_duration": summary["total_duration"],
        "avg_duration": summary["avg_duration"],
        "max_duration": summary["max_duration"],
        "avg_memory_delta_mb": summary["avg_memory_delta_mb"],
        "max_memory_delta_mb": summary["max_memory_delta_mb"],
        "peak_rss_mb": max(peaks) if peaks else None,
        "workers": len(workers),
        "jobs": len(jobs) if isinstance(jobs, dict) else None,
        "parallel_efficiency": eff if _is_num(eff) else None,
        "collector": session.get("collector"),
        "records_dropped": session.get("records_dropped"),
        "warnings": len(warnings) if isinstance(warnings, list) else 0,
        "exit_status": session.get("exit_status"),
        # tests pytest executed more than once: their times are the sums over the executions
        "repeated_tests": len(again),
        "repeated_executions": sum(runs(t) for _, t in again),
        "rerun_attempts": sum(reruns(t) for _, t in again),
        "subtests": {
            "tests": len(subs),
            **{
                k: sum(number(s.get(k)) or 0 for s in subs) for k in ("passed", "failed", "skipped")
            },
        }
        if subs
        else None,
    }


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Threshold:
    """A change counts only when it passes both: ``|new-old| >= abs`` and ``>= rel * |old|``."""

    rel: float
    abs: float

    def passes(self, old: float, new: float) -> bool:
        change = abs(new - old)
        eps = 1e-9
        return change + eps >= self.abs and change + eps >= self.rel * abs(old) and change > 0


#: Defaults: +20% and +50 ms for time; +20% and +5 MB for memory; +25% and +20 points for CPU.
DEFAULT_THRESHOLDS = {
    "time": Threshold(rel=0.20, abs=0.05),
    "memory": Threshold(rel=0.20, abs=5.0),
    "cpu": Threshold(rel=0.25, abs=20.0),
}

#: cpu_percent of a very short test is mostly noise (a few ms of CPU time either way): compare
#: CPU only when the test took at least this long (seconds) in both reports.
DEFAULT_CPU_MIN_DURATION = 0.1


@dataclass(frozen=True)
class Change:
    test: str
    metric: Metric
    baseline: float
    current: float
    #: how many times pytest executed the test in each report (its times are the sums)
    baseline_runs: int = 1
    current_runs: int = 1
    #: judged without the wait (``--noise on``): the figures as measured, and the seconds each
    #: side lost waiting for a CPU (:func:`.vocabulary.lost_to_waiting`; None: not measured)
    measured: Optional[tuple] = None
    lost: Optional[tuple] = None

    @property
    def repeated(self) -> bool:
        """Whether the test was executed more than once in either report (its figures are of
        every execution together: reruns, --dist each, ...)."""
        return self.baseline_runs > 1 or self.current_runs > 1

    @property
    def delta(self) -> float:
        return self.current - self.baseline

    @property
    def ratio(self) -> Optional[float]:
        """Relative change (0.5 is +50%); None when the baseline is 0."""
        return None if self.baseline == 0 else self.delta / abs(self.baseline)

    def as_dict(self) -> dict:
        ratio = self.ratio
        out = {
            "test": self.test,
            "metric": self.metric.name,
            "unit": self.metric.unit,
            "baseline": self.baseline,
            "current": self.current,
            "change": round(self.delta, 6),
            "change_ratio": None if ratio is None else round(ratio, 4),
            "baseline_executions": self.baseline_runs,
            "current_executions": self.current_runs,
        }
        if self.measured is not None:
            out["judged"] = "without_wait"
            out["baseline_measured"], out["current_measured"] = self.measured
            out.update(_waits(self.lost))
        return out


def _waits(lost: Optional[tuple]) -> dict:
    """The seconds each side lost waiting for a CPU, for compare's JSON (null: not measured)."""
    b, c = lost or (None, None)
    return {
        "baseline_wait": None if b is None else round(b, 6),
        "current_wait": None if c is None else round(c, 6),
    }


@dataclass(frozen=True)
class NotJudged:
    """A change of a figure that the time the test waited for a CPU explains: it passes the
    thresholds as measured, not without the wait (``--noise on``)."""

    test: str
    metric: Metric
    baseline: float  # as measured
    current: float
    baseline_unwaited: float  # without the wait
    current_unwaited: float
    lost: tuple  # seconds lost waiting (baseline, current); None: not measured
    contended: tuple  # whether the test ran contended (noise.contended), in each report

    @property
    def kind(self) -> str:
        """What the change would have been as measured: "regression" or "improvement"."""
        return "regression" if self.current > self.baseline else "improvement"

    def as_dict(self) -> dict:
        return {
            "test": self.test,
            "metric": self.metric.name,
            "unit": self.metric.unit,
            "would_be": self.kind,
            "baseline": self.baseline,
            "current": self.current,
            "baseline_unwaited": self.baseline_unwaited,
            "current_unwaited": self.current_unwaited,
            **_waits(self.lost),
            "baseline_contended": self.contended[0],
            "current_contended": self.contended[1],
        }


@dataclass
class Comparison:
    thresholds: dict
    cpu_min_duration: float = DEFAULT_CPU_MIN_DURATION
    compared: int = 0
    regressions: list = field(default_factory=list)  # [Change]
    improvements: list = field(default_factory=list)  # [Change]
    new: list = field(default_factory=list)  # [nodeid]
    gone: list = field(default_factory=list)  # [nodeid]
    outcome_changes: list = field(default_factory=list)  # [(nodeid, old, new)]
    #: tests in both reports that pytest executed more than once in either:
    #: [(nodeid, baseline test, current test)]
    repeated: list = field(default_factory=list)
    #: whether times are judged without the wait for a CPU (``--noise on``, the default)
    noise: bool = True
    #: changes the wait explains: "contended, not judged" ([NotJudged])
    not_judged: list = field(default_factory=list)
    #: tests compared whose wait for a CPU either report measured (their noise certificate)
    with_noise: int = 0

    def as_dict(self) -> dict:
        return {
            "compared": self.compared,
            "noise": "on" if self.noise else "off",
            "thresholds": {
                k: {"rel": v.rel, "abs": v.abs} for k, v in sorted(self.thresholds.items())
            },
            "cpu_min_duration": self.cpu_min_duration,
            "regressions": [c.as_dict() for c in self.regressions],
            "improvements": [c.as_dict() for c in self.improvements],
            "new": list(self.new),
            "gone": list(self.gone),
            "outcome_changes": [
                {"test": k, "baseline": old, "current": new} for k, old, new in self.outcome_changes
            ],
            "executed_more_than_once": [
                {
                    "test": k,
                    "baseline_executions": runs(old),
                    "current_executions": runs(new),
                    "baseline_outcomes": _outcome_list(old),
                    "current_outcomes": _outcome_list(new),
                }
                for k, old, new in self.repeated
            ],
            "contended_not_judged": [c.as_dict() for c in self.not_judged],
        }


def _outcome_list(t: dict) -> list:
    """The outcomes of the test's executions, in order (its one outcome when it ran once)."""
    return [x.get("outcome") for x in executions(t)] or [t.get("outcome")]


def _contended(t: dict) -> bool:
    noise = t.get("noise")
    return bool(isinstance(noise, dict) and noise.get("contended"))


def compare(
    baseline: dict,
    current: dict,
    thresholds: Optional[dict] = None,
    cpu_min_duration: float = DEFAULT_CPU_MIN_DURATION,
    noise: bool = True,
) -> Comparison:
    """Per test: what got slower, hungrier or more CPU-bound; what improved; what is new or gone.

    Metrics are compared only between runs of a test with the same outcome (a test that went
    from passed to failed is listed under outcome changes instead). CPU is compared only when
    the test took at least ``cpu_min_duration`` seconds in both reports.

    ``noise`` (the default): a test's time, and its CPU share, are judged without the time it
    waited for a CPU (its noise certificate: :func:`.vocabulary.lost_to_waiting`), on either
    side where measured. A change the thresholds pass as measured but not without the wait is
    the waiting's, not the test's: it is listed in :attr:`Comparison.not_judged` ("contended,
    not judged"), never as a regression. More work is still more time without the wait: a real
    slowdown on a contended run is a regression. ``noise=False``: as measured.

    A test pytest executed more than once (reruns, ``--dist each``, ...) is compared on its
    whole entry: the sums over every execution, never its last attempt alone. Each of its
    changes carries the execution counts (:attr:`Change.repeated`), and the test is listed in
    :attr:`Comparison.repeated`, so that a rerun never reads as a plain slowdown.
    """
    th = dict(DEFAULT_THRESHOLDS)
    th.update(thresholds or {})
    result = Comparison(thresholds=th, cpu_min_duration=cpu_min_duration, noise=noise)
    base_tests, cur_tests = by_nodeid(baseline), by_nodeid(current)
    result.new = sorted(k for k in cur_tests if k not in base_tests)
    result.gone = sorted(k for k in base_tests if k not in cur_tests)
    for nodeid in sorted(k for k in cur_tests if k in base_tests):
        old_t, new_t = base_tests[nodeid], cur_tests[nodeid]
        n_old, n_new = runs(old_t), runs(new_t)
        if n_old > 1 or n_new > 1:
            result.repeated.append((nodeid, old_t, new_t))
        if old_t.get("outcome") != new_t.get("outcome"):
            result.outcome_changes.append((nodeid, old_t.get("outcome"), new_t.get("outcome")))
            continue
        result.compared += 1
        short = min(duration(old_t) or 0.0, duration(new_t) or 0.0) < cpu_min_duration
        lost: Optional[tuple] = None
        if noise:
            lost = (lost_in_entry(old_t), lost_in_entry(new_t))
            if lost != (None, None):
                result.with_noise += 1
            if not (lost[0] or lost[1]):
                lost = None  # no wait measured on either side: as measured
        for metric in METRICS:
            if metric.group == "cpu" and short:
                continue
            old, new = metric.get(old_t), metric.get(new_t)
            if old is None or new is None:
                continue
            threshold = th[metric.group]
            if lost is not None and metric.row is not None and metric.row.discount:
                j_old = without_wait(metric.row, old, duration(old_t), lost[0])
                j_new = without_wait(metric.row, new, duration(new_t), lost[1])
                if j_old is None or j_new is None:
                    continue
                if threshold.passes(j_old, j_new):
                    change = Change(
                        nodeid, unwaited(metric), j_old, j_new, n_old, n_new, (old, new), lost
                    )
                    (result.regressions if j_new > j_old else result.improvements).append(change)
                elif threshold.passes(old, new):
                    result.not_judged.append(
                        NotJudged(
                            nodeid,
                            metric,
                            old,
                            new,
                            j_old,
                            j_new,
                            lost,
                            (_contended(old_t), _contended(new_t)),
                        )
                    )
                continue
            if not threshold.passes(old, new):
                continue
            change = Change(nodeid, metric, old, new, n_old, n_new)
            (result.regressions if new > old else result.improvements).append(change)
    return result


# --------------------------------------------------------------------------- merge


def default_label(report: dict, path: str) -> str:
    """A job's label: the report's own ``session.label`` if it has one, else the file's stem."""
    label = report["session"].get("label")
    if isinstance(label, str) and label:
        return label
    name = os.path.basename(path)
    stem = name[: -len(".json")] if name.lower().endswith(".json") else os.path.splitext(name)[0]
    return stem or name


def check_label(label: str) -> None:
    if not label or JOB_SEP in label:
        raise ReportError(
            f"job label {label!r}: must be non-empty and must not contain '{JOB_SEP}'"
        )


def split_jobs(report: dict, label: Optional[str], source: str) -> list:
    """The jobs of one input as ``(label, job, tests)``, ``tests`` keyed by plain node id.

    A single run becomes one job named ``label``. A merged report keeps its jobs; a ``label``
    given for it prefixes their labels (``LABEL/job``).
    """
    jobs = report.get("jobs")
    if jobs is None:
        if label is None:
            label = default_label(report, source)
        check_label(label)
        job = {"session": report["session"]}
        for key in ("system", "summary", "workers", "concurrent_memory_peak", "fixtures", "hosts"):
            if key in report:
                job[key] = report[key]
        tests = {k: t for k, t in report["tests"].items()}
        return [(label, job, tests)]
    out = []
    for job_label, job in jobs.items():
        prefix = f"{job_label}{JOB_SEP}"
        tests = {
            k[len(prefix) :]: t for k, t in report["tests"].items() if t.get("job") == job_label
        }
        new_label = job_label if label is None else f"{label}/{job_label}"
        check_label(new_label)
        out.append((new_label, job, tests))
    return out


def _common(values: list) -> Any:
    first = values[0] if values else None
    return first if all(v == first for v in values) else None


def merged_session(jobs: dict, total_tests: int) -> dict:
    """The session of a merged report, derived from its jobs' sessions only (so associative)."""
    sessions = [j["session"] for j in jobs.values()]
    measurements = [s.get("measurement") or {} for s in sessions]
    exits = [s.get("exit_status") for s in sessions]
    timestamps = [s["timestamp"] for s in sessions if isinstance(s.get("timestamp"), str)]
    protocol_errors: dict = {}
    for s in sessions:
        for k, v in (s.get("protocol_errors") or {}).items():
            if _is_num(v):
                protocol_errors[k] = protocol_errors.get(k, 0) + v
    warnings = [
        f"{label}: {w}" for label, j in jobs.items() for w in (j["session"].get("warnings") or [])
    ]
    collectors = [s.get("collector") for s in sessions]
    return {
        "duration": round(sum(number(s.get("duration")) or 0.0 for s in sessions), 6),
        "total_tests": total_tests,
        "timestamp": min(timestamps) if timestamps else "",
        "exit_status": max(e for e in exits if _is_num(e))
        if any(_is_num(e) for e in exits)
        else None,
        "aborted": any(bool(s.get("aborted")) for s in sessions),
        "pytest_version": _common([s.get("pytest_version") for s in sessions]),
        "perfmon_version": __version__,
        "collector": "monitor" if all(c == "monitor" for c in collectors) else "plugin-fallback",
        "measurement": {
            "time": METHOD_TIME,
            "cpu": METHOD_CPU,
            "memory": _common([m.get("memory") for m in measurements]),
            "memory_peak": _common([m.get("memory_peak") for m in measurements]),
            "sample_interval": _common([m.get("sample_interval") for m in measurements]),
        },
        "records_dropped": sum(
            int(s.get("records_dropped") or 0)
            for s in sessions
            if _is_num(s.get("records_dropped"))
        ),
        "collector_cpu_time": round(
            sum(number(s.get("collector_cpu_time")) or 0.0 for s in sessions), 4
        ),
        "protocol_errors": protocol_errors,
        "warnings": warnings,
    }


def labelled_fixtures(fixtures: Any, label: str) -> list:
    """A report's ``fixtures`` list with its workers and tests named as in a merged or combined
    report (``LABEL::wid``, ``LABEL::nodeid``)."""
    out = []
    for f in fixtures if isinstance(fixtures, list) else ():
        if not isinstance(f, dict):
            continue
        entry = dict(f)
        for key in ("worker", "setup_test", "teardown_test"):
            if isinstance(entry.get(key), str):
                entry[key] = f"{label}{JOB_SEP}{entry[key]}"
        out.append(entry)
    return out


def by_nodeid(report: dict) -> dict:
    """The tests of ``report`` as :func:`compare` matches them: a merged ``--perf-shard``
    matrix's by node id, whichever shard ran each (a plan from other figures moves tests
    between shards: under their ``"SHARD::"`` keys a moved test was "new" and "gone", and never
    compared); every other report's by its keys (a matrix of Python versions keeps each job's
    own). A shard matrix that ran a node id twice keeps its keys."""
    tests = report["tests"]
    jobs = report.get("jobs")
    if "matrix" not in report or not isinstance(jobs, dict) or not jobs:
        return tests
    for job in jobs.values():
        session = job.get("session") if isinstance(job, dict) else None
        if not (isinstance(session, dict) and isinstance(session.get("shard"), dict)):
            return tests  # a job that is not a shard of the matrix
    out: dict = {}
    for key, t in tests.items():
        label = t.get("job") if isinstance(t, dict) else None
        if not (isinstance(label, str) and key.startswith(label + JOB_SEP)):
            return tests
        nodeid = key[len(label) + len(JOB_SEP) :]
        if nodeid in out:
            return tests
        out[nodeid] = t
    return out


def merge(inputs: Sequence) -> dict:
    """Combine reports of a CI matrix into one.

    ``inputs``: ``(label_or_None, report, source)`` triples, in order. Every job keeps its tests
    apart under ``"LABEL::nodeid"``; the summary is recomputed from the merged tests. Raises
    :class:`ReportError` when two jobs end up with the same label.
    """
    jobs: dict = {}
    origin: dict = {}
    tests: dict = {}
    workers: dict = {}
    for label, report, source in inputs:
        for job_label, job, job_tests in split_jobs(report, label, source):
            if job_label in jobs:
                raise ReportError(
                    f"job label {job_label!r} comes from both {origin[job_label]} and {source}; "
                    "give distinct --label values"
                )
            jobs[job_label] = job
            origin[job_label] = source
            for nodeid, t in job_tests.items():
                entry = dict(t)
                entry["job"] = job_label
                tests[f"{job_label}{JOB_SEP}{nodeid}"] = entry
            for wid, w in (job.get("workers") or {}).items():
                workers[f"{job_label}{JOB_SEP}{wid}"] = w
    out = {
        "schema_version": SCHEMA_VERSION,
        "session": merged_session(jobs, len(tests)),
        "tests": tests,
        "summary": summarize(tests),
        "workers": workers,
        "concurrent_memory_peak": None,
        "jobs": jobs,
    }
    fixtures = [f for lab, j in jobs.items() for f in labelled_fixtures(j.get("fixtures"), lab)]
    if fixtures:
        out["fixtures"] = fixtures
    from .split import matrix_check  # the shards of a --perf-shard matrix, checked

    matrix = matrix_check(jobs, tests)
    if matrix is not None:
        out["matrix"] = matrix
    return out
