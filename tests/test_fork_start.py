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
import shutil
import signal
import subprocess
import sys
import tempfile
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
    assert len(run.tests) == 2
    if xdist:
        # The switch is read where the monitor is started (_handle.fork_start_ok, before the
        # fork), by pytest, and with xdist by the controller, before it starts a worker: the
        # same code, which the run without xdist checks. A launcher's monitor collecting from
        # xdist workers: tests/test_invisible.py's and tests/test_faults.py's monitors killed
        # mid-run, replaced by the launcher (the controller has threads by then).
        return
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


#: The size rule just over pytest's size at its check: the check passes (said in "checked"),
#: the imports the monitor shares (pyzmq, msgpack...: about 3 MiB) push it over.
EDGE_CONFTEST = """
from pytest_perfmon import _handle
from pytest_perfmon.monitor import launch

def pytest_configure(config):  # before the plugin's (trylast)
    checked = _handle.fork_start_ok

    def fork_start_ok():
        _handle.FORK_MAX_RSS = launch.resident() + 256 * 1024
        ok = checked()
        with open("checked", "a") as f:
            f.write(f"{ok}\\n")
        return ok

    _handle.fork_start_ok = fork_start_ok
"""


def test_the_size_rule_holds_after_the_imports_the_monitor_shares(run_perf, pytester):
    """The size rule is checked again after launch.import_shared, just before the fork."""
    pytester.makeconftest(EDGE_CONFTEST)
    pytester.makepyfile("def test_one():\n    pass\n")
    # a real start: a fork of this suite's preloaded server has pyzmq imported already
    run = run_perf(env={"PERFMON_TESTS_EXEC": "1"})
    assert run.ret == 0, run.text
    assert (pytester.path / "checked").read_text().split() == ["True"]
    assert run.report["session"]["monitor_start"] == "exec"


#: A user's root FileHandler opened at import (descriptor 3 under ``-s``: nothing else is open
#: by then) and a signal faulthandler dumps the stacks on; the test says when it runs and waits.
USER_STATE_CONFTEST = """
import faulthandler, logging, signal

logging.basicConfig(filename="run.log", level=logging.INFO)
faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID: the stacks of a hung run
with open("fdno", "w") as f:
    f.write(str(logging.root.handlers[0].stream.fileno()))
"""


def _caught(pid: int, sig: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    raise AssertionError("no SigCgt")


def _forked_monitor(mark: str, owner: int):
    """The forked monitor of the run whose environment holds ``mark`` (its environ is pytest's;
    found without its pidfd, which it may have lost)."""
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "perfmon-monitor" and proc.ppid() != owner:
                if proc.environ().get("I25G_MARK") == mark:
                    return proc
        except psutil.Error:
            continue
    return None


def test_a_users_log_file_and_faulthandler_stay_pytests(pytester, tmp_path):
    """The monitor drops none of pytest's objects (a root FileHandler freed would close its
    descriptor 3, by then pytest's pidfd: the monitor would outlive a kill -9), and catches none
    of the signals a conftest gave faulthandler."""
    pytester.makeconftest(USER_STATE_CONFTEST)
    pytester.makepyfile(test_held=HELD)
    pytester.makeini("[pytest]\n")
    out = tmp_path / "perf.json"
    mark = str(tmp_path)
    env = dict(os.environ, PYTEST_ADDOPTS=inner_addopts(), I25G_MARK=mark)
    env.pop("PERFMON_MONITOR_START", None)
    cmd = [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", "--perf-monitor"]
    proc = subprocess.Popen(
        [*cmd, f"--perf-output={out}"],
        cwd=pytester.path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mon = None
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not (pytester.path / "running").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        assert (pytester.path / "fdno").read_text() == "3"  # the case: its descriptor was 3
        mon = _forked_monitor(mark, proc.pid)
        assert mon is not None
        assert not _caught(mon.pid, signal.SIGUSR1)
        assert _caught(proc.pid, signal.SIGUSR1)  # pytest's own stays
        proc.kill()
        proc.wait(WAIT)
        deadline = time.monotonic() + WAIT
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
        if mon is not None and _running(mon):
            mon.kill()


#: An import hook that starts a thread (unknown to ``threading``, as a C extension's) when the
#: fork's own module is imported: after the plugin counted one thread, before the fork.
THREAD_HOOK_CONFTEST = """
import _thread, sys


class StartsAThread:
    def find_spec(self, name, path=None, target=None):
        if name == "pytest_perfmon.monitor.launch":
            lock = _thread.allocate_lock()
            lock.acquire()
            _thread.start_new_thread(lock.acquire, (True, 60))
        return None


sys.meta_path.insert(0, StartsAThread())
"""


def test_a_thread_started_by_an_import_hook_before_the_fork_gets_the_launcher(run_perf, pytester):
    pytester.makeconftest(THREAD_HOOK_CONFTEST)
    pytester.makepyfile("def test_one():\n    pass\n")
    run = run_perf("-W", "error")
    assert run.ret == 0, run.text
    assert run.report["session"]["monitor_start"] == "exec"
    assert len(run.tests) == 1


def test_tracemalloc_tracing_gets_the_launcher(run_perf, pytester):
    """The copy would trace every allocation of the monitor (reviewer: 2.8 s CPU in 2 s).

    Tracing started by a conftest: the plugin asks the interpreter whether it traces
    (``_tracemalloc.is_tracing()`` in ``_handle.fork_start_ok``), not how it came to, so tracing
    from the interpreter's start (PYTHONTRACEMALLOC, ``-X tracemalloc``) takes the same branch.
    That case was a run of its own, a real start of pytest traced from its first import: 1.5
    CPU-s, for a branch this run takes (a conftest's start() is the later, harder moment)."""
    pytester.makeconftest("import tracemalloc\ntracemalloc.start()\n")
    pytester.makepyfile("def test_one():\n    pass\n")
    run = run_perf()
    assert run.ret == 0, run.text
    assert run.report["session"]["monitor_start"] == "exec"
    assert len(run.tests) == 1


#: As a frozen app (PyOxidizer's importer, say): the installed packages are served by an import
#: hook of the application's, not found on sys.path. The forked monitor keeps the standard
#: finders only: what it needs at its start (pyzmq, msgpack) pytest imported before the fork
#: (``launch.import_shared``), what it may import later (psutil) it could not find.
FROZEN_BOOT = """
import runpy, sys
from importlib.machinery import PathFinder
from importlib.metadata import DistributionFinder, MetadataPathFinder

SERVED = [p for p in sys.path if "-packages" in p]
sys.path[:] = [p for p in sys.path if p not in SERVED]


class Served:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return PathFinder.find_spec(name, SERVED) if path is None else None

    @classmethod
    def find_distributions(cls, context=DistributionFinder.Context()):
        return MetadataPathFinder.find_distributions(
            DistributionFinder.Context(name=context.name, path=SERVED)
        )


sys.meta_path.append(Served)
sys.argv[0] = "pytest"
runpy.run_module("pytest", run_name="__main__")
"""


#: The inner tests copy the monitor's log (its private directory is the only one in TMPDIR).
LOG_READER = """
import glob, os, tempfile


def test_one():
    (log,) = glob.glob(os.path.join(tempfile.gettempdir(), "perfmon-*", "monitor.log"))
    with open(log) as f, open("monitor.log", "w") as out:
        out.write(f.read())


def test_two():  # a child: its memory is read with psutil, which the hook serves
    import subprocess, sys

    # alive for 1 s: seen by the monitor's samples (its first imports psutil) on a busy machine
    subprocess.run([sys.executable, "-c", "import time; time.sleep(1.0)"], check=True)
"""


def _frozen_run(pytester, tmp_path, tmp: str) -> tuple:
    """A run of pytest as the frozen app of FROZEN_BOOT, its monitor's private directory alone
    in ``tmp`` (TMPDIR); its report and the monitor's log."""
    pytester.makepyfile(boot=FROZEN_BOOT)
    pytester.makepyfile(test_one=LOG_READER)
    pytester.makeini("[pytest]\n")
    out = tmp_path / "perf.json"
    env = dict(os.environ, PYTEST_ADDOPTS=inner_addopts(), TMPDIR=tmp)
    env.pop("PERFMON_MONITOR_START", None)
    cmd = [sys.executable, "boot.py", "-p", "no:cacheprovider", "--perf-monitor"]
    # not "-m pytest": a real start (tests/preloaded.py forks only those)
    run = preloaded.run(
        [*cmd, f"--perf-output={out}", "test_one.py"], pytester.path, env, RUN_TIMEOUT
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = validate(json.loads(out.read_text(encoding="utf-8")))
    assert report["session"]["collector"] == "monitor", (report["session"]["warnings"], run.stdout)
    assert report["session"]["warnings"] == []
    assert report["session"]["protocol_errors"] == {}
    assert len(report["tests"]) == 2
    kids = report["tests"]["test_one.py::test_two"]["children"]
    assert kids is not None and kids["processes"] >= 1 and kids["peak_rss_mb"], kids
    return report, (pytester.path / "monitor.log").read_text()


@pytest.mark.parametrize("endpoint", ["ipc", "tcp"])
def test_a_forked_monitor_that_ends_before_ready_is_started_again_by_the_launcher(
    pytester, tmp_path, endpoint
):
    """What the monitor needs at its start pytest imported before the fork, but psutil (for a
    test's children) it imports later, and without the app's hook it could not: the children
    would go unmeasured. So it ends before its ready, saying why, and the launcher's monitor (a
    new interpreter) measures them. ipc: the new monitor binds the same socket path; tcp (a
    TMPDIR too long for a socket path): the forked one died before it told its port, the new
    one picks and tells one."""
    tmp = tempfile.mkdtemp(prefix="i25-") if endpoint == "ipc" else str(tmp_path / ("t" * 100))
    os.makedirs(tmp, exist_ok=True)
    try:
        report, log = _frozen_run(pytester, tmp_path, tmp)
    finally:
        if endpoint == "ipc":
            shutil.rmtree(tmp, ignore_errors=True)
    assert report["session"]["monitor_start"] == "exec"
    # the forked one's end, then the launcher's
    assert "the monitor forked from pytest cannot import psutil" in log, log
    assert "forked from pytest ended before it was ready; started again by the launcher" in log


#: A module of the user's project named as one the monitor imports only when it needs it
#: (psutil: for the processes a test starts); a new interpreter in another directory never
#: sees it, and neither may the forked monitor (pytest's sys.path starts with the project).
SHADOW = "raise ImportError('the project's own psutil.py, not the real one')\n"
CHILD_TEST = """
import subprocess, sys


def test_starts_a_child():
    subprocess.run([sys.executable, "-c", "import time; time.sleep(0.5)"], check=True)
"""


def test_a_module_of_the_project_never_shadows_the_monitors(pytester, tmp_path):
    pytester.makeini("[pytest]\n")
    (pytester.path / "psutil.py").write_text(SHADOW)
    pytester.makepyfile(test_child=CHILD_TEST)
    out = tmp_path / "perf.json"
    env = dict(os.environ, PYTEST_ADDOPTS=inner_addopts())
    for name in ("PERFMON_MONITOR_START", "PYTHONPATH", "GITHUB_STEP_SUMMARY"):
        env.pop(name, None)
    # a real start (not a fork of this suite's preloaded server, which has psutil imported)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--perf-monitor"]
    proc = subprocess.run(
        [*cmd, f"--perf-output={out}"],
        cwd=pytester.path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "perfmon: warning" not in proc.stdout, proc.stdout
    report = validate(json.loads(out.read_text(encoding="utf-8")))
    session = report["session"]
    assert (session["monitor_start"], session["collector"]) == ("fork", "monitor"), session
    assert not session.get("monitor_restarts"), session
    kids = report["tests"]["test_child.py::test_starts_a_child"]["children"]
    assert kids and kids["processes"] == 1, kids
