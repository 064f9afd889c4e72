"""Invisible to the suite it measures (issue 27): no process of ours in the measured process's
family, nothing the plugin opens while a test runs, a monitor that dies mid-run named in the
warning, an xdist worker crash that loses no finished test.

Every case is a real inner pytest run with the real monitor and real xdist workers; the inner
tests are the checks suites do themselves (counting children, threads, file descriptors and
connections between their setup and their teardown; terminating every child of the process).
"""

from __future__ import annotations

import json
import os
import time

import psutil
import pytest
from helpers import FIND_OWN_MONITOR, OWNER_CONFTEST, XDIST_ENDS

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts file descriptors through /proc/self/fd"
)

#: Bound on waiting for the monitor to end after its pytest did.
GONE_WAIT = 30.0

# What a leak-checking suite compares between a test's setup and its teardown. The sender
# thread, ZeroMQ's socket and its I/O thread exist from before the first test: they are in
# both counts, and a check that compares counts never sees them change.
LEAK_CHECKS = """
import os, subprocess, sys, threading, time
import psutil, pytest

# The kernel's own lists of each thread's children (Linux with CONFIG_PROC_CHILDREN).
KIDS = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _descendants(me):
    # What me.children(recursive=True) finds, without its scan of every process's stat file
    # (for their parents: the more processes the machine has, the longer): the kernel's lists
    # of each thread's children, zombies included. Without those lists, psutil's scan.
    if not KIDS:
        return sorted(p.pid for p in me.children(recursive=True))
    found, todo = [], [me.pid]
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:  # a descendant that ended since (psutil skips it too)
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):  # a thread that ended since
                continue
            found += kids
            todo += kids
    return sorted(found)


def _connections(me):
    # What me.net_connections("all") lists. It reads the TCP and UDP tables once the process
    # has a socket, and the kernel writes those (walking every bucket of its hash tables: a
    # few ms each) for none of ours when all of them are Unix sockets (ZeroMQ's ipc://): then
    # the Unix ones alone are the same list; any other socket, and it is asked for everything.
    socks = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                socks.add(int(fd))
        except OSError:  # the directory's own descriptor, closed since
            pass
    unix = me.net_connections("unix")
    return unix if {c.fd for c in unix} == socks else me.net_connections("all")


def _state(exact=False):
    me = psutil.Process()
    return {
        "children": (
            sorted(p.pid for p in me.children(recursive=True)) if exact else _descendants(me)
        ),
        "threads": sorted(t.ident for t in threading.enumerate()),
        "os_threads": me.num_threads(),
        "fds": sorted(os.listdir("/proc/self/fd")),
        "num_fds": me.num_fds(),
        "connections": sorted(
            map(str, me.net_connections("all") if exact else _connections(me))
        ),
    }


@pytest.fixture(autouse=True)
def no_leak(request):
    before = _state()
    if not request.node.name.startswith("test_quick"):  # the cheap reads say what psutil says
        assert before == _state(exact=True)
    yield
    assert _state() == before


@pytest.fixture(scope="module")
def server():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    yield p
    p.kill()
    p.wait()


@pytest.mark.parametrize("i", range(int(os.environ.get("QUICK", "130"))))
def test_quick(i):  # more than a batch (128 records) a process: the sender is woken in a test
    pass


def test_sleeps_past_a_send():  # the sender wakes (every 0.4 s) and sends during this test
    time.sleep(1.0)


def test_child_that_ends():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_uses_server(server):
    time.sleep(0.3)


def test_after_server():
    time.sleep(0.3)
"""


# Without xdist, and with one worker: the checks are each process's own (its children,
# threads, descriptors, connections), and an xdist worker's process is the same with a second
# beside it (whose tests are the same checks of the same code again). One worker also runs every
# test, so that its process surely sends more than a batch (with two, the split of 260 tests
# decided whether each did).
@pytest.mark.parametrize("xdist", [XDIST_ENDS[0], pytest.param(["-n", "1"], id="n1")])
def test_leak_checks_see_no_change(run_perf, pytester, xdist):
    pytester.makepyfile(test_leaks=LEAK_CHECKS)
    quick = 130  # in the process that runs them, more than a batch of 128
    run = run_perf(*xdist, env={"QUICK": str(quick)})
    assert run.ret == 0, run.text
    assert "perfmon: warning" not in run.text, run.text
    assert run.report["session"]["collector"] == "monitor"
    assert len(run.tests) == quick + 4


# The issue's repros: a test that asserts its process has no children, one that terminates
# every child of its process, and one whose child must still be sampled afterwards.
REPROS = (
    FIND_OWN_MONITOR
    + """
import json, os, subprocess, sys, time
import psutil


def test_no_child_processes():
    assert psutil.Process().children(recursive=True) == []


def test_monitor_outside_the_family():
    mon = _monitor()
    me = psutil.Process()
    assert mon.pid not in {p.pid for p in me.children(recursive=True)}
    assert mon.ppid() != me.pid
    with open("monitor.json", "w") as f:
        json.dump({"pid": mon.pid, "ctime": mon.create_time()}, f)


def test_reaps_its_children():
    for p in psutil.Process().children(recursive=True):
        p.terminate()


def test_child_after():
    time.sleep(0.3)  # the monitor has sampled since the previous test, had it been touched
    subprocess.run([sys.executable, "-c", "import time; b = b'x' * 30_000_000; time.sleep(1)"],
                   check=True)
"""
)


def _gone(pid: int, ctime: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - ctime) > 0.01 or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_issue_repros_pass_and_the_monitor_is_left_alone(run_perf, pytester, xdist):
    pytester.makepyfile(test_repros=REPROS)
    pytester.makeconftest(OWNER_CONFTEST)
    # One worker runs them all, in their order: the reaping test comes before the child's.
    run = run_perf(*xdist, *(["--dist", "loadfile"] if xdist else []))
    assert run.ret == 0, run.text
    assert "perfmon: warning" not in run.text, run.text
    assert run.report["session"]["collector"] == "monitor"  # it lived through the reaping
    kids = run.test("test_child_after")["children"]
    assert kids is not None and kids["processes"] >= 1, kids
    assert kids["peak_rss_mb"] is not None and kids["peak_rss_mb"] >= 25, kids
    # Stopped and waited for at the end: gone once pytest is, and its directory with it.
    mon = json.loads((pytester.path / "monitor.json").read_text())
    deadline = time.monotonic() + GONE_WAIT
    while not _gone(mon["pid"], mon["ctime"]):
        assert time.monotonic() < deadline, "the monitor outlived its pytest"
        time.sleep(0.05)


FORKS_ON = """
import os, time


def test_a():
    pass


def test_fork_and_run_on():
    pid = os.fork()
    if pid:  # the parent waits; the child returns and runs the rest of the session
        os.waitpid(pid, 0)


def test_after():
    time.sleep(0.05)
"""


def test_a_fork_that_runs_pytest_on_leaves_the_run_alone(run_perf, pytester):
    """A test whose fork returns instead of exiting: that copy runs the rest of the session,
    as it does without the plugin, and ends without touching the collector's socket, the
    monitor, the slot or the report (it once spun forever on the socket it inherited, and
    its parent waited for it)."""
    pytester.makepyfile(test_forks=FORKS_ON)
    run = run_perf()
    assert run.ret == 0, run.text
    assert "perfmon: warning" not in run.text, run.text
    session = run.report["session"]
    assert session["collector"] == "monitor" and not session["aborted"], session
    outcomes = {k.split("::")[1]: t["outcome"] for k, t in run.report["tests"].items()}
    assert outcomes == dict.fromkeys(("test_a", "test_fork_and_run_on", "test_after"), "passed")


def test_reference_run_without_the_plugin(run_perf, pytester):
    """The inner checks are right: they pass without the plugin too. (Two quick tests, not
    130: their number is there to wake the plugin's sender in a test, and the plugin is off;
    each of them is the same check.)"""
    pytester.makepyfile(test_leaks=LEAK_CHECKS, test_repros=REPROS)
    run = run_perf("-k", "not monitor_outside", monitor=False, env={"QUICK": "2"})
    assert run.ret == 0, run.text


# A monitor that dies mid-run (killed by pid, the OOM killer) is replaced: the next test's
# child is sampled again, the warning names the test and how it ended, the report the gap.
KILLS_MONITOR = (
    FIND_OWN_MONITOR
    + """
import os, signal, subprocess, sys, time


def test_before():
    time.sleep(0.2)


def test_kill_monitor():
    _monitor().send_signal(signal.{sig})
    time.sleep(1.5)  # the loss is noticed while this test runs


def test_child_after():
    time.sleep(1.0)  # the new monitor samples from its start (a busy machine starts it slowly)
    subprocess.run([sys.executable, "-c", "import time; b = b'x' * 30_000_000; time.sleep(2)"],
                   check=True)


def test_last():
    pass
"""
)


# The xdist controller reads a worker's reports a moment after they are sent; on a busy machine
# it read test_before's last report only after test_kill_monitor had killed the monitor, and
# named test_before alone. Here it always lags so (the first hook to see that report waits).
LAGGING_CONTROLLER = """
import time
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report):
    if getattr(report, "node", None) is not None and report.when == "teardown":
        if report.nodeid.endswith("::test_before"):
            time.sleep(0.5)
"""


# How it died is read by the monitor's handle, the same without xdist and with (_handle.note);
# what xdist changes is who notices and replaces it. So each signal once, and each end of
# XDIST_ENDS once: the common case (the OOM killer's SIGKILL) with real xdist workers.
@pytest.mark.parametrize(
    "xdist, sig, how",
    [
        pytest.param([], "SIGTERM", "killed by SIGTERM", id="no-xdist-SIGTERM"),
        pytest.param(["-n", "2"], "SIGKILL", "killed by SIGKILL, or crashed", id="n2-SIGKILL"),
    ],
)
def test_monitor_killed_mid_run_is_replaced(run_perf, pytester, xdist, sig, how):
    pytester.makepyfile(
        test_kill=KILLS_MONITOR.replace("{sig}", sig), conftest=OWNER_CONFTEST + LAGGING_CONTROLLER
    )
    run = run_perf(*xdist, *(["--dist", "loadfile"] if xdist else []))
    assert run.ret == 0, run.text
    assert "Traceback" not in run.text
    session = run.report["session"]
    assert session["collector"] == "monitor", run.text
    assert sorted(k.split("::")[1] for k in run.tests) == [
        "test_before",
        "test_child_after",
        "test_kill_monitor",
        "test_last",
    ]
    (restart,) = session["monitor_restarts"]
    assert restart["how"] == how, restart
    assert any("test_kill.py::test_kill_monitor" in n for n in restart["died_during"]), restart
    assert restart["gap_seconds"] is not None and restart["gap_seconds"] >= 0
    warnings = [w for w in session["warnings"] if w.startswith("the monitor died during")]
    assert len(warnings) == 1 and "test_kill_monitor" in warnings[0] and how in warnings[0]
    assert "exit code 0" not in run.text
    assert f"perfmon: warning: {warnings[0]}" in run.text
    kids = run.test("test_child_after")["children"]
    assert kids is not None and kids["processes"] >= 1 and kids["peak_rss_mb"] >= 25, kids


# An xdist worker that dies after several passing tests, in a test and between two tests: every
# test pytest reported passed is in the report, and the session's fields agree with pytest.
CRASHES = """
import os, signal, time
import pytest


@pytest.mark.parametrize("i", range(8))
def test_pass(i):
    time.sleep(0.05)


def test_dies():
    time.sleep(0.2)
    os.{how}


@pytest.mark.parametrize("i", range(8))
def test_more(i):
    time.sleep(0.05)
"""


@pytest.mark.parametrize(
    "how", ["_exit(1)", "kill(os.getpid(), signal.SIGKILL)"], ids=["os-exit", "sigkill"]
)
def test_worker_crash_loses_no_finished_test(run_perf, pytester, how):
    pytester.makepyfile(test_crashes=CRASHES.replace("{how}", how))
    run = run_perf("-n", "2", "-rA")
    assert run.ret == 1, run.text  # the test that crashed its worker fails, as without us
    passed = {line.split()[1] for line in run.result.stdout.lines if line.startswith("PASSED ")}
    assert len(passed) == 16, run.text
    tests = run.tests
    assert passed <= set(tests), passed - set(tests)
    assert all(tests[n]["outcome"] == "passed" for n in passed)
    assert run.test("test_dies")["outcome"] == "crashed"
    session = run.report["session"]
    # The session ended (pytest's own exit code); nothing pytest reported is missing.
    assert session["aborted"] is False and session["exit_status"] == 1, session
    assert "possibly_incomplete" not in session, session
