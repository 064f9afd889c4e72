"""Faults never change the run's outcome: a monitor that cannot start or dies, an output that
cannot be written, pytest killed under the monitor, an xdist worker dying mid-test."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import preloaded
import pytest
from helpers import FIND_MONITOR, FIND_OWN_MONITOR, OWNER_CONFTEST, validate

SUITE = """
def test_one():
    pass

def test_two():
    assert 0

def test_three():
    pass
"""


#: Serial, the monitor that exits runs with -p no:terminal: no terminal summary hook, the report
#: and the warning (on stderr) still come. (Serial with the terminal: the missing file's case.)
NO_TERMINAL = ["-p", "no:terminal"]


@pytest.mark.parametrize(
    "python, xdist",
    [
        pytest.param("/bin/false", NO_TERMINAL, id="exits-no-xdist-no-terminal"),
        pytest.param("/bin/false", ["-n", "2"], id="exits-n2"),
        pytest.param("/no/such/python", [], id="no-such-file"),
    ],
)
def test_monitor_cannot_start(run_perf, pytester, python, xdist):
    pytester.makepyfile(test_suite=SUITE)
    run = run_perf(*xdist, env={"PERFMON_MONITOR_PYTHON": python})
    assert run.ret == 1  # test_two fails; monitoring adds nothing to the exit code
    warnings = [line for line in run.text.splitlines() if line.startswith("perfmon: warning:")]
    assert len(warnings) >= 1, run.text
    if python == "/bin/false":  # it ended at once: said so, never a wait that did not happen
        assert any("did not start (exit code 1)" in w for w in warnings), warnings
        assert not any("no answer within" in w for w in warnings), warnings
    if xdist == NO_TERMINAL:
        assert "perfmon: warning:" in run.result.stderr.str()
    assert "Traceback" not in run.text
    # Nothing measured is lost: the plugin wrote the report from its own measurements.
    assert run.report["session"]["collector"] == "plugin-fallback"
    assert sorted(k.split("::")[1] for k in run.tests) == ["test_one", "test_three", "test_two"]
    assert run.report["session"]["warnings"]
    assert run.report["session"]["measurement"]["memory_peak"] == (
        "kernel-peak-rss-reset-at-boundaries"
    )


KILL_MONITOR = (
    FIND_OWN_MONITOR
    + """
import os, select, signal, time
import psutil

def test_before():
    test_before.keep = b"x" * (20 * 1024 * 1024)

def test_kill_monitor():
    mon = _monitor()
    fd = os.pidfd_open(mon.pid) if hasattr(os, "pidfd_open") else None
    mon.send_signal(signal.SIGKILL)
    if fd is not None:
        # Gone to its last thread, as the plugin's next look sees it (its main thread is a
        # zombie while the others still exit and its memory is freed, which takes a while
        # on a busy machine).
        assert select.select([fd], [], [], 10)[0]
        os.close(fd)
        return
    deadline = time.monotonic() + 10
    while mon.is_running() and mon.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)

def test_after():
    pass
"""
)


@pytest.mark.parametrize("xdist", [[], ["-n", "1"]], ids=["no-xdist", "n1"])
def test_monitor_killed_mid_run(run_perf, pytester, xdist):
    pytester.makepyfile(test_kill=KILL_MONITOR)
    pytester.makeconftest(OWNER_CONFTEST)
    run = run_perf(*xdist)
    assert run.ret == 0, run.text
    # Replaced (tests/test_invisible.py has the details); the warning names the test and how.
    assert any(
        "perfmon: warning: the monitor died during " in line
        and "test_kill.py::test_kill_monitor" in line
        and "(killed by SIGKILL, or crashed)" in line
        for line in run.text.splitlines()
    ), run.text
    assert "Traceback" not in run.text
    rep = run.report
    assert rep["session"]["collector"] == "monitor"
    assert sorted(k.split("::")[1] for k in run.tests) == [
        "test_after",
        "test_before",
        "test_kill_monitor",
    ]
    assert run.test("test_before")["memory"]["delta_mb"] >= 19


def test_output_not_writable(run_perf, pytester):
    pytester.makepyfile(test_suite=SUITE)
    # /proc exists but takes no new files, even for root.
    res = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--perf-monitor",
        "--perf-output=/proc/perfmon.json",
        timeout=120,
    )
    assert res.ret == 1
    text = res.stdout.str() + res.stderr.str()
    warnings = [line for line in text.splitlines() if line.startswith("perfmon: warning:")]
    assert len(warnings) == 1, text
    assert "cannot write /proc/perfmon.json" in warnings[0]
    assert "Traceback" not in text
    # The report is not lost: it went to a temporary file, named in the warning.
    saved = warnings[0].rsplit("saved to ", 1)[1].split()[0].rstrip(";")
    try:
        with open(saved, encoding="utf-8") as f:
            report = validate(json.load(f))
        assert report["session"]["total_tests"] == 3
    finally:
        os.unlink(saved)


SELF_KILL = (
    FIND_MONITOR
    + """
import os, signal, time
import psutil

def test_first():
    pass

def test_second():
    pass

def test_die():
    mon = _monitor()
    with open("monitor.pid", "w") as f:
        f.write(str(mon.pid))
    time.sleep(0.3)  # let the monitor receive the first batch
    os.kill(os.getpid(), signal.SIGKILL)
"""
)


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_monitor_never_outlives_a_killed_pytest(pytester):
    pytester.makepyfile(test_selfkill=SELF_KILL)
    out = pytester.path / "perf.json"
    # Batches go out every 0.5 s: make the first two tests' batch leave before the kill.
    pytester.makeconftest(
        "import time\n"
        "def pytest_runtest_teardown(item):\n"
        "    if item.name == 'test_second':\n"
        "        time.sleep(0.6)\n"
    )
    proc = preloaded.run(  # forked where it can be (tests/preloaded.py)
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",  # the order of the suite is the test's
            "--perf-monitor",
            f"--perf-output={out}",
        ],
        pytester.path,
        dict(os.environ),
        120,
    )
    assert proc.returncode == -signal.SIGKILL
    pid = int((pytester.path / "monitor.pid").read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid), "the monitor outlived its pytest"
    # What it had received is written, marked as an aborted session.
    report = validate(json.loads(out.read_text()))
    assert report["session"]["aborted"] is True
    assert report["session"]["exit_status"] is None
    assert {"test_selfkill.py::test_first", "test_selfkill.py::test_second"} <= set(report["tests"])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


CRASH = """
import os, time

def test_a():
    pass

def test_crash():
    block = b"x" * (30 * 1024 * 1024)
    time.sleep(0.5)  # 10 sampling intervals of 0.05 s: the samples cannot all miss it
    os._exit(1)

def test_b():
    pass

def test_c():
    pass

def test_d():
    pass
"""


@pytest.mark.parametrize("n", ["1", "2"])
def test_worker_crash_mid_test(run_perf, pytester, n):
    pytester.makepyfile(test_crash=CRASH)
    run = run_perf("-n", n, "--max-worker-restart=2", "--perf-cpu-interval=0.05")
    assert run.ret == 1, run.text  # the crashed test fails, as without monitoring
    assert "Traceback" not in run.result.stderr.str()
    tests = run.tests
    assert sorted(k.split("::")[1] for k in tests) == [
        "test_a",
        "test_b",
        "test_c",
        "test_crash",
        "test_d",
    ]
    crashed = run.test("test_crash")
    assert crashed["outcome"] == "crashed"
    assert crashed["worker"] in {"gw0", "gw1"}
    assert crashed["duration"] is not None and crashed["duration"] >= 0.4
    # The samples saw the 30 MB the test held before it died.
    assert crashed["memory"]["peak_mb"] - crashed["memory"]["start_mb"] >= 25, crashed
    others = [t for k, t in tests.items() if not k.endswith("test_crash")]
    assert all(t["outcome"] == "passed" for t in others)
    assert run.report["session"]["total_tests"] == 5


def test_worker_crash_without_a_monitor(run_perf, pytester):
    """The plugin writes the report: the dead worker's finished tests come from what the
    controller saw (all of them: the session is not incomplete)."""
    pytester.makepyfile(test_crash=CRASH)
    no_monitor = {"PERFMON_MONITOR_PYTHON": "/bin/false"}
    run = run_perf("-n", "1", "--max-worker-restart=2", env=no_monitor)
    assert run.ret == 1, run.text
    session = run.report["session"]
    assert session["collector"] == "plugin-fallback"
    assert "possibly_incomplete" not in session
    assert session["records_dropped"] == 0  # nothing is known to have been sent and lost
    assert sorted(k.split("::")[1] for k in run.tests) == [
        "test_a",
        "test_b",
        "test_c",
        "test_crash",
        "test_d",
    ]
    assert run.test("test_crash")["outcome"] == "crashed"
    assert run.test("test_a")["outcome"] == "passed"


def test_collection_error_keeps_exit_code(run_perf, pytester):
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n", test_bad="import no_such_module\n")
    plain = run_perf(monitor=False)
    run = run_perf()
    assert run.ret == plain.ret == pytest.ExitCode.INTERRUPTED
    assert "Traceback" not in run.result.stderr.str()
    assert run.report["session"]["exit_status"] == int(pytest.ExitCode.INTERRUPTED)
    assert run.report["session"]["total_tests"] == 0


def test_xdist_with_a_daemon_that_is_not_there(run_perf, pytester):
    """Nothing accepts the connection within 2 s: the workers measure on their own. The wait
    is part of the time pytest reports."""
    pytester.makepyfile(test_suite=SUITE)
    run = run_perf("-n", "2", "--perf-daemon", f"ipc://{pytester.path}/nobody.sock")
    assert run.ret == 1
    warnings = [line for line in run.text.splitlines() if line.startswith("perfmon: warning:")]
    assert len(warnings) == 1 and "nobody.sock is not answering" in warnings[0], run.text
    assert run.report["session"]["collector"] == "plugin-fallback"
    assert run.report["session"]["total_tests"] == 3
    assert {t["worker"] for t in run.tests.values()} <= {"gw0", "gw1"}
    # pytest's own "in N s" counts the wait: not less than the perfmon session's duration
    reported = float(run.result.stdout.lines[-1].rsplit(" in ", 1)[1].split("s")[0])
    assert reported >= run.report["session"]["duration"] - 0.5


@pytest.mark.skipif(os.name != "posix", reason="ipc:// socket paths are POSIX")
def test_temp_dir_too_long_for_an_ipc_socket(run_perf, pytester):
    long_tmp = pytester.path / ("t" * 60) / ("u" * 60)
    long_tmp.mkdir(parents=True)
    pytester.makepyfile(test_suite=SUITE)
    run = run_perf(env={"TMPDIR": str(long_tmp)})
    assert run.ret == 1
    assert run.report["session"]["collector"] == "monitor", run.text
    assert run.report["session"]["total_tests"] == 3
    assert list(long_tmp.iterdir()) == []  # the private directory is removed


def test_curve_keys_for_a_daemon_do_not_touch_a_spawned_monitor(run_perf, pytester):
    pytester.makepyfile(test_suite=SUITE)
    env = {"PERFMON_CURVE_SECRET_KEY": "/no/such/key", "PERFMON_CURVE_SERVER_KEY": "/no/such"}
    run = run_perf(env=env)
    assert run.ret == 1
    assert run.report["session"]["collector"] == "monitor", run.text
    assert "perfmon: warning" not in run.text
