"""Every way a run ends gives a complete report and pytest's own exit code.

Real pytest subprocesses with the real monitor, without xdist and with two workers where xdist
changes the path: a normal end, pytest.exit() in a test, Ctrl-C, SIGTERM, SIGKILL of pytest and
of an xdist worker (-x, --maxfail and pytest-timeout's os._exit(1): tests/test_compat.py),
a full disk at the output path, --collect-only. The test running when the run ended is in the
report as interrupted, with the time it had run; the warning names what ended the run; from the
session's start the previous report is aside (PATH.previous), never readable as the new one.

Every process is reaped (or, for the workers a killed controller leaves, killed); every wait is
bounded. The one timing assertion is the promise's own bound: after a hard exit the aborted
report is there within 1 s of pytest's exit (it takes about 0.1 s here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import preloaded
import pytest
from helpers import RUN_TIMEOUT, inner_addopts, validate
from pytest_perfmon import _endings
from pytest_perfmon.monitor import report as report_model
from pytest_perfmon.monitor import slots

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

WAIT = 30.0
#: The quick tests a run ends after (each in the report, passed, whichever way the run ended):
#: eight (there were twenty) are as many cases of the same thing, a batch and a slot hold either.
QUICK = 8
#: After a hard exit, the new report is at the output path within this long (the promise).
REPORT_BOUND = 1.0

PREVIOUS = {"previous": True}

#: The quick tests, then a long test that notes it started (started-PID-MODULE) and runs until
#: killed (at most 60 s). With two workers (--dist loadgroup) a second long test in its own
#: group comes first: xdist gives the first group to one worker, the next two to the other, so
#: each long test runs on its own worker, and the quick tests before the second.
QUICK_TESTS = f"""
import os
import pytest

OUT = os.environ["ENDINGS_OUT"]
pytestmark = pytest.mark.xdist_group("quick")

@pytest.mark.parametrize("i", range({QUICK}))
def test_quick(i):
    # from the session's start the previous report is aside: nothing at the path can pass
    # for the new one
    assert not os.path.exists(OUT)
    with open(OUT + ".previous") as f:
        assert f.read() == '{json.dumps(PREVIOUS)}'
"""
LONG_TEST = """
import os, time
import pytest

pytestmark = pytest.mark.xdist_group(__name__)

@pytest.fixture
def slow_setup():
    time.sleep(0.2)

def test_long(slow_setup):
    with open("started-%d-%s" % (os.getpid(), __name__), "w"):
        pass
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)
"""
#: Each test that ran to its end, as pytest saw it end, noted at once (a kill loses none).
CONFTEST = """
import os
import signal

# A terminal's job takes Ctrl-C at its default; a suite started in the background of a
# non-interactive shell (nohup, `cmd &`) passes SIGINT on ignored, and Python keeps it ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

def pytest_configure(config):
    # A terminal's job is a process group of its own in the terminal's session (a shell's job
    # control: setpgid): pytest leads one before it starts its xdist workers, which join it (a
    # Ctrl-C to the group reaches them). In the test's session, not one of its own, the workers
    # are forks of tests/preloaded.py's server like every other run's (a session of its own
    # would make them real starts, about 0.4 CPU-s each, which no check here needs).
    if not hasattr(config, "workerinput") and os.getpgrp() != os.getpid():
        os.setpgid(0, 0)

def pytest_runtest_logfinish(nodeid, location):
    fd = os.open("finished.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (nodeid + "\\n").encode())
    finally:
        os.close(fd)

import pytest

# xdist's controller has taken a crashed worker's test: every plugin's hook has run
@pytest.hookimpl(hookwrapper=True, optionalhook=True)
def pytest_handlecrashitem(crashitem, report, sched):
    yield
    open("crashed.txt", "a").close()
"""
LONG_IDS = ["test_c_long.py::test_long", "test_0_long.py::test_long"]
QUICK_IDS = {f"test_a_quick.py::test_quick[{i}]" for i in range(QUICK)}

SERIAL = pytest.param([], id="no-xdist")
N2 = pytest.param(["-n", "2", "--dist", "loadgroup"], id="n2")


def _wait_for(cond, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


class Inner:
    """pytest --perf-monitor in a real subprocess (its own process group, as a terminal's job:
    CONFTEST)."""

    def __init__(self, path, *args: str, monitor: bool = True, files=None) -> None:
        self.path = path
        self.output = path / "perf.json"
        (path / "pytest.ini").write_text("[pytest]\n")
        for name, text in dict(files or {}, **{"conftest.py": CONFTEST}).items():
            (path / name).write_text(text)
        self.output.write_text(json.dumps(PREVIOUS))
        env = dict(os.environ, ENDINGS_OUT=str(self.output))
        env.pop("GITHUB_STEP_SUMMARY", None)
        env.pop("PERFMON_DAEMON", None)
        extra = ["--perf-monitor", f"--perf-output={self.output}"] if monitor else []
        self.log = open(path / "pytest.log", "wb")  # noqa: SIM115 - closed in close()
        # forked from a Python with pytest imported (tests/preloaded.py), in the test's session:
        # it leads a process group of its own (CONFTEST), which its xdist workers (forked too)
        # join, so a Ctrl-C to the group reaches them
        self.proc = preloaded.popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
            + extra
            + list(args),
            path,
            env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.exited: float | None = None

    def started(self, n: int) -> list:
        """Wait for ``n`` long tests to be running; their pids."""

        def look():
            if self.proc.poll() is not None:
                raise AssertionError(self.text())
            found = [p for p in self.path.iterdir() if p.name.startswith("started-")]
            return found if len(found) >= n else None

        found = _wait_for(look, f"{n} long tests")
        time.sleep(0.3)  # into the test's call (its setup is 0.2 s)
        pids = [int(p.name.split("-")[1]) for p in found]
        # each in the run's process group (CONFTEST), which a Ctrl-C to the group reaches
        assert all(os.getpgid(pid) == self.proc.pid for pid in pids), self.text()
        return pids

    def wait(self) -> int:
        try:
            rc = self.proc.wait(RUN_TIMEOUT)
        finally:
            self.exited = time.monotonic()
        return rc

    def report(self, bound: float = WAIT) -> dict:
        """The new report, waited for at most ``bound`` seconds after pytest's exit."""
        assert self.exited is not None
        _wait_for(self._new_report, "the report", max(0.0, self.exited + bound - time.monotonic()))
        return validate(json.loads(self.output.read_text()))

    def _new_report(self) -> bool:
        try:
            return json.loads(self.output.read_text()) != PREVIOUS
        except (OSError, ValueError):
            return False

    def finished(self) -> set:
        """The tests pytest ran to their end."""
        path = self.path / "finished.txt"
        return set(path.read_text().split()) if path.exists() else set()

    def text(self) -> str:
        return (self.path / "pytest.log").read_text(encoding="utf-8", errors="replace")

    def warnings(self, report: dict | None = None) -> list:
        lines = [line for line in self.text().splitlines() if line.startswith("perfmon: warn")]
        if report is not None:  # a hard exit: pytest never printed; the report says it
            lines += [f"perfmon: warning: {w}" for w in report["session"]["warnings"]]
        return lines

    def close(self, orphans=()) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # killed before it led its group (CONFTEST)
                self.proc.kill()
        self.proc.wait(WAIT)
        self.log.close()
        for pid in orphans:  # workers a killed controller left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in orphans:
            _wait_for(lambda pid=pid: _gone(pid), f"worker {pid} to end")
        assert self.previous() == PREVIOUS  # the previous run's report is kept, intact

    def previous(self) -> dict:
        return json.loads((self.path / "perf.json.previous").read_text())


SUITE = {"test_a_quick.py": QUICK_TESTS, "test_c_long.py": LONG_TEST}
SUITE_N2 = dict(SUITE, **{"test_0_long.py": LONG_TEST})


def _check_interrupted(inner: Inner, report: dict, running: list, at_least: float = 0.2) -> None:
    """Every test that finished is there, passed; each test in ``running`` is interrupted,
    with the time it had run (its setup of 0.2 s at least)."""
    tests = report["tests"]
    finished = inner.finished()
    assert finished <= QUICK_IDS and len(finished) >= QUICK // 2, finished
    assert set(tests) == finished | set(running), sorted(tests)
    assert all(tests[k]["outcome"] == "passed" for k in finished)
    for nodeid in running:
        t = tests[nodeid]
        assert t["outcome"] == "interrupted", t
        assert t["duration"] is not None and t["duration"] >= at_least, t


def _start(path, mode, **kw) -> tuple[Inner, list]:
    inner = Inner(path, *mode, files=SUITE_N2 if mode else SUITE, **kw)
    return inner, LONG_IDS if mode else LONG_IDS[:1]


# -- the run finishes its session ------------------------------------------------------------
FINISHED = """
import pytest

@pytest.mark.parametrize("i", range(6))
def test_pass(i):
    pass

@pytest.mark.parametrize("i", range(3))
def test_fail(i):
    assert 0
"""


@pytest.mark.parametrize("mode", [SERIAL, N2])
def test_a_session_that_finishes(tmp_path, mode):
    """The report holds exactly the tests pytest ran (its JUnit XML says which). (A session
    that --maxfail stops (-x is --maxfail=1): tests/test_compat.py's maxfail case, serial and
    on two workers, against pytest's own view, the session not aborted and no warning.)"""
    files = {"test_a_quick.py": QUICK_TESTS, "test_fin.py": FINISHED}
    inner = Inner(tmp_path, *mode, "--junitxml=junit.xml", files=files)
    try:
        assert inner.wait() == 1, inner.text()
        report = inner.report()
        ran = {
            f"{c.get('classname', '').replace('.', '/')}.py::{c.get('name')}"
            for c in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
        }
        assert set(report["tests"]) == ran, inner.text()
        assert report["session"]["aborted"] is False
        assert report["session"]["exit_status"] == 1
        assert inner.warnings() == []
        assert len(ran) == QUICK + 9
    finally:
        inner.close()


# -- the run ends early but finishes its session -----------------------------------------
EXIT_TEST = """
import time
import pytest

def test_a():
    pass

def test_exit():
    time.sleep(0.3)
    pytest.exit("enough", returncode=5)
"""


@pytest.mark.parametrize("mode", [SERIAL, N2])
def test_pytest_exit_in_a_test(tmp_path, mode):
    files = {"test_a_quick.py": QUICK_TESTS, "test_exit.py": EXIT_TEST}
    expected = 5
    if mode:  # xdist turns it into an internal error: its code, whatever it is, is ours too
        # (xdist's code for a pytest.exit() in a worker, which the quick tests leave alone:
        # without the plugin each of them fails, the previous report being where it was, and
        # twenty failures cost the reference run more than the rest of it)
        plain = tmp_path / "plain"
        plain.mkdir()
        without = Inner(plain, *mode, monitor=False, files={"test_exit.py": EXIT_TEST})
        try:
            expected = without.wait()
        finally:
            without.log.close()
    run = tmp_path / "run"
    run.mkdir()
    inner = Inner(run, *mode, files=files)
    try:
        assert inner.wait() == expected, inner.text()
        report = inner.report()
        assert "test_exit.py::test_exit" in report["tests"], (report, inner.text())
        t = report["tests"]["test_exit.py::test_exit"]
        assert t["outcome"] == "interrupted" and t["duration"] >= 0.3, t
        assert report["tests"]["test_exit.py::test_a"]["outcome"] == "passed"
        warnings = inner.warnings()
        assert len(warnings) == 1 and "pytest.exit('enough')" in warnings[0], warnings
        assert "test_exit.py::test_exit" in warnings[0]
        assert report["session"]["warnings"] == [warnings[0].split(": ", 2)[2]]
        # (xdist prints its own INTERNALERROR traceback: none of ours)
        assert "pytest_perfmon" not in inner.text()
        if not mode:
            assert "Traceback" not in inner.text()
    finally:
        inner.close()


def test_internal_error_in_the_xdist_controller(pytester, run_perf):
    """A plugin's hook that raises in the controller (not in a worker): pytest's INTERNALERROR
    and its exit code stand; the warning names the internal error and the test the controller
    had not seen end, which its worker may have finished (the report then has its record)."""
    pytester.makeconftest(
        """
        CONTROLLER = []

        def pytest_configure(config):
            if not hasattr(config, "workerinput"):
                CONTROLLER.append(True)

        def pytest_runtest_logreport(report):
            if report.when == "call" and CONTROLLER:
                raise RuntimeError("a plugin's bug")
        """
    )
    pytester.makepyfile(test_a="def test_one(): pass\ndef test_two(): pass\n")
    run = run_perf("-n", "2")
    assert run.ret == pytest.ExitCode.INTERNAL_ERROR, run.text
    assert "INTERNALERROR" in run.text and "pytest_perfmon" not in run.text
    warnings = run.report["session"]["warnings"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("the run was ended by an internal error (RuntimeError) during ")
    assert warnings[0].endswith(
        "(each reported as interrupted unless its worker finished it or xdist reported it crashed)"
    )
    named = [n for n in ("test_a.py::test_one", "test_a.py::test_two") if n in warnings[0]]
    assert named, warnings
    for nodeid in named:  # as its worker measured it, or interrupted if it did not finish
        assert run.report["tests"][nodeid]["outcome"] in ("passed", "interrupted"), run.report


def test_keyboard_interrupt_raised_in_a_worker_test_is_crashed_as_pytest_says(pytester, run_perf):
    """A test that raises KeyboardInterrupt in an xdist worker: pytest reports it failed,
    "worker crashed", and the run interrupted (exit 2). The report says crashed, once (the
    worker's own record, interrupted, and the controller's crash are one execution)."""
    pytester.makepyfile(test_k="def test_a(): pass\ndef test_kbi(): raise KeyboardInterrupt\n")
    run = run_perf("-n", "2")
    assert run.ret == pytest.ExitCode.INTERRUPTED, run.text
    assert "worker 'gw" in run.text and "crashed while running 'test_k.py::test_kbi'" in run.text
    kbi = run.test("test_kbi")
    assert kbi["outcome"] == "crashed" and "executions" not in kbi, kbi
    assert run.report["summary"]["outcomes"].get("crashed") == 1, run.report["summary"]


def test_internal_error_in_a_worker_relayed_by_xdist(pytester, run_perf):
    """A worker's internal error after its tests: xdist relays it to the controller's
    pytest_internalerror (as an AssertionError of its own) and the session ends as pytest
    says (here 0, every test passed): no warning of an ended run."""
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(wrapper=True)
        def pytest_runtestloop(session):
            result = yield
            if getattr(session.config, "workerinput", {}).get("workerid") == "gw0":
                raise RuntimeError("a plugin's bug at the end of the worker's loop")
            return result
        """
    )
    pytester.makepyfile(test_a="def test_one(): pass\ndef test_two(): pass\n")
    run = run_perf("-n", "1")
    assert "INTERNALERROR" in run.text and "pytest_perfmon" not in run.text
    assert run.ret == pytest.ExitCode.OK, run.text
    assert run.report["session"]["warnings"] == [], run.report["session"]["warnings"]
    assert {t["outcome"] for t in run.report["tests"].values()} == {"passed"}


@posix_only
@pytest.mark.parametrize("mode", [SERIAL, N2])
def test_ctrl_c(tmp_path, mode):
    """SIGINT to the whole process group, as a terminal sends it."""
    inner, running = _start(tmp_path, mode)
    try:
        inner.started(len(running))
        os.killpg(inner.proc.pid, signal.SIGINT)
        assert inner.wait() == pytest.ExitCode.INTERRUPTED, inner.text()
        report = inner.report()
        assert report["session"]["aborted"] is False
        _check_interrupted(inner, report, running)
        warnings = inner.warnings()
        assert len(warnings) == 1, warnings
        assert "KeyboardInterrupt (Ctrl-C, SIGINT)" in warnings[0]
        assert all(nodeid in warnings[0] for nodeid in running)
    finally:
        inner.close()


# -- hard exits: the monitor writes the aborted report ------------------------------------
def _check_aborted(inner: Inner, running: list, words: str) -> dict:
    report = inner.report()
    session = report["session"]
    assert session["aborted"] is True and session["exit_status"] is None
    _check_interrupted(inner, report, running)
    warnings = inner.warnings(report)
    assert len(warnings) == 1, warnings
    assert words in warnings[0], warnings
    assert all(nodeid in warnings[0] for nodeid in running), warnings
    return report


@posix_only
@pytest.mark.parametrize("mode", [SERIAL, N2])
def test_sigterm(tmp_path, mode):
    """What CI sends on cancel: pytest still dies of SIGTERM, at once; the report says so."""
    inner, running = _start(tmp_path, mode)
    try:
        inner.started(len(running))
        os.killpg(inner.proc.pid, signal.SIGTERM)
        assert inner.wait() == -signal.SIGTERM, inner.text()
        _check_aborted(inner, running, "was ended by SIGTERM during")
    finally:
        inner.close()


@posix_only
@pytest.mark.parametrize("mode", [SERIAL, N2])
def test_sigkill_of_pytest(tmp_path, mode):
    """No batch need have left before the kill: the finished tests come from the slots. With
    xdist the controller alone is killed; its workers, left running, are killed at the end."""
    inner, running = _start(tmp_path, mode)
    workers: list = []
    try:
        workers = inner.started(len(running))
        inner.proc.send_signal(signal.SIGKILL)
        assert inner.wait() == -signal.SIGKILL
        inner.report(bound=REPORT_BOUND)
        took = time.monotonic() - inner.exited
        _check_aborted(inner, running, "was killed (SIGKILL or a crash) during")
        print(f"the aborted report came {took:.3f} s after pytest's exit")
    finally:
        inner.close(orphans=workers if mode else ())


# pytest-timeout's thread method (os._exit(1) from its timer thread): the aborted report, its
# warning naming os._exit(1) and the test, is checked by tests/test_compat.py's
# test_timeout_thread_method_ends_pytest, on the same kind of run.


@posix_only
def test_sigkill_of_an_xdist_worker(tmp_path):
    """The controller reports the test as crashed, with the setup pytest measured."""
    inner = Inner(tmp_path, "-n", "2", "--dist", "loadgroup", files=SUITE_N2)
    try:
        pids = inner.started(2)
        os.kill(pids[0], signal.SIGKILL)
        # the controller has taken the crash (a busy machine can take longer than the 0.5 s
        # this once slept); then the rest of the run is ended
        _wait_for(lambda: (tmp_path / "crashed.txt").exists(), "the controller to take the crash")
        os.killpg(inner.proc.pid, signal.SIGINT)
        assert inner.wait() == pytest.ExitCode.INTERRUPTED, inner.text()
        report = inner.report()
        crashed = [t for t in report["tests"].values() if t["outcome"] == "crashed"]
        assert len(crashed) == 1, report["tests"]
        assert crashed[0]["setup_time"] is not None and crashed[0]["setup_time"] >= 0.2
        interrupted = [t for t in report["tests"].values() if t["outcome"] == "interrupted"]
        assert len(interrupted) == 1
        assert set(report["tests"]) == inner.finished() | set(LONG_IDS)
    finally:
        inner.close()


FORKS = """
import multiprocessing, os, signal, time

def _sleep():
    time.sleep(30)

def test_child_terminated():
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_sleep)
    child.start()
    time.sleep(0.2)
    child.terminate()  # SIGTERM to the forked child: its end, not pytest's
    child.join(10)
    assert child.exitcode == -signal.SIGTERM

def test_long():
    with open("started-%d-x" % os.getpid(), "w"):
        pass
    time.sleep(60)
"""


@posix_only
def test_a_forked_child_s_sigterm_is_not_pytest_s(tmp_path):
    inner = Inner(tmp_path, files={"test_forks.py": FORKS})
    try:
        inner.started(1)
        inner.proc.send_signal(signal.SIGKILL)
        assert inner.wait() == -signal.SIGKILL
        report = inner.report()
        assert report["tests"]["test_forks.py::test_child_terminated"]["outcome"] == "passed"
        assert report["session"]["warnings"] == [
            "session aborted: pytest was killed (SIGKILL or a crash) during "
            "test_forks.py::test_long"
        ]
    finally:
        inner.close()


# -- the output path -------------------------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path):
    """A real file system that is full: a small tmpfs (needs root and mount)."""
    if os.name != "posix" or not sys.platform.startswith("linux"):
        pytest.skip("a tmpfs mount is Linux's")
    mnt = tmp_path / "full"
    mnt.mkdir()
    try:
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
    except OSError as exc:
        pytest.skip(f"cannot run mount: {exc}")
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=WAIT)


def test_full_disk_at_the_output_path(full_disk, tmp_path):
    out = full_disk / "perf.json"
    out.write_text(json.dumps(PREVIOUS))
    # fill what is left of the file system
    fd = os.open(full_disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    run = tmp_path / "run"
    run.mkdir()
    (run / "pytest.ini").write_text("[pytest]\n")
    (run / "test_fin.py").write_text(FINISHED)
    env = dict(os.environ)
    env.pop("GITHUB_STEP_SUMMARY", None)
    res = preloaded.run(  # forked where it can be (tests/preloaded.py)
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
        + ["--perf-monitor", f"--perf-output={out}"],
        run,
        env,
        RUN_TIMEOUT,
    )
    text = res.stdout + res.stderr
    assert res.returncode == 1, text
    warnings = [line for line in text.splitlines() if line.startswith("perfmon: warning:")]
    assert len(warnings) == 1, text
    assert f"cannot write {out}: No space left on device" in warnings[0]
    assert f"the previous report is at {out}.previous" in warnings[0]
    assert "Traceback" not in text
    # the previous report intact, aside; nothing half-written
    assert json.loads((full_disk / "perf.json.previous").read_text()) == PREVIOUS
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler", "perf.json.previous"]
    # the report went to a temporary file, named in the warning
    saved = warnings[0].split("saved to ", 1)[1].split(" ")[0]
    try:
        with open(saved, encoding="utf-8") as f:
            assert validate(json.load(f))["tests"]
    finally:
        os.unlink(saved)


def _run_here(run, *args: str):
    """A forked pytest run of FINISHED with ``--perf-monitor`` in ``run``: (output, report)."""
    (run / "pytest.ini").write_text("[pytest]\n")
    (run / "test_fin.py").write_text(FINISHED)
    env = dict(os.environ)
    env.pop("GITHUB_STEP_SUMMARY", None)
    res = preloaded.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
        + ["--perf-monitor", *args],
        run,
        env,
        RUN_TIMEOUT,
    )
    text = res.stdout + res.stderr
    assert res.returncode == 1, text  # the suite's own
    assert "Traceback" not in text, text
    return text, validate(json.loads((run / "performance_metrics.json").read_text()))


@pytest.mark.skipif(sys.platform != "linux", reason="a file name that is not UTF-8 is Linux's")
def test_a_directory_whose_name_is_not_utf8(tmp_path):
    """Paths travel to the monitor and back as they are, bytes that are not UTF-8 included
    (os.fsdecode's escapes): the monitor's answer to the session's end names the report's
    path. It could not be packed: the plugin stopped the monitor, wrote its own report over the
    monitor's and said the monitor had crashed."""
    run = Path(os.fsdecode(os.fsencode(tmp_path) + b"/run\xff"))
    run.mkdir()
    text, report = _run_here(run, "--perf-print-summary")
    assert "perfmon: warning" not in text, text
    assert report["session"]["collector"] == "monitor"
    where = os.fsencode(run / "performance_metrics.json").decode("utf-8", "replace")
    assert f"perfmon: report written to {where}" in text, text  # (the output read as UTF-8)


GARBLED_ANSWER = """
from pytest_perfmon.monitor import collector, protocol


def _garbled(self, ident, body):  # in the monitor (a fork of this process): no report
    self.reply(ident, protocol.pack(protocol.DONE, "not an answer"))


collector.Monitor.on_finish = _garbled
"""


def test_a_monitor_that_does_not_answer_the_end_is_not_called_crashed(tmp_path):
    """A monitor that answers the session's end with nothing usable is stopped by the plugin,
    which writes the report itself: the warning says so, not that the monitor crashed (it
    said "killed by SIGKILL, or crashed", the kill being the plugin's own)."""
    (tmp_path / "conftest.py").write_text(GARBLED_ANSWER)
    text, report = _run_here(tmp_path)
    warnings = [line for line in text.splitlines() if line.startswith("perfmon: warning:")]
    assert warnings == [
        "perfmon: warning: the monitor did not answer the session's end, and was stopped; "
        "report written by the plugin from its own measurements"
    ], text
    assert report["session"]["collector"] == "plugin-fallback"
    assert len(report["tests"]) == 9


BOTH_RUNNING = """
import os, time


def test_{n}():
    open("running.{n}", "w").close()
    deadline = time.monotonic() + 60
    while not (os.path.exists("running.1") and os.path.exists("running.2")):
        assert time.monotonic() < deadline, "the other session never started"
        time.sleep(0.01)
"""


def test_two_sessions_at_once_on_one_output_path_lose_no_report(tmp_path):
    """Two pytest sessions in one directory at the same time, writing the same report path:
    the first to end writes it, the other finds it there (each moved any previous report aside
    as it began) and saves its own beside it, saying where. The later one replaced the
    earlier's, and neither said a word."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = dict(os.environ)
    env.pop("GITHUB_STEP_SUMMARY", None)
    procs = []
    for n in (1, 2):
        (tmp_path / f"test_s{n}.py").write_text(BOTH_RUNNING.format(n=n))
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
        cmd += ["--perf-monitor", "--perf-output=out.json", f"test_s{n}.py"]
        procs.append(
            preloaded.popen(
                cmd, tmp_path, env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    texts = []
    for proc in procs:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, out
        texts.append(out)
    warnings = [
        line for text in texts for line in text.splitlines() if line.startswith("perfmon: warn")
    ]
    assert len(warnings) == 1, texts
    assert "out.json holds another report, left as it is" in warnings[0], warnings
    saved = Path(warnings[0].split("saved to ", 1)[1].split(" instead")[0])
    assert saved.parent == tmp_path and saved.name.startswith("out.") and saved.suffix == ".json"
    first = validate(json.loads((tmp_path / "out.json").read_text()))
    second = validate(json.loads(saved.read_text()))
    assert sorted([*first["tests"], *second["tests"]]) == [
        "test_s1.py::test_1",
        "test_s2.py::test_2",
    ]
    assert not list(tmp_path.glob(".perfmon-*"))  # no temporary file left


def test_a_slot_that_does_not_fit_leaves_no_file(full_disk):
    """A slot is a megabyte of real zeros: on a disk with less free, the part written was
    kept and took the last free space, so that xdist's base temporary directory could not be
    made (INTERNALERROR, exit 3). The slot is given up, its file removed."""
    assert slots.SIZE > 64 * 1024  # the fixture's whole file system
    with pytest.raises(OSError):
        slots.Slot(str(full_disk), "gw0", "worker")
    assert _endings.open_slot(str(full_disk), "gw0", "worker") is None
    assert list(full_disk.iterdir()) == []


@pytest.mark.parametrize(
    "option",
    ["--collect-only", "--markers", "--fixtures", "--fixtures-per-test", "--setup-plan"]
    + ["--setup-only"],
)
def test_a_run_of_no_test_leaves_the_report_alone(tmp_path, option):
    """pytest lists, plans or sets up only: nothing is measured and the previous report stays
    where it is. With --markers the previous report was moved aside and nothing written; with
    the fixture lists an empty report replaced it; with --setup-plan (no test ran, pytest says)
    every test was reported passed."""
    inner = Inner(tmp_path, option, files=SUITE)
    try:
        assert inner.wait() == 0, inner.text()
        assert json.loads(inner.output.read_text()) == PREVIOUS
        assert not (tmp_path / "perf.json.previous").exists()
        assert "perfmon:" not in inner.text()
    finally:
        inner.proc.wait(WAIT)
        inner.log.close()


EXIT_AT_START = """
import pytest


def pytest_sessionstart(session):
    pytest.exit("no database here: nothing to test", 0)
"""


EXIT_AT_FINISH = """
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session, exitstatus):  # before every plugin's own sessionfinish
    pytest.exit("stopped at the end", 3)
    yield
"""


def _run_with_conftest(tmp_path, conftest: str) -> tuple:
    """FINISHED under ``--perf-monitor`` with ``conftest``, a previous report at perf.json:
    (the return code, the output, perf.json)."""
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_fin.py").write_text(FINISHED)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    out = tmp_path / "perf.json"
    out.write_text(json.dumps(PREVIOUS))
    res = preloaded.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
        + ["--perf-monitor", f"--perf-output={out}"],
        tmp_path,
        dict(os.environ),
        RUN_TIMEOUT,
    )
    return res.returncode, res.stdout + res.stderr, out


def test_a_session_cut_short_at_its_end_keeps_what_it_measured(tmp_path):
    """A conftest's hook ends the run at sessionfinish before the plugin's: the tests ran, so
    the monitor writes the aborted session's report with them (and the previous report stays
    aside). Taken for a session that never ran, it was killed without a report and the
    previous report put back, as if it were this run's."""
    code, text, out = _run_with_conftest(tmp_path, EXIT_AT_FINISH)
    assert code == 3, text
    report = validate(json.loads(out.read_text()))
    assert len(report["tests"]) == 9 and report["session"]["aborted"] is True, report["session"]
    assert json.loads((tmp_path / "perf.json.previous").read_text()) == PREVIOUS


def test_a_session_ended_as_it_starts_leaves_the_report_alone(tmp_path):
    """A conftest's pytest_sessionstart that ends the run (pytest.exit, exit 0): no test ran,
    so there is no report and the previous one is back in place, at once. The monitor was
    sent SIGTERM, wrote "session aborted: the monitor was stopped by SIGTERM" over the
    previous report (moved aside) and the run took 1.5 s longer."""
    code, text, out = _run_with_conftest(tmp_path, EXIT_AT_START)
    assert code == 0, text
    assert json.loads(out.read_text()) == PREVIOUS, text
    assert not (tmp_path / "perf.json.previous").exists()
    assert "perfmon:" not in text


# -- the slots themselves ----------------------------------------------------------------------
def _record(i: int) -> list:
    """Not a full record: the ring keeps whatever it is given (the monitor checks it)."""
    return [f"t.py::test_{i}".encode(), 100.0 + i, 100.5 + i]


def test_slot_ring_keeps_the_latest_records_and_the_running_test(tmp_path):
    from collections import deque

    q: deque = deque()
    slot = slots.Slot(str(tmp_path), "gw3", "worker", q)
    try:
        n = 0
        written = 0
        while written < 2.5 * (slots.SIZE - slots.DATA):  # wraps around twice
            q.append(_record(n) + ["x" * 200])
            slot.begin(f"t.py::test_{n + 1}".encode(), 200.0 + n)
            written += 240
            n += 1
        slot.ending("os._exit(3)", 123.0)
        st = slots.read_all(str(tmp_path))[0]
        assert (st.pid, st.wid, st.role) == (os.getpid(), "gw3", "worker")
        assert (st.reason, st.ended) == ("os._exit(3)", 123.0)
        assert st.running == (f"t.py::test_{n}".encode(), 200.0 + n - 1)
        # the newest records, in order, ending with the test before the running one
        names = [r[0] for r in st.records]
        assert names[-1] == f"t.py::test_{n - 1}".encode()
        assert names == sorted(names, key=lambda b: int(b.rsplit(b"_", 1)[1]))
        assert len(names) > 1000
        slot.idle(300.0)
        assert slots.read_all(str(tmp_path))[0].running is None
    finally:
        slot.close()


def test_duplicate_interruptions_are_dropped():
    data = report_model.RunData()
    w = data.workers["gw0"] = report_model.Worker("gw0", 1, 0.0)
    rec = [None] * 13
    rec[0], rec[1], rec[6] = "t.py::a", 10.0, "interrupted"
    w.records.append(rec)
    data.crashed = [
        {
            "nodeid": "t.py::a",
            "worker": "gw0",
            "time": 12.0,
            "start": 10.01,
            "outcome": "interrupted",
        },
        {
            "nodeid": "t.py::b",
            "worker": "gw1",
            "time": 12.0,
            "start": 10.0,
            "outcome": "interrupted",
        },
        {"nodeid": "t.py::a", "worker": "gw0", "time": 9.0, "start": 8.0},  # crashed before
    ]
    slots.drop_duplicate_interruptions(data)
    assert [(c["nodeid"], c.get("outcome")) for c in data.crashed] == [
        ("t.py::b", "interrupted"),
        ("t.py::a", None),
    ]


# -- one delivery path: the monitor, the daemon and the plugin's fallback ----------------------
def _built(nodeids=("t.py::test_a",)) -> dict:
    from helpers import record

    data = report_model.RunData(sample_interval=0.1)
    recs = [record(n, 1000.0 + i) for i, n in enumerate(nodeids)]
    data.workers["main"] = report_model.Worker("main", os.getpid(), 999.0, records=recs)
    return report_model.build(data, {"start": 999.0, "stop": 1002.0, "exit_status": 0}, None)


def test_delivery_writes_the_json_then_the_page(tmp_path):
    from pytest_perfmon.monitor import deliver as delivery

    rep = _built()
    out, page = tmp_path / "perf.json", tmp_path / "perf.html"
    done = delivery.deliver(rep, str(out), html=str(page))
    assert done == delivery.Delivered(str(out)) and done.ok and done.where == str(out)
    assert validate(json.loads(out.read_text())) == rep
    assert "t.py::test_a" in page.read_text(encoding="utf-8")
    assert delivery.Delivered.from_done(done.done()) == done  # what the plugin reads back


@pytest.mark.parametrize(
    "path, daemon, problem",
    [
        (None, False, "no output path given"),
        ("{tmp}/no/dir/perf.json", False, "cannot write {path}: No such file or directory"),
        # a daemon vets the path its client sent
        (
            "{tmp}/no/dir/perf.json",
            True,
            "cannot write {path}: directory {tmp}/no/dir does not exist",
        ),
        ("relative.json", True, "cannot write {path}: the report path is not an absolute path"),
    ],
)
def test_delivery_saves_the_report_elsewhere_and_says_where(
    tmp_path, monkeypatch, path, daemon, problem
):
    import tempfile

    from pytest_perfmon.monitor import deliver as delivery
    from pytest_perfmon.monitor.daemon.session import check_report_path

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where save_elsewhere writes
    path = path and path.format(tmp=tmp_path)
    rep = _built()
    done = delivery.deliver(rep, path, check=check_report_path if daemon else None)
    assert not done.ok and done.path == path
    problem = problem.format(path=path, tmp=tmp_path)
    assert done.error == f"{problem}; saved to {done.saved_to} instead"
    assert done.where == done.saved_to and os.path.dirname(done.saved_to) == str(tmp_path)
    with open(done.saved_to, encoding="utf-8") as f:
        assert json.load(f) == rep
    assert delivery.Delivered.from_done(done.done()) == done


def test_every_end_of_a_session_delivers_through_one_function(tmp_path, monkeypatch):
    """The spawned monitor, the daemon and the plugin's fallback: one delivery each, the
    fallback without the store; the output path a spawned monitor writes to is its
    command line's, a daemon's the finish's."""
    from types import SimpleNamespace

    from helpers import InProcess, hello, record
    from pytest_perfmon._owner import SessionOwner
    from pytest_perfmon.monitor import deliver as delivery
    from pytest_perfmon.monitor import protocol
    from pytest_perfmon.monitor.collector import Monitor, parser
    from pytest_perfmon.monitor.daemon.core import Daemon

    calls = []
    real = delivery.deliver

    def spy(report, path, **kw):
        calls.append((os.path.basename(path), kw.get("html"), kw.get("history")))
        return real(report, path, **kw)

    monkeypatch.setattr(delivery, "deliver", spy)
    finish = {"start": 999.0, "stop": 1002.0, "exit_status": 0}
    for srv in (
        Monitor("ipc://unused", str(tmp_path / "monitor.json"), 0.1, None, False),
        Daemon("ipc://unused", str(tmp_path / "c.json"), str(tmp_path / "j"), 0.1, False),
    ):
        s = InProcess(srv)
        try:
            assert s.send(b"a", protocol.HELLO, hello())[0] == protocol.READY
            s.send(b"a", protocol.BATCH, [0, [record(b"t.py::test_a")]])
            page = str(tmp_path / f"{type(srv).__name__}.html")
            own = {"output": str(tmp_path / "daemon.json"), "html": page}
            kind, done = s.send(b"a", protocol.FINISH, {**finish, **own})
            assert kind == protocol.DONE and done["ok"] and done["html_warning"] is None, done
        finally:
            s.close()
    assert parser().parse_args(["--endpoint", "x", "--output", "rel.json"]).output == (
        os.path.abspath("rel.json")
    )

    out = tmp_path / "plugin.json"
    settings = SimpleNamespace(
        output=str(out),
        html=None,
        history="h.db",
        labels={},
        rootdir=None,
        daemon=None,
        profile=None,
    )
    settings.system_info = False
    owner = SessionOwner(settings, SimpleNamespace(problem=None), None)
    assert "output" not in owner.session_info(0)  # a spawned monitor has it from its argv
    settings.daemon = "ipc://daemon"
    assert owner.session_info(0)["output"] == str(out)
    owner.info = owner.session_info(0)
    owner.fallback(report_model.RunData())
    assert owner.report_path == str(out) and json.loads(out.read_text())["tests"] == {}
    assert owner.warnings == [
        "history not recorded: the collector was lost (the pytest process never writes the "
        f"store); import the report with: perfmon history import {out} --db URL"
    ]
    assert calls == [
        ("monitor.json", str(tmp_path / "Monitor.html"), None),
        ("daemon.json", str(tmp_path / "Daemon.html"), None),
        ("plugin.json", None, None),  # the fallback never writes the store
    ], calls


# -- one crash merge: records told by someone else ---------------------------------------------
def test_told_records_join_once_per_execution():
    """The controller's copies of a crashed worker's last tests (its own clock's start, a
    moment off) and a slot's records: each execution once, a node id run twice kept twice."""
    from helpers import record

    w = report_model.Worker("gw0", 1, 0.0)
    w.records = [record("t.py::a", 10.0)]  # --keep-duplicates: t.py::a ran twice, sent once
    told = [record("t.py::a", 10.003), record("t.py::a", 10.023), record("t.py::b", 10.043)]
    assert w.add_told(told) == 2
    assert [(r[0], r[1]) for r in w.records] == [
        ("t.py::a", 10.0),
        ("t.py::a", 10.023),
        ("t.py::b", 10.043),
    ]
    assert w.add_told(told) == 0  # told again (a second crash message, a slot): nothing new
    rerun = record("t.py::r", 20.0)
    rerun[2] = 25.0  # one protocol call of pytest-rerunfailures: its attempts are inside it
    w.records.append(rerun)
    assert w.add_told([record("t.py::r", 20.01), record("t.py::r", 23.0)]) == 0
    assert w.add_told([record("t.py::r", 26.0)]) == 1  # a later execution of it


PDB_SUITE = """
def test_a():
    pass

def test_fail():
    assert 0

def test_c():
    pass
"""


def test_quit_in_pdb_after_a_failure_is_the_failure_pytest_reports(tmp_path):
    """--pdb, quit at a failure: pytest.exit() ends the run from the failure's interaction,
    after its report, and pytest counts the test failed (exit code 2 as without us); so does
    the report, with the phases that ran, and the one warning says the run ended after it."""
    (tmp_path / "test_x.py").write_text(PDB_SUITE, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = dict(os.environ, PYTEST_ADDOPTS=inner_addopts(), PY_COLORS="0")
    out = tmp_path / "perf.json"
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pdb", "test_x.py"]
    runs = [
        subprocess.run(
            base + extra,
            cwd=tmp_path,
            env=env,
            input="q\n",
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        for extra in ([], ["--perf-monitor", f"--perf-output={out}"])
    ]
    plain, perf = runs
    assert "1 failed, 1 passed" in plain.stdout, plain.stdout
    assert perf.returncode == plain.returncode, (perf.stdout, perf.stderr)
    assert "1 failed, 1 passed" in perf.stdout, perf.stdout
    report = validate(json.loads(out.read_text(encoding="utf-8")))
    tests = report["tests"]
    assert sorted(tests) == ["test_x.py::test_a", "test_x.py::test_fail"], tests
    failed = tests["test_x.py::test_fail"]
    assert failed["outcome"] == "failed", failed
    assert failed["call_time"] is not None and failed["teardown_time"] is None, failed
    assert report["summary"]["outcomes"] == {"failed": 1, "passed": 1}
    warnings = [
        x for x in perf.stdout.splitlines() + perf.stderr.splitlines() if "perfmon: warning" in x
    ]
    assert warnings == [
        "perfmon: warning: the run was ended by pytest.exit('Quitting debugger') after "
        "test_x.py::test_fail (reported as failed)"
    ], perf.stdout + perf.stderr
    assert "Traceback" not in perf.stderr


TEARDOWN_EXIT = """
import time
import pytest


@pytest.fixture
def ends_the_run():
    yield
    time.sleep(0.3)
    pytest.exit("stop in teardown")


def test_fails_then_ends(ends_the_run):
    assert 0
"""


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "n2"])
def test_exit_in_the_teardown_after_a_failure_is_the_test_still_running(run_perf, pytester, xdist):
    """A failed call, then pytest.exit() in the fixture's teardown: the test was still running
    (unlike --pdb's quit at the failure, above): interrupted (serial) or crashed (xdist's word
    for its worker's end), with the teardown's time, and the warning says the run ended during
    it."""
    pytester.makepyfile(test_td=TEARDOWN_EXIT)
    run = run_perf("-p", "no:randomly", *xdist)
    t = run.test("test_fails_then_ends")
    assert t["outcome"] == ("crashed" if xdist else "interrupted"), (t, run.text)
    assert t["teardown_time"] >= 0.3, t
    (warning,) = run.report["session"]["warnings"]
    assert "the run was ended by pytest.exit('stop in teardown') during " in warning, warning
    assert "test_td.py::test_fails_then_ends" in warning
