"""End to end, with real xdist workers: a worker that dies mid-test (issue 14 item 3) and the
terminal summary (issue 14 item 10); ``--dist each`` (issue 14 item 4) is a case of
tests/test_compat.py. Everything else about reports is tested in-process
(tests/test_report.py)."""

from __future__ import annotations

INTERVAL = 0.05  # seconds; every condition below holds for at least 5 intervals

CRASH_SUITE = f"""
import os, time

HOLD = {INTERVAL} * 8

def test_1_quiet():
    time.sleep(HOLD)  # a test of its own, long enough to be sampled

def test_2_dies_holding_memory():
    block = bytearray(80 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1  # touched: resident
    time.sleep(HOLD)
    os._exit(1)
"""


#: Where the kernel keeps no resettable peak (not Linux, or /proc/self/clear_refs refused),
#: the monitor's samples decide every peak: the case where a window could cross into the next
#: test. This conftest makes the workers measure that way.
NO_KERNEL_PEAK = """
import pytest_perfmon._counters as c

_init = c.Counters.__init__


def _no_kernel_peak(self):
    _init(self)
    self.peak = c._none
    self.methods["peak"] = False


c.Counters.__init__ = _no_kernel_peak
"""


def test_worker_crash_does_not_bleed_into_the_previous_test(run_perf, pytester):
    """With kernel peaks, the finished test's peak is the kernel's (tests/test_faults.py covers
    that crash); the sampled case is where windows could cross, so that is the one run here."""
    pytester.makepyfile(test_crash=CRASH_SUITE)
    pytester.makeconftest(NO_KERNEL_PEAK)
    run = run_perf("-n", "1", f"--perf-cpu-interval={INTERVAL}")
    assert run.ret == 1, run.text  # the crashed test fails, as without monitoring
    method = run.report["session"]["measurement"]["memory_peak"]
    assert method == "psutil-sampled", method  # the conftest took effect
    quiet = run.test("test_1_quiet")
    crashed = run.test("test_2_dies_holding_memory")
    assert crashed["outcome"] == "crashed" and quiet["worker"] == crashed["worker"], run.tests
    # the crashed test held 80 MB for 8 intervals: its samples saw it
    assert crashed["memory"]["peak_mb"] - crashed["memory"]["start_mb"] >= 60, crashed
    # ... and none of it is the quiet test's, which ran before on the same worker
    mem = quiet["memory"]
    assert mem["peak_mb"] is not None, quiet
    assert mem["peak_mb"] < crashed["memory"]["peak_mb"] - 60, (quiet, crashed)
    if mem["end_mb"] is not None:
        assert mem["end_mb"] < crashed["memory"]["peak_mb"] - 60, (quiet, crashed)


# --dist each (issue 14 item 4): tests/test_compat.py's matrix (case dist-each), every test
# with one execution per worker, attempts 1 and 2, its times their sums, and the workers'
# and the session's counts.


SUMMARY_SUITE = """
import time

import pytest


class TestAVeryLongClassNameThatFillsTheLine:
    @pytest.mark.parametrize("case", ["first-parameter-value", "second-parameter-value"])
    def test_a_long_test_name_that_says_what_it_checks(self, case):
        t = time.process_time()
        while time.process_time() - t < 0.03:
            pass


def test_memory():
    keep = bytearray(20 * 1024 * 1024)
    for i in range(0, len(keep), 4096):
        keep[i] = 1
    _held.append(keep)


_held = []
"""


def test_terminal_summary_fits_50_columns(run_perf, pytester):
    """Issue 14 item 10, in a real terminal reporter with xdist: every line of the summary fits
    COLUMNS=50, the first included; names are cut in the middle, keeping the test name."""
    pytester.makepyfile(test_a_module_with_a_rather_long_file_name=SUMMARY_SUITE)
    run = run_perf("--perf-print-summary", "-n", "2", env={"COLUMNS": "50"})
    assert run.ret == 0, run.text
    lines = run.result.stdout.str().splitlines()
    start = next(i for i, line in enumerate(lines) if "performance summary" in line)
    block = [line for line in lines[start:] if not line.startswith("perfmon: report written")]
    assert len(block) > 10
    assert all(len(line) <= 50 for line in block), [ln for ln in block if len(ln) > 50]
    assert block[1].startswith("3 tests (3 passed)")
    slow = block.index("slowest tests (s; top 3 of 3)")
    rows = block[slow + 2 : slow + 5]
    # cut in the middle: the start of the name and the end of its parameters are kept
    assert sum(r.split()[-1].startswith("test_a") and r.endswith("value]") for r in rows) == 2
    assert any(r.endswith(" test_memory") for r in rows), rows
