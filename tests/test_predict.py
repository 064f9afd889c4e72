"""``perfmon predict``: the pure prediction functions on constructed series with known answers,
and the command in-process against real SQLite stores (reports imported with ``perfmon history
import``: constructed ones with known numbers, and two of real runs)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from pathlib import Path

import pytest
from helpers import HISTORY_MISSING, HISTORY_WHY, shared_run
from pytest_perfmon.monitor import cli
from pytest_perfmon.monitor import predict as prediction

HERE = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------- pure functions


def test_quantile_interpolates_like_numpy():
    assert prediction.quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert prediction.quantile([0.0, 10.0], 0.1) == pytest.approx(1.0)
    assert prediction.quantile([5.0], 0.9) == 5.0
    assert prediction.median([1.0, 2.0, 3.0, 4.0]) == 2.5


@pytest.mark.parametrize(
    "durs, n, makespan",
    [
        ([4, 3, 2, 1], 1, 10),
        ([4, 3, 2, 1], 2, 5),  # 4+1 | 3+2
        ([4, 3, 2, 1], 4, 4),
        ([4, 3, 2, 1], 8, 4),  # more workers than tests
        ([5, 5, 4, 4, 3, 3, 3], 3, 11),  # LPT's classic: 5+3+3 | 5+4 | 4+3 (optimum 9)
        ([], 2, 0),
    ],
)
def test_lpt_makespan(durs, n, makespan):
    loads = prediction.lpt(durs, n)
    assert len(loads) == n
    assert max(loads) == makespan
    assert sum(loads) == sum(durs)


def test_xdist_load_hand_checked():
    # 4 tests, 2 workers: a first chunk of max(2, 4 // 2 // 4) = 2 consecutive tests each
    assert prediction.xdist_load([4, 3, 2, 1], 2) == [7, 3]  # LPT: 5 | 5
    # fewer tests than 2 per worker: one at a time, round robin
    assert prediction.xdist_load([5, 1, 1], 2) == [6, 1]  # LPT: 5 | 2
    assert prediction.xdist_load([4, 3, 2, 1], 8) == [4, 3, 2, 1, 0, 0, 0, 0]
    assert prediction.xdist_load([], 3) == [0, 0, 0]
    assert prediction.xdist_load([1, 2, 3], 1) == [6]  # serial: the sum, like LPT
    # a long test collected last: chunks of 2; each worker, left holding one test, gets one
    # more from the front (up to max(2, left // 2 // 2) = 2 held) until the queue is empty;
    # worker 0 (first on ties) takes tests 0, 1, 4, 6 and then the 8 s test 8
    assert prediction.xdist_load([1.0] * 8 + [8.0], 2) == [12.0, 4.0]
    assert max(prediction.lpt([1.0] * 8 + [8.0], 2)) == 8.0


def test_xdist_load_waits_after_a_long_test():
    """32 equal tests, 2 workers: first chunks of 4 (0-3 | 4-7); then a worker holding fewer
    than max(2, 24 // 2 // 4) = 3 is refilled up to 6, unless its last test took >= 0.1 s
    and it still holds 2: then it waits until it holds 1 and takes 5."""
    fast = prediction.xdist_order([0.05] * 32, 2)
    assert fast[0][:8] == [0, 1, 2, 3, 8, 9, 10, 11]  # refilled at 2 held: 4 more
    assert 12 in fast[1]
    slow = prediction.xdist_order([0.2] * 32, 2)
    assert slow[0][:9] == [0, 1, 2, 3, 8, 9, 10, 11, 12]  # refilled at 1 held: 5 more
    assert slow[1][:8] == [4, 5, 6, 7, 13, 14, 15, 16]  # 19 left: up to max(2, 19 // 2 // 2) = 4
    for order in (fast, slow):
        assert sorted(order[0] + order[1]) == list(range(32))


def test_estimates_median_interval_and_peak():
    series = {"a.py::t": {"duration": [0.9, 1.0, 1.1], "peak_mb": [60.0, 50.0, 70.0]}}
    (e,), unknown = prediction.estimate_tests(["a.py::t"], series)
    assert unknown == 0 and e.known
    assert e.duration == pytest.approx(1.0)
    assert e.low == pytest.approx(0.92)
    assert e.high == pytest.approx(1.08)
    assert e.peak_mb == 60.0


def test_unknown_tests_borrow_from_function_class_file_then_suite():
    series = {
        "a.py::test_p[1]": {"duration": [8.0], "peak_mb": [80.0]},
        "a.py::TestC::test_x": {"duration": [4.0], "peak_mb": [40.0]},
        "a.py::test_f": {"duration": [2.0], "peak_mb": [20.0]},
        "b.py::test_g": {"duration": [1.0], "peak_mb": [None]},
    }
    wanted = list(series) + [
        "a.py::test_p[2]",  # its function: 8
        "a.py::TestC::test_new",  # its class: 4
        "a.py::test_new",  # its file: median of 8, 4, 2
        "c.py::test_new",  # the suite: median of 8, 4, 2, 1
    ]
    est, unknown = prediction.estimate_tests(wanted, series)
    got = {e.nodeid: e for e in est}
    assert unknown == 4
    assert [e.nodeid for e in est] == wanted
    assert got["a.py::test_p[2]"].duration == 8.0 and not got["a.py::test_p[2]"].known
    assert got["a.py::TestC::test_new"].duration == 4.0
    assert got["a.py::test_new"].duration == 4.0
    assert got["a.py::test_new"].peak_mb == 40.0
    assert got["c.py::test_new"].duration == 3.0
    assert got["b.py::test_g"].peak_mb is None


def test_no_history_for_any_test_is_an_error():
    with pytest.raises(prediction.PredictError, match="no data for any of these 2 tests"):
        prediction.estimate_tests(["x::a", "x::b"], {"y::c": {"duration": [1.0]}})


def test_predict_adds_overhead_of_the_nearest_worker_count_and_concurrent_peak():
    est = [
        prediction.Estimate("a::1", 4.0, 3.0, 5.0, 240.0, True),
        prediction.Estimate("a::2", 3.0, 3.0, 3.0, 50.0, True),
        prediction.Estimate("a::3", 2.0, 2.0, 2.0, 50.0, True),
        prediction.Estimate("a::4", 1.0, 1.0, 1.0, None, True),
    ]
    runs = [
        prediction.RunStats(workers=1, duration=10.5, busy_max=10.0, baseline_mb=40.0),
        prediction.RunStats(workers=1, duration=10.7, busy_max=10.0, baseline_mb=40.0),
        prediction.RunStats(workers=2, duration=7.0, busy_max=5.0, baseline_mb=42.0),
    ]
    preds = {p["workers"]: p for p in prediction.predict(est, runs, [1, 2, 3, 8])}
    # 1 worker: overhead of the 1-worker runs (median 0.6; low 0.5, high 0.7); either way
    assert preds[1]["wall_s"] == preds[1]["wall_scheduled_s"] == pytest.approx(10.6)
    assert preds[1]["wall_low_s"] == preds[1]["wall_scheduled_low_s"] == pytest.approx(9.5)
    assert preds[1]["wall_high_s"] == preds[1]["wall_scheduled_high_s"] == pytest.approx(11.7)
    # 2 workers, overhead 2.0 of the 2-worker run: xdist 4+3 | 2+1, longest first 4+1 | 3+2
    assert preds[2]["wall_s"] == pytest.approx(7.0 + 2.0)
    assert preds[2]["wall_scheduled_s"] == pytest.approx(5.0 + 2.0)
    assert preds[2]["wall_low_s"] == pytest.approx(6.0 + 2.0)
    assert preds[2]["wall_high_s"] == pytest.approx(8.0 + 2.0)
    # 3 workers: nearest recorded count is 2 (fewer wins a tie with none); round robin
    # 4+1 | 3 | 2, longest first 4 | 3 | 2+1
    assert preds[3]["wall_s"] == pytest.approx(5.0 + 2.0)
    assert preds[3]["wall_scheduled_s"] == pytest.approx(4.0 + 2.0)
    # no worker high-waters in these runs: the n largest test peaks above the baseline
    # (median of 40, 40, 42 = 40): 200, 10, 10
    assert preds[1]["peak_mb"] == 240.0
    assert preds[2]["peak_mb"] == 80.0 + 210.0
    assert preds[8]["peak_mb"] == 320.0 + 220.0  # idle workers still hold their baseline
    assert set(preds[1]) == {
        "workers",
        "wall_s",
        "wall_low_s",
        "wall_high_s",
        "peak_mb",
        "wall_scheduled_s",
        "wall_scheduled_low_s",
        "wall_scheduled_high_s",
    }


def _run(workers: int, peaks: tuple, base: float = 40.0) -> prediction.RunStats:
    return prediction.RunStats(workers, 10.0, 9.0, baseline_mb=base, worker_peaks_mb=peaks)


def test_worker_peak_from_worker_high_waters():
    runs = [_run(2, (300.0, 100.0)), _run(2, (120.0, 280.0))]
    # largest growth: median of 260, 240 = 250; the other worker's: median of 60, 80 = 70
    assert prediction.worker_peak(runs, 2, 40.0, [200.0]) == 80.0 + 250.0 + 70.0
    assert prediction.worker_peak(runs, 4, 40.0, [200.0]) == 160.0 + 250.0 + 3 * 70.0
    assert prediction.worker_peak(runs, 1, 40.0, []) == 40.0 + 250.0  # the nearest count: 2
    # never below the heaviest test's own peak
    assert prediction.worker_peak(runs, 2, 40.0, [400.0, None]) == 80.0 + 360.0 + 70.0
    # a run's growth is above its own baseline; n x the baseline of all runs
    runs = [_run(2, (300.0, 100.0), base=50.0), _run(2, (300.0, 100.0), base=30.0)]
    assert prediction.worker_peak(runs, 2, 40.0, []) == 80.0 + 260.0 + 60.0
    assert prediction.worker_peak([prediction.RunStats(2, 1.0, 1.0, 40.0)], 2, 40.0, [90.0]) is None


def test_worker_peak_other_workers_from_multi_worker_runs_else_test_median():
    serial = [_run(1, (240.0,)), _run(1, (260.0,))]
    tests = [150.0, 50.0, 60.0, None]
    # largest: median of 200, 220; serial only: the others hold what the one process held at
    # a typical test (the median test peak 60 - 40)
    assert prediction.worker_peak(serial, 2, 40.0, tests) == 80.0 + 210.0 + 20.0
    assert prediction.worker_peak(serial, 1, 40.0, tests) == 40.0 + 210.0
    # a 4-worker run tells the others' growth (median of 40, 30, 20); the largest comes from
    # the nearest count: 1 for 2 workers, 4 (growth 160) for 3 and 4 workers
    four = _run(4, (200.0, 80.0, 70.0, 60.0))
    assert prediction.worker_peak([*serial, four], 2, 40.0, tests) == 80.0 + 210.0 + 30.0
    assert prediction.worker_peak([*serial, four], 3, 40.0, tests) == 120.0 + 160.0 + 2 * 30.0
    assert prediction.worker_peak([*serial, four], 4, 40.0, tests) == 160.0 + 160.0 + 3 * 30.0


def test_predict_peak_counts_memory_left_on_one_worker_once():
    """A worker keeps what a heavy test left: its later tests all report ~290 MB. The n
    largest test peaks would count that worker n times; its high-water counts it once."""
    est = [prediction.Estimate("big::t", 1.0, 1.0, 1.0, 293.0, True)]
    est += [prediction.Estimate(f"after::t{i}", 0.1, 0.1, 0.1, 290.0 - i, True) for i in range(5)]
    est += [prediction.Estimate(f"other::t{i}", 0.1, 0.1, 0.1, 150.0 + i, True) for i in range(5)]
    runs = [_run(2, (293.0, 170.0), base=107.0), _run(2, (291.0, 172.0), base=107.0)]
    (p,) = prediction.predict(est, runs, [2])
    assert p["peak_mb"] == 214.0 + 186.0 + 64.0
    assert prediction.concurrent_peak([e.peak_mb for e in est], 2, 107.0) == 214.0 + 186.0 + 183.0


def test_predict_without_run_facts_has_no_overhead_and_zero_baseline():
    est = [prediction.Estimate("a::1", 1.0, 1.0, 1.0, 30.0, True)]
    (p,) = prediction.predict(est, [], [2])
    assert p["wall_s"] == p["wall_scheduled_s"] == 1.0 and p["peak_mb"] == 30.0


def test_recommend_fastest_under_budget():
    preds = [
        {"workers": 1, "wall_s": 10.0, "peak_mb": 100.0},
        {"workers": 2, "wall_s": 6.0, "peak_mb": 200.0},
        {"workers": 4, "wall_s": 4.0, "peak_mb": 400.0},
        {"workers": 8, "wall_s": 4.0, "peak_mb": 800.0},
    ]
    assert prediction.recommend(preds, None) == (4, True)  # a tie goes to fewer workers
    assert prediction.recommend(preds, 399.0) == (2, True)
    assert prediction.recommend(preds, 400.0) == (4, True)
    assert prediction.recommend(preds, 50.0) == (1, False)
    for p, sched in zip(preds, (10.0, 4.0, 5.0, 5.0)):
        p["wall_scheduled_s"] = sched
    assert prediction.recommend(preds, None, "wall_scheduled_s") == (2, True)
    assert prediction.recommend(preds, 150.0, "wall_scheduled_s") == (1, True)


@pytest.mark.parametrize(
    "text, mb",
    [("8G", 8192.0), ("512M", 512.0), ("1.5GiB", 1536.0), ("2048k", 2.0), ("1t", 1048576.0)],
)
def test_parse_size(text, mb):
    assert prediction.parse_size(text) == mb


@pytest.mark.parametrize("text", ["8", "", "G", "-1G", "0M", "8X", "8 GBs"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        prediction.parse_size(text)


def test_parse_workers_and_auto():
    assert prediction.parse_workers("8,1, 2,2") == [1, 2, 8]
    for bad in ("0", "a", "1,,2", "-1"):
        with pytest.raises(ValueError):
            prediction.parse_workers(bad)
    assert prediction.auto_workers(1) == [1]
    assert prediction.auto_workers(2) == [1, 2]
    assert prediction.auto_workers(12) == [1, 2, 4, 8, 12]


def test_parse_nodeids_as_collect_only_prints_them():
    text = (
        "t/test_a.py::test_one\n"
        "t/test_a.py::TestC::test_two[x-1]\n"
        "t/test_a.py::test_one\n"
        "\n"
        "2 tests collected in 0.01s\n"
    )
    assert prediction.parse_nodeids(text) == [
        "t/test_a.py::test_one",
        "t/test_a.py::TestC::test_two[x-1]",
    ]


# --------------------------------------------------------------------------- the command

# Skipped (saying why) only without the history extra and outside CI; with CI=true it runs
# and fails on the missing import.
needs_history = pytest.mark.skipif(
    HISTORY_MISSING and os.environ.get("CI") != "true", reason=HISTORY_WHY
)


def golden() -> dict:
    with open(os.path.join(HERE, "golden", "current.json"), encoding="utf-8") as f:
        return json.load(f)


def make_report(i: int, factor: float, peaks: dict, base: dict, overhead: float = 0.5) -> dict:
    """One run without xdist of four tests (4, 3, 2, 1 s times ``factor``), all starting at
    40 MB, session duration = busy time + ``overhead``."""
    durs = {"t/test_a.py::test_1": 4.0, "t/test_a.py::test_2": 3.0}
    durs.update({"t/test_a.py::TestC::test_3": 2.0, "t/test_b.py::test_4": 1.0})
    rep = copy.deepcopy(base)
    tests = {}
    for nodeid, d in durs.items():
        d *= factor
        tests[nodeid] = {
            "duration": d,
            "setup_time": 0.0,
            "call_time": d,
            "teardown_time": 0.0,
            "memory": {
                "start_mb": 40.0,
                "peak_mb": peaks.get(nodeid, 50.0),
                "end_mb": 40.0,
                "delta_mb": 0.0,
            },
            "cpu_percent": 50.0,
            "outcome": "passed",
            "worker": "main",
            "pid": 100,
        }
    busy = sum(t["duration"] for t in tests.values())
    rep["session"] = dict(
        rep["session"],
        timestamp=f"2026-01-0{i}T12:00:00.000000Z",
        total_tests=len(tests),
        duration=busy + overhead,
    )
    rep["workers"] = {
        "main": {
            "pid": 100,
            "tests": 4,
            "busy_time": busy,
            "idle_time": overhead,
            "peak_rss_mb": 240.0,
        }
    }
    rep["tests"] = tests
    rep.pop("fixtures", None)
    return rep


def _import(db: str, paths: list, capsys) -> None:
    assert cli.main(["history", "import", *map(str, paths), "--db", db]) == 0, capsys.readouterr()
    capsys.readouterr()


@pytest.fixture(scope="module")
def known_store(tmp_path_factory) -> str:
    """The store of three constructed runs, imported once for the tests that only predict from
    it (known_db checks that none of them changed it)."""
    base = golden()
    where = tmp_path_factory.mktemp("known")
    paths = []
    for i, f in enumerate((0.9, 1.0, 1.1), 1):
        p = where / f"r{i}.json"
        p.write_text(json.dumps(make_report(i, f, {"t/test_a.py::test_1": 240.0}, base)))
        paths.append(str(p))
    db = str(where / "h.db")
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        rc = cli.main(["history", "import", *paths, "--db", db])
    assert rc == 0, said.getvalue()
    return db


@pytest.fixture
def known_db(known_store):
    """known_store's path; after the test, the store as it was (predict only reads it)."""
    before = Path(known_store).read_bytes()
    yield known_store
    assert Path(known_store).read_bytes() == before, "predict changed the store it read"


def _predict(capsys, *argv: str) -> tuple[int, dict | str, str]:
    rc = cli.main(["predict", *argv])
    out, err = capsys.readouterr()
    if "--format" in argv and rc == 0:
        return rc, json.loads(out), err
    return rc, out, err


@needs_history
def test_cli_json_known_answers(known_db, capsys):
    rc, res, err = _predict(
        capsys, "--db", known_db, "--workers", "1,2,4", "--format", "json", "--memory-budget", "1G"
    )
    assert rc == 0, err
    # the golden report's machine is not this one: predicted from it, with a note
    assert "no runs of this machine" in err
    assert set(res) == {"predictions", "recommended_workers", "unknown_tests", "perf_schedule"}
    assert res["perf_schedule"] is False
    preds = {p["workers"]: p for p in res["predictions"]}
    assert list(preds) == [1, 2, 4]
    assert preds[1]["wall_s"] == pytest.approx(10.5, abs=1e-3)
    assert preds[1]["wall_low_s"] == pytest.approx(9.7, abs=1e-3)
    assert preds[1]["wall_high_s"] == pytest.approx(11.3, abs=1e-3)
    # the node ids sorted (TestC::test_3, test_1, test_2, test_4): xdist 2+4 | 3+1
    assert preds[2]["wall_s"] == pytest.approx(6.5, abs=1e-3)
    assert preds[2]["wall_low_s"] == pytest.approx(6.02, abs=1e-3)
    assert preds[2]["wall_high_s"] == pytest.approx(6.98, abs=1e-3)
    assert preds[2]["wall_scheduled_s"] == pytest.approx(5.5, abs=1e-3)  # 4+1 | 3+2
    assert preds[4]["wall_s"] == preds[4]["wall_scheduled_s"] == pytest.approx(4.5, abs=1e-3)
    # serial runs only: one worker grows by 200 MB; the others by the median test's 10 MB
    assert [preds[n]["peak_mb"] for n in (1, 2, 4)] == [240.0, 290.0, 390.0]
    assert res["recommended_workers"] == 4
    assert res["unknown_tests"] == 0


@needs_history
def test_cli_perf_schedule_flag_uses_the_longest_first_figure(known_db, tmp_path, capsys):
    rc, out, _ = _predict(capsys, "--db", known_db, "--workers", "1,2")
    assert rc == 0
    assert "6.5 s" in out and "6.0 s - 7.0 s" in out and "recommended: -n 2 (" in out
    rc, out, _ = _predict(capsys, "--db", known_db, "--workers", "1,2", "--perf-schedule")
    assert rc == 0
    assert "6.5 s" not in out and "5.5 s" in out and "5.1 s - 5.9 s" in out
    assert "recommended: -n 2 --perf-schedule (" in out
    argv = ["--db", known_db, "--workers", "2", "--format", "json", "--perf-schedule"]
    rc, res, _ = _predict(capsys, *argv)
    assert rc == 0 and res["perf_schedule"] is True
    assert res["predictions"][0]["wall_scheduled_s"] == pytest.approx(5.5, abs=1e-3)
    # a --tests file is taken in its order: test_1, test_2 first, xdist 4+3 | 2+1
    f = tmp_path / "ids.txt"
    f.write_text(
        "t/test_a.py::test_1\nt/test_a.py::test_2\nt/test_a.py::TestC::test_3\n"
        "t/test_b.py::test_4\n"
    )
    rc, res, _ = _predict(capsys, *argv, "--tests", str(f))
    assert res["predictions"][0]["wall_s"] == pytest.approx(7.5, abs=1e-3)
    assert res["predictions"][0]["wall_scheduled_s"] == pytest.approx(5.5, abs=1e-3)


def make_xdist_report(i: int, base: dict) -> dict:
    """``make_report``'s tests on two workers: gw0 runs test_1 (240 MB) then test_2, which
    still reports 235 MB (test_1 left it); gw1 the two others (60 and 55 MB). The session
    lasts gw0's 7 s plus 1 s."""
    rep = make_report(i, 1.0, {}, base, overhead=0.0)
    peaks = [240.0, 235.0, 60.0, 55.0]
    for k, t in enumerate(rep["tests"].values()):
        t["worker"], t["pid"] = ("gw0", 200) if k < 2 else ("gw1", 201)
        t["memory"]["peak_mb"] = peaks[k]
    rep["workers"] = {
        "gw0": {"pid": 200, "tests": 2, "busy_time": 7.0, "idle_time": 1.0, "peak_rss_mb": 240.0},
        "gw1": {"pid": 201, "tests": 2, "busy_time": 3.0, "idle_time": 5.0, "peak_rss_mb": 60.0},
    }
    rep["session"]["duration"] = 8.0
    return rep


@needs_history
def test_cli_peak_from_the_workers_high_waters(tmp_path, capsys):
    paths = []
    for i in (1, 2, 3):
        p = tmp_path / f"x{i}.json"
        p.write_text(json.dumps(make_xdist_report(i, golden())))
        paths.append(p)
    db = str(tmp_path / "x.db")
    _import(db, paths, capsys)
    rc, res, err = _predict(capsys, "--db", db, "--workers", "1,2,4", "--format", "json")
    assert rc == 0, err
    preds = {p["workers"]: p for p in res["predictions"]}
    # baseline 40; gw0 grew 200, gw1 20: 2 x 40 + 200 + 20 (the n largest test peaks would
    # count gw0's memory twice: 80 + 200 + 195 = 475)
    assert preds[2]["peak_mb"] == 300.0
    assert preds[4]["peak_mb"] == 160.0 + 200.0 + 3 * 20.0
    assert preds[1]["peak_mb"] == 240.0
    # overhead 8 - 7 = 1 s; sorted order 2+4 | 3+1
    assert preds[2]["wall_s"] == pytest.approx(7.0, abs=1e-3)
    assert preds[2]["wall_scheduled_s"] == pytest.approx(6.0, abs=1e-3)
    assert preds[1]["wall_s"] == pytest.approx(11.0, abs=1e-3)


@needs_history
def test_cli_memory_budget_limits_the_recommendation(known_db, capsys):
    rc, res, _ = _predict(
        capsys,
        "--db",
        known_db,
        "--workers",
        "1,2,4",
        "--format",
        "json",
        "--memory-budget",
        "300M",
    )
    assert rc == 0 and res["recommended_workers"] == 2
    rc, res, err = _predict(
        capsys, "--db", known_db, "--workers", "1,2", "--format", "json", "--memory-budget", "200M"
    )
    assert rc == 0 and res["recommended_workers"] == 1
    assert "warning: every worker count's predicted peak exceeds the memory budget" in err


@needs_history
def test_cli_tests_file_with_unknown_tests_and_table(known_db, tmp_path, capsys):
    f = tmp_path / "ids.txt"
    f.write_text(
        "t/test_a.py::test_1\nt/test_a.py::TestC::test_new\nt/test_c.py::test_x\n\n"
        "3 tests collected in 0.02s\n"
    )
    rc, res, err = _predict(
        capsys, "--db", known_db, "--tests", str(f), "--workers", "1", "--format", "json"
    )
    assert rc == 0, err
    assert res["unknown_tests"] == 2
    # 4 s + its class's 2 s + the suite median 2.5 s, plus the overhead 0.5 s
    assert res["predictions"][0]["wall_s"] == pytest.approx(9.0, abs=1e-3)
    rc, out, _ = _predict(capsys, "--db", known_db, "--tests", str(f), "--workers", "1,2")
    assert rc == 0
    assert "recommended: -n 2" in out and "tests without history: 2" in out
    assert "workers" in out.splitlines()[0]


@needs_history
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--memory-budget", "8"], "--memory-budget: not a size like 8G"),
        (["--workers", "0,2"], "--workers: worker counts are integers from 1 to 10000"),
        (["--workers", "2,99999999"], "--workers: worker counts are integers from 1 to 10000"),
        (["--tests", "ids.txt"], "no node ids"),
        (["--tests", "unknown.txt"], "the history has no data for any of these 1 tests"),
        (["--tests", "missing.txt"], "missing.txt: No such file"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(known_db, tmp_path, capsys, argv, message):
    (tmp_path / "ids.txt").write_text("1 test collected in 0.01s\n")
    (tmp_path / "unknown.txt").write_text("z.py::test_z\n")
    argv = [str(tmp_path / a) if a.endswith(".txt") else a for a in argv]
    rc, out, err = _predict(capsys, "--db", known_db, *argv)
    assert rc == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err


@needs_history
def test_cli_missing_and_empty_store(tmp_path, capsys):
    rc, _, err = _predict(capsys, "--db", str(tmp_path / "none.db"))
    assert rc == 2 and "does not exist" in err
    from pytest_perfmon.monitor.history import store

    store.open_store(str(tmp_path / "empty.db")).dispose()
    rc, _, err = _predict(capsys, "--db", str(tmp_path / "empty.db"))
    assert rc == 2 and "holds no runs" in err and len(err.strip().splitlines()) == 1


#: The suite of two real runs that test_cli_on_real_runs and
#: test_xdist_simulation_matches_a_real_plain_run share (shared_run; each only reads their
#: reports): test_real for the first (three tests, one of them holding 60 MB), test_skew for
#: the second (30 tests of 30 ms, then one of 1 s). The simulation's run had one of its own,
#: of test_skew alone, which cost a third real run (another -n 2 monitored session).
REAL_SUITE = {
    "test_real": """
        import time
        def test_short():
            time.sleep(0.02)
        def test_long():
            time.sleep(0.2)
        def test_memory():
            block = bytearray(60 * 1024 * 1024)
            block[::4096] = b"x" * len(block[::4096])
            time.sleep(0.05)
        """,
    "test_skew": "import time\n"
    + "".join(f"def test_s{i:02d}():\n    time.sleep(0.03)\n" for i in range(30))
    + "def test_zlong():\n    time.sleep(1.0)\n",
}
#: REAL_SUITE's node ids in collection order
REAL_ORDER = [f"test_real.py::test_{n}" for n in ("short", "long", "memory")]
REAL_ORDER += [f"test_skew.py::test_s{i:02d}" for i in range(30)] + ["test_skew.py::test_zlong"]


def _real_runs(tmp_path_factory) -> tuple:
    """REAL_SUITE's two runs (made once per session): without xdist, and with two workers."""
    one = shared_run(tmp_path_factory, REAL_SUITE, output="one.json")
    two = shared_run(tmp_path_factory, REAL_SUITE, "-n", "2", output="two.json")
    assert one.ret == 0 and two.ret == 0, one.text + two.text
    return one, two


@needs_history
def test_cli_on_real_runs(tmp_path_factory, tmp_path, capsys):
    """Two real runs (without xdist and with two workers) imported: this machine's history."""
    one, two = _real_runs(tmp_path_factory)
    db = str(tmp_path / "h.db")
    _import(db, [one.path, two.path], capsys)
    rc, res, err = _predict(capsys, "--db", db, "--workers", "1,2", "--format", "json")
    assert rc == 0, err
    assert err == ""  # these runs are this machine's
    assert res["unknown_tests"] == 0
    p1, p2 = res["predictions"]
    # medians of two runs: at least the smaller of the two measurements, on one worker
    busy = sum(min(one.tests[k]["duration"], t["duration"]) for k, t in two.tests.items())
    assert p1["wall_s"] >= busy
    assert p1["wall_low_s"] <= p1["wall_s"] <= p1["wall_high_s"]
    # the 60 MB test is live on one worker while another holds its baseline
    peak = min(
        one.test("test_memory")["memory"]["peak_mb"], two.test("test_memory")["memory"]["peak_mb"]
    )
    assert p2["peak_mb"] > p1["peak_mb"] >= peak


def test_xdist_simulation_matches_a_real_plain_run(tmp_path_factory):
    """A skewed suite (three tests of 20 ms to 0.2 s, 30 of 30 ms, then one of 1 s) run with
    plain `-n 2`: the busiest worker's measured test time against the simulation of xdist's
    hand-out over the measured durations in collection order (one real run: a generous
    tolerance). Longest first would be ~0.45 s off: xdist hands the long test out last, after
    ~half of the short ones."""
    _, run = _real_runs(tmp_path_factory)
    tests = run.tests
    assert sorted(tests) == sorted(REAL_ORDER)
    busy: dict = {}
    for t in tests.values():
        busy[t["worker"]] = busy.get(t["worker"], 0.0) + t["duration"]
    durs = [tests[n]["duration"] for n in REAL_ORDER]
    simulated = max(prediction.xdist_load(durs, 2))
    assert abs(simulated - max(busy.values())) <= 0.15, (simulated, busy)
    assert max(busy.values()) - max(prediction.lpt(durs, 2)) > 0.15, busy
