"""tests/preloaded.py: the xdist workers of a forked inner run are forks of the server too;
each is started as its run's ``subprocess.Popen`` would start it, and ends as a real one ends.
Every test compares with a real start (``PERFMON_TESTS_EXEC=1``) and checks that the fork was
taken (the worker is not the run's child), so that neither side passes by default."""

from __future__ import annotations

import functools
import json
import os
import signal
import time

import psutil
import pytest
from helpers import inner_addopts, validate

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks only where there is fork")

#: The controller writes its pid (its workers compare their parent's with it).
CONFTEST = """
import os

def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        with open(os.path.join(str(config.rootpath), "controller.pid"), "w") as f:
            f.write(str(os.getpid()))
"""

FACTS = """
import io, json, os, signal, sys, warnings

def controller():
    with open("controller.pid") as f:
        return int(f.read())

def facts():
    main = sys.modules["__main__"]
    out = sys.__stdout__
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "argv": sys.argv,
        "env": os.environ.get("XFORK_MARK"),
        "pgid": os.getpgrp() == os.getpgid(controller()),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "fds": len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None,
        "stdout": [out.name, out.mode, out.write_through, out.line_buffering, out.encoding],
        "stderr": [sys.__stderr__.write_through, sys.__stderr__.errors],
        "main": sorted((k, type(v).__name__) for k, v in vars(main).items()),
        "signals": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)],
        "filters": len(warnings.filters),
    }

def test_one():
    f = facts()
    with open(f"worker-{f['pid']}.json", "w") as out:
        json.dump(f, out)

def test_two():
    test_one()
"""


def _facts(pytester, *, exec_: bool, monkeypatch) -> tuple:
    out = pytester.path / "perf.json"
    for f in [*pytester.path.glob("worker-*.json"), out]:
        if f.exists():
            f.unlink()
    with monkeypatch.context() as mp:
        mp.setenv("XFORK_MARK", "yes")
        if exec_:
            mp.setenv("PERFMON_TESTS_EXEC", "1")
        res = pytester.runpytest_subprocess(
            *("-n", "2", "-p", "no:cacheprovider", "--perf-monitor", f"--perf-output={out}"),
            timeout=120,
        )
    assert res.ret == 0, res.stdout.str() + res.stderr.str()
    workers = [json.loads(f.read_text()) for f in sorted(pytester.path.glob("worker-*.json"))]
    assert len(workers) == 2, workers
    # the monitor sampled the workers themselves, under the pids their tests saw
    report = validate(json.loads(out.read_text()))
    sampled = {w["pid"]: w["peak_rss_mb"] for w in report["workers"].values()}
    assert set(sampled) == {w["pid"] for w in workers}, (sampled, workers)
    assert all(mb is not None and mb > 5 for mb in sampled.values()), sampled
    assert {t["pid"] for t in report["tests"].values()} == set(sampled)
    controller = int((pytester.path / "controller.pid").read_text())
    return controller, workers, res.stderr.str()


def test_a_forked_runs_workers_start_as_its_real_ones_do(pytester, monkeypatch):
    pytester.makeini("[pytest]\nfilterwarnings = error\n")  # a warning in a worker fails
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_facts=FACTS)
    ctl, forked, err = _facts(pytester, exec_=False, monkeypatch=monkeypatch)
    ctl_x, real, err_x = _facts(pytester, exec_=True, monkeypatch=monkeypatch)
    # the fork was taken: the server's forks, not the controller's children; real ones are
    assert all(w["ppid"] != ctl for w in forked), (ctl, forked)
    assert all(w["ppid"] == ctl_x for w in real), (ctl_x, real)
    same = {k: v for k, v in real[0].items() if k not in ("pid", "ppid")}
    for w in forked + real:
        assert {k: v for k, v in w.items() if k not in ("pid", "ppid")} == same
    assert same["env"] == "yes" and same["argv"] == ["-c"]
    assert same["path0"] == same["cwd"]  # xdist sends the controller's sys.path
    assert err.replace(str(ctl), "CTL") == err_x.replace(str(ctl_x), "CTL")


CRASH = """
import os, signal

def test_crash():
    os.kill(os.getpid(), signal.SIGKILL)

def test_exit():
    os._exit(3)

def test_fine():
    pass
"""


@pytest.mark.parametrize("exec_", ["", "1", "workers"], ids=["forked", "real", "real-workers"])
def test_a_forked_worker_that_dies_is_replaced_like_a_real_one(pytester, monkeypatch, exec_):
    """``PERFMON_TESTS_EXEC=workers``: the run forked, its workers real (helpers.REAL_WORKERS).
    One worker: it dies twice and is replaced twice (the limit, 2, is reached, not passed), and
    its third finishes the run; a replacement is started as every worker of its run is (the
    same request to the server, or the same real start), and a second worker beside it only
    cost a start more (about 0.2 CPU-s with real starts) per case."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_crash=CRASH, test_facts=FACTS)
    monkeypatch.setenv("PERFMON_TESTS_EXEC", exec_)
    res = pytester.runpytest_subprocess(
        *("-n", "1", "--max-worker-restart=2", "-p", "no:cacheprovider", "-p", "no:randomly"),
        timeout=120,
    )
    text = res.stdout.str()
    assert res.ret == 1, text + res.stderr.str()
    res.assert_outcomes(passed=3, failed=2)
    assert text.count("replacing crashed worker") == 2, text
    assert "crashed while running 'test_crash.py::test_crash'" in text, text
    assert "crashed while running 'test_crash.py::test_exit'" in text, text
    workers = [json.loads(f.read_text()) for f in pytester.path.glob("worker-*.json")]
    ctl = int((pytester.path / "controller.pid").read_text())
    assert workers and all((w["ppid"] == ctl) == bool(exec_) for w in workers), (ctl, workers)


ORPHANS = """
import os, signal, time

def test_orphan():
    with open(f"worker-{os.getpid()}.pid", "w") as f:
        f.write(str(os.getppid()))
    with open("controller.pid") as f:
        os.kill(int(f.read()), signal.SIGKILL)
    time.sleep(60)  # its worker leaves once its stdin ends, as a real worker does
"""


@pytest.mark.parametrize("exec_", [False, True], ids=["forked", "real"])
def test_a_forked_worker_whose_controller_dies_does_not_linger(pytester, monkeypatch, exec_):
    if exec_:
        monkeypatch.setenv("PERFMON_TESTS_EXEC", "1")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_orphan=ORPHANS)
    start = time.monotonic()
    res = pytester.runpytest_subprocess("-n", "1", "-p", "no:cacheprovider", timeout=120)
    assert res.ret == -signal.SIGKILL, res.stdout.str() + res.stderr.str()
    (found,) = pytester.path.glob("worker-*.pid")
    pid = int(found.stem.split("-")[1])
    ctl = int((pytester.path / "controller.pid").read_text())
    assert (int(found.read_text()) == ctl) == exec_
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid), "the worker (or its zombie) outlived its controller"
    assert time.monotonic() - start < 50, "the worker waited for its test, not for its stdin"


# -- runs started as subprocess.Popen starts them (preloaded.popen) ---------------------------
POPEN_FACTS = """
import json, os, signal, sys, time

def test_facts():
    facts = {
        "ppid": os.getppid(),
        "pgid": os.getpgrp() == os.getpid(),
        "sid": os.getsid(0) == os.getpid(),
        "stdin": os.path.samestat(os.fstat(0), os.stat(os.devnull)),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "signals": [str(signal.getsignal(s)) for s in (
            signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGHUP, signal.SIGCHLD
        )],
        "mask": sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "argv0": os.path.basename(sys.argv[0]),
    }
    with open("facts.json", "w") as f:
        json.dump(facts, f)
    sys.stdout.write("o" * 300000 + "\\n")
    sys.stderr.write("e" * 200000 + "\\n")
    while not os.path.exists("go"):
        time.sleep(0.01)
"""


def _popen_run(path, exec_: bool, *args: str, **kw):
    import subprocess
    import sys

    import preloaded

    # The plugins every inner run has off (helpers.inner_addopts, randomly among them): with
    # hypothesis's on, each run and worker spent about 0.3 CPU-s more loading it.
    env = dict(os.environ, PYTEST_ADDOPTS=f"{inner_addopts()} -p no:cacheprovider")
    env.pop("PERFMON_TESTS_EXEC", None)
    if exec_:
        env["PERFMON_TESTS_EXEC"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", *args]
    proc = preloaded.popen(cmd, path, env, **kw)
    assert isinstance(proc, subprocess.Popen) == exec_  # the fork was taken, or not
    return proc


def _wait_file(path, proc) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=30)
        time.sleep(0.02)


@pytest.mark.parametrize("exec_", [False, True], ids=["forked", "real"])
def test_a_popen_run_starts_as_a_real_one(pytester, exec_):
    """Its own session (pid = process group = session), stdin /dev/null, the CPU asked for, the
    signal dispositions and mask of a new Python, its output read to the end."""
    import subprocess

    pytester.makepyfile(test_popen=POPEN_FACTS)
    cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    proc = _popen_run(
        pytester.path,
        exec_,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        affinity={cpu} if cpu is not None else None,
    )
    try:
        _wait_file(pytester.path / "facts.json", proc)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.2)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.communicate(timeout=0.2)  # what it read so far is kept
        (pytester.path / "go").touch()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == 0, (out[-2000:], err[-2000:])
    assert b"o" * 300000 + b"\n" in out and b"1 passed" in out
    assert err.count(b"e") >= 200000
    facts = json.loads((pytester.path / "facts.json").read_text())
    assert (facts.pop("ppid") == os.getpid()) == exec_
    assert facts["pgid"] and facts["sid"] and facts["stdin"]
    assert facts["affinity"] == ([cpu] if cpu is not None else None)
    assert facts["signals"] == _new_pythons_signals(), facts
    assert facts["mask"] == []


@functools.cache
def _new_pythons_signals() -> list:
    """The dispositions of a new Python's signals, started by this process: one start for both
    cases (forked and real) that run in this process."""
    import subprocess
    import sys

    real = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, signal; print(json.dumps([str(signal.getsignal(s)) for s in ("
            "signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGHUP, signal.SIGCHLD)]))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=True,
    )
    return json.loads(real.stdout)


LONG = """
import os, time

def test_long():
    with open("started-%d" % os.getpid(), "w"):
        pass
    time.sleep(60)
"""


@pytest.mark.parametrize("how", ["sigint-group-n1", "sigterm", "sigkill"])
@pytest.mark.parametrize("exec_", [False, True], ids=["forked", "real"])
def test_a_popen_run_ends_by_a_signal_as_a_real_one(pytester, exec_, how):
    """Ctrl-C to its process group reaches it and its xdist worker (a real one: a fork of the
    server cannot join its group); SIGTERM and SIGKILL to its pid: returncode -N. One worker:
    every worker of such a run is started the same way (a real start, the run's session read
    once per run), and a second cost about 0.8 CPU-s per case."""
    import subprocess

    pytester.makepyfile(test_a=LONG, test_b=LONG)
    pytester.makeconftest(
        "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
    )
    args = ("-n", "1") if how.startswith("sigint") else ()
    log = open(pytester.path / "log", "wb")  # noqa: SIM115 - closed below
    proc = _popen_run(
        pytester.path, exec_, *args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not list(pytester.path.glob("started-*")):  # the worker's test, or the run's
            assert proc.poll() is None, (pytester.path / "log").read_text()
            assert time.monotonic() < deadline, (pytester.path / "log").read_text()
            time.sleep(0.02)
        time.sleep(0.2)
        workers = [int(p.name.split("-")[1]) for p in pytester.path.glob("started-*")]
        if how.startswith("sigint"):
            assert all(os.getpgid(w) == proc.pid for w in workers)  # in the run's group
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(60) == pytest.ExitCode.INTERRUPTED
        else:
            sig = signal.SIGTERM if how == "sigterm" else signal.SIGKILL
            proc.send_signal(sig)
            assert proc.wait(60) == -sig
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        log.close()
    text = (pytester.path / "log").read_text()
    if how.startswith("sigint"):
        assert "KeyboardInterrupt" in text, text
