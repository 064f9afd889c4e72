"""perfmon-daemon end to end: real daemon processes, real pytest runs, SIGKILL mid-run, rebuild.

Every daemon and pytest process is reaped in a finally, every wait is bounded, every socket is
closed with LINGER 0. No timing assertions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request

import msgpack
import pytest
import zmq
from helpers import (
    ALL,
    BEFORE_BLOCK,
    DAEMON,
    SUITE,
    WAIT,
    Daemon,
    Pytest,
    Raw,
    names,
    need_history,
    validate,
)
from pytest_perfmon.monitor import protocol
from pytest_perfmon.monitor.daemon import DaemonError, main, request

#: One timestamped line per event, with its level.
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} perfmon-daemon (INFO|WARNING|ERROR): "
)


def one_line_error(stderr: str) -> str:
    text = stderr.strip()
    assert "Traceback" not in text, text
    assert len(text.splitlines()) == 1, text
    return text


@pytest.fixture
def procs():
    """Everything started here is killed and reaped at the end, whatever happens."""
    started: list = []
    yield started
    for p in reversed(started):
        p.close()


@pytest.fixture
def suite(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_suite=SUITE)
    return pytester.path


def hello(session: str, pid: int | None = None, role: str = "local", worker: str = "main"):
    body = {"session": session, "role": role, "pid": pid or os.getpid(), "worker": worker}
    return protocol.pack(protocol.HELLO, body)


def record(nodeid, start: float = 1000.0) -> list:
    mb = 1 << 20
    return [
        nodeid,
        start,
        start + 0.01,
        0.001,
        0.008,
        0.001,
        "passed",
        mb,
        2 * mb,
        mb,
        0.005,
        0.01,
        None,
    ]


# --- start, use, stop ------------------------------------------------------------------------


@pytest.mark.slow
def test_two_sessions_status_metrics_stop(suite, procs):
    """Two pytest runs at once (one with -n 2) into one daemon; status and /metrics meanwhile.
    A combined report already at --output is moved aside as the daemon starts, as pytest's.
    The same command again while it runs says so (not how to rebuild its journal)."""
    (suite / "combined.json").write_text('{"previous": true}')
    d = Daemon(suite, "--metrics-port", "0")
    procs.append(d)
    d.wait_up()
    a = Pytest(suite, "a.json", daemon=d.endpoint)
    procs.append(a)
    b = Pytest(suite, "b.json", "-n", "2", daemon=None, env={"PERFMON_DAEMON": d.endpoint})
    procs.append(b)

    def both_running(st):
        sa, sb = d.session(st, a.proc.pid), d.session(st, b.proc.pid)
        return sa.get("tests", 0) >= len(BEFORE_BLOCK) and len(sb.get("workers", {})) == 2

    st = d.wait_for(both_running, "both sessions running")
    sa, sb = d.session(st, a.proc.pid), d.session(st, b.proc.pid)
    assert sa["state"] == sb["state"] == "running"
    main = sa["workers"]["main"]
    assert main["running"] and main["rss_mb"] > 0 and main["in_test_for"] >= 0
    assert main["last_test"].endswith("::test_flush")
    assert set(sb["workers"]) == {"gw0", "gw1"}
    assert st["records_rejected"] == 0 and st["hello_refused"] == 0

    # the status command, as a user runs it
    cli = subprocess.run(
        DAEMON + ["status", "--endpoint", d.endpoint],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"session {sa['label']}  running" in cli.stdout
    assert "last test completed" in cli.stdout and "approximate" in cli.stdout
    # the same command again while it runs (its journal holds entries): it says so, not how
    # to rebuild the journal (whose advice, followed, destroyed the running daemon's data)
    again = subprocess.run(
        DAEMON + ["--endpoint", d.endpoint, "--output", str(d.output)],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert again.returncode == 2, again.stderr
    assert again.stderr.strip().endswith(f"a perfmon-daemon already runs at {d.endpoint}")
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr

    # the Prometheus endpoint, bound to 127.0.0.1
    url = st["daemon"]["metrics"]
    assert url.startswith("http://127.0.0.1:")
    deadline = time.monotonic() + WAIT
    while True:  # the snapshot behind /metrics is refreshed every 0.5 s
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        # RSS comes from sampling the workers still running (xdist shuts down a worker with
        # nothing left to do); in_test_seconds once a worker's first batch has arrived (session
        # a's after test_flush).
        if (
            f'perfmon_worker_in_test_seconds{{session="{sa["label"]}",worker="main"}}' in text
            and f'perfmon_worker_rss_bytes{{session="{sb["label"]}",worker="gw' in text
        ):
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    assert "# TYPE perfmon_tests_completed_total counter" in text
    assert 'perfmon_sessions{state="running"} 2.0' in text

    a.release.write_text("go")
    assert a.wait() == 0, a.text
    assert b.wait() == 0, b.text
    for run in (a, b):
        rep = run.report()
        assert names(rep["tests"]) == ALL
        assert rep["session"]["collector"] == "monitor"
        assert not rep["session"]["aborted"]
        assert "perfmon: warning" not in run.text, run.text
    assert set(b.report()["workers"]) == {"gw0", "gw1"}

    stop = subprocess.run(
        DAEMON + ["stop", "--endpoint", d.endpoint], capture_output=True, text=True, timeout=WAIT
    )
    assert stop.returncode == 0, stop.stderr
    assert d.wait_exit() == 0, d.log()
    rep = d.combined()
    assert set(rep["sessions"]) == {sa_id(rep, a), sa_id(rep, b)}
    assert rep["session"]["total_tests"] == 2 * len(ALL)
    assert not rep["session"]["aborted"]
    for sid, block in rep["sessions"].items():
        assert block["state"] == "finished"
        mine = [k for k, t in rep["tests"].items() if t["session"] == sid]
        assert len(mine) == len(ALL) and all(k.startswith(block["label"] + "::") for k in mine)
    label_b = rep["sessions"][sa_id(rep, b)]["label"]
    assert {f"{label_b}::gw0", f"{label_b}::gw1"} <= set(rep["workers"])
    assert rep["sessions"][sa_id(rep, a)]["output"] == str(a.output)
    assert not d.journal.exists()  # a clean stop: the combined report holds it all
    assert (suite / "combined.json.previous").read_text() == '{"previous": true}'
    assert "the previous report at" in d.log()


def _six_tests_into_a_daemon(suite, procs) -> tuple:
    """A real daemon and a pytest session into it, six tests in (the rest wait for release)."""
    d = Daemon(suite)
    procs.append(d)
    d.wait_up()
    a = Pytest(suite, "a.json", daemon=d.endpoint)
    procs.append(a)
    d.wait_for(lambda st: d.session(st, a.proc.pid).get("tests", 0) >= 6, "six tests")
    return d, a


@pytest.mark.slow
def test_a_daemon_that_hangs_is_said_not_to_answer(suite, procs):
    """A daemon stopped (SIGSTOP) mid-run, its socket still open: pytest ends after the
    goodbye's bounded wait with its own report and one warning that the daemon did not answer
    (not that it stopped: it is still there); the outcome stands."""
    d, a = _six_tests_into_a_daemon(suite, procs)
    d.proc.send_signal(signal.SIGSTOP)
    try:
        a.release.write_text("go")
        assert a.wait() == 0, a.text
    finally:
        d.proc.send_signal(signal.SIGCONT)
    warnings = [ln for ln in a.text.splitlines() if ln.startswith("perfmon: warning")]
    assert warnings == [
        f"perfmon: warning: the perfmon daemon at {d.endpoint} did not answer the session's "
        "end within 10 s; report written by the plugin from its own measurements"
    ], a.text
    rep = a.report()
    assert rep["session"]["collector"] == "plugin-fallback" and names(rep["tests"]) == ALL


def sa_id(rep: dict, run: Pytest) -> str:
    for sid, block in rep["sessions"].items():
        if block["output"] == str(run.output):
            return sid
    raise AssertionError(f"no session wrote {run.output}")


@pytest.mark.slow
def test_pytest_killed_mid_run(suite, procs):
    """kill -9 of pytest: the session is closed as aborted with every test it had sent."""
    d, a = _six_tests_into_a_daemon(suite, procs)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(WAIT)
    st = d.wait_for(
        lambda st: d.session(st, a.proc.pid).get("state") == "aborted", "the session aborted"
    )
    s = d.session(st, a.proc.pid)
    assert "gone without finish" in s["reason"]
    with open(s["report"], encoding="utf-8") as f:
        own = validate(json.load(f))
    assert own["session"]["aborted"] and own["session"]["exit_status"] is None
    assert own["session"]["possibly_incomplete"] is True  # pytest died without its goodbye
    assert s["possibly_incomplete"] is True
    assert names(own["tests"]) >= BEFORE_BLOCK
    assert not a.output.exists()  # pytest died before it could write anything

    d.proc.send_signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()
    rep = d.combined()
    assert rep["session"]["aborted"]
    (block,) = rep["sessions"].values()
    assert block["state"] == "aborted" and block["output"] == s["report"]
    assert block["session"]["possibly_incomplete"] and rep["session"]["possibly_incomplete"]
    assert names(rep["tests"]) >= BEFORE_BLOCK
    assert all(t["outcome"] == "passed" for t in rep["tests"].values())


@pytest.mark.slow
def test_daemon_killed_mid_run_rebuild(suite, procs, capsys):
    """kill -9 of the daemon: pytest goes on alone; the journal rebuilds what the daemon had."""
    d = Daemon(suite, "--interval", "0.05")
    procs.append(d)
    d.wait_up()
    a = Pytest(suite, "a.json", daemon=d.endpoint)
    procs.append(a)
    st = d.wait_for(lambda st: d.session(st, a.proc.pid).get("tests", 0) >= 6, "six tests")
    label = d.session(st, a.proc.pid)["label"]
    seen = d.session(st, a.proc.pid)["tests"]
    d.proc.send_signal(signal.SIGKILL)
    d.wait_exit()
    a.release.write_text("go")
    assert a.wait() == 0, a.text
    assert names(a.report()["tests"]) == ALL  # the plugin wrote its own report
    assert "perfmon: warning" in a.text

    assert d.journal.exists()
    rebuilt = suite / "rebuilt.json"
    res = subprocess.run(
        DAEMON + ["rebuild", "--journal", str(d.journal), "--output", str(rebuilt)],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert res.returncode == 0, res.stderr
    rep = validate(json.loads(rebuilt.read_text(encoding="utf-8")))
    (block,) = rep["sessions"].values()
    assert block["state"] == "aborted" and block["label"] == label
    got = names(rep["tests"])
    assert len(got) >= seen and got >= BEFORE_BLOCK and got <= ALL
    own = suite / f"rebuilt.session-{label}.json"
    assert names(validate(json.loads(own.read_text(encoding="utf-8")))["tests"]) == got
    # memory came through the journal too: boundary counters or samples
    assert all(t["memory"]["peak_mb"] for t in rep["tests"].values())

    # a new daemon refuses to start over a journal that was not rebuilt and removed
    assert main(["--endpoint", d.endpoint, "--output", str(d.output)]) == 2
    assert "rebuild" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "stop"])
def test_stop_writes_and_exits_0(tmp_path, procs, how):
    d = Daemon(tmp_path)
    procs.append(d)
    d.wait_up()
    c = Raw(d.endpoint)
    try:  # one session left open: written as aborted
        kind, _ = c.ask(hello("feedcafe" * 4))
        assert kind == protocol.READY
        c.send(protocol.pack(protocol.BATCH, [0, [record(b"t.py::test_x")]]))
        d.wait_for(lambda st: st["tests"] == 1, "one test")
        if how == "stop":
            kind, body = c.ask(protocol.pack(protocol.STOP_KIND))
            assert kind == protocol.STOPPING and body["pid"] == d.proc.pid
        else:
            d.proc.send_signal(getattr(signal, how))
        assert d.wait_exit() == 0, d.log()
    finally:
        c.close()
    rep = d.combined()
    assert list(rep["tests"]) == ["feedcafe::t.py::test_x"]
    assert rep["sessions"]["feedcafe" * 4]["state"] == "aborted"
    assert "daemon stopped" in rep["session"]["warnings"][0]
    assert not d.journal.exists()
    assert not (tmp_path / "d.sock").exists()  # a clean stop removes its socket file
    lines = d.log().splitlines()
    assert lines and all(LOG_LINE.match(line) for line in lines), lines
    assert any(" INFO: listening on ipc://" in line for line in lines)


# --- security ---------------------------------------------------------------------------------


def test_default_endpoint_is_private(tmp_path, procs):
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    d = Daemon(tmp_path, endpoint="", env=env)
    procs.append(d)
    private = tmp_path / f"perfmon-{os.getuid()}"
    d.endpoint = f"ipc://{private}/daemon.sock"
    d.wait_up()
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(private / "daemon.sock").st_mode) == 0o600
    st = subprocess.run(
        DAEMON + ["status", "--json"], capture_output=True, text=True, timeout=WAIT, env=env
    )
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["daemon"]["pid"] == d.proc.pid
    d.proc.send_signal(signal.SIGTERM)
    assert d.wait_exit() == 0


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_curve_admits_only_known_clients(tmp_path, procs):
    import zmq.auth

    server_dir, clients_dir = tmp_path / "server", tmp_path / "clients"
    server_dir.mkdir()
    clients_dir.mkdir()
    server_pub, server_secret = zmq.auth.create_certificates(str(server_dir), "server")
    client_pub, client_secret = zmq.auth.create_certificates(str(server_dir), "client")
    shutil.copy(client_pub, clients_dir)
    d = Daemon(
        tmp_path,
        "--curve-secret-key",
        server_secret,
        "--curve-client-keys",
        str(clients_dir),
        endpoint="tcp://0.0.0.0:0",
    )
    procs.append(d)
    deadline = time.monotonic() + WAIT
    while "listening on" not in d.log():
        assert d.proc.poll() is None and time.monotonic() < deadline, d.log()
        time.sleep(0.05)
    port = d.log().split("listening on tcp://0.0.0.0:")[1].split()[0]
    local = f"tcp://127.0.0.1:{port}"
    st = request(local, protocol.STATUS, 10.0, client_secret, server_pub)
    assert st["daemon"]["pid"] == d.proc.pid
    with pytest.raises(DaemonError, match="no perfmon-daemon at"):
        request(local, protocol.STATUS, 1.0)  # no keys: the handshake never completes
    request(local, protocol.STOP_KIND, 10.0, client_secret, server_pub)
    assert d.wait_exit() == 0, d.log()


def test_bad_frames_answered_and_counted(tmp_path, procs):
    d = Daemon(tmp_path)
    procs.append(d)
    d.wait_up()
    c = Raw(d.endpoint)
    try:
        cases = [
            (b"\xc1 not msgpack", protocol.E_MALFORMED),
            (msgpack.packb([99, "hello", {}]), protocol.E_VERSION),
            (protocol.pack("no-such-kind", {}), protocol.E_KIND),
            (protocol.pack(protocol.HELLO, {"pid": "1", "session": "x"}), protocol.E_FIELD),
            (
                protocol.pack(protocol.HELLO, {"pid": os.getpid(), "role": "local"}),
                protocol.E_FIELD,
            ),  # no session
            (protocol.pack(protocol.BATCH, [0, []]), protocol.E_UNKNOWN_PEER),
            # a str that is not UTF-8 reads with os.fsdecode's escapes, as a path does: here
            # the hello's body, which is no map
            (b"\x93\x01\xa5hello\xa3\xff\xfe\xfd", protocol.E_FIELD),
            (protocol.pack(protocol.HELLO, b"x" * (protocol.MAX_FRAME + 10)), protocol.E_TOO_LARGE),
        ]
        for frame, code in cases:
            kind, body = c.ask(frame)
            assert kind == protocol.ERROR and body["code"] == code, (frame[:20], body)
        # a real session with a node id that is not UTF-8, and records of the wrong shape
        sid = "0123456789abcdef"
        assert c.ask(hello(sid))[0] == protocol.READY
        good = record(b"t.py::test_\xff\xfe")
        bad = [record(b"t.py::bad")[:5], record(7), record(b"x")[:6] + ["exploded"] + [0] * 5]
        c.send(protocol.pack(protocol.BATCH, [0, [good, *bad]]))
        kind, body = c.ask(
            protocol.pack(protocol.FINISH, {"output": str(tmp_path / "own.json"), "start": 999})
        )
        assert kind == protocol.DONE and body["ok"], body
        own = validate(json.loads((tmp_path / "own.json").read_text(encoding="utf-8")))
        assert list(own["tests"]) == ["t.py::test_\\xff\\xfe"]
        assert own["session"]["protocol_errors"] == {"records-rejected": 3}
        kind, body = c.ask(protocol.pack(protocol.BATCH, [1, [good]]))  # after finish
        assert kind == protocol.ERROR and body["code"] == protocol.E_SESSION
        st = d.status()
        assert st["records_rejected"] == 3
        errors = st["protocol_errors"]
        for name in ("malformed", "version", "kind", "field", "unknown-peer", "too-large"):
            assert errors.get(name), (name, errors)
        assert errors["session-closed"] == 1
    finally:
        c.close()
    d.proc.send_signal(signal.SIGTERM)
    assert d.wait_exit() == 0, d.log()
    assert list(d.combined()["tests"]) == ["01234567::t.py::test_\\xff\\xfe"]


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this host")
def test_ipv6_loopback(suite, procs):
    """`--endpoint tcp://[::1]:0` binds, says its port, and a pytest run joins it."""
    d = Daemon(suite, endpoint="tcp://[::1]:0")
    procs.append(d)
    deadline = time.monotonic() + WAIT
    while "listening on" not in d.log():
        assert d.proc.poll() is None and time.monotonic() < deadline, d.log()
        time.sleep(0.05)
    port = d.log().split("listening on tcp://[::1]:")[1].split()[0]
    d.endpoint = f"tcp://[::1]:{port}"
    assert d.status()["daemon"]["endpoint"] == d.endpoint
    a = Pytest(suite, "a.json", "-k", "quick", daemon=d.endpoint)
    procs.append(a)
    assert a.wait() == 0, a.text
    rep = a.report()
    assert rep["session"]["collector"] == "monitor", a.text
    assert "perfmon: warning" not in a.text, a.text
    assert d.status()["tests"] == 5


def test_daemon_writes_the_html_page_and_the_history(suite, procs, capsys):
    """With --perf-daemon, the daemon (not pytest) writes --perf-html and --perf-history."""
    need_history()
    from pytest_perfmon.monitor import cli

    d = Daemon(suite)
    procs.append(d)
    d.wait_up()
    db = suite / "hist.db"
    a = Pytest(
        suite,
        "a.json",
        "-k",
        "quick",
        "--perf-html=a.html",
        f"--perf-history={db}",
        daemon=d.endpoint,
    )
    procs.append(a)
    assert a.wait() == 0, a.text
    assert "perfmon: warning" not in a.text, a.text
    assert a.report()["session"]["collector"] == "monitor"
    assert "test_suite.py::test_quick[0]" in (suite / "a.html").read_text(encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["history", "runs", "--db", str(db), "--format", "json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == 1 and runs[0]["total_tests"] == 5, runs


# --- in-process: the command line ---------------------------------------------------------------


def _bad_cases(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    adir = tmp_path / "adir"
    adir.mkdir()
    special = tmp_path / "fifo"  # not a regular file (a device like /dev/null would do too)
    if hasattr(os, "mkfifo"):
        os.mkfifo(special)
    ok_out = str(tmp_path / "c.json")
    ipc = f"ipc://{tmp_path}/d.sock"
    return {
        "unknown-command": (["frobnicate", "--output", ok_out], "unknown command 'frobnicate'"),
        "scheme": (["--endpoint", "udp://127.0.0.1:5555", "--output", ok_out], "unknown scheme"),
        "public-tcp": (["--endpoint", "tcp://0.0.0.0:0", "--output", ok_out], "--curve-secret"),
        "output-dir-missing": (
            ["--endpoint", ipc, "--output", str(tmp_path / "no" / "c.json")],
            "does not exist",
        ),
        "output-is-dir": (["--endpoint", ipc, "--output", str(adir)], "is a directory"),
        "journal-under-file": (
            ["--endpoint", ipc, "--output", ok_out, "--journal", str(afile / "j")],
            "is a file",
        ),
        "journal-is-dir": (
            ["--endpoint", ipc, "--output", ok_out, "--journal", str(adir)],
            "is a directory",
        ),
        "metrics-port": (
            ["--endpoint", ipc, "--output", ok_out, "--metrics-port", "http"],
            "not a port",
        ),
        "interval": (["--endpoint", ipc, "--output", ok_out, "--interval", "0.001"], "at least"),
        "status-endpoint": (["status", "--endpoint", "nonsense"], "unknown scheme"),
        "stop-endpoint": (["stop", "--endpoint", "tcp://127.0.0.1"], "expected tcp://HOST:PORT"),
        "rebuild-missing": (
            ["rebuild", "--journal", str(tmp_path / "nope"), "--output", ok_out],
            "no such file",
        ),
        "rebuild-interval": (
            ["rebuild", "--journal", str(afile), "--output", ok_out, "--interval", "0"],
            "at least",
        ),
        "rebuild-journal-is-dir": (
            ["rebuild", "--journal", str(adir), "--output", ok_out],
            "is a directory",
        ),
        # a file that is not a journal (here: text) writes nothing: --output may be a report
        "rebuild-not-a-journal": (
            ["rebuild", "--journal", str(afile), "--output", ok_out],
            "no session recorded in it (empty, or not a perfmon-daemon journal); nothing written",
        ),
        "output-not-a-file": (["--endpoint", ipc, "--output", str(special)], "not a regular file"),
        # the journal would be moved aside as a previous report, the report lost at stop
        "journal-is-output": (
            ["--endpoint", ipc, "--output", ok_out, "--journal", ok_out],
            "is --output: give the journal a path of its own",
        ),
        # the report would overwrite the journal it is rebuilt from
        "rebuild-over-its-journal": (
            ["rebuild", "--journal", str(afile), "--output", str(afile)],
            "is the journal: give the report a path of its own",
        ),
        # a clean stop removes the journal: never a device
        "journal-not-a-file": (
            ["--endpoint", ipc, "--output", ok_out, "--journal", str(special)],
            "not a regular file",
        ),
    }


BAD_CASES = [
    "unknown-command",
    "scheme",
    "public-tcp",
    "output-dir-missing",
    "output-is-dir",
    "journal-under-file",
    "journal-is-dir",
    "metrics-port",
    "interval",
    "status-endpoint",
    "stop-endpoint",
    "rebuild-missing",
    "rebuild-interval",
    "rebuild-journal-is-dir",
    "rebuild-not-a-journal",
    "output-not-a-file",
    "journal-not-a-file",
    "journal-is-output",
    "rebuild-over-its-journal",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_usage_errors_exit_2(tmp_path, capsys, case):
    if case.endswith("not-a-file") and not hasattr(os, "mkfifo"):
        pytest.skip("needs a file that is not a regular one: no os.mkfifo here")
    args, expected = _bad_cases(tmp_path)[case]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert expected in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "c.json").exists()
    assert not (tmp_path / "c.json.journal").exists()
    assert not (tmp_path / "d.sock").exists()


@pytest.mark.parametrize("command", ["status", "stop"])
def test_no_daemon_answers_at_once(tmp_path, capsys, monkeypatch, command):
    """No socket file: no connection is even tried (no wait), exit 1."""
    import pytest_perfmon.monitor.daemon.client as client

    monkeypatch.setattr(client.zmq, "Context", None)  # any connection attempt would fail loudly
    ipc = f"ipc://{tmp_path}/d.sock"
    assert main([command, "--endpoint", ipc, "--timeout", "600"]) == 1
    assert (
        one_line_error(capsys.readouterr().err)
        == f"perfmon-daemon: error: no perfmon-daemon at {ipc}"
    )


def test_no_answer_is_bounded(tmp_path, capsys):
    """A socket file nobody listens on: the bounded (injectable) wait, then exit 1."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)  # bound, never answers
    sock.setsockopt(zmq.LINGER, 0)
    ipc = f"ipc://{tmp_path}/d.sock"
    sock.bind(ipc)
    try:
        assert main(["status", "--endpoint", ipc, "--timeout", "0.2"]) == 1
    finally:
        sock.close(0)
        ctx.term()
    assert "no answer within 0.2 s" in one_line_error(capsys.readouterr().err)


def test_failed_start_removes_socket_and_journal(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # not installed
    out = tmp_path / "c.json"
    args = ["--endpoint", f"ipc://{tmp_path}/d.sock", "--output", str(out), "--metrics-port", "0"]
    assert main(args) == 2
    assert "needs prometheus-client" in one_line_error(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- in-process: sessions, journal, replay, rebuild, combined report, status --------------------


@pytest.fixture
def inproc(tmp_path, monkeypatch):
    from helpers import InProcess
    from pytest_perfmon.monitor.daemon.core import Daemon as Server

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made = []

    def make(system_info=False, name="combined.json"):
        out = tmp_path / name
        d = InProcess(Server("ipc://unused", str(out), str(out) + ".journal", 0.1, system_info))
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def _hello(sid, role="local", worker="main", pid=None, **extra):
    body = {"session": sid, "role": role, "pid": pid or os.getpid(), "worker": worker}
    return {**body, **extra}


def _run_session(d, sid, tmp_path, finish=True, bye=True, **finish_extra):
    """A local session of three tests, one of them in a resent batch."""
    ident = sid.encode()
    assert d.send(ident, protocol.HELLO, _hello(sid))[0] == protocol.READY
    d.send(
        ident, protocol.BATCH, [0, [record(b"t.py::test_a", 1000), record(b"t.py::test_b", 1001)]]
    )
    d.send(ident, protocol.BATCH, [1, [record(b"t.py::test_c", 1002)]])
    d.send(ident, protocol.BATCH, [1, [record(b"t.py::test_c", 1002)]])
    if bye:
        assert d.send(ident, protocol.BYE, {"sent": 2}) == (protocol.ACK, {"missing": []})
    if finish:
        body = {"output": str(tmp_path / f"{sid[:8]}.json"), "exit_status": 0, **finish_extra}
        kind, done = d.send(ident, protocol.FINISH, body)
        assert kind == protocol.DONE and done["ok"], done


def test_a_session_never_writes_over_the_daemons_own_files(inproc, tmp_path):
    """A session whose --perf-output is the daemon's combined report or its journal (or its
    --perf-html the journal): its report is saved elsewhere and its page not written (said in
    its done), the daemon's files stay its own, and the combined
    report is written at stop; the journal is read through the file the daemon writes even if
    its path was given to something else meanwhile."""
    d = inproc()
    combined = tmp_path / "combined.json"
    journal = tmp_path / "combined.json.journal"
    for sid, path in (("a" * 32, combined), ("b" * 32, journal)):
        ident = sid.encode()
        assert d.send(ident, protocol.HELLO, _hello(sid))[0] == protocol.READY
        d.send(ident, protocol.BATCH, [0, [record(b"t.py::test_a", 1000)]])
        assert d.send(ident, protocol.BYE, {"sent": 1}) == (protocol.ACK, {"missing": []})
        body = {"output": str(path), "exit_status": 0, "html": str(journal)}
        kind, done = d.send(ident, protocol.FINISH, body)
        assert kind == protocol.DONE and not done["ok"], done
        assert "is the daemon's own output or journal" in done["html_warning"], done
        assert "is the daemon's own output or journal" in done["error"], done
        with open(done["saved_to"], encoding="utf-8") as f:
            validate(json.load(f))
    assert not combined.exists()
    os.rename(journal, str(journal) + ".previous")  # what a plugin moving it aside does
    assert d.srv.shutdown() == 0  # the spilled sessions replayed from the renamed journal
    rep = validate(json.loads(combined.read_text()))
    assert set(rep["sessions"]) == {"a" * 32, "b" * 32} and len(rep["tests"]) == 2


def test_session_spilled_and_replayed_from_the_journal(inproc, tmp_path):
    from pytest_perfmon.monitor.daemon.session import replay

    d = inproc()
    _run_session(d, "a" * 32, tmp_path)
    s = d.srv.sessions["a" * 32]
    assert s.spilled and s.data is None and s.tests == 3 and s.state == "finished"
    full = replay(d.srv.book.journal, s, 0.1)
    recs = full.data.workers["main"].records
    assert [r[protocol.NODEID] for r in recs] == ["t.py::test_a", "t.py::test_b", "t.py::test_c"]
    assert full.said_bye == {"main"} and not full.possibly_incomplete
    own = validate(json.loads((tmp_path / "aaaaaaaa.json").read_text()))
    assert set(own["tests"]) == {"t.py::test_a", "t.py::test_b", "t.py::test_c"}
    assert own["session"]["protocol_errors"] == {} and "possibly_incomplete" not in own["session"]


def test_rebuild_after_a_lost_daemon(inproc, tmp_path, capsys):
    """One session finished, one running when the daemon 'died': rebuild gives both."""
    d = inproc()
    _run_session(d, "a" * 32, tmp_path)
    _run_session(d, "b" * 32, tmp_path, finish=False, bye=False)
    journal = d.srv.journal_path
    d.srv.book.journal.close()  # what SIGKILL leaves: the journal, no combined report
    out = tmp_path / "rebuilt.json"
    assert main(["rebuild", "--journal", journal, "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: 2 sessions, 6 tests"
    rep = validate(json.loads(out.read_text()))
    assert rep["sessions"]["a" * 32]["state"] == "finished"
    b = rep["sessions"]["b" * 32]
    assert b["state"] == "aborted" and b["session"]["possibly_incomplete"] is True
    assert b["output"] == str(tmp_path / "rebuilt.session-bbbbbbbb.json")
    assert len(rep["tests"]) == 6 and rep["summary"]["outcomes"] == {"passed": 6}
    assert rep["session"]["possibly_incomplete"] is True


def test_journal_tail_cut_mid_entry(tmp_path):
    from pytest_perfmon.monitor.journal import Journal, scan

    j = Journal(str(tmp_path / "j"))
    offs = [j.append({"k": "x", "s": "s", "n": i}) for i in range(3)]
    assert j.read_at(offs[1])["n"] == 1
    j.close()
    with open(tmp_path / "j", "ab") as f:
        f.write(b"\x40\x00\x00\x00partial")
    assert [e["n"] for _, e in scan(str(tmp_path / "j"))] == [0, 1, 2]


def test_combined_report_and_system_info(inproc, tmp_path):
    """A session that asked for no system block has none, in its report nor in its block,
    whether it finished (finish says so) or died (its hello said so)."""
    d = inproc(system_info=True)
    _run_session(d, "a" * 32, tmp_path, system_info=False)
    _run_session(d, "c" * 32, tmp_path)
    ident = b"dead"
    d.send(ident, protocol.HELLO, _hello("d" * 32, system_info=False))
    d.send(ident, protocol.BATCH, [0, [record(b"t.py::test_z")]])
    assert d.srv.shutdown() == 0
    rep = validate(json.loads((tmp_path / "combined.json").read_text()))
    blocks = rep["sessions"]
    assert "system" not in blocks["a" * 32] and "system" not in blocks["d" * 32]
    assert "system" in blocks["c" * 32] and "system" in rep
    assert "system" not in json.loads((tmp_path / "aaaaaaaa.json").read_text())
    dead = json.loads((tmp_path / "combined.session-dddddddd.json").read_text())
    assert "system" not in dead and dead["session"]["possibly_incomplete"]
    assert rep["session"]["total_tests"] == 7 and rep["summary"]["outcomes"] == {"passed": 7}
    assert {k.split("::")[0] for k in rep["tests"]} == {"aaaaaaaa", "cccccccc", "dddddddd"}
    assert not os.path.exists(d.srv.journal_path)

    d2 = inproc(system_info=False, name="nosys.json")
    _run_session(d2, "e" * 32, tmp_path, system_info=True)
    assert d2.srv.shutdown() == 0
    rep2 = validate(json.loads((tmp_path / "nosys.json").read_text()))
    assert "system" not in rep2 and "system" not in rep2["sessions"]["e" * 32]


def test_status_text(inproc, tmp_path):
    from pytest_perfmon.monitor.daemon.status import format_status

    d = inproc()
    _run_session(d, "a" * 32, tmp_path)
    d.send(b"w", protocol.HELLO, _hello("b" * 32, "worker", "gw0"))
    d.send(
        b"w", protocol.BATCH, [0, [record(b"tests/test_long_module_name.py::TestClass::test_x[1]")]]
    )
    st = d.srv.status()
    text = format_status(st, width=70)
    assert "session aaaaaaaa  finished" in text and "session bbbbbbbb  running" in text
    assert "last test completed" in text and "approximate" in text
    row = [line for line in text.splitlines() if line.startswith("  gw0")][0]
    assert len(row) <= 70 and row.endswith("test_x[1]")
    assert st["sessions"]["b" * 32]["workers"]["gw0"]["tests"] == 1


def test_sampling_journal_and_owner_gone(inproc, tmp_path):
    """In-process: samples of a live pid reach the journal and the replay; a session whose
    owner died is closed as aborted by the owner check."""
    from pytest_perfmon.monitor.daemon.session import replay

    d = inproc()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sid = "5" * 32
        assert d.send(b"o", protocol.HELLO, _hello(sid, pid=sleeper.pid))[0] == protocol.READY
        for _ in range(3):
            d.srv.book.sample()
        d.srv.book.journal_all_samples()
        s = d.srv.sessions[sid]
        assert len(s.data.workers["main"].samples_t) == 3 and s.pending == {}
        d.srv.book.check_owners()
        assert s.state == "running"
        sleeper.kill()
        sleeper.wait(WAIT)
        d.srv.book.check_owners()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        sleeper.wait(WAIT)
    assert s.state == "aborted" and "gone without finish" in s.reason
    full = replay(d.srv.book.journal, s, 0.1)
    assert len(full.data.workers["main"].samples_rss) == 3
    assert d.srv.book.peak is not None and d.srv.book.peak[2]
    with open(s.report_path, encoding="utf-8") as f:
        own = validate(json.load(f))
    assert own["session"]["aborted"] and own["session"]["possibly_incomplete"]


def test_metrics_from_the_snapshot(inproc, tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest
    from pytest_perfmon.monitor.daemon.metrics import Metrics

    d = inproc()
    _run_session(d, "a" * 32, tmp_path)
    d.send(b"w", protocol.HELLO, _hello("b" * 32, "worker", "gw0"))
    d.send(b"w", protocol.BATCH, [0, [record(b"t.py::test_x")]])
    d.srv.book.sample()
    d.srv.housekeeping()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Metrics(lambda: d.srv.snapshot))
    text = generate_latest(registry).decode()
    assert 'perfmon_sessions{state="running"} 1.0' in text
    assert "perfmon_tests_completed_total 4.0" in text
    assert 'perfmon_worker_tests{session="bbbbbbbb",worker="gw0"} 1.0' in text
    assert 'perfmon_worker_rss_bytes{session="bbbbbbbb",worker="gw0"}' in text
    assert 'perfmon_session_tests{session="aaaaaaaa",state="finished"} 3.0' in text


def test_combined_report_keeps_each_sessions_fixtures(inproc, tmp_path):
    """The shared-fixture list of every session, in its block as its own report has it, and in
    the combined list with workers and tests named LABEL::."""
    d = inproc()
    for sid in ("a" * 32, "b" * 32):
        ident = sid.encode()
        assert d.send(ident, protocol.HELLO, _hello(sid))[0] == protocol.READY
        first = record(b"t.py::test_a", 1000)
        first[-1] = {"fixtures": [["db", "session", "conftest.py:3", "setup", 0.25]]}
        last = record(b"t.py::test_b", 1001)
        last[-1] = {"fixtures": [["db", "session", "conftest.py:3", "teardown", 0.125]]}
        d.send(ident, protocol.BATCH, [0, [first, last]])
        assert d.send(ident, protocol.BYE, {"sent": 1}) == (protocol.ACK, {"missing": []})
        out = str(tmp_path / f"{sid[:8]}.json")
        assert d.send(ident, protocol.FINISH, {"output": out, "exit_status": 0})[1]["ok"]
    assert d.srv.shutdown() == 0
    rep = validate(json.loads((tmp_path / "combined.json").read_text()))
    own = validate(json.loads((tmp_path / "aaaaaaaa.json").read_text()))
    assert own["fixtures"] == [
        {
            "name": "db",
            "scope": "session",
            "location": "conftest.py:3",
            "worker": "main",
            "setup_time": 0.25,
            "teardown_time": 0.125,
            "setup_test": "t.py::test_a",
            "teardown_test": "t.py::test_b",
        }
    ]
    assert rep["sessions"]["a" * 32]["fixtures"] == own["fixtures"]
    assert sorted((f["worker"], f["setup_test"], f["teardown_test"]) for f in rep["fixtures"]) == [
        (f"{x}::main", f"{x}::t.py::test_a", f"{x}::t.py::test_b") for x in ("aaaaaaaa", "bbbbbbbb")
    ]
    assert all(f["setup_test"] in rep["tests"] for f in rep["fixtures"])


HOLDER = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', "
    "'b = bytearray(120 << 20)\\nfor i in range(0, len(b), 4096): b[i] = 1\\n"
    "import time\\ntime.sleep(60)'])\n"
    "time.sleep(60)\n"
)


def test_descendant_samples_survive_the_journal(inproc, tmp_path, capsys):
    """A test's child holding 120 MB: the session's own report, the combined report (built from
    the journal once the session is spilled) and a rebuild all say so."""
    import psutil

    start = time.time()  # the child is billed to the test it was born in
    parent = subprocess.Popen([sys.executable, "-c", HOLDER])
    try:
        deadline = time.monotonic() + WAIT
        while True:
            kids = psutil.Process(parent.pid).children()
            if kids and kids[0].memory_info().rss > 110 << 20:
                break
            assert time.monotonic() < deadline, "the child never held its 120 MB"
            time.sleep(0.05)
        d = inproc()
        sid = "c" * 32
        body = _hello(sid, pid=parent.pid, methods={"rss": True, "peak": True, "children": True})
        assert d.send(sid.encode(), protocol.HELLO, body)[0] == protocol.READY
        for _ in range(3):
            d.srv.book.sample()
            time.sleep(0.02)
        d.srv.book.journal_all_samples()
        d.srv.book.sample()  # one more, journaled when the session closes
        rec = record(b"t.py::test_child", start)
        rec[protocol.STOP] = time.time()
        d.send(sid.encode(), protocol.BATCH, [0, [rec]])
        assert d.send(sid.encode(), protocol.BYE, {"sent": 1}) == (protocol.ACK, {"missing": []})
        own = tmp_path / "own.json"
        assert d.send(sid.encode(), protocol.FINISH, {"output": str(own), "exit_status": 0})[1][
            "ok"
        ]
        journal = d.srv.journal_path
        d.srv.keep_journal = True
        assert d.srv.shutdown() == 0
    finally:
        for p in psutil.Process(parent.pid).children(recursive=True) + [parent]:
            p.kill()
        parent.wait(timeout=WAIT)
    mine = validate(json.loads(own.read_text()))["tests"]["t.py::test_child"]
    combined = validate(json.loads((tmp_path / "combined.json").read_text()))
    out = tmp_path / "rebuilt.json"
    assert main(["rebuild", "--journal", journal, "--output", str(out)]) == 0
    rebuilt = validate(json.loads(out.read_text()))
    for rep, key in (
        (combined, "cccccccc::t.py::test_child"),
        (rebuilt, "cccccccc::t.py::test_child"),
    ):
        assert rep["tests"][key]["children"] == mine["children"], key
    assert mine["children"]["peak_rss_mb"] > 110, mine


def test_metrics_of_a_name_that_is_not_utf8_are_served():
    """A worker id or session label that is not UTF-8 (the protocol keeps a path's bytes as
    os.fsdecode's escapes): /metrics escapes it, where prometheus_client failed to encode the
    page (HTTP 500 at every scrape while that session was known)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from pytest_perfmon.monitor.daemon.metrics import Metrics

    worker = {"tests": 3, "rss_mb": 10.0, "in_test_for": 0.5}
    session = {"label": "s\udcff", "state": "running", "tests": 3, "workers": {"gw\udcff": worker}}
    snapshot = {
        "sessions_by_state": {"running": 1},
        "tests": 3,
        "records_rejected": 0,
        "records_dropped": 0,
        "hello_refused": 0,
        "protocol_errors": {},
        "daemon": {"rss_mb": 30.0},
        "sessions": {"1": session},
    }
    registry = CollectorRegistry()
    registry.register(Metrics(lambda: snapshot))
    page = generate_latest(registry).decode("utf-8")
    assert 'perfmon_worker_tests{session="s\\\\udcff",worker="gw\\\\udcff"} 3.0' in page
