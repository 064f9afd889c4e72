"""Performance limits (issue 11): perf_limit marker, --perf-limit-* / ini defaults, --perf-limits.

End-to-end: real pytest runs with the real monitor, without xdist and with -n 2, one run per
mode covering every metric. The inner tests go over their limits by construction (a sleep of
0.05 s against a limit of 0.01 s, 160 MB against a limit 80 MB above the process's RSS at
import), so no assertion depends on the machine's speed. The rest in-process.
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
from helpers import RUN_TIMEOUT, XDIST_ENDS
from pytest_perfmon import _limits, _settings, _summary
from pytest_perfmon.monitor import report as report_model

LINUX = sys.platform.startswith("linux")

SUITE = """
import os
import time

import pytest

pytestmark = pytest.mark.perf_limit(cpu_time=60)  # every test; nearer markers add or override

# The runs give every test delta_mb <= 20 from the command line (the ini file says 1000).

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

BASE = rss_mb()
KEEP = []

def spin(seconds):
    t = time.process_time()
    while time.process_time() - t < seconds:
        pass

@pytest.fixture
def slow_teardown():
    yield
    time.sleep(0.05)

@pytest.mark.perf_limit(call=0.01)
def test_call_over():
    time.sleep(0.05)

@pytest.mark.perf_limit(duration=0.02, call=30)
def test_duration_over(slow_teardown):
    pass

# 160 MB against BASE + 80: 80 MB over the limit, and the neighbour (about BASE) 80 MB under
# it. (It was 300 against BASE + 150: touching those pages was 0.16 CPU-s of each run.)
@pytest.mark.perf_limit(peak_mb=BASE + 80)
def test_peak_over():
    b = bytearray(160 * 2**20)
    b[::4096] = b"x" * len(b[::4096])
    del b

@pytest.mark.perf_limit(peak_mb=BASE + 80)
def test_peak_neighbour():
    pass  # runs near test_peak_over, in the same process or not: its peak is its own

@pytest.mark.perf_limit(delta_mb=10)
def test_delta_over():
    KEEP.append(b"k" * (30 * 2**20))

def test_default_delta_over():
    KEEP.append(b"k" * (30 * 2**20))

@pytest.mark.perf_limit(delta_mb=None)
def test_default_removed():
    KEEP.append(b"k" * (30 * 2**20))

@pytest.mark.perf_limit(cpu_time=0.01)
def test_cpu_over():
    spin(0.03)  # 3 x the limit on any machine: the limit reads time.process_time, as spin

@pytest.mark.perf_limit(call=30, duration=30, peak_mb=100000, delta_mb=100000)
def test_under():
    pass

@pytest.mark.perf_limit(call=0.001)
def test_skipped():
    time.sleep(0.005)
    pytest.skip("skipped after using time")

@pytest.mark.xfail(reason="expected")
@pytest.mark.perf_limit(call=0.001)
def test_xfailed():
    time.sleep(0.005)
    assert False

@pytest.mark.xfail(reason="expected")
@pytest.mark.perf_limit(call=0.001)
def test_xpassed():
    time.sleep(0.005)

@pytest.mark.perf_limit(call=0.001)
def test_failed():
    time.sleep(0.005)
    assert False, "its own failure"
"""

FAIL_EXPECT = {  # test -> (outcome, [(metric, action)])
    "test_call_over": ("failed", [("call", "fail")]),
    "test_duration_over": ("error", [("duration", "fail")]),
    "test_peak_over": ("error", [("peak_mb", "fail")]),
    "test_peak_neighbour": ("passed", []),
    "test_delta_over": ("error", [("delta_mb", "fail")]),
    "test_default_delta_over": ("error", [("delta_mb", "fail")]),
    "test_default_removed": ("passed", []),
    "test_cpu_over": ("error", [("cpu_time", "fail")]),
    "test_under": ("passed", []),
    "test_skipped": ("skipped", []),
    "test_xfailed": ("xfailed", [("call", "xfail")]),
    "test_xpassed": ("xpassed", [("call", "xfail")]),
    "test_failed": ("failed", [("call", "note")]),
}

UNCHANGED = {  # the same suite, limits not enforced
    "test_call_over": "passed",
    "test_duration_over": "passed",
    "test_peak_over": "passed",
    "test_peak_neighbour": "passed",
    "test_delta_over": "passed",
    "test_default_delta_over": "passed",
    "test_default_removed": "passed",
    "test_cpu_over": "passed",
    "test_under": "passed",
    "test_skipped": "skipped",
    "test_xfailed": "xfailed",
    "test_xpassed": "xpassed",
}


def _violations(test: dict) -> list:
    return [(v["metric"], v["action"]) for v in test.get("limits", [])]


INI = "[pytest]\nperf_limits = warn\nperf_limit_delta_mb = 1000\n"
DEFAULT = "--perf-limit-delta-mb=20"  # the command line wins over the ini file


def _suite(pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeini(INI)


@pytest.mark.skipif(not LINUX, reason="the suite reads /proc/self/statm for its memory limits")
@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_fail_mode_every_metric(run_perf, pytester, xdist):
    _suite(pytester)
    run = run_perf("--perf-limits=fail", DEFAULT, "--junitxml=junit.xml", *xdist)
    assert run.ret == pytest.ExitCode.TESTS_FAILED, run.text
    for name, (outcome, violations) in FAIL_EXPECT.items():
        test = run.test(name)
        assert (test["outcome"], _violations(test)) == (outcome, violations), (name, run.text)
        for v in test.get("limits", []):
            assert v["value"] > v["limit"] and v["how"], v
    text = run.text
    # the failure names metric, measured value, limit and method; teardown metrics fail there
    # (the measured value is whatever the host gave the 0.05 s sleep: 0.2 s on a busy one)
    assert re.search(r"perf_limit: call \d+\.\d+ > limit 0\.01 s \(the call phase", text), text
    assert "ERROR at teardown of test_peak_over" in text
    assert "MB (kernel peak RSS over setup, call and teardown)" in text
    # the test that failed on its own keeps its failure, the limit is a note next to it
    assert "AssertionError: its own failure" in text and "- perf_limit -" in text
    assert "performance limits (pytest-perfmon)" in text
    assert "::warning" not in text
    junit = ET.parse(pytester.path / "junit.xml")
    props = {
        case.get("name"): [
            p.get("value") for p in case.iter("property") if p.get("name") == "perf_limit"
        ]
        for case in junit.iter("testcase")
    }
    assert props["test_call_over"] and props["test_call_over"][0].startswith("fail: call ")
    assert props["test_cpu_over"][0].startswith("fail: cpu_time ")
    assert props["test_under"] == [] and props["test_skipped"] == []


@pytest.mark.skipif(not LINUX, reason="the suite reads /proc/self/statm for its memory limits")
@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_warn_mode_keeps_outcomes_and_warns_on_github(run_perf, pytester, xdist):
    _suite(pytester)  # warn: from the ini file
    run = run_perf(DEFAULT, "-k", "not test_failed", *xdist, env={"GITHUB_ACTIONS": "true"})
    assert run.ret == pytest.ExitCode.OK, run.text
    for name, outcome in UNCHANGED.items():
        test = run.test(name)
        expected = [(m, "warn") for m, a in FAIL_EXPECT[name][1]]
        assert (test["outcome"], _violations(test)) == (outcome, expected), (name, run.text)
    assert "performance limits (pytest-perfmon)" in run.text
    warnings = [ln for ln in run.text.splitlines() if ln.startswith("::warning ")]
    assert len(warnings) == 8, run.text
    line = next(w for w in warnings if "test_suite.py::test_call_over" in w)
    assert line.startswith("::warning file=test_suite.py,line="), line
    assert re.search(r": call \d+\.\d+ > limit 0\.01 s \(the call phase", line), line


@pytest.mark.skipif(not LINUX, reason="the suite reads /proc/self/statm for its memory limits")
def test_off_mode_changes_nothing(run_perf, pytester):
    _suite(pytester)
    run = run_perf("--perf-limits=off", DEFAULT, "-k", "not test_failed")
    assert run.ret == pytest.ExitCode.OK, run.text
    for name, outcome in UNCHANGED.items():
        assert run.test(name)["outcome"] == outcome
        assert "limits" not in run.test(name)
    assert "performance limits" not in run.text


def test_bad_marker_under_xdist_names_the_test(run_perf, pytester):
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.perf_limit(peak_mb="lots")
        def test_x():
            pass
        """
    )
    run = run_perf("-n", "2")
    assert run.ret != pytest.ExitCode.OK
    assert "perf_limit on test_bad.py::test_x: peak_mb='lots' is not a number of MB" in run.text
    assert "INTERNALERROR" not in run.text and "Traceback" not in run.text


# --- in-process ----------------------------------------------------------------------------


BAD_MARKERS = [
    ('peak_mb="lots"', "perf_limit on test_bad_marker_values.py::test_0: peak_mb='lots' is not"),
    ("duration=-1", "::test_1: duration=-1 must be a finite number of seconds, 0 or more"),
    ("cpu_time=float('nan')", "cpu_time=nan must be a finite number of seconds"),
    ("call=True", "call=True is not a number of seconds"),
    ("wall=1", "unknown metric 'wall' (known: duration, call, peak_mb, delta_mb, cpu_time)"),
    ("children_peak_mb=1", "children_peak_mb is not available yet"),
    ("1", "takes keyword arguments only (metric=limit), got (1,)"),
]


def test_bad_marker_values(pytester, inprocess):
    pytester.makeini("[pytest]\n")
    items = pytester.getitems(
        "import pytest\n"
        + "".join(
            f"@pytest.mark.perf_limit({m})\ndef test_{i}(): pass\n"
            for i, (m, _) in enumerate(BAD_MARKERS)
        )
    )
    assert len(items) == len(BAD_MARKERS)
    for item, (_, message) in zip(items, BAD_MARKERS):
        with pytest.raises(pytest.UsageError) as exc:
            _limits.item_limits(item, {})
        assert message in str(exc.value) and "\n" not in str(exc.value), item.name
        assert f"::{item.name}: " in str(exc.value)


def test_bad_marker_is_a_usage_error(pytester, inprocess):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        test_m="import pytest\n@pytest.mark.perf_limit(call=-1)\ndef test_x(): pass\n",
        test_n="import pytest\n@pytest.mark.perf_limit(peak_mb='x')\ndef test_y(): pass\n",
    )
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--perf-monitor")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    err = res.stderr.str()
    assert "ERROR: perf_limit on test_m.py::test_x: call=-1 must be a finite number" in err
    assert "(and 1 more)" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "ini, args, message",
    [
        ("perf_limit_peak_mb = abc", [], "perf_limit_peak_mb in the ini file: peak_mb='abc' is"),
        ("perf_limits = loud", [], "perf_limits in the ini file: 'loud' is not one of fail,"),
        ("", ["--perf-limit-call=-1"], "--perf-limit-call: call='-1' must be a finite number"),
        ("", ["--perf-limits=loud"], "--perf-limits: invalid choice: 'loud'"),
    ],
)
def test_bad_default_is_a_usage_error_at_start(pytester, inprocess, ini, args, message):
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_one(): pass")
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--perf-monitor", *args)
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert message in res.stderr.str()


def test_marker_is_registered_without_monitoring(pytester, inprocess):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile("import pytest\n@pytest.mark.perf_limit(call=0.0)\ndef test_x(): pass\n")
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--strict-markers")
    res.assert_outcomes(passed=1)  # not enforced without --perf-monitor


def test_nearest_marker_sets_each_metric(pytester, inprocess):
    pytester.makeini("[pytest]\n")
    items = pytester.getitems(
        """
        import pytest

        pytestmark = pytest.mark.perf_limit(call=1, peak_mb=100)

        @pytest.mark.perf_limit(call=2, cpu_time=5)
        class TestC:
            @pytest.mark.perf_limit(call=3)
            def test_function_wins(self):
                pass

            def test_class_wins(self):
                pass

            @pytest.mark.perf_limit(peak_mb=None, cpu_time=None, call=None)
            def test_none_removes(self):
                pass

        def test_module_only():
            pass

        @pytest.mark.parametrize("n", [1, pytest.param(2, marks=pytest.mark.perf_limit(call=9))])
        def test_param(n):
            pass
        """
    )
    defaults = {"duration": 60.0, "call": 0.5}
    got = {i.name: _limits.item_limits(i, defaults) for i in items}
    assert got == {
        "test_function_wins": {"duration": 60.0, "call": 3.0, "peak_mb": 100.0, "cpu_time": 5.0},
        "test_class_wins": {"duration": 60.0, "call": 2.0, "peak_mb": 100.0, "cpu_time": 5.0},
        "test_none_removes": {"duration": 60.0},
        "test_module_only": {"duration": 60.0, "call": 1.0, "peak_mb": 100.0},
        "test_param[1]": {"duration": 60.0, "call": 1.0, "peak_mb": 100.0},
        "test_param[2]": {"duration": 60.0, "call": 9.0, "peak_mb": 100.0},
    }
    assert _limits.item_limits(items[2], {}) is None  # nothing left: no limit at all


def test_resolve_limits_command_line_over_ini():
    ini = {"perf_limits": "warn", "perf_limit_call": "2", "perf_limit_peak_mb": " 300 "}
    option = SimpleNamespace(perf_limits=None, perf_limit_call=1.5)
    mode, limits = _settings.resolve_limits(option, lambda k: ini.get(k, ""))
    assert mode == "warn"
    assert dict(limits) == {"call": 1.5, "peak_mb": 300.0}
    option = SimpleNamespace(perf_limits="off")
    assert _settings.resolve_limits(option, lambda k: "")[0] == "off"
    assert _settings.resolve_limits(SimpleNamespace(), lambda k: "") == ("fail", ())
    with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number of MB"):
        _settings.limit_type("peak_mb")("inf")
    assert _settings.limit_type("delta_mb")("0") == 0.0


def test_message_shows_the_excess():
    assert _limits.message("peak_mb", 231.44, 200) == (
        "peak_mb 231.4 > limit 200 MB (kernel peak RSS over setup, call and teardown)"
    )
    # rounding would print "0.100 > limit 0.1": more digits instead
    assert _limits.message("call", 0.10004, 0.1).startswith("call 0.100040 > limit 0.1 s (")


def test_report_copies_checked_limits():
    good = {"metric": "call", "limit": 0.1, "value": 0.2, "action": "fail", "how": "h"}
    extra = {"limits": [good, {"metric": "call"}, "junk", dict(good, limit=True)]}
    assert report_model._limits(extra) == [good]
    assert report_model._limits({"other": 1}) is None and report_model._limits(None) is None
    assert report_model._limits({"limits": ["junk"]}) is None


class _TR:
    def __init__(self) -> None:
        self.lines: list = []
        self._tw = SimpleNamespace(fullwidth=120)

    def write_sep(self, sep: str, title: str) -> None:
        self.lines.append(f"{sep * 3} {title}")

    def write_line(self, line: str, **markup: object) -> None:
        self.lines.append(line)


def test_summary_section_and_github_lines():
    rows = [
        ("t.py::test_b", ("t.py", 9, "test_b"), "fail", "call 0.2 > limit 0.1 s (how, call)"),
        ("t.py::test_a[x,y]", ("t.py", 3, "test_a"), "warn", "peak_mb 5.0 > limit 1 MB (p)"),
        ("t.py::test_c", ("t.py", 12, "test_c"), "unchecked", "peak_mb not checked: n/a"),
        ("t.py::test_d", ("t.py", 15, "test_d"), "note", "duration 0.2 > limit 0.1 s (w (0.3 s))"),
    ]
    tr = _TR()
    _summary.write_limits(tr, rows, github=True)
    text = "\n".join(tr.lines)
    assert "4 limit violation(s) in 4 test(s)" in text
    assert "duration: w (0.3 s)" in text  # its own closing bracket kept
    assert "  fail       call 0.2 > limit 0.1 s " in text and "call: how, call" in text
    gh = [ln for ln in tr.lines if ln.startswith("::warning")]
    assert gh[0] == (
        "::warning file=t.py,line=4,title=perf_limit warn::t.py::test_a[x,y]: "
        "peak_mb 5.0 > limit 1 MB (p)"
    )
    assert len(gh) == 3  # a failed test is pytest's to show
    tr = _TR()
    _summary.write_limits(tr, rows, github=False)
    assert not any(ln.startswith("::") for ln in tr.lines)


def test_markers_found_without_defaults_wherever_they_are(pytester):
    """No default limit: a test's limits come from markers alone, on the function, a
    parameter, its class (a class inside a class too) or its module; a test under none runs
    without limits (the check skips the marker lookup for the items of a collector that has
    no marker above it, and must still find every one of these)."""
    pytester.makeini("[pytest]\n")
    sleep = "time.sleep(0.05)"
    pytester.makepyfile(
        test_none=f"import time\ndef test_free(): {sleep}\n",
        test_module=(
            "import time, pytest\npytestmark = pytest.mark.perf_limit(call=0.001)\n"
            f"def test_m(): {sleep}\n"
        ),
        test_classes=(
            "import time, pytest\n"
            "@pytest.mark.perf_limit(call=0.001)\nclass TestA:\n"
            f"    def test_a(self): {sleep}\n"
            "    class TestInner:\n"
            f"        def test_inner(self): {sleep}\n"
            "class TestFree:\n"
            f"    def test_b(self): {sleep}\n"
            "    @pytest.mark.perf_limit(call=0.001)\n"
            f"    def test_own(self): {sleep}\n"
        ),
        test_param=(
            "import time, pytest\n"
            "@pytest.mark.parametrize('n', [1, pytest.param(2, marks=pytest.mark.perf_limit("
            f"call=0.001))])\ndef test_p(n): {sleep}\n"
        ),
    )
    # A subprocess: a whole monitored session in this process would leave the plugin's
    # modules, imported afresh in it, beside those the other tests hold.
    res = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--perf-monitor", "-rf", timeout=RUN_TIMEOUT
    )
    text = res.stdout.str()
    failed = sorted(line.split(" ")[1] for line in text.splitlines() if line.startswith("FAILED "))
    assert failed == [
        "test_classes.py::TestA::TestInner::test_inner",
        "test_classes.py::TestA::test_a",
        "test_classes.py::TestFree::test_own",
        "test_module.py::test_m",
        "test_param.py::test_p[2]",
    ], text
    res.assert_outcomes(passed=3, failed=5)
