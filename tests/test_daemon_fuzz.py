"""One small end-to-end fuzz against each real process (a spawned monitor, a perfmon-daemon):
malformed frames over a real socket never kill it, and a normal session afterwards is recorded
correctly. The thorough fuzz runs in-process (test_server.py), where failures shrink."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import ALL, SUITE, WAIT, Daemon, Pytest, Raw, frames, names, record, validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_perfmon.monitor import protocol

E2E = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Over a real socket a stop or a finish would end the process under test.
wire_frames = frames.filter(lambda f: b"stop" not in f and b"finish" not in f)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("fuzz"))
    try:
        d.wait_up()
        yield d
    finally:
        d.close()


@E2E
@given(batch=st.lists(wire_frames, min_size=1, max_size=20))
def test_fuzz_daemon_process(daemon, batch):
    _send_all(daemon, batch)
    assert daemon.proc.poll() is None, daemon.log()


def _send_all(daemon, frames) -> None:
    """Send ``frames`` from one client; return once the daemon has handled them all."""
    c = Raw(daemon.endpoint)
    try:
        for frame in frames:
            c.send(frame)
        daemon.status(timeout=30)  # answered after everything this client sent
    finally:
        c.close()


#: Frames no collector can take: not msgpack, a msgpack that is no envelope, a truncated one.
JUNK = [b"", b"\xc1", b"\x93\x01", b"not msgpack at all", b"\x92\x01\xa5hello"] * 3


def test_daemon_after_fuzz_still_records_a_session(daemon, pytester):
    """After the fuzzing when it ran on this worker (same module, same daemon), and after
    junk frames of its own in any case: the daemon still records a whole session."""
    _send_all(daemon, JUNK)
    assert daemon.proc.poll() is None, daemon.log()
    before = daemon.status()
    assert sum(before["protocol_errors"].values()) > 10
    assert "internal" not in before["protocol_errors"]
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_suite=SUITE)
    run = Pytest(pytester.path, "own.json", daemon=daemon.endpoint)
    try:
        run.release.write_text("go")
        assert run.wait() == 0, run.text
    finally:
        run.close()
    rep = run.report()
    assert names(rep["tests"]) == ALL
    assert rep["session"]["collector"] == "monitor" and not rep["session"]["warnings"]
    assert daemon.status()["tests"] == before["tests"] + len(ALL)

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0, daemon.log()
    assert "Traceback" not in daemon.log()
    combined = validate(json.loads(daemon.output.read_text(encoding="utf-8")))
    (mine,) = [s for s in combined["sessions"].values() if s["output"] == str(run.output)]
    assert mine["state"] == "finished" and mine["session"]["total_tests"] == len(ALL)


class SpawnedMonitor:
    def __init__(self, directory) -> None:
        private = directory / "perfmon-fuzz"
        private.mkdir()
        self.endpoint = f"ipc://{private}/monitor.sock"
        self.output = directory / "perf.json"
        self.log_path = private / "monitor.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pytest_perfmon.monitor.collector"]
                + ["--endpoint", self.endpoint, "--output", str(self.output)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)


@pytest.fixture(scope="module")
def monitor(tmp_path_factory):
    m = SpawnedMonitor(tmp_path_factory.mktemp("monfuzz"))
    try:
        yield m
    finally:
        m.close()


def _ping(endpoint: str) -> None:
    """A round trip (hello -> ready): everything sent before was handled."""
    c = Raw(endpoint)
    try:
        kind, _ = c.ask(
            protocol.pack(protocol.HELLO, {"pid": os.getpid(), "role": "controller"}), WAIT
        )
        assert kind == protocol.READY
    finally:
        c.close()


@E2E
@given(batch=st.lists(wire_frames, min_size=1, max_size=20))
def test_fuzz_spawned_monitor_process(monitor, batch):
    c = Raw(monitor.endpoint)
    try:
        for frame in batch:
            c.send(frame)
    finally:
        c.close()
    _ping(monitor.endpoint)
    assert monitor.proc.poll() is None, monitor.log()


def test_monitor_after_fuzz_still_writes_a_report(monitor):
    assert monitor.proc.poll() is None, monitor.log()
    c = Raw(monitor.endpoint)
    try:
        hello = {"pid": os.getpid(), "role": "worker", "worker": "mine"}
        assert c.ask(protocol.pack(protocol.HELLO, hello), WAIT)[0] == protocol.READY
        mine = [record(f"t.py::test_mine_{i}".encode(), 3000 + i) for i in range(3)]
        c.send(protocol.pack(protocol.BATCH, [0, mine]))
        assert c.ask(protocol.pack(protocol.BYE, {"sent": 1}), WAIT) == (
            protocol.ACK,
            {"missing": []},
        )
        kind, done = c.ask(protocol.pack(protocol.FINISH, {"exit_status": 0}), WAIT)
        assert kind == protocol.DONE and done["ok"], done
    finally:
        c.close()
    assert monitor.proc.wait(WAIT) == 0
    rep = validate(json.loads(monitor.output.read_text()))
    got = {k for k, t in rep["tests"].items() if t["worker"] == "mine"}
    assert got == {f"t.py::test_mine_{i}" for i in range(3)}
    assert "internal" not in rep["session"]["protocol_errors"], rep["session"]["protocol_errors"]
    assert "Traceback" not in monitor.log()
