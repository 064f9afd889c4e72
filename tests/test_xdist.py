"""pytest --perf-monitor -n N: every xdist worker reports into one collector, one report."""

from __future__ import annotations

import pytest

SUITE = {
    "test_alpha": """
import time, pytest

@pytest.mark.parametrize("i", range(6))
def test_a(i):
    time.sleep(0.01)
""",
    "test_beta": """
import time, pytest

@pytest.mark.xdist_group("g1")
@pytest.mark.parametrize("i", range(4))
def test_b(i):
    time.sleep(0.01)

def test_memory():
    # more than a whole worker's RSS: the sum peaks here even if the other worker has left
    block = b"x" * (100 * 1024 * 1024)
    time.sleep(0.3)
""",
    "test_gamma": """
import pytest

class TestC:
    @pytest.mark.parametrize("i", range(3))
    def test_c(self, i):
        assert i >= 0
""",
}
N_TESTS = 6 + 4 + 1 + 3


def _check(run, workers: set) -> None:
    assert run.ret == 0, run.text
    rep = run.report
    tests = rep["tests"]
    assert len(tests) == N_TESTS == rep["session"]["total_tests"]
    assert rep["session"]["records_dropped"] == 0
    assert {t["worker"] for t in tests.values()} <= workers
    assert set(rep["workers"]) <= workers
    assert sum(w["tests"] for w in rep["workers"].values()) == N_TESTS
    for wid, w in rep["workers"].items():
        pids = {t["pid"] for t in tests.values() if t["worker"] == wid}
        assert pids == {w["pid"]}
        assert w["busy_time"] > 0 and w["idle_time"] >= 0
        assert w["peak_rss_mb"] > 0
    assert all(t["outcome"] == "passed" for t in tests.values())


# Every --dist mode with -n 2, -n 0, -n 12 and -p no:xdist: tests/test_compat.py's matrix, on
# a suite of every outcome, checked against pytest's own view and with these checks of the
# workers (check_workers; noxfile.py's compat sessions run those cases too). Here, the ways
# of asking for xdist that the matrix does not take.
@pytest.mark.parametrize(
    "args, workers",
    [
        pytest.param(["--dist", "loadscope"], {"main"}, id="dist-without-n"),
        pytest.param(["-n", "1"], {"gw0"}, id="n1"),
        pytest.param(["-n", "auto"], {f"gw{i}" for i in range(64)}, id="n-auto"),
    ],
)
def test_every_distribution_mode(run_perf, pytester, args, workers):
    pytester.makepyfile(**SUITE)
    run = run_perf(*args)
    _check(run, workers)


def test_shared_collector_views(run_perf, pytester):
    """Per-worker figures, the concurrent memory peak and the session's use of its workers."""
    pytester.makepyfile(**SUITE)
    # 0.05 s sampling: the 40 MB test's 0.3 s hold spans 6 intervals
    run = run_perf("-n", "2", "--perf-print-summary", "--perf-cpu-interval=0.05")
    _check(run, {"gw0", "gw1"})
    rep = run.report
    peak = rep["concurrent_memory_peak"]
    assert peak is not None
    # The 100 MB test was held for 300 ms with a 50 ms sampler: the peak moment is inside it.
    mem = run.test("test_memory")
    assert peak["workers"][mem["worker"]]["test"].endswith("test_memory")
    assert peak["total_rss_mb"] >= sum(w["rss_mb"] for w in peak["workers"].values()) - 0.01
    assert peak["total_rss_mb"] >= mem["memory"]["start_mb"] + 95
    eff = rep["summary"]["parallel_efficiency"]
    assert 0 < eff <= 1
    assert rep["summary"]["total_duration"] == pytest.approx(
        sum(t["duration"] for t in rep["tests"].values()), abs=1e-3
    )
    out = run.result.stdout.str()
    assert "workers" in out and "gw0" in out and "gw1" in out
    assert "concurrent memory peak" in out
    assert "worker utilisation" in out
