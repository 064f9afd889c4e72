"""The monitor started by a fork of the pytest process (issue 25), end to end.

Linux only (the fork start is: elsewhere the launcher runs as before). Real pytest processes,
the real monitor; every wait bounded, every process reaped in a finally.

- a forked monitor is outside pytest's family and holds none of pytest's descriptors: a pipe
  that is pytest's stdout reaches its end when pytest dies, while the monitor still runs (it is
  stopped with SIGSTOP to make sure); continued, it ends by itself (pytest's pidfd) and writes
  the aborted report;
- a pytest process with a second OS thread at configure (a ``threading`` thread, or one that
  ``threading`` does not know, as a C extension's) gets the launcher, and no warning reaches a
  ``-W error`` run; so does PERFMON_MONITOR_START=exec.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

import preloaded
import psutil
import pytest
from helpers import RUN_TIMEOUT, XDIST_ENDS, find_monitor, inner_addopts, validate

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the monitor is forked on Linux only"
)

WAIT = 30.0

#: The conftest holds a file open from before configure (Python opens it close-on-exec: a fork
#: keeps it, an exec would not); the test says when it runs, then waits to be killed. pytest's
#: fd capture keeps its own stdout (the pipe) in another descriptor meanwhile.
HELD_CONFTEST = """
HELD = open("held.txt", "w")
"""
HELD = """
import os, time


def test_waits():
    with open("running", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
"""


def _link(pid: int, fd: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:  # closed meanwhile
        return ""


def _running(proc: psutil.Process) -> bool:
    """Still running: neither gone nor a zombie its new parent has not reaped yet."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_forked_monitor_holds_nothing_of_pytest_and_ends_with_it(pytester, tmp_path):
    pytester.makeconftest(HELD_CONFTEST)
    pytester.makepyfile(test_held=HELD)
    pytester.makeini("[pytest]\n")
    out = tmp_path / "perf.json"
    env = dict(os.environ, PYTEST_ADDOPTS=inner_addopts())
    env.pop("PERFMON_MONITOR_START", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--perf-monitor"]
    proc = preloaded.popen(  # forked where it can be (tests/preloaded.py)
        [*cmd, f"--perf-output={out}"],
        pytester.path,
        env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    pipe = f"pipe:[{os.fstat(proc.stdout.fileno()).st_ino}]"
    mon = None
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        running = pytester.path / "running"
        while not running.exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        mon = find_monitor(proc.pid)
        assert mon is not None
        assert mon.name() == "perfmon-monitor"  # forked: a new interpreter is named python
        assert mon.pid not in {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert mon.ppid() != proc.pid
        held = os.path.realpath(pytester.path / "held.txt")
        links = {fd: _link(mon.pid, fd) for fd in os.listdir(f"/proc/{mon.pid}/fd")}
        assert links["0"] == links["1"] == os.devnull, links
        assert os.path.basename(links["2"]) == "monitor.log", links
        assert pipe not in links.values() and held not in links.values(), links
        assert os.path.samefile(mon.cwd(), os.path.dirname(links["2"]))  # its private directory
        # pytest dies while the monitor cannot run: the pipe ends all the same.
        mon.suspend()
        proc.kill()
        proc.wait(WAIT)
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + WAIT
        while True:
            assert time.monotonic() < deadline, "pytest's stdout did not end: someone holds it"
            if select.select([fd], [], [], 1.0)[0] and not os.read(fd, 65536):
                break
        assert mon.status() == psutil.STATUS_STOPPED  # it held nothing: it still runs
        mon.resume()
        deadline = time.monotonic() + WAIT  # it watches pytest's pidfd: it ends by itself
        while _running(mon):
            assert time.monotonic() < deadline, "the monitor outlived its pytest"
            time.sleep(0.05)
        report = validate(json.loads(out.read_text(encoding="utf-8")))
        assert report["session"]["aborted"] is True
        assert report["session"]["monitor_start"] == "fork"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)
        proc.stdout.close()
        if mon is not None and _running(mon):
            mon.resume()
            mon.kill()


#: A second OS thread running when our pytest_configure runs (tryfirst: before ours).
THREAD_CONFTEST = """
import _thread, threading, time
import pytest

stop = threading.Event()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if KIND == "threading":
        threading.Thread(target=stop.wait, args=(60,), daemon=True).start()
    else:  # unknown to threading, as a C extension's thread
        lock = _thread.allocate_lock()
        lock.acquire()
        _thread.start_new_thread(lock.acquire, (True, 60))


def pytest_unconfigure(config):
    stop.set()
"""


@pytest.mark.parametrize("kind", ["threading", "_thread"])
def test_a_second_thread_at_configure_gets_the_launcher_and_no_warning(run_perf, pytester, kind):
    pytester.makeconftest(f"KIND = {kind!r}\n" + THREAD_CONFTEST)
    pytester.makepyfile("def test_one():\n    pass\n")
    run = run_perf("-W", "error", "-W", "error::DeprecationWarning")
    assert run.ret == 0, run.text
    assert "Warning" not in run.text, run.text
    assert run.report["session"]["collector"] == "monitor"
    assert run.report["session"]["monitor_start"] == "exec"


@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_one_thread_forks_and_the_switch_forces_the_launcher(run_perf, pytester, xdist):
    pytester.makepyfile("def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    run = run_perf(*xdist, "-W", "error")
    assert run.ret == 0, run.text
    assert run.report["session"]["monitor_start"] == "fork"
    run = run_perf(*xdist, "-W", "error", env={"PERFMON_MONITOR_START": "exec"})
    assert run.ret == 0, run.text
    assert run.report["session"]["monitor_start"] == "exec"
    assert len(run.tests) == 2


def test_a_large_pytest_process_gets_the_launcher(run_perf, pytester):
    """Over FORK_MAX_RSS resident at configure: a fork would cost more than a new interpreter."""
    from pytest_perfmon._handle import FORK_MAX_RSS

    pytester.makeconftest(f"BIG = b'x' * {FORK_MAX_RSS + 20 * 2**20}\n")
    pytester.makepyfile("def test_one():\n    pass\n")
    run = run_perf()
    assert run.ret == 0, run.text
    assert run.report["session"]["monitor_start"] == "exec"
