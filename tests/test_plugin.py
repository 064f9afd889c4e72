"""Options, outcomes, the report's shape and the terminal summary, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import preloaded
import pytest
from helpers import XDIST_ENDS, check_print_summary, shared_run, validate

OUTCOMES = """
import pytest

def test_pass():
    pass

def test_fail():
    assert 0

@pytest.mark.skip(reason="demo")
def test_skip():
    pass

@pytest.mark.xfail(reason="demo")
def test_xfail():
    assert 0

@pytest.mark.xfail(reason="demo")
def test_xpass():
    pass

@pytest.fixture
def broken():
    raise RuntimeError("setup fails")

def test_setup_error(broken):
    pass

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown fails")

def test_teardown_error(broken_teardown):
    pass

@pytest.mark.parametrize("x", [1], ids=["\\udcff-not-utf8"])
def test_odd_id(x):
    pass
"""


JUNIT = """
def test_keep():
    test_keep.x = b'x' * (20 * 1024 * 1024)

def test_plain():
    pass
"""


def _outcomes_run(tmp_path_factory, xdist: list):
    """One run of OUTCOMES and JUNIT with --junitxml, made once per xdist mode for the two
    tests below (the JUnit XML changes nothing the report says)."""
    files = {"test_outcomes": OUTCOMES, "test_junit": JUNIT}
    return shared_run(tmp_path_factory, files, "--junitxml=junit.xml", *xdist)


@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_every_outcome_is_reported_and_exit_code_unchanged(tmp_path_factory, xdist):
    run = _outcomes_run(tmp_path_factory, xdist)
    assert run.ret == pytest.ExitCode.TESTS_FAILED  # as without monitoring
    outcomes = {
        k.split("::")[-1]: v["outcome"]
        for k, v in run.tests.items()
        if k.startswith("test_outcomes.py::")
    }
    assert outcomes == {
        "test_pass": "passed",
        "test_fail": "failed",
        "test_skip": "skipped",
        "test_xfail": "xfailed",
        "test_xpass": "xpassed",
        "test_setup_error": "error",
        "test_teardown_error": "error",
        "test_odd_id[\\udcff-not-utf8]": "passed",
    }
    assert run.report["session"]["total_tests"] == 8 + 2  # and JUNIT's two, passed
    assert run.report["summary"]["outcomes"]["failed"] == 1
    assert run.report["session"]["exit_status"] == 1
    assert "Traceback" not in run.result.stderr.str()


def test_ini_options_and_command_line_wins(run_perf, pytester):
    pytester.makepyfile("def test_one(): pass")
    pytester.makeini(
        "[pytest]\nperf_monitor = true\nperf_output = from_ini.json\n"
        "perf_system_info = false\nperf_cpu_interval = 0.05\n"
    )
    run = run_perf(monitor=False)
    assert run.ret == 0, run.text
    rep = json.loads((pytester.path / "from_ini.json").read_text())
    assert "system" not in rep
    assert rep["session"]["measurement"]["sample_interval"] == 0.05
    assert rep["session"]["total_tests"] == 1

    (pytester.path / "from_ini.json").unlink()
    run = run_perf("--no-perf-monitor", monitor=False)
    assert run.ret == 0, run.text
    assert not (pytester.path / "from_ini.json").exists()
    # (the command line over the ini file, setting by setting: tests/test_plugin_units.py)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--perf-cpu-interval=-1"], "must be at least 0.01"),
        (["--perf-cpu-interval=0.001"], "must be at least 0.01"),
        (["--perf-cpu-interval=1e-9"], "must be at least 0.01"),
        (["--perf-cpu-interval=abc"], "not a number"),
        (["--perf-cpu-interval=3600"], "below 3600 seconds"),
        (["--perf-cpu-interval=inf"], "below 3600 seconds"),
        (["--perf-output=a_file/x.json"], "cannot create the directory"),
        (["--perf-daemon=tcp://localhost"], "not an endpoint"),
        (["--perf-daemon=tcp://::1:5555"], "not an endpoint"),
        (["--perf-daemon=ipc://"], "not an endpoint"),
        (["--perf-daemon=udp://x:1"], "not an endpoint"),
    ],
)
def test_bad_options_are_usage_errors(pytester, inprocess, args, message):
    """One line on stderr, exit code 4 (in-process: nothing is spawned before the error)."""
    pytester.makepyfile("def test_one(): pass")
    (pytester.path / "a_file").write_text("not a directory")
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--perf-monitor", *args)
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    err = [line for line in res.stderr.lines if line.strip()]
    assert any(message in line for line in err), err
    assert "Traceback" not in res.stderr.str() + res.stdout.str()


@pytest.mark.parametrize(
    "ini, message",
    [
        ("perf_cpu_interval = 0.005", "perf_cpu_interval in the ini file: must be at least 0.01"),
        # pytest 9 says only "invalid truth value" (a UsageError, no longer a ValueError)
        ("perf_monitor = maybe", "perf_monitor in the ini file: invalid truth value 'maybe'"),
        ("perf_children = maybe", "perf_children in the ini file: invalid truth value"),
    ],
)
def test_bad_ini_value_is_a_usage_error_naming_the_key(pytester, inprocess, ini, message):
    pytester.makepyfile("def test_one(): pass")
    pytester.makeini(f"[pytest]\n{ini}\n")
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--perf-monitor")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert message in res.stderr.str()
    assert "Traceback" not in res.stderr.str() + res.stdout.str()


CHECK_IMPORTS = """
import sys, os

def test_nothing_heavy_loaded():
    heavy = [m for m in ("zmq", "msgpack", "psutil", "pytest_perfmon._roles") if m in sys.modules]
    assert heavy == []
    kids = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            kids += f.read().split()
    assert kids == []
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_off_by_default_imports_and_spawns_nothing(pytester, monkeypatch):
    monkeypatch.setenv("PERFMON_TESTS_EXEC", "1")  # a real start: a fork has zmq imported
    pytester.makepyfile(CHECK_IMPORTS)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    assert res.ret == 0, res.stdout.str()
    assert not (pytester.path / "performance_metrics.json").exists()


def test_help_imports_nothing_heavy(tmp_path):
    code = (
        "import sys, pytest, contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    pytest.main(['--help', '-p', 'no:cacheprovider'])\n"
        "assert '--perf-monitor' in out.getvalue()\n"
        "assert '--perf-cpu-interval' in out.getvalue()\n"
        "assert 'at least 0.01' in ' '.join(out.getvalue().split())\n"
        "print([m for m in ('zmq', 'msgpack', 'psutil') if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,  # not our own tests/conftest.py, which imports the monitor package
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


SUMMARY_SUITE = """
import time, pytest

@pytest.mark.parametrize("i", range(15))
def test_many(i):
    time.sleep(0.001 * i)

def test_memory():
    test_memory.keep = b"x" * (30 * 1024 * 1024)

def test_cpu():
    t = time.process_time()
    while time.process_time() - t < 0.05:
        pass
"""


# Without xdist. With two workers, the same checks and the workers' sections:
# tests/test_xdist.py's test_print_summary_fits_the_terminal_with_workers, on the -n 2 run its
# tests of the workers' views read (one pytest run fewer).
def test_print_summary_fits_the_terminal(run_perf, pytester):
    pytester.makepyfile(test_summary=SUMMARY_SUITE)
    run = run_perf("--perf-print-summary", env={"COLUMNS": "80"})
    assert run.ret == 0, run.text
    check_print_summary(run.result.stdout.str(), run.tests, "test_memory")


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes")
def test_node_id_that_is_not_utf8(run_perf, pytester):
    name = os.fsdecode(b"test_\xff.py")  # a file name that is not valid UTF-8
    (pytester.path / name).write_text("def test_x():\n    pass\n")
    out = pytester.path / "perf.json"
    # pytester cannot decode this run's output; this one replaces what is not UTF-8.
    proc = preloaded.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--perf-monitor",
            f"--perf-output={out}",
        ],
        pytester.path,
        dict(os.environ),
        120,
    )
    assert proc.returncode == 0, proc.stdout
    report = validate(json.loads(out.read_text(encoding="utf-8")))
    assert list(report["tests"]) == ["test_\\xff.py::test_x"]


def test_node_id_with_a_lone_surrogate(run_perf, pytester):
    """pytest's id escaping switched off, a parameter that is a lone surrogate (no byte
    surrogateescape made): pytest's own outcome and exit code (it errors on that test), and
    the test in the report under its escaped id. (It was INTERNALERROR, exit 3.)"""
    pytester.makeini(
        "[pytest]\ndisable_test_id_escaping_and_forfeit_all_rights_to_community_support = true\n"
    )
    pytester.makepyfile(
        test_s="""
        import pytest

        @pytest.mark.parametrize("x", ["\\ud800", "ok"])
        def test_p(x):
            pass
        """
    )
    plain = run_perf("-p", "no:randomly", monitor=False)
    run = run_perf("-p", "no:randomly")
    assert run.ret == plain.ret == 1, run.text
    assert "INTERNALERROR" not in run.text
    assert sorted(run.tests) == ["test_s.py::test_p[\\ud800]", "test_s.py::test_p[ok]"]
    assert run.report["summary"]["outcomes"] == {"error": 1, "passed": 1}


@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_junitxml_carries_the_metrics(tmp_path_factory, xdist):
    import xml.etree.ElementTree as ET

    run = _outcomes_run(tmp_path_factory, xdist)
    assert {run.test(n)["outcome"] for n in ("test_keep", "test_plain")} == {"passed"}, run.text
    root = ET.parse(run.path.parent / "junit.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase") if c.get("classname") == "test_junit"}
    assert set(cases) == {"test_keep", "test_plain"}
    for name, case in cases.items():
        props = {p.get("name"): float(p.get("value")) for p in case.iter("property")}
        assert set(props) == {
            "perf_duration",
            "perf_memory_start_mb",
            "perf_memory_peak_mb",
            "perf_memory_end_mb",
            "perf_memory_delta_mb",
            "perf_cpu_percent",
        }
        # the same counters as the report, read microseconds apart
        mine = run.test(name)
        assert props["perf_duration"] == pytest.approx(mine["duration"], abs=1e-3)
        assert props["perf_memory_delta_mb"] == pytest.approx(mine["memory"]["delta_mb"], abs=1)
    keep = {p.get("name"): float(p.get("value")) for p in cases["test_keep"].iter("property")}
    assert keep["perf_memory_delta_mb"] >= 19


# pytest.exit() inside a test, serial and -n 2, against a run without perfmon: the test is
# interrupted, never finished, the exit code pytest's own (tests/test_endings.py,
# test_pytest_exit_in_a_test).


# --------------------------------------------------------------------------- one run, read by
# the tests below: a test that passes and one that is skipped, with the options they are about

BASIC = """
import pytest

def test_one():
    pass

@pytest.mark.skip(reason="demo")
def test_skipped():
    pass
"""


@pytest.fixture
def basic(tmp_path_factory):
    run = shared_run(
        tmp_path_factory,
        {"test_basic": BASIC},
        "--no-perf-system-info",
        "--perf-print-summary",
        output="reports/nested/perf.json",
        env={"GITHUB_STEP_SUMMARY": "{dir}/step_summary.md"},
    )
    assert run.ret == 0, run.text
    return run


def test_no_system_info_flag(basic):
    assert "system" not in basic.report


def test_output_directories_are_created(basic):
    """Like --junitxml: missing parent directories of --perf-output are made."""
    assert basic.report["session"]["total_tests"] == 2


def test_github_step_summary(basic):
    text = (basic.path.parents[2] / "step_summary.md").read_text()
    assert text.startswith("### ")
    assert "| " in text and "test_one" in text


def test_report_file_mode_follows_umask(basic):
    mask = os.umask(0)
    os.umask(mask)
    assert basic.path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_phase_that_never_ran_is_null(basic):
    t = basic.test("test_skipped")
    assert t["call_time"] is None and t["teardown_time"] is not None
    assert t["duration"] == pytest.approx(t["setup_time"] + t["teardown_time"], abs=2e-6)
