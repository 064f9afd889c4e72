"""--perf-schedule: the xdist scheduler in a model of xdist's loop (every test once, longest
first, LPT-close makespans, groups kept, the memory budget at every instant, crashes, steals),
then end to end with real xdist workers, a real report and a real history store."""

from __future__ import annotations

import json
import os
import random
import re

import pytest
from helpers import HISTORY_MISSING, need_history, need_installed, shared_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_perfmon import _schedule as schedule
from pytest_perfmon._schedule_inputs import Plan, PlanError, make_plan, report_data
from pytest_perfmon.monitor import predict as prediction
from sched_sim import Sim

xdist_scheduler = pytest.importorskip("xdist.scheduler", reason="pytest-xdist is a test dependency")

if not HISTORY_MISSING:
    # The tests that write a store in this process import SQLAlchemy inside pytester, which
    # gives sys.modules back as it found it after each test: a second import of SQLAlchemy's
    # compiled modules in one process breaks ("'InternalTraversal' object is not callable").
    # Imported once, here, it stays.
    from pytest_perfmon.monitor.history import store  # noqa: F401


def _plan(durations, extras=None, base=0.0) -> Plan:
    n = len(durations)
    return Plan(list(durations), list(extras or [0.0] * n), base, 0, "test")


def _sched(collection, plan, dist="load", budget=None, workers=2, said=None):
    said = [] if said is None else said

    def planner(ids):
        assert list(ids) == list(collection)
        if plan is None:
            raise PlanError("no history for any of these tests")
        return plan

    inner = Inner()
    return schedule.PerfScheduling(workers, dist, inner, planner, budget, said.append), said


class Inner:
    """Stands in for xdist's scheduler only to see that calls are forwarded to it."""

    def __init__(self) -> None:
        self.calls: list = []
        self.nodes: list = []
        self.tests_finished = False
        self.has_pending = False

    def __getattr__(self, name):
        return lambda *a: self.calls.append((name, a))


def _ids(n: int, prefix: str = "t.py::test_") -> list:
    return [f"{prefix}{i}" for i in range(n)]


def _check_complete(sim: Sim, n: int) -> None:
    assert sorted(sim.completed) == list(range(n)), "a test lost or run twice"
    assert sim.sched.tests_finished
    assert all(node.done or node.dead for node in sim.nodes), "a worker left running"


# --------------------------------------------------------------------------- the model


def test_skewed_suite_longest_first_near_the_lpt_bound():
    """100 tests of 0.1 s, then 2 of 5 s collected last, 4 workers (the issue's benchmark)."""
    durs = [0.1] * 100 + [5.0] * 2
    ids = _ids(len(durs))
    sched, _ = _sched(ids, _plan(durs), workers=4)
    sim = Sim(sched, ids, durs, [0.0] * len(durs))
    makespan = sim.run(4)
    _check_complete(sim, len(durs))
    firsts = {min(node.ran, key=lambda r: r[1])[0] for node in sim.nodes}
    assert {100, 101} <= firsts, "the 5 s tests are not the first of their workers"
    bound = max(prediction.lpt(durs, 4))
    assert makespan <= bound * 1.1, (makespan, bound)


def test_without_skew_as_balanced_as_xdist():
    rng = random.Random(5)
    durs = [rng.uniform(0.01, 0.05) for _ in range(400)]
    ids = _ids(len(durs))
    sched, _ = _sched(ids, _plan(durs), workers=3)
    sim = Sim(sched, ids, durs, [0.0] * len(durs))
    makespan = sim.run(3)
    _check_complete(sim, len(durs))
    assert makespan <= max(prediction.lpt(durs, 3)) * 1.05 + 0.01


def test_wrong_predictions_are_evened_out_by_stealing():
    """All predicted equal, but the first chunk one worker gets is 20x slower: the idle worker
    steals the tail of that chunk instead of waiting."""
    durs = [0.01] * 200
    actual = [0.2 if i < 40 and i % 2 == 0 else 0.01 for i in range(200)]
    ids = _ids(200)
    sched, _ = _sched(ids, _plan(durs), workers=2)
    sim = Sim(sched, ids, actual, [0.0] * 200)
    makespan = sim.run(2)
    _check_complete(sim, 200)
    assert makespan <= max(prediction.lpt(actual, 2)) * 1.15, (
        makespan,
        max(prediction.lpt(actual, 2)),
    )


@pytest.mark.parametrize("dist", ["loadscope", "loadfile", "loadgroup"])
def test_groups_stay_on_one_worker_and_go_out_by_their_total(dist):
    ids, durs = [], []
    for f in range(6):
        for c in range(2):
            for t in range(3):
                nodeid = f"f{f}.py::C{c}::test_{t}"
                ids.append(nodeid + (f"@g{f % 3}" if dist == "loadgroup" else ""))
                durs.append(0.01 * (f + 1) * (t + 1))
    sched, _ = _sched(ids, _plan(durs), dist=dist, workers=3)
    sim = Sim(sched, ids, durs, [0.0] * len(ids))
    sim.run(3)
    _check_complete(sim, len(ids))
    where = {}
    for node in sim.nodes:
        for i, _, _ in node.ran:
            where.setdefault(schedule.group_key(dist, ids[i]), set()).add(node.name)
    assert all(len(w) == 1 for w in where.values()), where
    totals = {}
    for i, nodeid in enumerate(ids):
        key = schedule.group_key(dist, nodeid)
        totals[key] = totals.get(key, 0.0) + durs[i]
    first = min((r for node in sim.nodes for r in node.ran), key=lambda r: r[1])
    assert schedule.group_key(dist, ids[first[0]]) == max(totals, key=totals.get)


@pytest.mark.parametrize(
    "nodeid",
    [
        "a/test_b.py::test_c",
        "a/test_b.py::C::test_c[1-x]",
        "a/__init__.py::a.f",
        "a/test_b.py::test_c[x@y]",
        "a/test_b.py::test_c[1]@grp",
        "a/test_b.py::C::test_c@grp",
    ],
)
@pytest.mark.parametrize("dist", ["loadscope", "loadfile", "loadgroup"])
def test_group_key_is_xdists_own(dist, nodeid):
    kind = {
        "loadscope": xdist_scheduler.LoadScopeScheduling,
        "loadfile": xdist_scheduler.LoadFileScheduling,
        "loadgroup": xdist_scheduler.LoadGroupScheduling,
    }[dist]
    assert schedule.group_key(dist, nodeid) == kind._split_scope(None, nodeid)


def test_memory_budget_holds_at_every_instant_and_heavy_tests_wait():
    # baseline 100 MB x 3 workers; 4 tests of +400 MB; budget 1100: one heavy at a time
    durs = [0.05] * 30 + [0.5] * 4
    extras = [5.0] * 30 + [400.0] * 4
    ids = _ids(len(durs))
    sched, said = _sched(ids, _plan(durs, extras, base=100.0), budget=1100.0, workers=3)
    sim = Sim(sched, ids, durs, extras)
    sim.run(3)
    _check_complete(sim, len(durs))
    assert max(total for total, _ in sim.max_concurrent_extra) <= 1100 - 300
    assert not said, said


def test_a_test_over_the_budget_alone_runs_alone_with_one_warning():
    durs = [0.05] * 20 + [0.3]
    extras = [10.0] * 20 + [900.0]
    ids = _ids(len(durs))
    sched, said = _sched(ids, _plan(durs, extras, base=50.0), budget=500.0, workers=2)
    sim = Sim(sched, ids, durs, extras)
    sim.run(2)
    _check_complete(sim, len(durs))
    for total, running in sim.max_concurrent_extra:
        if 20 in running:
            assert running == [20], running
        else:
            assert total <= 400
    assert len(said) == 1 and ids[20] in said[0] and "runs alone" in said[0], said


def test_workers_over_the_budget_alone_are_said_once():
    """Two workers whose baselines alone are over --perf-max-memory: said in one line (it was
    one warning per test, each saying a test needed 0 MB more than the budget allows). Tests
    predicted to need no memory still run side by side, two that need some never at once."""
    durs = [0.05] * 20
    extras = [0.0] * 18 + [5.0, 5.0]
    ids = _ids(len(durs))
    sched, said = _sched(ids, _plan(durs, extras, base=45.0), budget=50.0, workers=2)
    sim = Sim(sched, ids, durs, extras)
    sim.run(2)
    _check_complete(sim, len(durs))
    assert said == [
        "perfmon: warning: 2 worker(s) of 45 MB each are over --perf-max-memory (50 MB) "
        "before any test: the budget cannot be held (two tests predicted to need memory never "
        "run at once on its host)"
    ], said
    together = [running for _, running in sim.max_concurrent_extra if len(running) > 1]
    assert together and not any({18, 19} <= set(running) for running in together), together


@pytest.mark.parametrize("rerun", [False, True], ids=["reported", "given-back"])
def test_a_crashed_worker_gives_back_its_tests(rerun):
    durs = [0.02] * 80
    ids = _ids(80)
    sched, _ = _sched(ids, _plan(durs), workers=2)
    sim = Sim(sched, ids, durs, [0.0] * 80)
    sim.run(2, crash_at=0.3, rerun=rerun)
    _check_complete(sim, 80)


def test_no_plan_hands_everything_to_xdists_scheduler():
    ids = _ids(3)
    sched, said = _sched(ids, None)
    nodes = [object(), object()]
    for n in nodes:
        sched.add_node(n)
        sched.add_node_collection(n, ids)
    sched.schedule()
    sched.mark_test_complete(nodes[0], 1, 0.1)
    names = [c[0] for c in sched.inner.calls]
    assert names == ["add_node", "add_node_collection"] * 2 + ["schedule", "mark_test_complete"]
    assert said == [
        "perfmon: warning: --perf-schedule: no history for any of these tests; "
        "xdist schedules this run"
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(
        st.tuples(st.floats(0.001, 1.0), st.floats(0.0, 300.0), st.floats(0.5, 2.0)),
        min_size=1,
        max_size=40,
    ),
    workers=st.integers(1, 4),
    dist=st.sampled_from(schedule.MODES),
    budget=st.one_of(st.none(), st.floats(150.0, 1500.0)),
    files=st.integers(1, 5),
)
def test_any_suite_every_test_once_no_deadlock_budget_held(data, workers, dist, budget, files):
    ids = [f"f{i % files}.py::C{i % 2}::test_{i}" for i in range(len(data))]
    durs = [d for d, _, _ in data]
    extras = [x for _, x, _ in data]
    actual = [d * k for d, _, k in data]  # predictions are off by up to 2x either way
    plan = _plan(durs, extras, base=30.0)
    sched, said = _sched(ids, plan, dist=dist, budget=budget, workers=workers)
    sim = Sim(sched, ids, actual, extras)
    sim.run(workers, limit=1e4)
    _check_complete(sim, len(ids))
    if budget is not None:
        room = budget - 30.0 * workers
        alone = {i for i, x in enumerate(extras) if x > room}
        for total, running in sim.max_concurrent_extra:
            heavy = alone & set(running)
            if heavy:  # one over-budget test at a time, beside tests that hold nothing
                assert len(heavy) == 1, running
                assert total - extras[heavy.pop()] <= 1e-9, (total, running)
            else:
                assert total <= room + 1e-9, (total, running)


# --------------------------------------------------------------------------- plans


def _entry(duration: float, start: float, peak: float, worker: str) -> dict:
    mem = {"start_mb": start, "peak_mb": peak, "end_mb": start, "delta_mb": 0.0}
    return {
        "duration": duration,
        "setup_time": 0.0,
        "call_time": duration,
        "teardown_time": 0.0,
        "memory": mem,
        "cpu_percent": 50.0,
        "outcome": "passed",
        "worker": worker,
        "pid": 100,
    }


def test_report_data_and_plan(tmp_path):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "golden", "current.json"), encoding="utf-8") as f:
        report = json.load(f)
    report["tests"] = {
        "t.py::test_a": _entry(2.0, 40.0, 140.0, "gw0"),
        "t.py::test_b [gw0]": _entry(1.0, 50.0, 60.0, "gw0"),
        "t.py::test_b [gw1]": _entry(3.0, 44.0, 64.0, "gw1"),
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    data = report_data(str(path))
    assert data["tests"] == {"t.py::test_a": [2.0, 140.0], "t.py::test_b": [2.0, 62.0]}
    assert data["baseline_mb"] == 42.0  # median of the workers' lowest start: 40 and 44
    plan = make_plan(["t.py::test_b", "t.py::test_a", "u.py::test_new"], data)
    assert plan.durations == [2.0, 2.0, 2.0] and plan.unknown == 1
    assert plan.extras == [20.0, 98.0, 59.0]
    for bad, message in [
        ("[1, 2]", "not a pytest-perfmon report (no tests object)"),
        ('{"tests": [1]}', "not a pytest-perfmon report (no tests object)"),
        ('{"tests": {"a": {"duration": "x", "worker": []}, "b": 3}}', "has no measured tests"),
        ('{"tests": {"a": {"duration": 1, "worker": [], "memory": {"start_mb": 1}}}}', None),
        ("{", "not JSON (Expecting property name"),
    ]:
        path.write_text(bad)
        if message is None:
            assert report_data(str(path))["baseline_mb"] == 1.0
            continue
        with pytest.raises(PlanError) as err:
            report_data(str(path))
        assert str(err.value) == f"{path}: {message}" or message in str(err.value), err.value
    with pytest.raises(PlanError, match="no history for any of these 1 tests"):
        make_plan(["v.py::test_x"], {"tests": {}, "baseline_mb": None})


# --------------------------------------------------------------------------- real xdist runs

LOGGER = """
import os, time
import pytest

@pytest.fixture(autouse=True)
def _log_run(request):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    start = time.monotonic()
    yield
    with open(os.environ["SCHED_LOG"], "a") as f:
        f.write(f"{start} {time.monotonic()} {worker} {request.node.nodeid}\\n")
"""

SKEWED = """
import time
import pytest

@pytest.mark.parametrize("i", range(12))
def test_short(i):
    time.sleep(0.05)

@pytest.mark.parametrize("i", range(2))
def test_long(i):
    time.sleep(0.6)
"""


class Log:
    def __init__(self, path) -> None:
        self.path = path

    def rows(self) -> list:
        out = []
        for line in self.path.read_text().splitlines():
            start, end, worker, nodeid = line.split(" ", 3)
            out.append((float(start), float(end), worker, nodeid))
        self.path.unlink()
        return sorted(out)

    def firsts(self, rows) -> dict:
        first = {}
        for _, _, worker, nodeid in rows:
            first.setdefault(worker, nodeid)
        return first


@pytest.fixture
def first_run(tmp_path_factory):
    """The first, measured run of a suite (the real monitor), made once per session for the
    tests that plan from it: they copy its report (the node ids are the same in their
    directories). Serial where the plan needs only the tests' durations, which do not depend
    on what ran them."""

    def get(files: dict, *args: str):
        run = shared_run(tmp_path_factory, files, *args, output="first.json")
        assert run.ret == 0, run.text
        return run

    return get


def _planned_from(pytester, first_run, files: dict, *args: str):
    """The suite in pytester's directory, with the first run's report as first.json."""
    pytester.makepyfile(**files)
    first = first_run(files, *args)
    (pytester.path / "first.json").write_bytes(first.path.read_bytes())
    return first


@pytest.fixture
def log(pytester, monkeypatch):
    pytester.makeconftest(LOGGER)
    path = pytester.path / "sched.log"
    monkeypatch.setenv("SCHED_LOG", str(path))
    return Log(path)


def test_report_plans_longest_first_on_real_workers(run_perf, pytester, log, first_run):
    """Planned from the run's own output path, as the README's `pytest --perf-monitor` then
    `pytest -n 4 --perf-monitor --perf-schedule=performance_metrics.json` do: the report the
    session moved aside (PATH.previous) is the one read."""
    _planned_from(pytester, first_run, {"test_skew": SKEWED})
    run = run_perf("-n", "2", "--perf-schedule=first.json", output="first.json")
    assert run.ret == 0, run.text
    assert run.report is not None and len(run.report["tests"]) == 14, run.text
    assert (pytester.path / "first.json.previous").is_file()
    assert (
        "perfmon: scheduling 14 tests longest first from first.json (14 tests), "
        "0 without data" in run.text
    )
    assert "scheduling tests via PerfScheduling" in run.text or "-v" not in run.text
    firsts = log.firsts(log.rows())
    assert sorted(firsts.values()) == [
        "test_skew.py::test_long[0]",
        "test_skew.py::test_long[1]",
    ], firsts


def test_history_plans_longest_first(run_perf, pytester, log, first_run, db):
    history_url = db  # a new store on SQLite and on a real PostgreSQL (conftest's pg)
    from pytest_perfmon.monitor import history

    # The suite's first, measured run (first_run's, shared), stored as its monitor stores it:
    # by the collector's own call. (The monitor's recording into both kinds of store, end to
    # end: tests/test_history_store.py and tests/test_history_concurrency.py.)
    pytester.makepyfile(test_skew=SKEWED)
    first = first_run({"test_skew": SKEWED})
    assert history.record_run(history_url, first.report) is None
    # "=": pytest takes a lone existing path for a test path when it finds its rootdir
    run = run_perf("-n", "2", "--perf-schedule", f"--perf-history={history_url}", monitor=False)
    assert run.ret == 0, run.text
    assert "longest first from the history (1 run(s)), 0 without data" in run.text, run.text
    firsts = log.firsts(log.rows())
    assert sorted(firsts.values()) == [
        "test_skew.py::test_long[0]",
        "test_skew.py::test_long[1]",
    ], firsts


GROUPED_FILES = {
    "test_a": "import time, pytest\n"
    "@pytest.mark.xdist_group('a')\n"
    "@pytest.mark.parametrize('i', range(4))\n"
    "def test_a(i):\n    time.sleep(0.03)\n",
    "test_b": "import time, pytest\n"
    "@pytest.mark.xdist_group('b')\n"
    "@pytest.mark.parametrize('i', range(4))\n"
    "def test_b(i):\n    time.sleep(0.03)\n",
    "test_c": "import time, pytest\n"
    "@pytest.mark.xdist_group('c')\n"
    "@pytest.mark.parametrize('i', range(4))\n"
    "def test_c(i):\n    time.sleep(0.25)\n",
}


# loadgroup is checked in the model above: with pytest 9.2, xdist 3.8's workers no longer get
# their "@group" suffix into the node ids (they set item._nodeid, which pytest now ignores), so
# xdist itself does not group, and neither do we: we group by the node ids xdist sends.
@pytest.mark.parametrize("dist", ["loadscope", "loadfile"])
def test_groups_kept_heaviest_first_on_real_workers(run_perf, pytester, log, dist):
    """Planned from a report of the tests' durations made here, as the crash test's plan is
    (it was a real first run of its own, 0.16 CPU-s to learn the sleeps' lengths): planning
    from a real run's report is test_report_plans_longest_first_on_real_workers's."""
    from helpers import make_report  # the plan's input

    pytester.makepyfile(**GROUPED_FILES)
    durations = {f"test_{g}.py::test_{g}[{i}]": 0.03 for g in "ab" for i in range(4)}
    durations.update({f"test_c.py::test_c[{i}]": 0.25 for i in range(4)})
    (pytester.path / "first.json").write_text(json.dumps(make_report(0, durations)))
    run = run_perf("-n", "2", "--dist", dist, "--perf-schedule=first.json", monitor=False)
    assert run.ret == 0, run.text
    # every test planned from its duration (the report's node ids are the collected ones)
    assert "12 tests longest first from first.json (12 tests), 0 without data" in run.text, run.text
    rows = log.rows()
    where: dict = {}
    for _, _, worker, nodeid in rows:
        where.setdefault(nodeid.split("::")[0], set()).add(worker)
    assert all(len(w) == 1 for w in where.values()), where
    (c_worker,) = where["test_c.py"]
    assert log.firsts(rows)[c_worker].startswith("test_c.py::"), rows[:3]


#: What a heavy test holds, MB: far above what a light one does (0.1 MB) and a worker's
#: baseline's spread between its tests (0.01 MB); touching it is most of the heavy tests' CPU
#: (80 MB was twice that, for nothing: the budgets below are multiples of it).
HEAVY_MB = 40

HEAVY = f"""
import time
import pytest

@pytest.mark.parametrize("i", range(8))
def test_light(i):
    time.sleep(0.05)

@pytest.mark.parametrize("i", range(3))
def test_heavy(i):
    block = bytearray({HEAVY_MB} * 1024 * 1024)
    for k in range(0, len(block), 4096):
        block[k] = 1
    time.sleep(0.4)
    del block
"""


def _heavy_figures(report: dict) -> tuple:
    starts: dict = {}
    extra = []
    for t in report["tests"].values():
        w = t["worker"]
        starts[w] = min(starts.get(w, t["memory"]["start_mb"]), t["memory"]["start_mb"])
    base = prediction.median(starts.values())
    for nodeid, t in report["tests"].items():
        if "test_heavy" in nodeid:
            extra.append(t["memory"]["peak_mb"] - base)
    return base, min(extra), max(extra)


def _overlaps(rows, name: str) -> list:
    heavy = [(s, e) for s, e, _, n in rows if name in n]
    return [(a, b) for a in heavy for b in heavy if a < b and b[0] < a[1]]


@pytest.mark.parametrize("share", [1.5, 0.5], ids=["one-heavy-fits", "over-alone"])
def test_memory_budget_keeps_heavy_tests_apart(run_perf, pytester, log, first_run, share):
    # two workers: the budget counts each worker's baseline, read from their first tests
    first = _planned_from(pytester, first_run, {"test_mem": HEAVY}, "-n", "2")
    base, low, high = _heavy_figures(first.report)
    assert low > HEAVY_MB * 0.6, (
        f"the {HEAVY_MB} MB tests were measured at {low:.0f} MB above {base:.0f} MB"
    )
    budget = 2 * base + share * high
    run = run_perf(
        "-n",
        "2",
        "--perf-schedule=first.json",
        f"--perf-max-memory={budget:.0f}M",
        monitor=False,
    )
    assert run.ret == 0, run.text
    assert f"memory budget {budget:.0f} MB" in run.text, run.text
    rows = log.rows()
    assert len(rows) == 11
    assert not _overlaps(rows, "test_heavy"), rows
    alone = re.findall(r"perfmon: warning: (\S+) is predicted .* it runs alone", run.text)
    if share < 1:
        assert sorted(alone) == [f"test_mem.py::test_heavy[{i}]" for i in range(3)], run.text
        for s, e, _, n in rows:
            if "test_heavy" in n:  # nothing that holds memory runs beside it
                assert all(
                    not (s2 < e and s < e2)
                    for s2, e2, _, n2 in rows
                    if n2 != n and "test_heavy" in n2
                )
    else:
        assert not alone, run.text


#: 14 tests that pass and one that fails: no plan is made, so no test need take time
FAILING = """
import pytest

@pytest.mark.parametrize("i", range(14))
def test_passes(i):
    pass

def test_fails():
    assert False
"""


def test_faults_one_line_and_the_outcome_unchanged(run_perf, pytester, tmp_path, capsys):
    need_history()
    from helpers import make_report  # a report of other tests, imported: a store without ours
    from pytest_perfmon.monitor import cli

    pytester.makepyfile(test_skew=FAILING)
    (pytester.path / "corrupt.json").write_text('{"tests": ')
    db = str(tmp_path / "other.db")
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(make_report(0, {"other/test_other.py::test_o": 0.01})))
    assert cli.main(["history", "import", str(seed), "--db", db]) == 0
    capsys.readouterr()
    cases = [
        (["--perf-schedule=corrupt.json"], "corrupt.json: not JSON"),
        (["--perf-schedule", f"--perf-history={db}"], "no history for any of these 15 tests"),
        (
            ["--perf-schedule", f"--perf-history={tmp_path / 'new.db'}"],
            "the history store has no runs yet",
        ),
        (
            ["--perf-schedule", "--perf-history=postgresql://perfmon@127.0.0.1:1/x"],
            "perfmon@127.0.0.1:1/x: OperationalError: connection failed",
        ),
    ]
    # The fault is the controller's (the planner's source), before any test is handed out:
    # one worker shows it; the first case, with two, that xdist's own hand-out takes over.
    for i, (args, message) in enumerate(cases):
        run = run_perf("-n", "2" if i == 0 else "1", "test_skew.py", *args, monitor=False)
        assert run.ret == 1, run.text  # the failing test, as without --perf-schedule
        warnings = [x for x in run.text.splitlines() if x.startswith("perfmon: warning")]
        assert len(warnings) == 1 and message in warnings[0], run.text
        assert "xdist schedules this run" in warnings[0]
        assert "14 passed" in run.text and "Traceback" not in run.text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--perf-schedule", "tests"], "--perf-schedule got 'tests': give a report as "),
        (["--perf-schedule"], "--perf-schedule plans from a history store"),
        (["--perf-max-memory=1G"], "--perf-max-memory works with --perf-schedule"),
        (["--perf-schedule=r.json", "--perf-max-memory=12X"], "--perf-max-memory: not a size"),
    ],
)
def test_usage_errors(pytester, inprocess, args, message):
    """In-process: the options are checked before xdist starts a worker."""
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-n", "2", *args)
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    err = res.stderr.str().strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "--perf-schedule works with pytest-xdist's -n N: not used"),
        # one worker: the controller says it, whatever the number (each runs every test)
        (["-n", "1", "--dist", "each"], "--perf-schedule does not apply to --dist each"),
    ],
)
def test_where_it_does_not_apply_it_says_so(run_perf, pytester, first_run, args, message):
    _planned_from(pytester, first_run, {"test_skew": SKEWED})
    # Only the message is checked: the same tests, without their sleeps (1.8 s each run).
    pytester.makepyfile(
        test_skew=SKEWED.replace("time.sleep(0.05)", "pass").replace("time.sleep(0.6)", "pass")
    )
    run = run_perf(*args, "--perf-schedule=first.json", monitor=False)
    assert run.ret == 0, run.text
    assert message in run.text, run.text


# pytest-rerunfailures with --reruns 1 only: its crash hook (registered whatever --reruns says)
# reads sched.config.failures_db at every crash, and with --reruns 0 goes no further. With 1,
# the last crash of test_dies always goes that same way, once its one rerun is used (a second
# crash: it dies every time) or never known to the controller (then it is the first): the
# --reruns 0 case, which had a run of its own, is part of this one.
@pytest.mark.parametrize(
    "rerun, reruns", [("", 0), ("rerunfailures", 1)], ids=["plain", "reruns-1"]
)
def test_a_crashing_worker_does_not_hang_the_run(run_perf, pytester, rerun, reruns):
    """xdist replaces the worker; its other tests are handed out again (run_perf bounds the
    run by RUN_TIMEOUT: a hang fails). With pytest-rerunfailures installed, its crash hook
    reads the scheduler's ``config``, as xdist's schedulers have it: ours had none
    (INTERNALERROR, exit 3, the tests still queued never ran). With --reruns 1 the crashed
    test may be given back to the plan (mark_test_pending) and run once more."""
    from helpers import inner_addopts, make_report  # make_report: the plan's input

    if rerun:
        need_installed("pytest_rerunfailures", "pytest-rerunfailures is not installed")

    pytester.makepyfile(test_crash=SKEWED + "\ndef test_dies():\n    import os\n    os._exit(3)\n")
    durations = {f"test_crash.py::test_short[{i}]": 0.05 for i in range(12)}
    durations.update({f"test_crash.py::test_long[{i}]": 0.6 for i in range(2)})
    durations["test_crash.py::test_dies"] = 0.01
    (pytester.path / "first.json").write_text(json.dumps(make_report(0, durations)))
    env = {"PYTEST_ADDOPTS": inner_addopts(*([rerun] if rerun else []))}
    extra = [f"--reruns={reruns}"] if reruns else []
    run = run_perf("-n", "2", "--perf-schedule=first.json", *extra, monitor=False, env=env)
    assert run.ret == 1, run.text
    assert "scheduling 15 tests longest first from first.json (15 tests)" in run.text, run.text
    assert "14 passed" in run.text and "1 failed" in run.text, run.text
    # (whether pytest-rerunfailures runs the crashed test again is its own race: it knows a
    # test's reruns once the worker's note of them reached the controller, which a worker that
    # dies at the test's first line may never send; given back or not, no test is lost)
    reran = re.search(r"(\d+) rerun", run.text)
    assert reran is None or (reruns and reran.group(1) == "1"), run.text
