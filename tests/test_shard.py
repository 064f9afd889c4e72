"""--perf-shard K/N, perfmon split, predict --shards and the matrix check of perfmon merge: the
planning (pure: every test once, the same plan whatever the order, groups kept, balanced, the
memory budget), the store's choice of runs (a matrix never plans from its own runs, on SQLite
and PostgreSQL), then end to end: a matrix of three real pytest jobs (one with real xdist workers
and --perf-schedule) recording into one real SQLite store, merged and checked."""

from __future__ import annotations

import json
import os
import random
import sys

import preloaded
import pytest
from helpers import RUN_TIMEOUT, inner_addopts, need_history, validate
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_perfmon.monitor import cli, protocol
from pytest_perfmon.monitor import split as splitting

# --------------------------------------------------------------------------- the plan


def _data(durations: dict, peaks: dict | None = None, base: float | None = None) -> dict:
    peaks = peaks or {}
    tests = {t: [d, peaks.get(t)] for t, d in durations.items()}
    return {"tests": tests, "baseline_mb": base, "source": "test"}


def _skewed(n_short: int = 120, long=(6.0, 5.0, 4.0, 3.0)) -> dict:
    """A few long tests and many short ones, in files that do not sort by length."""
    rnd = random.Random(7)
    out = {}
    for i in range(n_short):
        out[f"tests/test_{'mzab'[i % 4]}{i % 9}.py::test_short_{i}"] = rnd.uniform(0.05, 0.3)
    for i, d in enumerate(long):
        out[f"tests/test_{'bzam'[i]}{i}.py::test_long_{i}"] = d
    return out


@pytest.mark.parametrize("text, expected", [("1/3", (1, 3)), (" 3 / 3 ", (3, 3)), ("1/1", (1, 1))])
def test_parse_shard(text, expected):
    assert splitting.parse_shard(text) == expected


@pytest.mark.parametrize(
    "text, words",
    [("0/3", "K must be 1 to N"), ("4/3", "K must be 1 to N"), ("x", "is not K/N"), ("1/0", "N")],
)
def test_parse_shard_refuses(text, words):
    with pytest.raises(ValueError, match=words):
        splitting.parse_shard(text)


def test_parse_time():
    assert (
        splitting.parse_time("10m") == 600
        and splitting.parse_time("90s") == 90
        and splitting.parse_time("1.5h") == 5400
    )
    assert splitting.parse_time("45") == 45
    for bad in ("", "0m", "ten", "5d"):
        with pytest.raises(ValueError):
            splitting.parse_time(bad)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 50.0), min_size=0, max_size=60),
    st.integers(1, 7),
    st.randoms(use_true_random=False),
)
def test_every_test_in_exactly_one_shard_whatever_the_order(durs, n, rnd):
    ids = [f"t{i % 5}.py::test_{i}" for i in range(len(durs))]
    known = {t: d for t, d in zip(ids, durs) if rnd.random() < 0.8}
    groups = {t: ("g" if i % 7 == 3 else None) for i, t in enumerate(ids)}
    data = _data(known)
    plan = splitting.split(ids, data, n, groups)
    shuffled = list(ids)
    rnd.shuffle(shuffled)
    again = splitting.split(
        shuffled + ids[:3], data, n, groups
    )  # order and duplicates do not matter
    assert again.digest == plan.digest
    assert [s.tests for s in again.shards] == [s.tests for s in plan.shards]
    placed = [t for s in plan.shards for t in s.tests]
    assert sorted(placed) == sorted(ids), "a test lost or in two shards"
    owners = {plan.shard_of()[t] for t in ids if groups[t] == "g"}
    assert len(owners) <= 1, "an xdist group split over shards"


@pytest.mark.parametrize("n", [3, 4])
def test_skewed_suite_within_ten_per_cent_where_a_count_split_is_far_off(n):
    durs = _skewed()
    plan = splitting.split(durs, _data(durs), n)
    assert plan.imbalance <= 1.10, [s.predicted_s for s in plan.shards]
    loads = [sum(durs[t] for t in part) for part in splitting.by_count(durs, n)]
    assert max(loads) / (sum(loads) / n) > 1.15  # what a split by count gives


def test_new_tests_spread_like_their_file_and_none_piles_up():
    known = {f"t{f}.py::test_{i}": (2.0 if f == 0 else 0.1) for f in range(3) for i in range(10)}
    new = [f"t0.py::test_new_{i}" for i in range(6)]  # 2 s each, like their file
    plan = splitting.split(list(known) + new, _data(known), 3)
    assert plan.unknown == 6
    assert plan.durations["t0.py::test_new_0"] == pytest.approx(2.0)
    counts = [sum(t in s.tests for t in new) for s in plan.shards]
    assert max(counts) <= 3, counts
    assert plan.imbalance <= 1.10


def test_no_figures_at_all_splits_by_count():
    ids = [f"t.py::test_{i}" for i in range(10)]
    plan = splitting.split(ids, {"tests": {}, "source": "nothing"}, 3)
    assert plan.by_count and [len(s.tests) for s in plan.shards] in (
        [4, 3, 3],
        [3, 3, 4],
        [3, 4, 3],
    )
    assert "split by count" in plan.source
    from pytest_perfmon.monitor import shards

    assert shards.plan_text(plan).count("split by count") == 1  # it said so twice in a row


def test_more_shards_than_tests_leaves_empty_shards():
    plan = splitting.split(["a.py::t1", "a.py::t2"], _data({"a.py::t1": 1.0, "a.py::t2": 1.0}), 4)
    assert sorted(len(s.tests) for s in plan.shards) == [0, 0, 1, 1]
    info = plan.info(4)
    assert info["k"] == 4 and info["n"] == 4 and info["total_tests"] == 2


def test_memory_budget_spreads_the_heavy_tests():
    durs = {f"t.py::test_{i}": 1.0 for i in range(8)}
    heavy = {"t.py::test_0": 500.0, "t.py::test_1": 500.0, "t.py::test_2": 500.0}
    peaks = {t: heavy.get(t, 60.0) for t in durs}
    data = _data(durs, peaks, base=50.0)
    free = splitting.split(durs, data, 3, workers=2)
    budget = 2 * 50 + 450 + 10 + 1  # two workers: one heavy test per shard at most
    plan = splitting.split(durs, data, 3, budget_mb=budget, workers=2)
    for s in plan.shards:
        assert sum(t in heavy for t in s.tests) <= 1, s.tests
        assert s.peak_mb <= budget
    assert not plan.over_budget
    assert max(s.peak_mb for s in free.shards) >= max(s.peak_mb for s in plan.shards)
    alone = splitting.split(durs, data, 3, budget_mb=200, workers=2)  # no shard can take one
    assert len(alone.over_budget) == 3


def test_a_test_over_the_budget_alone_leaves_the_shards_balanced():
    """One worker a shard, two tests each over the budget alone: they cannot be helped, but
    the light tests may run beside them (one at a time, they raise no peak). The shards a
    heavy test made over the budget took nothing else: the third had all 16 light tests
    (imbalance 2.35 where 1.03 was there to have)."""
    for heavy_s in (0.3, 1.0):
        durs = {f"t.py::test_heavy_{i}": heavy_s for i in range(2)}
        durs.update({f"t.py::test_light_{i}": 0.1 for i in range(16)})
        peaks = {t: (200.0 if "heavy" in t else 10.0) for t in durs}
        plan = splitting.split(durs, _data(durs, peaks, base=44.0), 3, budget_mb=100, workers=1)
        assert sorted(plan.over_budget) == ["t.py::test_heavy_0", "t.py::test_heavy_1"]
        shards = [s.tests for s in plan.shards]
        assert plan.imbalance is not None and plan.imbalance < 1.1, shards
        for s in plan.shards:  # the heavy ones apart; a shard without one within the budget
            assert sum("heavy" in t for t in s.tests) <= 1, shards
            if not any("heavy" in t for t in s.tests):
                assert s.peak_mb <= 100
    # units over the budget alone spread by peak, never piled where they raise no peak
    durs = {f"t.py::test_heavy_{i}": 1.0 for i in range(3)}
    durs.update({f"t.py::test_light_{i}": 0.1 for i in range(30)})
    peaks = {t: (200.0 - 10 * int(t[-1]) if "heavy" in t else 10.0) for t in durs}
    plan = splitting.split(durs, _data(durs, peaks, base=44.0), 3, budget_mb=100, workers=1)
    assert [sum("heavy" in t for t in s.tests) for s in plan.shards] == [1, 1, 1]
    # two workers a shard: two heavy units side by side take a light one without a higher
    # peak, and all the light ones went there (imbalance 1.5): the strict rule, as before
    durs = {f"t.py::test_heavy_{i}": 1.0 for i in range(3)}
    durs.update({f"t.py::test_light_{i}": 0.1 for i in range(10)})
    peaks = {t: (190.0 if "heavy" in t else 50.0) for t in durs}
    plan = splitting.split(durs, _data(durs, peaks, base=40.0), 2, budget_mb=200, workers=2)
    assert plan.imbalance == 1.0, [s.tests for s in plan.shards]


def test_a_shard_names_the_tests_over_the_memory_budget(tmp_path):
    """--perf-shard with --perf-max-memory: a test no shard can hold within the budget is
    named in one warning line (the plan went on without a word)."""
    from helpers import make_report

    names = ["test_heavy", "test_a", "test_b", "test_c"]
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_m.py").write_text("".join(f"def {n}():\n    pass\n" for n in names))
    report = make_report(0, {f"test_m.py::{n}": 0.5 for n in names})
    report["tests"]["test_m.py::test_heavy"]["memory"]["peak_mb"] = 300.0
    (tmp_path / "r.json").write_text(json.dumps(report))
    res = _pytest(
        tmp_path, "--perf-shard=1/2", "--perf-shard-from=r.json", "--perf-max-memory=100M"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    warnings = [line for line in res.stdout.splitlines() if line.startswith("perfmon: warn")]
    assert warnings == [
        "perfmon: warning: over --perf-max-memory on any shard alone: test_m.py::test_heavy"
    ], res.stdout


def test_durations_files():
    report = {
        "session": {"duration": 3.0},
        "tests": {
            "a.py::t1": {"duration": 1.0, "memory": {"peak_mb": 80.0, "start_mb": 40.0}},
            "a.py::t2 [gw1]": {"duration": 2.0, "memory": {"peak_mb": None, "start_mb": 42.0}},
            "a.py::t3": {"duration": None},
        },
        "workers": {"main": {"busy_time": 3.0}},
    }
    data = splitting.durations_data(report, "perf.json")
    assert data["tests"] == {"a.py::t1": [1.0, 80.0], "a.py::t2": [2.0, None]}
    assert data["baseline_mb"] == 40.0 and data["run_stats"] == [[1, 3.0, 3.0]]
    merged = {
        "session": {},
        "tests": {"s1::a.py::t1": {"duration": 1.5, "job": "s1"}},
        "jobs": {"s1": {"session": {"duration": 2.0}, "workers": {"gw0": {"busy_time": 1.5}}}},
    }
    assert splitting.durations_data(merged, "m.json")["tests"] == {"a.py::t1": [1.5, None]}
    split_file = {"a.py::t1": 0.5, "a.py::t2": 2}
    got = splitting.durations_data(split_file, ".test_durations")
    assert got["tests"] == {"a.py::t1": [0.5, None], "a.py::t2": [2.0, None]}
    for bad in ([], {"a": "b"}, {}, {"session": {}, "tests": {}}):
        with pytest.raises(splitting.SplitError):
            splitting.durations_data(bad, "bad.json")


def test_shard_labels_and_the_ci_run():
    assert splitting.ci_run({}) is None
    assert splitting.ci_run({"GITHUB_RUN_ID": "77"}) == "GITHUB_RUN_ID=77"
    assert splitting.ci_run({"GITHUB_RUN_ID": "77"}, {"ci_run": "mine"}) == "mine"
    labels = splitting.shard_labels(2, 3, {"CI_PIPELINE_ID": "5"}, {"team": "x"})
    assert labels == {"perf_shard": "2/3", "ci_run": "CI_PIPELINE_ID=5", "team": "x"}


def test_the_finish_message_carries_the_shard_checked():
    shard = {"k": 2, "n": 3, "source": "the history", "tests": 4, "shards": [[4, 1.0]]}
    f = protocol.parse_finish({"session": "s1", "shard": shard})
    assert f.shard == shard and f.as_session()["shard"] == shard
    assert protocol.parse_finish({"session": "s1"}).shard is None
    for bad in (
        {"k": 4, "n": 3, "source": "x", "tests": 1},
        {"k": 1, "n": 3, "source": 5, "tests": 1},
        {"k": 1, "n": 3, "source": "x"},
        {"k": 1, "n": 3, "source": "x", "tests": 1, "deep": {"a": 1}},
        "1/3",
    ):
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_finish({"shard": bad})


# --------------------------------------------------------------------------- the matrix check


def _job(k, n, tests, wall, plan="p1", not_run=(), total=None):
    shard = {
        "k": k,
        "n": n,
        "source": "x",
        "tests": len(tests),
        "plan": plan,
        "total_tests": total,
        "predicted_wall_s": wall * 0.9,
        "not_run": list(not_run),
        "shards": [[3, 1.0]] * n,
    }
    session = {"duration": wall, "timestamp": f"2026-01-01T00:00:0{k}.000000Z", "shard": shard}
    return f"s{k}", {"session": session}, {t: {"duration": wall / 2, "job": f"s{k}"} for t in tests}


def _check(*jobs):
    all_jobs = {label: job for label, job, _ in jobs}
    tests = {f"{label}::{t}": e for label, _, ts in jobs for t, e in ts.items()}
    return splitting.matrix_check(all_jobs, tests)


def test_matrix_check_of_a_good_matrix():
    m = _check(
        _job(1, 2, ["a::1", "a::2"], 4.0, total=4), _job(2, 2, ["a::3", "a::4"], 2.0, total=4)
    )
    assert m["problems"] == [] and m["missing_count"] == 0 and not m["duplicated"]
    assert m["imbalance"] == pytest.approx(4.0 / 3.0, abs=1e-3)
    assert m["critical_path"]["k"] == 1 and m["jobs"][1]["start_s"] == 1.0
    assert m["jobs"][0]["error"] == pytest.approx(1 / 0.9 - 1, abs=1e-3)


def test_matrix_check_names_what_went_wrong():
    m = _check(
        _job(1, 3, ["a::1", "a::2"], 4.0, total=6, not_run=["a::5"]),
        _job(2, 3, ["a::2", "a::3"], 2.0, plan="p2", total=6),
    )
    assert m["duplicated"] == {"a::2": ["s1", "s2"]}
    assert m["absent"] == [{"k": 3, "planned": 3}]
    assert m["missing_count"] == 3 and m["not_run"] == ["a::5"]
    text = " ".join(m["problems"])
    assert "2 different splits" in text and "without a report: 3/3" in text
    assert "3 test(s) of 6 ran in no shard" in text and "more than one shard" in text
    assert splitting.matrix_check({"x": {"session": {}}}, {}) is None  # no shards: no check


def _shard_report(k: int, n: int, tests: dict) -> dict:
    """A report of shard k/n (a copy of the golden one's shape) that ran ``tests``."""
    from pathlib import Path

    golden = Path(__file__).parent / "golden" / "current.json"
    report = json.loads(golden.read_text(encoding="utf-8"))
    entry = next(iter(report["tests"].values()))
    report["tests"] = {nodeid: dict(entry, duration=d) for nodeid, d in tests.items()}
    shard = {"k": k, "n": n, "source": "x", "tests": len(tests), "plan": f"p{n}"}
    shard.update(total_tests=4, predicted_wall_s=1.0, not_run=[], shards=[[2, 1.0]] * n)
    report["session"]["shard"] = shard
    return report


def test_compare_matches_a_shard_matrix_by_node_id():
    """A matrix planned from other figures runs a test in another shard: merged, its key is
    "s2::t.py::test_c" instead of "s1::t.py::test_c". compare matched keys, so every moved test
    was new and gone and none was compared: a test 80 % slower was "OK". Shards are matched by
    node id; jobs that are no shards (Python versions) keep their labels."""
    from pytest_perfmon.monitor import analysis

    def matrix(split: list) -> dict:
        inputs = [(f"s{k}", _shard_report(k, 2, t), f"s{k}.json") for k, t in enumerate(split, 1)]
        return analysis.merge(inputs)

    base = matrix([{"t.py::test_a": 1.0, "t.py::test_c": 1.0}, {"t.py::test_b": 1.0}])
    cur = matrix([{"t.py::test_a": 1.0}, {"t.py::test_b": 1.0, "t.py::test_c": 1.8}])
    assert "matrix" in base and "matrix" in cur
    result = analysis.compare(base, cur)
    assert (result.new, result.gone, result.compared) == ([], [], 3)
    assert {c.test for c in result.regressions} == {"t.py::test_c"}
    # one job's report against the whole matrix: by node id too
    single = _shard_report(1, 1, {"t.py::test_a": 1.0, "t.py::test_b": 1.0, "t.py::test_c": 1.0})
    del single["session"]["shard"]
    assert analysis.compare(single, cur).compared == 3
    # a matrix of Python versions (no shards): each job's tests under its own label
    versions = analysis.merge(
        [(v, _shard_report(1, 1, {"t.py::test_a": 1.0}), v) for v in ("py3.11", "py3.12")]
    )
    assert sorted(analysis.by_nodeid(versions)) == ["py3.11::t.py::test_a", "py3.12::t.py::test_a"]


# --------------------------------------------------------------------------- the store


@pytest.fixture
def store_db(request, tmp_path):
    need_history()
    return str(tmp_path / "history.db")


def _record(url, i, durations, labels, env):
    from helpers import make_report
    from pytest_perfmon.monitor.history import record_run

    assert record_run(url, make_report(i, durations), labels, env=env) is None


def _matrix_runs_left_out(url):
    from pytest_perfmon.monitor.history.shards import shard_data

    full = {f"t.py::test_{i}": 1.0 for i in range(6)}
    parent = {"GITHUB_SHA": "p" * 40}
    here = {"GITHUB_SHA": "c" * 40, "GITHUB_RUN_ID": "9"}
    _record(url, 1, full, {}, parent)
    # this matrix's first job, and a job of another matrix of 2 at the same commit
    _record(
        url, 2, {"t.py::test_0": 50.0}, {"perf_shard": "1/3", "ci_run": "GITHUB_RUN_ID=9"}, here
    )
    _record(url, 3, {"t.py::test_1": 70.0}, {"perf_shard": "1/2"}, here)
    _record(url, 4, {"t.py::test_2": 90.0}, {"ci_run": "GITHUB_RUN_ID=9"}, parent)
    got = shard_data(url, 10, 3, commit="c" * 40, ci_run="GITHUB_RUN_ID=9")
    assert got["excluded"] == 2 and got["runs"] == 2
    assert got["tests"]["t.py::test_0"][0] == 1.0  # not the 50 s of this matrix's run
    assert got["tests"]["t.py::test_1"][0] == pytest.approx(35.5)  # the other matrix counts
    assert [r[0] for r in got["run_stats"]] == [1, 1]
    no_ci = shard_data(url, 10, 3, commit="c" * 40)  # the commit rule alone
    assert no_ci["excluded"] == 1
    # outside git and CI: every shard of N recorded without a commit is this matrix's
    _record(url, 5, {"t.py::test_3": 99.0}, {"perf_shard": "2/3"}, {})
    assert shard_data(url, 10, 3, commit=None, rootdir=os.devnull)["excluded"] == 1


@pytest.fixture
def no_ci(monkeypatch):
    from pytest_perfmon.monitor.history.context import CI_VARIABLES

    for sha, _ in CI_VARIABLES:
        monkeypatch.delenv(sha, raising=False)


def test_a_matrix_never_plans_from_its_own_runs_sqlite(store_db, no_ci):
    _matrix_runs_left_out(store_db)


def test_a_matrix_never_plans_from_its_own_runs_postgresql(pg, no_ci):
    _matrix_runs_left_out(pg.new_db())


# --------------------------------------------------------------------------- end to end

SUITE = {
    # files that do not sort by length: the long tests in the middle and at the end
    "test_a.py": "import time\n\n\ndef test_a0():\n    time.sleep(0.01)\n\n\n"
    "def test_a1():\n    time.sleep(0.01)\n\n\ndef test_a2():\n    time.sleep(0.01)\n",
    "test_m.py": "import time\n\nimport pytest\n\n\n@pytest.mark.parametrize('i', range(8))\n"
    "def test_m(i):\n    time.sleep(0.02)\n\n\ndef test_m_long():\n    time.sleep(0.25)\n",
    "test_z.py": "import time\n\nimport pytest\n\n\n@pytest.mark.xdist_group('g')\n"
    "def test_z_g1():\n    time.sleep(0.05)\n\n\n@pytest.mark.xdist_group('g')\n"
    "def test_z_g2():\n    time.sleep(0.05)\n\n\ndef test_z_long():\n    time.sleep(0.2)\n",
}
N_TESTS = 3 + 9 + 3


def _pytest(where, *args, env=None):
    full = {k: v for k, v in os.environ.items() if k not in splitting.CI_RUN_VARIABLES}
    full.pop("GITHUB_STEP_SUMMARY", None)
    full.update(PYTEST_ADDOPTS=inner_addopts(), **(env or {}))
    return preloaded.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], where, full, RUN_TIMEOUT
    )


def _suite(where) -> None:
    (where / "pytest.ini").write_text("[pytest]\n")
    for name, text in SUITE.items():
        (where / name).write_text(text)


def _report(where, name):
    return validate(json.loads((where / name).read_text()))


@pytest.mark.slow
def test_a_matrix_of_three_jobs_runs_every_test_exactly_once(tmp_path, capsys):
    """One seed run stored in a SQLite store, then the three jobs of a matrix at the next
    commit, one after the other, each recording into the store (job 2 with two real xdist
    workers and --perf-schedule); perfmon merge checks them, perfmon split and predict read the
    same."""
    need_history()
    from pytest_perfmon.monitor import history

    where = tmp_path
    _suite(where)
    seed = _pytest(where, "--perf-monitor", "--perf-output=seed.json")
    assert seed.returncode == 0, seed.stdout + seed.stderr
    # stored by the collector's own call, as its monitor would (with GITHUB_SHA set) in a
    # process of its own, importing SQLAlchemy there: the jobs below record that way
    url = str(where / "h.db")
    env = {"GITHUB_SHA": "1" * 40}
    assert history.record_run(url, _report(where, "seed.json"), {}, str(where), env=env) is None
    env = {"GITHUB_SHA": "2" * 40, "GITHUB_RUN_ID": "31"}
    for k in (1, 2, 3):
        extra = ["-n", "2", "--perf-schedule"] if k == 2 else []
        res = _pytest(
            where,
            *extra,
            f"--perf-shard={k}/3",
            "--perf-history=h.db",
            "--perf-monitor",
            f"--perf-output=s{k}.json",
            env=env,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"perfmon: shard {k}/3: " in res.stdout and f"of {N_TESTS} tests" in res.stdout

    reports = [_report(where, f"s{k}.json") for k in (1, 2, 3)]
    ran = [t for r in reports for t in r["tests"]]
    assert sorted(ran) == sorted(_report(where, "seed.json")["tests"]) and len(ran) == N_TESTS
    shards = [r["session"]["shard"] for r in reports]
    assert len({s["plan"] for s in shards}) == 1, "the jobs planned different splits"
    assert [s["k"] for s in shards] == [1, 2, 3] and {s["n"] for s in shards} == {3}
    assert all(s["total_tests"] == N_TESTS and s["not_run_count"] == 0 for s in shards)
    assert [s["tests"] for s in shards] == [len(r["tests"]) for r in reports]
    assert shards[1]["workers"] == 2 and shards[0]["workers"] == 1
    assert "any machine" in shards[0]["source"] and shards[0]["unknown_tests"] == 0
    # the later jobs left the earlier ones of this matrix out (the commit and the CI run)
    assert "1 of this matrix left out" in shards[1]["source"]
    assert "2 of this matrix left out" in shards[2]["source"]
    groups = [k for k, r in enumerate(reports) if any("test_z_g" in t for t in r["tests"])]
    assert len(groups) == 1, "the xdist group was split"

    # the store labels the shards' runs
    from pytest_perfmon.monitor.history import store

    eng = store.open_store(str(where / "h.db"), create=False)
    try:
        with eng.connect() as conn:
            rows = conn.execute(store.sa.select(store.run_labels)).all()
    finally:
        eng.dispose()
    labels = {(r.key, r.value) for r in rows}
    assert {("perf_shard", "2/3"), ("ci_run", "GITHUB_RUN_ID=31")} <= labels

    # perfmon merge checks the matrix
    files = [str(where / f"s{k}.json") for k in (1, 2, 3)]
    merged = str(where / "merged.json")
    assert cli.main(["merge", *files, "-o", merged]) == 0
    out = capsys.readouterr().out
    assert "every test of the matrix ran exactly once" in out and "critical path: shard" in out
    m = _report(where, "merged.json")["matrix"]
    assert m["problems"] == [] and m["missing_count"] == 0 and m["tests_seen"] == N_TESTS
    assert [j["k"] for j in m["jobs"]] == [1, 2, 3] and len(m["plans"]) == 1
    assert cli.main(["merge", *files[:2], "-o", str(where / "two.json")]) == 0
    out = capsys.readouterr().out
    assert "shard(s) without a report: 3/3" in out and "ran in no shard" in out

    # perfmon split and predict --shards
    assert cli.main(["split", "--shards", "3", "--from", merged, "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert sorted(t for s in plan["shards"] for t in s["tests"]) == sorted(ran)
    assert plan["n"] == 3 and plan["imbalance"] >= 1.0
    assert cli.main(["split", "--shards", "2", "--db", str(where / "h.db")]) == 0
    text = capsys.readouterr().out
    assert f"2 shards of {N_TESTS} tests from the history" in text and "imbalance" in text
    out = str(where / ".test_durations")
    args = ["split", "--shards", "2", "--from", merged, "--format", "pytest-split", "-o", out]
    assert cli.main(args) == 0
    durations = json.loads((where / ".test_durations").read_text())
    assert len(durations) == N_TESTS and all(isinstance(v, float) for v in durations.values())
    capsys.readouterr()
    args = ["predict", "--db", str(where / "h.db"), "--shards", "auto", "--target", "1h"]
    assert cli.main(args) == 0
    assert "recommended: --perf-shard K/1" in capsys.readouterr().out
    args = ["predict", "--db", str(where / "h.db"), "--shards", "auto"]
    assert cli.main(args) == 2 and "--target" in capsys.readouterr().err


def test_a_shard_from_a_durations_file_empty_shards_and_bad_values(tmp_path):
    """--perf-shard-from a pytest-split file (collect only), an empty shard (more shards than
    tests; with xdist workers) exits 0 on one line, and a store that cannot be read stops the
    job."""
    where = tmp_path
    _suite(where)
    durations = {"test_m.py::test_m_long": 0.25, "test_z.py::test_z_long": 0.2}
    (where / ".test_durations").write_text(json.dumps(durations))
    res = _pytest(
        where, "--collect-only", "-q", "--perf-shard=1/2", "--perf-shard-from=.test_durations"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "perfmon: shard 1/2:" in res.stdout and ".test_durations (2 tests)" in res.stdout
    res = _pytest(where, "-n", "2", "-k", "test_a", "--perf-shard=5/5")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "perfmon: shard 5/5 has no tests (3 test(s) over 5 shards): exit status 0" in res.stdout
    # (bad values: test_bad_values_are_usage_errors, in-process)
    need_history()
    # a matrix's first run on a store made empty (a new file, a new database): split by count
    (where / "empty.db").write_bytes(b"")
    res = _pytest(where, "--collect-only", "-q", "--perf-shard=1/2", "--perf-history=empty.db")
    assert res.returncode == 0 and "split by count" in res.stdout, res.stdout + res.stderr
    # a store that cannot be read stops the job: it would split otherwise than the others
    res = _pytest(where, "--perf-shard=1/2", "--perf-history=postgresql://nobody@127.0.0.1:1/x")
    assert res.returncode == 4 and "would not split alike" in res.stderr, res.stderr
    assert "perfmon: shard" not in res.stdout and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["--perf-shard=4/3"], ["--perf-shard", "K must be 1 to N"]),
        (["--perf-shard=x"], ["--perf-shard", "K/N"]),
        (["-o", "perf_shard=2/1"], ["perf_shard in the ini file"]),
    ],
)
def test_bad_values_are_usage_errors(pytester, inprocess, args, words):
    """In-process: the values are checked before anything runs; the error names the option."""
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    err = res.stderr.str()
    assert all(w in err for w in words), err


def _a_report(**over) -> dict:
    tests = {
        f"t.py::test_{i}": {"duration": 0.1 * (i + 1), "memory": {"start_mb": 40.0}}
        for i in range(3)
    }
    rep = {"schema_version": 1, "session": {"duration": 1.0}, "tests": tests, "workers": {}}
    rep.update(over)
    return rep


@pytest.mark.parametrize(
    "content, expected",
    [
        (json.dumps(_a_report(workers="gw0")), None),  # a shape we ignore: planned all the same
        (json.dumps(_a_report(workers=[1])), None),
        (json.dumps(_a_report(tests={"t.py::a": {"duration": 1, "job": [1], "worker": 5}})), None),
        (json.dumps(_a_report(jobs={"x": "y"})), None),
        ('{"t.py::a": 1' + "0" * 400 + "}", "a number beyond a float's range (401 digits)"),
        (json.dumps(_a_report()).replace('"duration": 1.0', '"duration": 1' + "0" * 400), "range"),
        ("[" * 100_000 + "]" * 100_000, "not JSON (nested too deeply)"),
        ("", "not JSON (Expecting value at line 1 column 1)"),
        ('{"t.py::a": "fast"}', "neither a pytest-perfmon report nor a .test_durations file"),
        # finite, but a few of them sum past a float's range in the plan
        ('{"t.py::a": 1e308, "t.py::b": 1e308}', "neither a pytest-perfmon report nor a"),
        (json.dumps(_a_report()).replace('"duration": 0.1', '"duration": 1e308'), None),
    ],
    ids=[
        "workers-text",
        "workers-list",
        "job-list",
        "jobs-text",
        "durations-bigint",
        "report-bigint",
        "deep",
        "empty",
        "durations-text",
        "durations-huge",
        "report-huge-test",
    ],
)
def test_malformed_figures_plan_or_say_one_line(tmp_path, content, expected):
    """--perf-shard-from, --perf-schedule=REPORT and `perfmon split --from` read figures
    through one loader: a shape they do not use is ignored, anything else is one line naming
    the file (a malformed file once ended pytest with an INTERNALERROR)."""
    from pytest_perfmon._schedule_inputs import PlanError, report_data

    path = tmp_path / "figures.json"
    path.write_text(content, encoding="utf-8")
    if expected is None:
        data = splitting.load_figures(str(path))
        assert data["tests"] and all(d > 0 for d, _ in data["tests"].values()), data
        assert report_data(str(path))["tests"] == data["tests"]
        return
    with pytest.raises(splitting.SplitError) as err:
        splitting.load_figures(str(path))
    message = str(err.value)
    assert path.name in message and expected in message and "\n" not in message
    if content.startswith('{"schema') or content.startswith("["):
        with pytest.raises(PlanError):
            report_data(str(path))
