"""pytest --perf-monitor -n N: every xdist worker reports into one collector, one report."""

from __future__ import annotations

import pytest
from helpers import check_print_summary, shared_run

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

#: SUITE's companion in the -n 2 run the summary is read from (tests/test_plugin.py checks
#: the summary without xdist, on its own suite): a test that keeps 30 MB, the largest
#: |end - start| (test_memory frees its 100 MB before its end), and one that burns 50 ms of
#: CPU (for the "CPU over" section), as tests/test_plugin.py's SUMMARY_SUITE has
SUMMARY_EXTRA = {
    "test_summary": """
import time

def test_keep():
    test_keep.block = b"x" * (30 * 1024 * 1024)

def test_cpu():
    t = time.process_time()
    while time.process_time() - t < 0.05:
        pass
""",
}


def _check(run, workers: set, n_tests: int = N_TESTS) -> None:
    assert run.ret == 0, run.text
    rep = run.report
    tests = rep["tests"]
    assert len(tests) == n_tests == rep["session"]["total_tests"]
    assert rep["session"]["records_dropped"] == 0
    assert {t["worker"] for t in tests.values()} <= workers
    assert set(rep["workers"]) <= workers
    assert sum(w["tests"] for w in rep["workers"].values()) == n_tests
    for wid, w in rep["workers"].items():
        pids = {t["pid"] for t in tests.values() if t["worker"] == wid}
        assert pids == {w["pid"]}
        assert w["busy_time"] > 0 and w["idle_time"] >= 0
        assert w["peak_rss_mb"] > 0
    assert all(t["outcome"] == "passed" for t in tests.values())


# Every --dist mode with -n 2, -n 0, -n 12 and -p no:xdist: tests/test_compat.py's matrix, on
# a suite of every outcome, checked against pytest's own view and with these checks of the
# workers (check_workers; noxfile.py's compat sessions run those cases too). Here, the ways
# of asking for xdist that the matrix does not take (and -n auto: test_n_auto).
@pytest.mark.parametrize(
    "args, workers",
    [
        pytest.param(["--dist", "loadscope"], {"main"}, id="dist-without-n"),
        pytest.param(["-n", "1"], {"gw0"}, id="n1"),
    ],
)
def test_every_distribution_mode(run_perf, pytester, args, workers):
    pytester.makepyfile(**SUITE)
    run = run_perf(*args)
    _check(run, workers)


@pytest.fixture
def views(tmp_path_factory):
    """One -n auto run of SUITE and SUMMARY_EXTRA at 80 columns, made once and read by the
    three tests below (it was a run each: -n auto, the views and the summary with -n 2). xdist
    resolves -n auto to a number of workers before this plugin reads any option:
    PYTEST_XDIST_AUTO_NUM_WORKERS when set (here 2: the -n 2 run the views and the summary
    read), else the CPU count."""
    # 0.05 s sampling: the 100 MB test's 0.3 s hold spans 6 intervals
    return shared_run(
        tmp_path_factory,
        {**SUITE, **SUMMARY_EXTRA},
        "-n",
        "auto",
        "--perf-print-summary",
        "--perf-cpu-interval=0.05",
        env={"PYTEST_XDIST_AUTO_NUM_WORKERS": "2", "COLUMNS": "80"},
    )


def test_n_auto(views):
    _check(views, {"gw0", "gw1"}, N_TESTS + 2)
    assert set(views.report["workers"]) == {"gw0", "gw1"}  # auto, as the number set


def test_shared_collector_views(views):
    """Per-worker figures, the concurrent memory peak and the session's use of its workers."""
    run = views
    _check(run, {"gw0", "gw1"}, N_TESTS + 2)
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


def test_print_summary_fits_the_terminal_with_workers(views):
    """--perf-print-summary under xdist at 80 columns: tests/test_plugin.py's checks of the
    summary without xdist (each section once, every line fits, the slowest tests as the report
    ranks them, the largest memory delta first), and the workers' sections."""
    assert views.ret == 0, views.text
    block = check_print_summary(views.result.stdout.str(), views.tests, "test_keep")
    assert "workers" in block
    assert any("concurrent memory peak" in line for line in block)
