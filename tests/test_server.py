"""The server core in-process: the monitor's and the daemon's ``handle()`` called directly, with a
fake socket that keeps the replies. Includes a structured hypothesis fuzz of both, so that a
failure shrinks to a readable message, and one end-to-end check of what a spawned monitor does
when its pytest is killed (it removes the plugin's temp dir)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import preloaded
import pytest
from helpers import RUN_TIMEOUT, InProcess, find_monitor, frames, hello, record, validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_perfmon.monitor import protocol
from pytest_perfmon.monitor.collector import Monitor
from pytest_perfmon.monitor.collector import main as monitor_main


@pytest.fixture
def monitor(inprocess_monitor):
    """conftest's in-process Monitor, under the name these tests use."""
    return inprocess_monitor


@pytest.fixture
def daemon(inprocess_daemon):
    """conftest's in-process Daemon (its saves in tmp_path), under the name these tests use."""
    return inprocess_daemon


# --- the monitor ---------------------------------------------------------------------------------


def test_a_second_finish_replaces_the_monitors_own_report(monitor, tmp_path):
    """A monitor's report at its output is its own once written: a second finish (a client
    that sends it twice) writes over it. Anything else found there at the end is another
    session's, kept, and the report saved beside it."""
    assert monitor.send(b"me", protocol.HELLO, hello())[0] == protocol.READY
    monitor.send(b"me", protocol.BATCH, [0, [record(b"t.py::test_a", 1000)]])
    for _ in range(2):
        kind, done = monitor.send(b"me", protocol.FINISH, {"exit_status": 0})
        assert kind == protocol.DONE and done["ok"], done
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json") == ["perf.json"]
    (tmp_path / "perf.json").write_text("{}")  # another session's, written meanwhile
    other = Monitor("inproc://x", str(tmp_path / "perf.json"), 0.1, None, False)
    try:
        done = other.write_session({"exit_status": 0})
    finally:
        other.close()
    assert not done.ok and "holds another report, left as it is" in (done.error or "")
    assert (tmp_path / "perf.json").read_text() == "{}"
    assert done.saved_to and validate(json.loads(Path(done.saved_to).read_text()))


def test_another_sessions_page_is_left_and_this_one_written_beside(monitor, tmp_path):
    """--perf-html when another session's report is at the output as this one ends: the page
    at the HTML path is that session's too. It is kept, this run's page written beside it
    (PAGE.XXXXXXXX.html), and the warning names both. Without such a report, a page there is
    an earlier run's and is replaced."""
    page = tmp_path / "perf.html"
    page.write_text("an earlier run's page")
    assert monitor.send(b"me", protocol.HELLO, hello())[0] == protocol.READY
    monitor.send(b"me", protocol.BATCH, [0, [record(b"t.py::test_a", 1000)]])
    kind, done = monitor.send(b"me", protocol.FINISH, {"exit_status": 0, "html": str(page)})
    assert kind == protocol.DONE and done["ok"] and done["html_warning"] is None, done
    assert "<html" in page.read_text().lower()
    (tmp_path / "perf.json").write_text("{}")  # another session's, written meanwhile
    page.write_text("another session's page")
    other = Monitor("inproc://x", str(tmp_path / "perf.json"), 0.1, None, False)
    try:
        f = protocol.parse_finish({"exit_status": 0, "html": str(page)})
        done = other.write_session(f.as_session(), f)
    finally:
        other.close()
    assert not done.ok and "holds another report, left as it is" in (done.error or "")
    assert page.read_text() == "another session's page"
    (fresh,) = tmp_path.glob("perf.*.html")
    assert "<html" in fresh.read_text().lower()
    assert done.html_warning == (
        f"{page} holds another session's page, left as it is; this run's is {fresh}"
    )


def test_monitor_session_and_report(monitor, tmp_path):
    assert monitor.send(b"a", protocol.HELLO, hello())[0] == protocol.READY
    monitor.send(
        b"a", protocol.BATCH, [0, [record(b"t.py::test_a"), record(b"t.py::test_b", 1001)]]
    )
    monitor.send(b"a", protocol.BATCH, [0, [record(b"t.py::test_a")]])  # resent: taken once
    assert monitor.send(b"a", protocol.BYE, {"sent": 1}) == (protocol.ACK, {"missing": []})
    kind, done = monitor.send(
        b"a", protocol.FINISH, {"start": 999.0, "stop": 1002.0, "exit_status": 0}
    )
    assert kind == protocol.DONE and done["ok"], done
    assert monitor.srv.stop_reason == "finished"
    rep = validate(json.loads((tmp_path / "perf.json").read_text()))
    assert list(rep["tests"]) == ["t.py::test_a", "t.py::test_b"]
    assert rep["session"]["protocol_errors"] == {"duplicate-batch": 1}
    assert "possibly_incomplete" not in rep["session"]
    assert "system" not in rep


def test_monitor_bye_reports_missing_batches(monitor):
    monitor.send(b"a", protocol.HELLO, hello())
    monitor.send(b"a", protocol.BATCH, [1, [record()]])
    assert monitor.send(b"a", protocol.BYE, {"sent": 3}) == (protocol.ACK, {"missing": [0, 2]})
    assert not monitor.srv.peers[b"a"].acked


def test_monitor_aborted_without_bye_is_possibly_incomplete(monitor, tmp_path):
    monitor.send(b"c", protocol.HELLO, hello("controller", worker=None))
    for wid in ("gw0", "gw1"):
        monitor.send(wid.encode(), protocol.HELLO, hello("worker", wid))
        monitor.send(wid.encode(), protocol.BATCH, [0, [record(f"t.py::test_{wid}".encode())]])
    monitor.send(b"gw0", protocol.BYE, {"sent": 1})  # gw1 never says goodbye
    assert monitor.srv.write_session({"aborted": True}).ok
    rep = validate(json.loads((tmp_path / "perf.json").read_text()))
    assert rep["session"]["possibly_incomplete"] is True
    assert rep["session"]["records_dropped"] == 0  # we know of no lost batch


def test_monitor_crash_with_list_worker_is_a_field_error(monitor):
    """This crash body killed the spawned monitor (unhashable list)."""
    monitor.send(b"c", protocol.HELLO, hello("controller", worker=None))
    kind, body = monitor.send(b"c", protocol.CRASH, {"nodeid": "t.py::x", "worker": ["gw0"]})
    assert kind == protocol.ERROR and body["code"] == protocol.E_FIELD
    reply = monitor.send(
        b"c", protocol.CRASH, {"nodeid": "t.py::x", "worker": "gw9", "recent": [record()]}
    )
    assert reply is None and monitor.srv.data.crashed[0]["worker"] == "gw9"


def test_handler_bug_is_counted_and_answered(monitor, monkeypatch):
    def boom(self, ident, body):
        raise KeyError("bug")

    monkeypatch.setattr(Monitor, "on_bye", boom)
    monitor.send(b"a", protocol.HELLO, hello())
    kind, body = monitor.send(b"a", protocol.BYE, {"sent": 0})
    assert (
        kind == protocol.ERROR
        and body["code"] == protocol.E_INTERNAL
        and "KeyError" in body["message"]
    )
    assert monitor.srv.counters["internal"] == 1
    monitor.srv.handle([b"a"])  # not [identity, frame]
    assert monitor.srv.counters["malformed"] == 1


def test_hello_for_a_pid_not_ours(monitor):
    kind, body = monitor.send(b"a", protocol.HELLO, {"pid": 2**22 + 12345, "role": "local"})
    assert kind == protocol.ERROR and body["code"] == protocol.E_PID


@pytest.mark.parametrize("value", ["0.001", "3600", "nan"])
def test_monitor_interval_bounds(capsys, value):
    """The monitor's (and the daemon's: the same argparse type) interval: the plugin's rule."""
    with pytest.raises(SystemExit) as exit_:
        monitor_main(["--endpoint", "ipc://x", "--interval", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "at least 0.01 and below 3600 seconds" in err and "Traceback" not in err


def test_loop_sleeps_until_its_timer_is_due(tmp_path):
    """The serving loop's poll waits until the next timer is due, never less: zmq's poll takes
    whole milliseconds, and a timeout rounded down woke it early to spin in zero-timeout polls
    (about a hundred per sampling pass, most of the monitor's CPU at rest)."""
    m = Monitor(f"ipc://{tmp_path}/m.sock", str(tmp_path / "perf.json"), 0.1, None, False)
    m.bind()
    ticks, polls = [], []
    serve = m.serve

    def counted(poller, timeout):
        polls.append(timeout)
        serve(poller, timeout)

    def stop():
        m.stop_reason = "finished"

    m.serve = counted  # type: ignore[method-assign]
    try:
        m.loop([[0.0, 0.0213, lambda: ticks.append(1)], [0.5, 1.0, stop]])
    finally:
        m.close()
    assert len(ticks) >= 5  # a loaded machine runs fewer, never more
    assert len(polls) <= 2 * len(ticks) + 3, (len(polls), len(ticks))


def test_private_dir_only_when_ours(tmp_path):
    ours = tmp_path / "perfmon-abc"
    ours.mkdir()
    (ours / "monitor.sock").write_text("")
    (ours / "monitor.log").write_text("log")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "monitor.sock").write_text("")
    for directory, kept in ((other, True), (ours, False)):
        m = Monitor(f"ipc://{directory}/monitor.sock", None, 0.1, None, False)
        try:
            m.remove_private_dir()
        finally:
            m.close()
        assert directory.exists() == kept
    m = Monitor(f"ipc://{tmp_path}/perfmon-gone/monitor.sock", None, 0.1, None, False)
    try:
        assert m.private_dir() is None  # no socket there: not ours
    finally:
        m.close()


# --- the daemon in-process -----------------------------------------------------------------------


def test_daemon_crash_with_list_worker_is_a_field_error(daemon):
    daemon.send(b"c", protocol.HELLO, hello("controller", worker=None))
    kind, body = daemon.send(b"c", protocol.CRASH, {"nodeid": "t.py::x", "worker": ["gw0"]})
    assert kind == protocol.ERROR and body["code"] == protocol.E_FIELD


def test_daemon_status_and_stop_need_no_hello(daemon):
    kind, st_ = daemon.send(b"x", protocol.STATUS)
    assert kind == protocol.STATUS_REPLY and st_["sessions_total"] == 0
    assert daemon.send(b"x", protocol.STATUS, [1])[1]["code"] == protocol.E_FIELD
    assert daemon.send(b"x", protocol.STOP_KIND) == (protocol.STOPPING, {"pid": os.getpid()})
    assert daemon.srv.stop_reason == "stop command"


# --- the fuzz ------------------------------------------------------------------------------------

messages = st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c"]), frames), min_size=1, max_size=20)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _fuzz(*servers) -> None:
    """Each batch hypothesis draws goes to every server in ``servers``: the drawing is nearly all
    of a fuzz's cost (the handlers took about 1 % of it), so the monitor and the daemon share one
    (each still handles all 200 batches, as when each had its own)."""

    @FUZZ
    @given(messages)
    def run(batch):
        for srv in servers:
            for ident, frame in batch:
                srv.handle([ident, frame])  # never raises
            srv.stop_reason = None  # a fuzzed stop or finish ends nothing here

    run()
    for srv in servers:
        assert "internal" not in srv.counters, (type(srv).__name__, srv.counters)
        assert sum(srv.counters.values()) > 100, (type(srv).__name__, srv.counters)


def test_fuzz_monitor_and_daemon_handle(monitor, daemon, tmp_path, caplog):
    """The fuzz of both servers, then a normal client of each: its tests are all in its report
    (the monitor's perf.json, the daemon's own.json and combined.json, all in tmp_path)."""
    _fuzz(monitor.srv, daemon.srv)
    _monitor_after_fuzz(monitor, tmp_path)
    _daemon_after_fuzz(daemon, tmp_path, caplog)


def _monitor_after_fuzz(monitor, tmp_path) -> None:
    assert monitor.send(b"me", protocol.HELLO, hello(worker="zz"))[0] == protocol.READY
    mine = [record(f"t.py::test_mine_{i}".encode(), 2000 + i) for i in range(5)]
    monitor.send(b"me", protocol.BATCH, [0, mine])
    assert monitor.send(b"me", protocol.BYE, {"sent": 1}) == (protocol.ACK, {"missing": []})
    kind, done = monitor.send(b"me", protocol.FINISH, {"exit_status": 0})
    assert kind == protocol.DONE and done["ok"], done
    rep = validate(json.loads((tmp_path / "perf.json").read_text()))
    got = {k for k, t in rep["tests"].items() if t["worker"] == "zz"}
    assert got == {f"t.py::test_mine_{i}" for i in range(5)}


def _daemon_after_fuzz(daemon, tmp_path, caplog) -> None:
    sid = "c0ffee00" * 4
    assert daemon.send(b"me", protocol.HELLO, hello(session=sid))[0] == protocol.READY
    mine = [record(f"t.py::test_mine_{i}".encode(), 2000 + i) for i in range(5)]
    daemon.send(b"me", protocol.BATCH, [0, mine])
    assert daemon.send(b"me", protocol.BYE, {"sent": 1}) == (protocol.ACK, {"missing": []})
    own = tmp_path / "own.json"
    kind, done = daemon.send(b"me", protocol.FINISH, {"output": str(own), "exit_status": 0})
    assert kind == protocol.DONE and done["ok"], done
    rep = validate(json.loads(own.read_text()))
    assert set(rep["tests"]) == {f"t.py::test_mine_{i}" for i in range(5)}
    assert not rep["session"]["warnings"] and "possibly_incomplete" not in rep["session"]
    # Seen to fail (rarely, under -n 2): the daemon's own log then says why.
    assert daemon.srv.shutdown() == 0, caplog.text
    combined = validate(json.loads((tmp_path / "combined.json").read_text()))
    assert combined["sessions"][sid]["session"]["total_tests"] == 5


def test_daemon_combined_report_with_a_session_without_exit_status(daemon, tmp_path, caplog):
    """Found by the fuzz above: a finished session whose owner sent no exit status beside one
    that did made the combined report fail ('>' between int and None)."""
    for i, status in enumerate((0, None)):
        sid = f"{i:08d}" * 4
        me = f"me{i}".encode()
        assert daemon.send(me, protocol.HELLO, hello(session=sid))[0] == protocol.READY
        daemon.send(me, protocol.BATCH, [0, [record(f"t.py::test_{i}".encode(), 2000 + i)]])
        assert daemon.send(me, protocol.BYE, {"sent": 1}) == (protocol.ACK, {"missing": []})
        body = {"output": str(tmp_path / f"own{i}.json")}
        if status is not None:
            body["exit_status"] = status
        kind, done = daemon.send(me, protocol.FINISH, body)
        assert kind == protocol.DONE and done["ok"], done
    assert daemon.srv.shutdown() == 0, caplog.text
    combined = validate(json.loads((tmp_path / "combined.json").read_text()))
    assert combined["session"]["exit_status"] == 0
    assert combined["session"]["total_tests"] == 2


# --- a spawned monitor outliving its pytest ------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_pytest_leaves_no_temp_dir(pytester, sig):
    pytester.makeini("[pytest]\n")
    marker = pytester.path / "running"
    pytester.makepyfile(
        "import pathlib, time\ndef test_fast():\n    pass\ndef test_wait():\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n    time.sleep(60)\n"
    )
    out = pytester.path / "perf.json"
    env = dict(os.environ)
    env.pop("PERFMON_DAEMON", None)
    proc = preloaded.popen(  # forked where it can be (tests/preloaded.py)
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
        env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mon = None
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while mon is None:
            assert time.monotonic() < deadline and proc.poll() is None
            mon = find_monitor(proc.pid)
            time.sleep(0.05)
        tmpdir = mon.cwd()
        assert os.path.basename(tmpdir).startswith("perfmon-")
        # A test runs only after the monitor answered our hello: the monitor knows this pid.
        while not marker.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(sig)
        proc.wait(RUN_TIMEOUT)
        mon.wait(RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(RUN_TIMEOUT)
        if mon is not None and mon.is_running():
            mon.kill()
    left = sorted(os.listdir(tmpdir)) if os.path.exists(tmpdir) else None
    log = ""
    if left and "monitor.log" in left:
        with open(os.path.join(tmpdir, "monitor.log"), encoding="utf-8", errors="replace") as f:
            log = f.read()
    assert left is None, (left, log)
    assert out.exists(), "the monitor wrote no aborted report"
    session = validate(json.loads(out.read_text()))["session"]
    assert session.get("aborted") is True, session
    assert session.get("possibly_incomplete") is True, session


def test_monitor_samples_and_aborts_when_parent_is_not_ours(tmp_path):
    """The real loop, in-process: samples a hello'd process, then finds that its --parent is
    not its parent and writes an aborted report."""
    out = tmp_path / "perf.json"
    m = Monitor(f"ipc://{tmp_path}/perfmon-x.sock", str(out), 0.01, os.getppid() + 10**6, False)
    m.bind()
    try:
        w = InProcess(m)
        w.send(b"a", protocol.HELLO, hello())
        m.sock = w.real_sock
        m.sample()
        assert m.data.concurrent_peak is not None and m.data.workers["main"].samples_t
        assert m.run() == 0
    finally:
        m.close()
    rep = validate(json.loads(out.read_text()))
    assert rep["session"]["aborted"] and rep["session"]["possibly_incomplete"]
    # the warning names what ended the run (no test ran, nothing said why: an unexplained end)
    assert rep["session"]["warnings"] == [
        "session aborted: pytest ended before its session finished while no test was running"
    ]
