"""--perf-schedule: the xdist scheduler in a model of xdist's loop (every test once, longest
first, LPT-close makespans, groups kept, the memory budget at every instant, crashes, steals),
then end to end with real xdist workers, a real report and a real history store."""

from __future__ import annotations

import json
import os
import random
import re
import sys

import pytest
from conftest import RUN_TIMEOUT, need_history
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_perfmon import _schedule as S
from pytest_perfmon._plan import Plan, PlanError, make_plan, report_data
from pytest_perfmon.monitor import predict as P
from sched_sim import Sim

xdist_scheduler = pytest.importorskip("xdist.scheduler", reason="pytest-xdist is a test dependency")


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
    return S.PerfScheduling(workers, dist, inner, planner, budget, said.append), said


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
    bound = max(P.lpt(durs, 4))
    assert makespan <= bound * 1.1, (makespan, bound)


def test_without_skew_as_balanced_as_xdist():
    rng = random.Random(5)
    durs = [rng.uniform(0.01, 0.05) for _ in range(400)]
    ids = _ids(len(durs))
    sched, _ = _sched(ids, _plan(durs), workers=3)
    sim = Sim(sched, ids, durs, [0.0] * len(durs))
    makespan = sim.run(3)
    _check_complete(sim, len(durs))
    assert makespan <= max(P.lpt(durs, 3)) * 1.05 + 0.01


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
    assert makespan <= max(P.lpt(actual, 2)) * 1.15, (makespan, max(P.lpt(actual, 2)))


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
            where.setdefault(S.group_key(dist, ids[i]), set()).add(node.name)
    assert all(len(w) == 1 for w in where.values()), where
    totals = {}
    for i, nodeid in enumerate(ids):
        key = S.group_key(dist, nodeid)
        totals[key] = totals.get(key, 0.0) + durs[i]
    first = min((r for node in sim.nodes for r in node.ran), key=lambda r: r[1])
    assert S.group_key(dist, ids[first[0]]) == max(totals, key=totals.get)


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
    assert S.group_key(dist, nodeid) == kind._split_scope(None, nodeid)


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


def test_a_crashed_worker_gives_back_its_tests():
    durs = [0.02] * 80
    ids = _ids(80)
    sched, _ = _sched(ids, _plan(durs), workers=2)
    sim = Sim(sched, ids, durs, [0.0] * 80)
    sim.run(2, crash_at=0.3)
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
    dist=st.sampled_from(S.MODES),
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
