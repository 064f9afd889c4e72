"""In-process: report building from RunData (no process, no socket), compare and merge."""

from __future__ import annotations

import jsonschema
import pytest
from pytest_perfmon.monitor import analysis, protocol
from pytest_perfmon.monitor.report import MB, RunData, Worker, build, load_schema
from pytest_perfmon.monitor.schema import first_problem
from pytest_perfmon.monitor.summary import summarize

_JS = jsonschema.Draft202012Validator(load_schema())
T0 = 1_700_000_000.0
INTERVAL = 0.05


def record(nodeid, start, stop, rss0=None, peak=None, rss1=None, outcome="passed", cpu=None):
    rec = [None] * protocol.N_FIELDS
    rec[protocol.NODEID] = nodeid
    rec[protocol.START], rec[protocol.STOP] = T0 + start, T0 + stop
    rec[protocol.SETUP], rec[protocol.CALL], rec[protocol.TEARDOWN] = 0.0, stop - start, 0.0
    rec[protocol.OUTCOME] = outcome
    rec[protocol.RSS_START], rec[protocol.RSS_PEAK], rec[protocol.RSS_END] = rss0, peak, rss1
    rec[protocol.CPU], rec[protocol.WALL] = cpu, (None if cpu is None else stop - start)
    return rec


def sample(w: Worker, t0: float, t1: float, mb: float) -> None:
    """Samples every INTERVAL over [t0, t1) (relative times), all at ``mb``."""
    n = round((t1 - t0) / INTERVAL)
    for i in range(n):
        w.samples_t.append(T0 + t0 + i * INTERVAL)
        w.samples_rss.append(int(mb * MB))
        w.sampled_peak = max(w.sampled_peak, int(mb * MB))


def make(workers, crashed=(), methods=None) -> dict:
    data = RunData(sample_interval=INTERVAL)
    for w in workers:
        w.boundary_methods = methods if methods is not None else {"rss": True, "peak": False}
        data.workers[w.wid] = w
    data.crashed = list(crashed)
    report = build(data, {"start": T0, "stop": T0 + 10, "exit_status": 0}, None)
    assert first_problem(report) is None
    assert not list(_JS.iter_errors(report))
    return report


def test_entry_fields_from_a_record():
    w = Worker("main", 42, T0, records=[record("t.py::a", 0.0, 0.5, 100, 300, 200, cpu=0.25)])
    report = make([w], methods={"rss": True, "peak": True})
    t = report["tests"]["t.py::a"]
    assert t["duration"] == 0.5 and t["call_time"] == 0.5 and t["setup_time"] == 0.0
    assert t["memory"]["start_mb"] == round(100 / MB, 3) and t["memory"]["peak_mb"] == round(
        300 / MB, 3
    )
    assert t["cpu_percent"] == 50.0 and t["outcome"] == "passed" and t["pid"] == 42
    assert report["summary"] == summarize(report["tests"], report["summary"]["parallel_efficiency"])
    assert report["session"]["measurement"]["memory_peak"] == "kernel-peak-rss-reset-at-boundaries"


@pytest.mark.parametrize("boundaries", [True, False], ids=["boundary-rss", "samples-only"])
def test_crash_never_bleeds_into_the_previous_test(boundaries):
    """Issue 14 item 3: a worker finishes ``a`` (40 MB), then dies in ``crash`` holding 140 MB.

    Samples of the crashing test (after ``a`` ended) must not raise ``a``'s peak or end."""
    rss = int(40 * MB) if boundaries else None
    w = Worker("gw0", 7, T0, records=[record("t.py::a", 0.0, 1.0, rss, None, rss)])
    sample(w, 0.0, 1.0, 40.0)
    sample(w, 1.0, 3.0, 140.0)  # the first one at 1.0 exactly: the crashing test's
    crash = {"nodeid": "t.py::crash", "worker": "gw0", "time": T0 + 3.0, "start": None}
    report = make([w], [crash])
    a = report["tests"]["t.py::a"]
    assert a["memory"]["peak_mb"] == 40.0, a
    assert a["memory"]["end_mb"] == 40.0
    c = report["tests"]["t.py::crash"]
    assert c["outcome"] == "crashed" and c["memory"]["peak_mb"] == 140.0
    assert c["memory"]["start_mb"] == 40.0 and c["duration"] == 2.0


def test_window_never_takes_a_neighbour_sample():
    """Three tests on one worker, only samples: each gets its own level, none its neighbour's."""
    w = Worker(
        "main",
        1,
        T0,
        records=[
            record("t.py::a", 0.0, 1.0),
            record("t.py::b", 1.0, 2.0),
            record("t.py::c", 2.0, 3.0),
        ],
    )
    sample(w, 0.0, 1.0, 10.0)
    sample(w, 1.0, 2.0, 90.0)
    sample(w, 2.0, 3.0, 20.0)
    report = make([w], methods={})
    assert [report["tests"][f"t.py::{n}"]["memory"]["peak_mb"] for n in "abc"] == [10, 90, 20]


def test_dist_each_keeps_every_execution():
    """Issue 20: the same node ids run by two workers: one entry per node id, keyed by it, with
    every execution in it (no key renamed by the worker that ran it)."""
    workers = []
    for i, wid in enumerate(("gw0", "gw1")):
        recs = [
            record(f"t.py::{n}", j + i * 0.1, j + 0.5 + i * 0.1, 100 * MB, 110 * MB, 100 * MB)
            for j, n in enumerate("ab")
        ]
        workers.append(Worker(wid, 10 + i, T0, records=recs))
    workers[1].records[0][protocol.OUTCOME] = "failed"
    workers[0].records.append(record("t.py::only_here", 5.0, 5.5))
    report = make(workers, methods={"rss": True, "peak": True})
    tests = report["tests"]
    assert sorted(tests) == ["t.py::a", "t.py::b", "t.py::only_here"]
    a = tests["t.py::a"]
    assert [(x["attempt"], x["worker"], x["outcome"]) for x in a["executions"]] == [
        (1, "gw0", "passed"),
        (2, "gw1", "failed"),
    ]
    assert a["outcome"] == "failed"  # the most severe of executions that are not reruns
    assert a["duration"] == pytest.approx(1.0) and a["call_time"] == pytest.approx(1.0)
    assert a["start"] == pytest.approx(T0)
    assert a["memory"]["peak_mb"] == pytest.approx(110.0)
    assert "executions" not in tests["t.py::only_here"]
    assert report["workers"]["gw0"]["tests"] == 3 and report["workers"]["gw1"]["tests"] == 2
    assert report["session"]["total_tests"] == 3


def test_rerun_attempts_of_one_protocol_call():
    """pytest-rerunfailures: the attempts the plugin put in EXTRA become executions; the
    entry's times are their sums and its outcome the last attempt's."""
    rec = record("t.py::flaky", 0.0, 0.3)
    rec[protocol.SETUP], rec[protocol.CALL], rec[protocol.TEARDOWN] = 0.01, 0.1, 0.0
    rec[protocol.EXTRA] = {
        "attempts": [
            ["rerun", 0.01, 0.1, 0.0, T0],
            ["rerun", 0.01, 0.05, 0.0, T0 + 0.11],
            ["passed", 0.01, 0.1, 0.0, T0 + 0.17],
        ]
    }
    t = make([Worker("main", 1, T0, records=[rec])])["tests"]["t.py::flaky"]
    assert [x["outcome"] for x in t["executions"]] == ["rerun", "rerun", "passed"]
    assert [x["attempt"] for x in t["executions"]] == [1, 2, 3]
    assert t["outcome"] == "passed"
    assert t["setup_time"] == pytest.approx(0.03) and t["call_time"] == pytest.approx(0.25)
    assert t["duration"] == pytest.approx(0.28)


def test_subtests_counted():
    rec = record("t.py::sub", 0.0, 0.3, outcome="failed")
    rec[protocol.EXTRA] = {"subtests": [2, 1, 0]}
    t = make([Worker("main", 1, T0, records=[rec])])["tests"]["t.py::sub"]
    assert t["subtests"] == {"passed": 2, "failed": 1, "skipped": 0}
    assert t["outcome"] == "failed"


def test_crashed_test_keeps_its_setup_time():
    """Issue 20 item 7: a crash with pytest's setup duration keeps it; the call had the rest."""
    w = Worker("gw0", 1, T0, records=[record("t.py::a", 0.0, 1.0)])
    crash = {"nodeid": "t.py::b", "worker": "gw0", "time": T0 + 3.0, "start": T0 + 1.0}
    t = make([w], crashed=[{**crash, "setup": 0.25}])["tests"]["t.py::b"]
    assert t["outcome"] == "crashed"
    assert t["setup_time"] == pytest.approx(0.25) and t["call_time"] == pytest.approx(1.75)
    assert t["duration"] == pytest.approx(2.0)
    rerun = make([w], crashed=[{**crash, "rerun": True}])["tests"]["t.py::b"]
    assert rerun["outcome"] == "rerun" and rerun["setup_time"] is None


def test_crash_then_rerun_elsewhere_is_one_entry():
    """Under -n 2, a test whose worker crashed and that pytest-rerunfailures ran again on
    another worker: one entry, two executions, the outcome of the rerun."""
    w0 = Worker("gw0", 1, T0, records=[record("t.py::a", 0.0, 1.0)])
    w1 = Worker("gw1", 2, T0, records=[record("t.py::b", 4.0, 4.5)])
    crash = {"nodeid": "t.py::b", "worker": "gw0", "time": T0 + 3.0, "rerun": True}
    t = make([w0, w1], crashed=[crash])["tests"]["t.py::b"]
    assert [(x["outcome"], x["worker"]) for x in t["executions"]] == [
        ("rerun", "gw0"),
        ("passed", "gw1"),
    ]
    assert t["outcome"] == "passed"
    assert t["duration"] == pytest.approx(2.5)


def test_one_execution_keeps_its_plain_key():
    w0 = Worker("gw0", 1, T0, records=[record("t.py::a", 0.0, 0.5)])
    w1 = Worker("gw1", 2, T0, records=[record("t.py::b", 0.0, 0.5)])
    assert sorted(make([w0, w1])["tests"]) == ["t.py::a", "t.py::b"]


# --------------------------------------------------------------------------- compare, merge


def _report(tests: dict, label=None) -> dict:
    workers = [Worker("main", 1, T0, records=[])]
    for i, (nodeid, (dur, delta)) in enumerate(tests.items()):
        rss0 = int(100 * MB)
        workers[0].records.append(
            record(nodeid, i, i + dur, rss0, rss0, rss0 + int(delta * MB), cpu=dur / 2)
        )
    report = make(workers, methods={"rss": True, "peak": True})
    if label:
        report["session"]["label"] = label
    return report


def test_compare_needs_both_thresholds():
    base = _report({"t::slow": (1.0, 0.0), "t::noise": (0.01, 0.0), "t::leak": (0.1, 1.0)})
    cur = _report({"t::slow": (1.5, 0.0), "t::noise": (0.03, 0.0), "t::leak": (0.1, 30.0)})
    cmp = analysis.compare(base, cur)
    got = sorted((c.test, c.metric.name) for c in cmp.regressions)
    # noise: +200 % but only +20 ms, under the 50 ms floor
    assert got == [
        ("t::leak", "memory_delta_mb"),
        ("t::leak", "memory_growth_mb"),
        ("t::slow", "duration"),
    ]
    assert cmp.compared == 3 and not cmp.improvements


def test_compare_new_gone_and_outcome_changes():
    base = _report({"t::a": (0.1, 0.0), "t::gone": (0.1, 0.0)})
    cur = _report({"t::a": (0.1, 0.0), "t::new": (0.1, 0.0)})
    cur["tests"]["t::a"]["outcome"] = "failed"
    cmp = analysis.compare(base, cur)
    assert cmp.new == ["t::new"] and cmp.gone == ["t::gone"]
    assert cmp.outcome_changes == [("t::a", "passed", "failed")] and cmp.compared == 0


def test_merge_is_associative_and_valid():
    a = _report({"t::a": (0.1, 0.0)}, "a")
    b = _report({"t::b": (0.2, 1.0)}, "b")
    c = _report({"t::a": (0.3, 2.0)}, "c")
    once = analysis.merge([(None, r, f"{r['session']['label']}.json") for r in (a, b, c)])
    ab = analysis.merge([(None, a, "a.json"), (None, b, "b.json")])
    twice = analysis.merge([(None, ab, "ab.json"), (None, c, "c.json")])
    assert once["tests"] == twice["tests"] and once["summary"] == twice["summary"]
    assert sorted(once["tests"]) == ["a::t::a", "b::t::b", "c::t::a"]
    assert once["summary"] == summarize(once["tests"])
    assert first_problem(once) is None and not list(_JS.iter_errors(once))
    analysis.check_report(once, "once")
    with pytest.raises(analysis.ReportError, match="comes from both"):
        analysis.merge([(None, a, "a.json"), (None, a, "again.json")])


def test_record_positions_agree_with_the_protocol():
    from pytest_perfmon.monitor import record as record_layout

    assert (
        record_layout.RECORD_FIELDS == protocol.RECORD_FIELDS
        and record_layout.N_FIELDS == protocol.N_FIELDS
    )
    for name in record_layout.RECORD_FIELDS:
        assert (
            getattr(record_layout, name.upper())
            == getattr(protocol, name.upper())
            == record_layout.RECORD_FIELDS.index(name)
        )


def test_concurrent_peak_names_the_running_test_of_each_worker():
    rec = record("t.py::a", 0.0, 1.0)
    rec[protocol.TEARDOWN] = None
    rec[protocol.CALL] = 0.9  # durations end at 0.9; the record (the test's protocol) at 1.0
    w0 = Worker("gw0", 1, T0, records=[rec])
    w1 = Worker("gw1", 2, T0, records=[record("t.py::b", 0.0, 0.5), record("t.py::c", 1.5, 2)])
    data = RunData(sample_interval=INTERVAL)
    data.workers = {"gw0": w0, "gw1": w1}
    data.concurrent_peak = (T0 + 0.95, int(300 * MB), {"gw0": int(200 * MB), "gw1": int(MB)})
    report = build(data, {"start": T0, "stop": T0 + 3}, None)
    assert report["concurrent_memory_peak"]["workers"] == {
        "gw0": {"rss_mb": 200.0, "test": "t.py::a"},
        "gw1": {"rss_mb": 1.0, "test": None},  # between its tests
    }


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "1", True, [1]])
def test_extra_figures_that_are_not_finite_amounts_never_reach_the_report(bad):
    """The wire checks only EXTRA's shape: a broken client's NaN, infinity or string in it must
    not make the report invalid JSON (or stop the collector from writing it)."""
    import json

    from pytest_perfmon.monitor.report import dumps

    rec = record("t.py::a", 0.0, 0.5, 100, 300, 200, cpu=0.25)
    limit = {"metric": "call", "limit": bad, "value": bad, "action": "fail", "how": "x"}
    rec[protocol.EXTRA] = {
        "children_cpu": bad,
        "shared_setup": bad,
        "limits": [limit],
        "fixtures": [["f", "module", "t.py:1", "setup", bad], ["g", bad, None, "setup", 0.1]],
    }
    w = Worker("main", 42, T0, records=[rec])
    w.boundary_methods = {"rss": True, "peak": True, "children": True}
    data = RunData(sample_interval=INTERVAL)
    data.workers["main"] = w
    report = build(data, {"start": T0, "stop": T0 + 10, "exit_status": 0}, None)

    def refuse(name):
        raise AssertionError(f"{name} in the report")

    json.loads(dumps(report), parse_constant=refuse)  # NaN / Infinity never written
    assert not list(_JS.iter_errors(report))
    t = report["tests"]["t.py::a"]
    assert "limits" not in t and t["shared_setup_time"] == 0.0
    assert report["fixtures"] == []


def test_the_json_text_has_one_line_per_test_as_json_writes_each():
    import json

    from pytest_perfmon.monitor.files import dumps

    tests = {
        't.py::a[é-\\n-"]': {"duration": 0.1, "memory": {"peak_mb": 1.5, "x": None}, "ok": True},
        "t.py::b": {"duration": 1e-07, "outcome": "passed", "values": [1, 2.5, "z"]},
    }
    report = {"schema_version": 1, "tests": tests, "session": {"a": [1, {"b": 2}]}}
    text = dumps(report)
    assert json.loads(text) == report
    lines = text.split("\n")
    for nodeid, entry in tests.items():
        key, value = (json.dumps(v, ensure_ascii=False) for v in (nodeid, entry))
        assert f"    {key}: {value}" in lines or f"    {key}: {value}," in lines
    # json's own text for every kind of value, the ones json.loads cannot tell apart included
    odd = {"nan": float("nan"), "inf": [float("inf"), -float("inf"), -0.0, 5e-324, 10**30]}
    odd["keys"] = {3: "int", 2.5: "float", True: "bool", None: "null"}
    text = dumps({"tests": {"t.py::odd": odd}})
    assert f"    {json.dumps('t.py::odd')}: {json.dumps(odd)}\n" in text
