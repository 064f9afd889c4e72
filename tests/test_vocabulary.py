"""The one metric vocabulary (monitor/vocabulary.py): every view derived from it is what the
shipped outputs, options and store schema were, and a new metric reaches every view by its row
alone."""

from __future__ import annotations

import pytest
from pytest_perfmon.monitor import units, vocabulary
from pytest_perfmon.monitor.vocabulary import Compare, Gate, Limit, Metric

ENTRY = {
    "duration": 2.0,
    "setup_time": 0.5,
    "call_time": 1.25,
    "teardown_time": 0.25,
    "memory": {"start_mb": 100.0, "peak_mb": 150.5, "end_mb": 120.0, "delta_mb": 20.0},
    "cpu_percent": 50.0,
}


def _starts(view, shipped) -> None:
    """``view`` begins with ``shipped``, in its order: what shipped stays as it was (a CSV
    header, a command's choices, the store's columns); a new metric may only come after it."""
    got = list(view.items()) if isinstance(view, dict) else list(view)
    want = list(shipped.items()) if isinstance(shipped, dict) else list(shipped)
    assert got[: len(want)] == want


def test_the_views_are_the_shipped_ones():
    v = vocabulary
    _starts(
        v.COLUMNS,
        {
            "duration": 1,
            "setup_time": 1,
            "call_time": 1,
            "teardown_time": 1,
            "start_mb": 1,
            "peak_mb": 1,
            "end_mb": 1,
            "delta_mb": 1,
            "cpu_percent": 1,
            "cpu_time": 2,
        },
    )
    _starts(
        v.HISTORY_METRICS,
        ("duration", "call_time", "cpu_time", "peak_mb", "delta_mb", "cpu_percent"),
    )
    _starts(
        v.DEFAULT_GATE,
        {
            "duration": (0.10, 0.002),
            "call_time": (0.10, 0.002),
            "cpu_time": (0.15, 0.002),
            "peak_mb": (0.05, 5.0),
            "delta_mb": (0.10, 5.0),
            "cpu_percent": (0.20, 10.0),
        },
    )
    assert list(v.DEFAULT_GATE) == list(v.HISTORY_METRICS) == list(v.UNITS)
    _starts(v.UNITS, {"duration": "s", "call_time": "s", "cpu_time": "s", "peak_mb": "MB"})
    _starts(v.DEFAULT_CHECK_METRICS, ("duration", "cpu_time", "peak_mb"))
    _starts(
        v.LIMIT_METRICS,
        {
            "duration": ("s", "seconds", "setup + call + teardown, as pytest times them"),
            "call": ("s", "seconds", "the call phase, as pytest times it"),
            "peak_mb": ("MB", "MB", "kernel peak RSS over setup, call and teardown"),
            "delta_mb": ("MB", "MB", "RSS after teardown minus RSS before setup"),
            "cpu_time": (
                "s",
                "seconds",
                "CPU time of the test's process over setup, call and teardown",
            ),
        },
    )
    _starts(
        v.HISTORY_LIMITS,
        {"duration": "duration", "call": "call_time", "peak_mb": "peak_mb", "delta_mb": "delta_mb"},
    )
    _starts(
        [
            (m.compare.name, m.compare.title, m.unit, m.compare.group)
            for m in v.COMPARED
            if m.compare
        ],
        [
            ("duration", "duration", "s", "time"),
            ("memory_delta_mb", "memory delta", "MB", "memory"),
            ("memory_growth_mb", "memory peak-start", "MB", "memory"),
            ("cpu_percent", "CPU", "%", "cpu"),
        ],
    )
    _starts(
        [m.csv for m in v.CSV],
        ["duration", "setup_time", "call_time", "teardown_time", "cpu_percent"]
        + ["memory_start_mb", "memory_peak_mb", "memory_end_mb", "memory_delta_mb"],
    )
    _starts(
        [m.html for m in v.HTML],
        ["duration", "setup", "call", "teardown", "cpu"]
        + ["mem_start", "mem_peak", "mem_end", "mem_delta"],
    )


def test_consumers_take_their_views_from_the_vocabulary():
    from pytest_perfmon import _settings
    from pytest_perfmon.monitor import analysis, export, html
    from pytest_perfmon.monitor.history import cli as hcli
    from pytest_perfmon.monitor.history import medians

    assert _settings.LIMIT_METRICS is vocabulary.LIMIT_METRICS
    assert medians.METRICS is vocabulary.HISTORY_LIMITS
    assert hcli.METRICS is vocabulary.HISTORY_METRICS
    assert hcli.DEFAULT_GATE is vocabulary.DEFAULT_GATE
    assert [m.name for m in analysis.METRICS] == [m.compare.name for m in vocabulary.COMPARED]
    n_csv, n_html = len(vocabulary.CSV), len(vocabulary.HTML)
    assert export.CSV_COLUMNS[5 : 5 + n_csv] == tuple(m.csv for m in vocabulary.CSV)
    assert html.ROW_FIELDS[3 : 3 + n_html] == tuple(m.html for m in vocabulary.HTML)


def test_each_metric_reads_its_figure_from_a_test_entry():
    got = {m.name: m.get(ENTRY) for m in vocabulary.METRICS}
    _starts(
        got,
        {
            "duration": 2.0,
            "setup_time": 0.5,
            "call_time": 1.25,
            "teardown_time": 0.25,
            "start_mb": 100.0,
            "peak_mb": 150.5,
            "end_mb": 120.0,
            "delta_mb": 20.0,
            "cpu_percent": 50.0,
            "cpu_time": 1.0,
            "growth_mb": 50.5,
        },
    )
    # not measured, not a number, or no memory block: None, never a guess
    odd = {"duration": float("nan"), "cpu_percent": True, "memory": None, "call_time": "1"}
    assert {m.name: m.get(odd) for m in vocabulary.METRICS} == dict.fromkeys(got)


@pytest.mark.parametrize(
    "value, expected",
    [(1, 1), (2.5, 2.5), (0, 0), (-3.0, -3.0), (True, None), (None, None), ("1", None)]
    + [(float("nan"), None), (float("inf"), None), (float("-inf"), None)],
)
def test_the_one_finite_number_check(value, expected):
    assert units.number(value) == expected
    assert units.MB == 1024.0 * 1024.0


def test_a_new_metric_reaches_every_view_by_its_row(monkeypatch):
    """A metric added to the table appears, after the shipped ones, in each view whose field
    it sets: the store's columns, history's choices and gates, the limits, compare, CSV, HTML."""
    new = Metric(
        "gc_time",
        "s",
        ("gc_time",),
        column="gc_time",
        since=3,
        csv="gc_time",
        html="gc",
        limit=Limit("gc_time", "time in the garbage collector", True),
        compare=Compare("gc_time", "GC", "time"),
        gate=Gate(0.2, 0.01, checked=True),
    )
    table = vocabulary.METRICS + (new,)
    monkeypatch.setattr(vocabulary, "METRICS", table)
    monkeypatch.setattr(vocabulary, "BY_NAME", {m.name: m for m in table})
    view = vocabulary._view
    assert view(lambda m: m.column)[-1] is new
    assert view(lambda m: m.gate, vocabulary.HISTORY_METRICS)[-1] is new
    assert (
        view(lambda m: m.compare, ("duration", "delta_mb", "growth_mb", "cpu_percent"))[-1] is new
    )
    assert view(lambda m: m.csv, vocabulary._TABLE_ORDER)[-1] is new
    assert new.get({"gc_time": 0.5}) == 0.5
    # a view that names a metric lacking its field is refused at import
    with pytest.raises(AssertionError, match="gc_time"):
        view(lambda m: m.csv and m.name != "gc_time", ("gc_time",))


def test_rows_are_complete():
    for m in vocabulary.METRICS:
        assert m.unit in vocabulary.UNIT_WORDS, m.name
        assert bool(m.path) != (m.derive is not None), m.name  # read or derived, not both
        if m.column:
            # history show/check read results.<metric>: the column is named as the metric
            assert m.column == m.name, m.name
        assert isinstance(m, vocabulary.Metric)
    assert len({m.name for m in vocabulary.METRICS}) == len(vocabulary.METRICS)


def test_the_noise_columns_are_kept_by_the_store_at_version_3():
    """Issue 21: the noise certificate and the children's CPU time, after what shipped."""
    v = vocabulary
    cols = list(v.COLUMNS.items())
    assert cols[10:16] == [
        ("wait_time", 3),
        ("throttled_time", 3),
        ("steal_time", 3),
        ("pressure", 3),
        ("involuntary_switches", 3),
        ("children_cpu_time", 3),
    ]
    entry = dict(
        ENTRY,
        noise={"wait_time": 0.4, "throttled_time": None, "pressure": 0.5, "steal_time": 0.0},
        children={"cpu_time": 0.25},
    )
    got = {m.name: m.get(entry) for m in v.METRICS if m.column and m.since == 3}
    assert got == {
        "wait_time": 0.4,
        "throttled_time": None,
        "steal_time": 0.0,
        "pressure": 0.5,
        "involuntary_switches": None,
        "children_cpu_time": 0.25,
    }
    # not checked, not compared, not limits, not new output columns: kept for the discount
    assert not {m.name for m in v.HISTORY + v.COMPARED + v.CSV + v.HTML} & set(got)
    assert {m.name for m in v.METRICS if m.discount} == {
        "duration",
        "setup_time",
        "call_time",
        "teardown_time",
        "cpu_percent",
    }


@pytest.mark.parametrize(
    "duration, wait, cpu, kids, lost",
    [
        (1.0, 0.6, 0.4, None, 0.6),  # one thread: running 0.4 s, waiting 0.6 s
        (1.0, 0.3, 0.4, None, 0.3),  # and asleep 0.3 s: the sleep is its own time
        (1.0, 1.2, 0.8, None, 0.6),  # two threads side by side: runnable 2 s in 1 s of wall
        (1.0, 1.0, 0.0, 1.0, 0.5),  # its children did the work (and the waiting)
        (1.0, 0.0, 0.9, None, 0.0),  # no wait
        (1.0, 2.0, None, None, 1.0),  # no CPU time known: never more than the duration
        (None, 0.5, 0.5, None, None),  # no duration, or
        (1.0, None, 0.5, None, None),  # no wait measured: no discount
    ],
)
def test_lost_to_waiting(duration, wait, cpu, kids, lost):
    got = vocabulary.lost_to_waiting(duration, wait, cpu, kids)
    assert got == (None if lost is None else pytest.approx(lost))


def test_without_wait():
    v = vocabulary
    by = v.BY_NAME
    # a time less its share of the wait (the duration less all of it)
    assert v.without_wait(by["duration"], 2.0, 2.0, 0.5) == 1.5
    assert v.without_wait(by["call_time"], 1.5, 2.0, 0.5) == pytest.approx(1.125)
    # a share of the duration: over the duration less the wait
    assert v.without_wait(by["cpu_percent"], 40.0, 2.0, 1.0) == 80.0
    # waiting changes neither CPU time nor memory; nothing lost, nothing known: as it is
    assert v.without_wait(by["cpu_time"], 0.8, 2.0, 1.0) == 0.8
    assert v.without_wait(by["peak_mb"], 150.5, 2.0, 1.0) == 150.5
    assert v.without_wait(by["duration"], 2.0, 2.0, None) == 2.0
    assert v.without_wait(by["duration"], 2.0, 2.0, 0.0) == 2.0
    assert v.without_wait(by["duration"], None, 2.0, 1.0) is None
    # from a report's entry: its wait, its own and its children's CPU
    entry = dict(ENTRY, noise={"wait_time": 1.5}, children={"cpu_time": 0.5})
    # runnable 1.0 (own CPU) + 0.5 (children) + 1.5 (wait) = 3 s in 2 s: scaled to 1 s
    assert v.lost_in_entry(entry) == pytest.approx(1.0)
    assert v.lost_in_entry(ENTRY) is None
