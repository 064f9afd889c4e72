"""The per-test metrics: every figure of a report's test entry, named once.

Each :class:`Metric` says what the figure is called, its unit, where it sits in a test entry
(its JSON path, or how it is derived), the history store's column that keeps it, its CSV and
HTML column, whether a limit can bound it (``@pytest.mark.perf_limit``), whether ``perfmon
compare`` compares it, and the gate ``perfmon history check`` holds its changes to by default.
Everything else derives from this table: the store's ``results`` columns, the choices of
``perfmon history show/check``, the limits' names, compare's metrics, the CSV header and the
HTML page's rows.

Standard library only: the plugin reads it at import time, and ``perfmon`` builds its parser
from it without SQLAlchemy. CONTRIBUTING.md lists what else a new metric needs (its
measurement and its renderers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional

from .units import number

#: How a unit is said in a message ("must be a finite number of seconds").
UNIT_WORDS = {
    "s": "seconds",
    "MB": "MB",
    "%": "percent",
    "share": "share of the duration",
    "count": "count",
}


# NamedTuples, not dataclasses: the plugin imports this module in every pytest run (its
# options' names), where four dataclasses cost 2.5 ms of start-up.
class Limit(NamedTuple):
    """A limit can bound the metric: ``perf_limit(NAME=...)``, ``--perf-limit-NAME``. The
    plugin checks it where the metric is final: the call report for the call phase, the
    teardown report for the rest (plugin/_limits.py measures each one)."""

    name: str
    how: str  # how it is measured, for the option's help and the violation message
    from_history: bool = False  # --perf-limit-history gives it a limit from its median


class Compare(NamedTuple):
    """``perfmon compare`` compares the metric (per test, between two reports)."""

    name: str  # the metric's key in compare's JSON output
    title: str  # for people: tables, annotations
    group: str  # the threshold that applies: "time", "memory" or "cpu"


class Gate(NamedTuple):
    """``perfmon history check`` and the HTML trends watch the metric: a change point counts
    when it is at least ``rel`` of the median before AND at least ``abs`` (the metric's unit).
    Chosen from scripts/bench_detection.py."""

    rel: float
    abs: float
    checked: bool = False  # checked by default (without --metric)


class Metric(NamedTuple):
    name: str  # the history store's name of it (`history show --metric NAME`)
    unit: str  # "s", "MB" or "%"
    path: tuple = ()  # its keys in a report's test entry; () when derived (``derive``)
    derive: Optional[Callable[[Mapping], Optional[float]]] = None
    # the history store's results column (named as the metric), or None: not stored
    column: Optional[str] = None
    since: int = 1  # the store schema version that added the column
    csv: Optional[str] = None  # `perfmon export --format csv` column
    html: Optional[str] = None  # the HTML page's row field (htmlassets/report.js reads it)
    limit: Optional[Limit] = None
    compare: Optional[Compare] = None
    gate: Optional[Gate] = None
    #: how the figure is judged without the time the test waited for a CPU (the noise
    #: discount, :func:`without_wait`): "time" (a time that the waiting lengthened: its share
    #: of the wait is taken off), "share" (a share of the duration: of the duration less the
    #: wait), or None (waiting does not change it)
    discount: Optional[str] = None

    def get(self, test: Mapping) -> Optional[float]:
        """The metric of a report's test entry: a finite number, or None (not measured)."""
        if self.derive is not None:
            return self.derive(test)
        v: Any = test
        for key in self.path:
            if not isinstance(v, Mapping):
                return None
            v = v.get(key)
        return number(v)


def _cpu_time(t: Mapping) -> Optional[float]:
    """The test process's CPU seconds: its ``cpu_percent`` (CPU time over wall time, read with
    time.process_time at the test's boundaries) times its duration. Store migration 2 fills
    older rows with the same expression."""
    pct, duration = number(t.get("cpu_percent")), number(t.get("duration"))
    if pct is None or duration is None:
        return None
    return pct * duration / 100.0


def _growth(t: Mapping) -> Optional[float]:
    """How far the test's memory rose above where it started: ``peak_mb - start_mb``."""
    mem = t.get("memory")
    if not isinstance(mem, Mapping):
        return None
    peak, start = number(mem.get("peak_mb")), number(mem.get("start_mb"))
    if peak is None or start is None:
        return None
    return round(peak - start, 3)


def lost_to_waiting(
    duration: Any, wait: Any, cpu: Any = None, children_cpu: Any = None
) -> Optional[float]:
    """Seconds of a test's wall time it lost waiting for a CPU: the noise discount's one rule.

    ``wait`` is the noise certificate's ``wait_time``: run_delay summed over the test process's
    threads and its sampled descendants, so that several of them waiting at the same moment
    count more than once. Where they were runnable (CPU time, the process's and its children's,
    plus the wait) for longer than the test's wall time, they ran side by side: the wait is
    scaled to wall time, ``duration x wait / (cpu + wait)``; else it is taken whole. Never more
    than the duration. None when the duration or the wait is not known (no discount: the
    figure is judged as it is). Throttling by a CPU quota is in the wait already (a throttled
    thread is runnable); steal time is not taken off (a host-wide figure, not the test's)."""
    d, w = number(duration), number(wait)
    if d is None or w is None:
        return None
    if d <= 0 or w <= 0:
        return 0.0
    runnable = w + (number(cpu) or 0.0) + (number(children_cpu) or 0.0)
    lost = w if runnable <= d else w * d / runnable
    return min(lost, d)


def without_wait(
    metric: Metric, value: Optional[float], duration: Any, lost: Optional[float]
) -> Optional[float]:
    """``metric``'s ``value`` as it would have been without ``lost`` seconds of waiting for a
    CPU (:func:`lost_to_waiting`): a time (``discount="time"``) less its share of the wait (the
    wait spread over the test's phases as their time is: the duration less all of it); a share
    of the duration (``"share"``) over the duration less the wait. Unchanged for the other
    metrics, and where the wait is not known."""
    d = number(duration)
    if value is None or not lost or not metric.discount or not d or d <= 0:
        return value
    if metric.discount == "time":
        return round(value - lost * value / d, 6)
    rest = d - lost
    return round(value * d / rest, 6) if rest > 0 else value


def _noise(t: Mapping, key: str) -> Any:
    noise = t.get("noise")
    return noise.get(key) if isinstance(noise, Mapping) else None


def lost_in_entry(t: Mapping) -> Optional[float]:
    """:func:`lost_to_waiting` of a report's test entry (its noise certificate's wait, its
    duration, its process's and its children's CPU time)."""
    kids = t.get("children")
    return lost_to_waiting(
        t.get("duration"),
        _noise(t, "wait_time"),
        _cpu_time(t),
        kids.get("cpu_time") if isinstance(kids, Mapping) else None,
    )


#: Every metric, in the order of a test entry (and of the store's columns).
METRICS: tuple[Metric, ...] = (
    Metric(
        "duration",
        "s",
        ("duration",),
        column="duration",
        csv="duration",
        html="duration",
        limit=Limit("duration", "setup + call + teardown, as pytest times them", True),
        compare=Compare("duration", "duration", "time"),
        gate=Gate(0.10, 0.002, checked=True),
        discount="time",
    ),
    Metric(
        "setup_time",
        "s",
        ("setup_time",),
        column="setup_time",
        csv="setup_time",
        html="setup",
        discount="time",
    ),
    Metric(
        "call_time",
        "s",
        ("call_time",),
        column="call_time",
        csv="call_time",
        html="call",
        limit=Limit("call", "the call phase, as pytest times it", True),
        gate=Gate(0.10, 0.002),
        discount="time",
    ),
    Metric(
        "teardown_time",
        "s",
        ("teardown_time",),
        column="teardown_time",
        csv="teardown_time",
        html="teardown",
        discount="time",
    ),
    Metric(
        "start_mb",
        "MB",
        ("memory", "start_mb"),
        column="start_mb",
        csv="memory_start_mb",
        html="mem_start",
    ),
    Metric(
        "peak_mb",
        "MB",
        ("memory", "peak_mb"),
        column="peak_mb",
        csv="memory_peak_mb",
        html="mem_peak",
        limit=Limit("peak_mb", "kernel peak RSS over setup, call and teardown", True),
        gate=Gate(0.05, 5.0, checked=True),
    ),
    Metric(
        "end_mb", "MB", ("memory", "end_mb"), column="end_mb", csv="memory_end_mb", html="mem_end"
    ),
    Metric(
        "delta_mb",
        "MB",
        ("memory", "delta_mb"),
        column="delta_mb",
        csv="memory_delta_mb",
        html="mem_delta",
        limit=Limit("delta_mb", "RSS after teardown minus RSS before setup", True),
        compare=Compare("memory_delta_mb", "memory delta", "memory"),
        gate=Gate(0.10, 5.0),
    ),
    Metric(
        "cpu_percent",
        "%",
        ("cpu_percent",),
        column="cpu_percent",
        csv="cpu_percent",
        html="cpu",
        compare=Compare("cpu_percent", "CPU", "cpu"),
        gate=Gate(0.20, 10.0),
        discount="share",
    ),
    Metric(
        "cpu_time",
        "s",
        derive=_cpu_time,
        column="cpu_time",
        since=2,
        limit=Limit("cpu_time", "CPU time of the test's process over setup, call and teardown"),
        gate=Gate(0.15, 0.002, checked=True),
    ),
    Metric(
        "growth_mb",
        "MB",
        derive=_growth,
        compare=Compare("memory_growth_mb", "memory peak-start", "memory"),
    ),
    # The noise certificate (monitor/noise.py), kept by the store (version 3) so that
    # `history check` and --perf-limit-history judge times without the wait, and the CPU time
    # of the test's children, which the discount's rule reads (lost_to_waiting).
    Metric("wait_time", "s", ("noise", "wait_time"), column="wait_time", since=3),
    Metric("throttled_time", "s", ("noise", "throttled_time"), column="throttled_time", since=3),
    Metric("steal_time", "s", ("noise", "steal_time"), column="steal_time", since=3),
    Metric("pressure", "share", ("noise", "pressure"), column="pressure", since=3),
    Metric(
        "involuntary_switches",
        "count",
        ("noise", "involuntary_switches"),
        column="involuntary_switches",
        since=3,
    ),
    Metric("children_cpu_time", "s", ("children", "cpu_time"), column="children_cpu_time", since=3),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}

#: The store's columns the discount reads (:func:`lost_to_waiting`), besides the figure.
NOISE_COLUMNS = ("duration", "wait_time", "cpu_time", "children_cpu_time", "throttled_time")


def _view(has: Callable[[Metric], Any], shipped: tuple = ()) -> tuple[Metric, ...]:
    """The metrics for which ``has`` is true: first those named in ``shipped`` (the order an
    output had when it shipped: a CSV header, a command's choices), then any other in the
    table's order. A new metric needs no entry in ``shipped``."""
    chosen = [m for m in METRICS if has(m)]
    missing = set(shipped) - {m.name for m in chosen}
    if missing:
        raise AssertionError(f"vocabulary: {sorted(missing)} lack what the view needs")
    return tuple([BY_NAME[n] for n in shipped] + [m for m in chosen if m.name not in shipped])


#: The history store's ``results`` columns, in the table's column order.
STORED = _view(lambda m: m.column)
#: results column -> the store schema version that added it.
COLUMNS: dict[str, int] = {m.column: m.since for m in STORED if m.column}

#: What ``perfmon history show/check`` can read (the ``--metric`` choices), with its gate.
HISTORY = _view(
    lambda m: m.gate and m.column,
    ("duration", "call_time", "cpu_time", "peak_mb", "delta_mb", "cpu_percent"),
)
HISTORY_METRICS: tuple[str, ...] = tuple(m.name for m in HISTORY)
UNITS: dict[str, str] = {m.name: m.unit for m in HISTORY}
#: metric -> (relative threshold, absolute floor) of ``history check`` and the HTML trends.
DEFAULT_GATE: dict[str, tuple[float, float]] = {
    m.name: (m.gate.rel, m.gate.abs) for m in HISTORY if m.gate
}
#: What ``history check`` checks without ``--metric``, and what the HTML trends draw:
#: cpu_time next to duration, because under CPU contention a test's wall time stretches while
#: its CPU time barely moves, so a CPU-bound slowdown stands out from the noise sooner
#: (scripts/bench_detection.py; docs/history.md "Measured").
DEFAULT_CHECK_METRICS: tuple[str, ...] = tuple(m.name for m in HISTORY if m.gate and m.gate.checked)

#: The limits: limit name -> (unit, the unit in words, how it is measured).
LIMIT_METRICS: dict[str, tuple[str, str, str]] = {
    m.limit.name: (m.unit, UNIT_WORDS[m.unit], m.limit.how)
    for m in _view(lambda m: m.limit)
    if m.limit
}
#: The limits ``--perf-limit-history`` sets from the store's medians: limit name -> column.
HISTORY_LIMITS: dict[str, str] = {
    m.limit.name: m.column
    for m in _view(lambda m: m.limit and m.limit.from_history and m.column)
    if m.limit and m.column
}

#: What ``perfmon compare`` compares, in its order.
COMPARED = _view(lambda m: m.compare, ("duration", "delta_mb", "growth_mb", "cpu_percent"))

_TABLE_ORDER: tuple[str, ...] = ("duration", "setup_time", "call_time", "teardown_time")
_TABLE_ORDER += ("cpu_percent", "start_mb", "peak_mb", "end_mb", "delta_mb")
#: The CSV export's metric columns, in its order.
CSV = _view(lambda m: m.csv, _TABLE_ORDER)
#: The HTML page's metric fields of a row, in its order.
HTML = _view(lambda m: m.html, _TABLE_ORDER)
