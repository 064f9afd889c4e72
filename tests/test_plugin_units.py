"""The plugin runtime in-process: settings resolution, counters, the client against a real
ROUTER socket, the sender thread. No pytest subprocess; every socket closed with LINGER 0."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import types

import msgpack
import pytest
import zmq
from pytest_perfmon import _client, _settings
from pytest_perfmon._counters import Counters
from pytest_perfmon._measure import Measurer
from pytest_perfmon.monitor import protocol
from pytest_perfmon.monitor import report as report_model

# --- settings -----------------------------------------------------------------------------------


def _option(**kw):
    base = dict(
        perf_monitor=None,
        perf_output=None,
        perf_cpu_interval=None,
        perf_system_info=None,
        perf_print_summary=None,
        perf_daemon=None,
    )
    base.update(kw)
    return types.SimpleNamespace(**base)


def _ini(**kw):
    values = dict(
        perf_monitor=False,
        perf_output="",
        perf_cpu_interval="",
        perf_system_info=True,
        perf_print_summary=False,
        perf_daemon="",
    )
    values.update(kw)
    return values.__getitem__


def test_monitoring_is_off_unless_asked(tmp_path):
    assert _settings.resolve(_option(), _ini(), str(tmp_path), {}) is None
    assert _settings.resolve(_option(perf_monitor=False), _ini(perf_monitor=True), "/", {}) is None
    s = _settings.resolve(_option(), _ini(perf_monitor=True), str(tmp_path), {})
    assert s == _settings.Settings(output=str(tmp_path / "performance_metrics.json"))


def test_command_line_beats_environment_beats_ini(tmp_path):
    env = {"PERFMON_DAEMON": "ipc:///env.sock"}
    ini = _ini(perf_monitor=True, perf_daemon="ipc:///ini.sock", perf_cpu_interval="0.5")
    on = _option(perf_monitor=True)
    assert _settings.resolve(on, ini, "/", {}).daemon == "ipc:///ini.sock"
    assert _settings.resolve(on, ini, "/", env).daemon == "ipc:///env.sock"
    cli = _option(perf_monitor=True, perf_daemon="tcp://[::1]:5555", perf_cpu_interval=0.02)
    s = _settings.resolve(cli, ini, "/", env)
    assert (s.daemon, s.interval) == ("tcp://[::1]:5555", 0.02)
    assert _settings.resolve(on, ini, "/", env).interval == 0.5
    s = _settings.resolve(
        _option(perf_monitor=True, perf_system_info=True, perf_output="x/r.json"),
        _ini(perf_system_info=False, perf_print_summary=True, perf_output="ini.json"),
        str(tmp_path),
        {},
    )
    assert (s.system_info, s.print_summary) == (True, True)
    assert s.output == str(tmp_path / "x" / "r.json")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.output = "elsewhere"  # type: ignore[misc]


def test_output_paths_expand_the_home_directory(tmp_path, monkeypatch):
    """``~`` in --perf-output and --perf-html (or their ini keys: ``-o perf_output=~/x.json``,
    which no shell expands) is the home directory, as pytest's --junitxml takes it, and as
    our other path options (--perf-history, --perf-schedule=, --perf-shard-from) do."""
    monkeypatch.setenv("HOME", str(tmp_path))
    s = _settings.resolve(
        _option(perf_monitor=True, perf_html="~/p.html"), _ini(perf_output="~/r.json"), "/", {}
    )
    assert (s.output, s.html) == (str(tmp_path / "r.json"), str(tmp_path / "p.html"))


@pytest.mark.parametrize("raw", ["0.009", "0", "-1", "3600", "nan", "soon"])
def test_interval_bounds(raw):
    with pytest.raises(_settings.SettingError, match="perf_cpu_interval in the ini file"):
        _settings.resolve(_option(), _ini(perf_monitor=True, perf_cpu_interval=raw), "/", {})


def test_interval_minimum_is_accepted():
    assert _settings.parse_interval("0.01") == 0.01


@pytest.mark.parametrize(
    "endpoint, ok",
    [
        ("ipc:///tmp/x.sock", True),
        ("tcp://127.0.0.1:5555", True),
        ("tcp://[::1]:5555", True),
        ("tcp://[::1]:0", False),
        ("tcp://::1:5555", False),
        ("tcp://[::1:5555", False),
        ("tcp://[]:5555", False),
        ("tcp://host", False),
        ("ipc://", False),
        ("udp://x:1", False),
    ],
)
def test_endpoints(endpoint, ok):
    assert _settings.endpoint_ok(endpoint) is ok


def test_output_directory(tmp_path):
    s = _settings.Settings(output=str(tmp_path / "a" / "b" / "r.json"))
    _settings.make_output_directory(s)
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(_settings.SettingError, match="cannot create the directory"):
        _settings.make_output_directory(_settings.Settings(output=str(tmp_path / "file" / "r")))
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(_settings.SettingError, match="exists and is not a regular file"):
        _settings.resolve(_option(perf_monitor=True, perf_output="dir.json"), _ini(), str(tmp_path))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX's")
def test_a_report_never_replaces_what_is_not_a_regular_file(tmp_path):
    """--perf-output /dev/null (or a FIFO) must not become our file: refused at start, and the
    writer itself refuses too; a link to a regular file is followed, the link kept."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(_settings.SettingError, match="exists and is not a regular file"):
        _settings.resolve(_option(perf_monitor=True, perf_output=str(fifo)), _ini(), "/")
    with pytest.raises(_settings.SettingError, match="--perf-html: .* not a regular file"):
        _settings.resolve(_option(perf_monitor=True, perf_html=str(fifo)), _ini(), "/")
    with pytest.raises(OSError, match="not a regular file"):
        report_model.write_atomic({"x": 1}, str(fifo))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    target = tmp_path / "target.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    report_model.write_atomic({"x": 1}, str(link))
    assert link.is_symlink() and json.loads(target.read_text()) == {"x": 1}
    # moved aside at a session's (or the daemon's) start: the file the link points to moves,
    # the link stays for the new report to be written through
    from pytest_perfmon.monitor import files

    assert files.move_aside(str(link)) == (str(target) + ".previous", None)
    assert link.is_symlink() and not target.exists()
    assert json.loads((tmp_path / "target.json.previous").read_text()) == {"x": 1}
    assert files.move_aside(str(fifo)) == (None, None)  # not a report: left alone
    # a link to a file not made yet (an artifacts directory's first run): followed too
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "first.json")
    _settings.resolve(_option(perf_monitor=True, perf_output=str(dangling)), _ini(), "/")
    assert files.move_aside(str(dangling)) == (None, None)
    report_model.write_atomic({"x": 2}, str(dangling))
    assert dangling.is_symlink() and json.loads((tmp_path / "first.json").read_text()) == {"x": 2}


def test_a_report_holding_a_paths_undecodable_bytes_is_written(tmp_path):
    """A path that is not UTF-8 (os.fsdecode's lone surrogates) in a warning: the report is
    written as UTF-8 JSON, the bytes as JSON's escapes, and reads back the same (it could not
    be encoded: neither the report nor its copy elsewhere was written)."""
    warning = "cannot write /tmp/r\udcff/x.html: Permission denied"
    path = tmp_path / "r.json"
    report_model.write_atomic({"session": {"warnings": [warning]}}, str(path))
    text = path.read_bytes().decode("utf-8")  # strict: the file is UTF-8
    assert "\\udcff" in text
    assert json.loads(text)["session"]["warnings"] == [warning]


def test_a_bad_boolean_in_the_ini_file_names_its_key():
    def getini(name):
        if name == "perf_print_summary":
            raise ValueError("invalid truth value 'maybe'")
        return _ini()(name)

    with pytest.raises(_settings.SettingError, match="perf_print_summary in the ini file"):
        _settings.resolve(_option(perf_monitor=True), getini, "/tmp")


# --- counters -----------------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc counters are Linux's")
def test_counters_read_the_kernel():
    c = Counters()
    try:
        assert c.methods == {"rss": True, "peak": True}
        c.reset()
        rss0 = c.rss()
        block = bytearray(50 * 1024 * 1024)  # touched: zero-filled by the allocator
        for i in range(0, len(block), 4096):
            block[i] = 1
        peak = c.peak()
        del block
        assert peak - rss0 >= 45 * 1024 * 1024
    finally:
        c.close()
    assert c.fds == []


# --- the client against a real ROUTER -----------------------------------------------------------


class Router:
    """A ROUTER socket bound on ipc:// in tmp_path: what a monitor or daemon holds."""

    def __init__(self, path) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"ipc://{path}/r.sock"
        self.sock.bind(self.endpoint)

    def poll(self, ms):
        return self.sock.poll(ms)

    def recv_multipart(self):
        return self.sock.recv_multipart()

    def send_multipart(self, frames):
        self.sock.send_multipart(frames)

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def router(tmp_path):
    r = Router(tmp_path)
    yield r
    r.close()


def _recv(sock, timeout=10.0):
    assert sock.poll(timeout * 1000), "nothing arrived"
    ident, frame = sock.recv_multipart()
    return ident, protocol.unpack(frame)


def _connect(endpoint, **kw):
    return _client.Client(endpoint, **kw)


def test_hello_ready_batches_and_bye(router):
    c = _connect(router.endpoint)
    try:
        assert c.send(protocol.pack(protocol.HELLO, {"role": "local"}))
        ident, (kind, _) = _recv(router)
        assert kind == protocol.HELLO
        router.send_multipart([ident, protocol.pack(protocol.READY, {"monitor_pid": 1})])
        assert c.wait(protocol.READY, 10) == {"monitor_pid": 1}
        c.batch([[b"t::a", 1.0, 2.0, None, 0.1, None, "passed", 1, 2, 3, 0.1, 0.1, None]])
        c.batch([[b"t::b", 2.0, 3.0, None, 0.1, None, "passed", 1, 2, 3, 0.1, 0.1, None]])
        assert _recv(router)[1] == (
            protocol.BATCH,
            [0, [[b"t::a", 1.0, 2.0, None, 0.1, None, "passed", 1, 2, 3, 0.1, 0.1, None]]],
        )
        _recv(router)
        # The collector lacks frame 1 at the first goodbye: the client sends it again.
        done = {}
        thread = threading.Thread(target=lambda: done.setdefault("ok", c.bye()))
        thread.start()
        try:
            ident, (kind, body) = _recv(router)
            assert (kind, body) == (protocol.BYE, {"sent": 2})
            router.send_multipart([ident, protocol.pack(protocol.ACK, {"missing": [1]})])
            assert _recv(router)[1][1][0] == 1  # frame 1 again
            ident, (kind, body) = _recv(router)
            assert kind == protocol.BYE
            router.send_multipart([ident, protocol.pack(protocol.ACK, {"missing": []})])
        finally:
            thread.join(30)
        assert done == {"ok": True}
        assert c.acked and c.records_known_lost() == 0
    finally:
        c.close()


def test_records_known_lost_after_the_last_acknowledgement(router):
    c = _connect(router.endpoint)
    try:
        c.batch([[b"t::a", 1.0, 2.0, None, 0.1, None, "passed", 1, 2, 3, 0.1, 0.1, None]] * 3)
        _recv(router)
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("ok", c.bye()))
        thread.start()
        try:
            for _ in range(3):  # it never arrives, however often it is sent again
                ident, (kind, _) = _recv(router)
                while kind != protocol.BYE:
                    ident, (kind, _) = _recv(router)
                router.send_multipart([ident, protocol.pack(protocol.ACK, {"missing": [0]})])
        finally:
            thread.join(30)
        assert result == {"ok": False}
        assert c.records_known_lost() == 3
    finally:
        c.close()


def test_error_reply_ends_the_wait(router):
    c = _connect(router.endpoint)
    try:
        c.send(protocol.pack(protocol.HELLO, {}))
        ident, _ = _recv(router)
        router.send_multipart([ident, protocol.error_reply(protocol.E_SESSION, "session closed")])
        assert c.wait(protocol.READY, 30) is None
        assert c.problem == "refused: session closed"
    finally:
        c.close()


def test_a_collector_that_goes_away_ends_every_wait(tmp_path):
    """A killed or stopped daemon closes its end: the wait ends at once, not at its timeout."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"ipc://{tmp_path}/r.sock")
    c = _connect(f"ipc://{tmp_path}/r.sock", daemon=True)
    try:
        c.send(protocol.pack(protocol.HELLO, {}))
        ident, _ = _recv(sock)
        sock.send_multipart([ident, protocol.pack(protocol.READY, {})])
        assert c.wait(protocol.READY, 30) == {}
        sock.close(0)
        # a timeout gives up silently; the closed connection says so
        assert c.wait(protocol.DONE, 60) is None
        assert c.problem == "it closed the connection"
        assert c.gone()
    finally:
        c.close()
        ctx.term()


def test_nobody_there_within_the_connect_grace(tmp_path):
    c = _connect(f"ipc://{tmp_path}/nobody.sock", daemon=True)
    try:
        assert c.wait(protocol.READY, 60, connect_grace=0.2) is None
        assert c.problem == "nothing accepted a connection in 0 s"
        assert not c.ever_connected
    finally:
        c.close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_endpoint_connects():
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IPV6, 1)
    sock.bind("tcp://[::1]:0")
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    assert _settings.endpoint_ok(endpoint), endpoint
    c = _connect(endpoint, daemon=True)
    try:
        c.send(protocol.pack(protocol.HELLO, {"role": "local"}))
        assert _recv(sock)[1][0] == protocol.HELLO
    finally:
        c.close()
        sock.close(0)
        ctx.term()


# --- the measured path and the sender thread ----------------------------------------------------


class _Item:
    def __init__(self, nodeid):
        self.nodeid = nodeid


class _Report:
    def __init__(self, when):
        self.when, self.duration = when, 0.001
        self.passed, self.failed, self.skipped = True, False, False


class _Result:
    excinfo = None


def _one_test(m: Measurer, nodeid: str) -> None:
    gen = m.pytest_runtest_protocol(_Item(nodeid), None)
    next(gen)
    for when in ("setup", "call", "teardown"):
        m.pytest_runtest_logreport(_Report(when))
    with pytest.raises(StopIteration):
        gen.send(_Result())


def _records_arriving(sock, n, timeout=10.0):
    got = []
    while len(got) < n:
        ident, (kind, body) = _recv(sock, timeout)
        assert kind == protocol.BATCH
        got += [msgpack.unpackb(msgpack.packb(r)) for r in body[1]]
    return got


def test_finished_tests_are_sent_while_the_next_one_runs(router):
    """The sender thread sends on its timer: no test has to end for a batch to leave."""
    c = _connect(router.endpoint)
    m = Measurer("main", c)
    try:
        c.ready = True
        m.start_sending()
        for i in range(3):
            _one_test(m, f"t.py::quick[{i}]")
        # "the next test" is this one, still running: the three arrive regardless
        got = _records_arriving(router, 3)
        assert [r[protocol.NODEID] for r in got] == [f"t.py::quick[{i}]".encode() for i in range(3)]
        assert all(r[protocol.OUTCOME] == "passed" for r in got)
        # a full batch wakes the sender at once
        for i in range(_client.BATCH_RECORDS):
            _one_test(m, f"t.py::many[{i}]")
        assert len(_records_arriving(router, _client.BATCH_RECORDS)) == _client.BATCH_RECORDS
        _one_test(m, "t.py::last")
        m.stop_sending()
        assert m.sender is None
        assert [r[protocol.NODEID] for r in m.records()][-1] == "t.py::last"
        assert len(m.records()) == 3 + _client.BATCH_RECORDS + 1
    finally:
        m.stop_sending()
        c.close()
        m.counters.close()


def test_without_a_client_records_stay_in_the_process():
    m = Measurer("main", None)
    try:
        m.start_sending()  # nothing to send to: no thread
        assert m.sender is None
        for i in range(3):
            _one_test(m, f"t.py::x[{i}]")
        m.stop_sending()
        assert [r[protocol.NODEID] for r in m.records()] == [f"t.py::x[{i}]" for i in range(3)]
    finally:
        m.counters.close()


def test_interrupted_test_is_recorded_as_interrupted():
    """Ctrl-C (or pytest.exit()) inside a test: the test is in the report with the time it had
    run, in the phase that was running, and the Measurer says what ended the run."""
    m = Measurer("main", None)
    try:
        gen = m.pytest_runtest_protocol(_Item("t.py::stop"), None)
        next(gen)
        m.pytest_runtest_logreport(_Report("setup"))
        result = _Result()
        result.excinfo = (KeyboardInterrupt, KeyboardInterrupt(), None)  # type: ignore[assignment]
        with pytest.raises(StopIteration):
            gen.send(result)
        m.stop_sending()
        (rec,) = m.records()
        assert rec[protocol.OUTCOME] == "interrupted"
        assert (
            rec[protocol.SETUP] == 0.001
            and rec[protocol.CALL] is not None
            and rec[protocol.TEARDOWN] is None
        )
        assert m.interrupted == ("t.py::stop", "KeyboardInterrupt (Ctrl-C, SIGINT)")
    finally:
        m.counters.close()


def test_no_thread_left_behind(router):
    before = {t.name for t in threading.enumerate()}
    c = _connect(router.endpoint)
    m = Measurer("main", c)
    c.ready = True
    m.start_sending()
    m.stop_sending()
    c.close()
    m.counters.close()
    assert "perfmon-sender" not in {t.name for t in threading.enumerate()} - before
    assert os.getpid() > 0


def test_a_monitor_started_early_and_never_taken_is_stopped(tmp_path):
    """spawn_early's monitor is make_handle's when passed; one that no registered role claimed
    (the configure failed in between, or the role's set-up raised after make_handle) is stopped
    by its drop (a config cleanup), its directory removed, and it writes no report; drop after
    a claim stops nothing."""
    from pytest_perfmon import _handle

    settings = _settings.Settings(output=str(tmp_path / "first.json"))
    early = _handle.spawn_early(settings)
    assert early is not None and early.monitor is not None
    monitor = _handle.make_handle(settings, early)  # a role's set-up that then raised
    assert monitor is early.monitor
    assert monitor.alive()  # reaps the launcher: the monitor runs
    stale_dir = monitor.tmpdir
    early.drop()
    assert early.monitor is None
    assert not monitor.alive() and not os.path.exists(stale_dir)
    assert not (tmp_path / "first.json").exists()

    again = _handle.spawn_early(settings)
    assert again is not None
    handle = _handle.make_handle(settings, again)
    try:
        assert handle is again.monitor
        again.claim()  # the role is registered
        again.drop()  # a no-op
        assert handle.alive()
    finally:
        handle.silence()
        handle.reap(wrote_report=False)


#: Two pytest sessions in one process between which ``sys.modules`` is handed back, as
#: pytester's in-process runs do, and a test imports the plugin's ``_handle`` again: the
#: second session's early monitor was kept by one copy of that module and looked for in the
#: other, so a second monitor started and the first ran on, its launcher never waited for.
TWO_COPIES = """
import gc, json, os, sys, warnings
import pytest
import pytest_perfmon.plugin
FIND = json.loads(sys.argv[1])
exec(FIND, globals())
args = ["-q", "-p", "no:cacheprovider", "--perf-monitor", "--perf-output=r.json"]
snapshot = dict(sys.modules)
for _ in range(2):
    assert pytest.main(args) == 0
    sys.modules.clear()
    sys.modules.update(snapshot)
    from pytest_perfmon._handle import FORK_MAX_RSS  # a test's import: a second copy
warnings.simplefilter("always", ResourceWarning)
gc.collect()
print("left:", find_monitor(os.getpid()))
"""


def test_no_monitor_left_when_sys_modules_is_handed_back(pytester):
    from helpers import FIND_MONITOR_SOURCE, RUN_TIMEOUT

    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    pytester.makepyfile(drive=TWO_COPIES)
    env = dict(os.environ, PERFMON_MONITOR_START="exec")  # a launcher, as under xdist
    proc = subprocess.run(
        [sys.executable, "drive.py", json.dumps(FIND_MONITOR_SOURCE)],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "left: None" in proc.stdout, proc.stdout + proc.stderr
    assert "ResourceWarning" not in proc.stderr, proc.stderr


def test_what_ended_a_run_names_only_what_someone_did():
    """pytest's own stops are KeyboardInterrupts nobody pressed (collection errors, --sw; and
    xdist's after -x): no cause. A real Ctrl-C, pytest.exit() and anything else are named."""
    from pytest_perfmon._endings import what_ended

    assert what_ended(pytest.Session.Interrupted("1 error during collection")) is None
    assert what_ended(KeyboardInterrupt()) == "KeyboardInterrupt (Ctrl-C, SIGINT)"
    with pytest.raises(pytest.exit.Exception) as exc:
        pytest.exit("enough")
    assert what_ended(exc.value) == "pytest.exit('enough')"
    assert what_ended(RuntimeError("x")) == "RuntimeError"


def test_a_moment_follows_a_clock_step_and_not_a_travel():
    """plugin/_clock.moment: time.time as read (a step of the system clock included: the
    monitor, in its own process, sees it too); while time-machine travels, near or far,
    ticking or frozen, in the test's process only, time-machine's own real clock."""
    import time

    import time_machine
    from pytest_perfmon import _clock

    assert _clock.moment(1_000_025.0) == 1_000_025.0  # whatever time.time says
    real = time.time()
    for to, tick in ((0, True), (real + 1800, True), (real, False)):
        with time_machine.travel(to, tick=tick):
            time.sleep(0.05)
            got = _clock.moment(time.time())
        assert abs(got - (real + 0.05)) < 30, (to, tick, got, real)
        if not tick:  # frozen at about now: the real clock moved on, the frozen one did not
            assert got > real + 0.04, (got, real)
