"""xdist workers on another host: ``--tx socket=`` against execnet's socket server, started in
another directory with ``PERFMON_HOST_ID`` set so that its worker is another host for real (a
real relay process, a real TCP socket with CURVE), beside a local ``--tx popen`` worker."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
from helpers import Run, inner_addopts, run_in, shared_once, validate

FAR = "far-host"
#: Bound on the socket server's start.
SERVER_START = 30.0

#: SUITE's tests. Four on two workers: xdist's first hand-out is two to each (all of them), so
#: both hosts always have tests (six gave 3 and 3, or 4 and 2 with both cores busy); each test
#: more was a child and half a second of sampling more, in each of the runs below.
N = 4

SUITE = f"""
import subprocess, sys, pytest

CHILD = "import time; block = b'x' * (50 * 1024 * 1024); time.sleep(0.5)"

@pytest.mark.parametrize("i", range({N}))
def test_x(i):
    block = bytearray((i % 3 + 1) * 20 * 1024 * 1024)
    # -S: the child needs no site-packages (their .pth files were a third of its CPU)
    subprocess.run([sys.executable, "-S", "-c", CHILD], check=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, port: int, proc: subprocess.Popen, tmp: str) -> None:
        self.port = port
        self.proc = proc
        self.tmp = tmp  # the server side's TMPDIR: where its relays are


@contextlib.contextmanager
def _server(tmp_path, **env: str) -> Iterator[Server]:
    """execnet's socket server in a directory of its own, marked as another host, with a
    temporary directory of its own (short: a relay's ipc socket path lives there); killed and
    reaped at the end (it loops for the next connection by default)."""
    where = tmp_path / "server"
    where.mkdir(exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="i23-")
    port = _free_port()
    environ = dict(
        os.environ, PERFMON_HOST_ID=FAR, PYTEST_ADDOPTS=inner_addopts(), PY_COLORS="0", TMPDIR=tmp
    )
    environ.update(env)
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "execnet.script.socketserver", f"127.0.0.1:{port}"],
        cwd=where,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + SERVER_START
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "the socket server did not start"
                time.sleep(0.05)
        yield Server(port, proc, tmp)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the server, and any worker it forked
        proc.wait(30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator:
    """This module's socket server (of this process) for the tests whose remote side has no
    setting of its own: ``servers()``, started at first use and kept for the next such test.
    execnet's socket server serves one session after another, as it does on a remote host (a
    second session on the same worker process is what test_socket_worker_on_another_host
    checks); starting one and importing pytest and this plugin in its first session cost
    about 0.25 CPU-s per test. The tests' inner modules have names of their own (a module
    that an earlier session imported keeps its name there). A server that died, or whose relay
    outlived its session (a test failed), is replaced. The tests that need a server of their
    own (it dies: own_server; or it has an environment of its own) start it with _server."""
    with contextlib.ExitStack() as kept:
        held: dict = {}

        def get() -> Server:
            srv = held.get("srv")
            if srv is not None and (srv.proc.poll() is not None or not _relays_gone(srv, 0)):
                held.pop("stack").close()
                srv = None
            if srv is None:
                stack = kept.enter_context(contextlib.ExitStack())
                srv = stack.enter_context(_server(tmp_path_factory.mktemp("server")))
                held.update(srv=srv, stack=stack)
            return srv

        yield get


@pytest.fixture
def server(servers) -> Server:
    return servers()


@pytest.fixture
def own_server(tmp_path) -> Iterator[Server]:
    with _server(tmp_path) as srv:
        yield srv


def _relays_gone(srv: Server, timeout: float = 15.0) -> bool:
    """Wait (bounded) for every relay on the server's side to end and remove its directory: a
    relay ends a moment after its last worker's goodbye."""
    deadline = time.monotonic() + timeout
    while glob.glob(os.path.join(srv.tmp, "perfmon-relay-*")):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _run(path, port: int, module: str, *args: str, env: dict | None = None):
    """SUITE as ``module``.py in ``path``, on the socket server at ``port`` and a local worker."""
    (path / f"{module}.py").write_text(SUITE)
    return run_in(
        path,
        "-d",
        f"--tx=socket=127.0.0.1:{port}//chdir={path}",
        "--tx=popen",
        "-p",
        "xdist",
        *args,
        env=env,
    )


def far_peak(rep: dict) -> float:
    return rep["hosts"][FAR]["concurrent_memory_peak"]["total_rss_mb"]


def _hosts_ok(rep: dict, remote_workers: int = 1) -> None:
    tests = rep["tests"]
    assert {t["host"] for t in tests.values()} == {FAR, socket.gethostname()}
    for name, t in tests.items():
        assert t["memory"]["peak_mb"] and t["memory"]["peak_mb"] > 20, (name, t)
        assert t["cpu_percent"] is not None, (name, t)
    assert set(rep["hosts"]) == {FAR, socket.gethostname()}
    far = rep["hosts"][FAR]
    assert far["system"]["cpu_count"] == os.cpu_count()
    assert far["concurrent_memory_peak"]["total_rss_mb"] > 40
    hosts = [w["host"] for w in rep["workers"].values()]
    assert hosts.count(FAR) == remote_workers


def test_socket_worker_on_another_host(tmp_path, server, capsys):
    port, proc = server.port, server.proc
    run = _run(tmp_path, port, "test_sock")
    assert run.ret == 0, run.text
    rep = run.report
    assert len(rep["tests"]) == N
    _hosts_ok(rep)
    assert not rep["session"]["warnings"], rep["session"]["warnings"]
    assert not rep["session"].get("possibly_incomplete")
    # the relay sampled the remote worker: its descendants (the child's 50 MB) and the noise
    far = [t for t in rep["tests"].values() if t["host"] == FAR]
    for t in far:
        assert t["children"]["peak_rss_mb"] > 40 and t["children"]["processes"] == 1, t
        assert isinstance(t["noise"], dict) and t["noise"]["wait_time"] is not None, t
    assert _relays_gone(server)  # the relay ended with the session and left nothing
    # perfmon report, the HTML page and merge name the hosts
    from pytest_perfmon.monitor import analysis, cli, html

    capsys.readouterr()
    assert cli.main(["report", str(run.path)]) == 0  # in-process, as tests/test_cli.py runs it
    out = capsys.readouterr().out
    # (how many tests each worker took is xdist's choice: N // 2 each, see N)
    assert "Hosts: " in out, out
    assert f"{FAR} (1 worker(s), {len(far)} test" in out, out
    lanes = [lane["name"] for lane in html.page_data(rep)["lanes"]]
    assert sorted(lanes) == sorted(f"{w} ({b['host']})" for w, b in rep["workers"].items())
    merged = analysis.merge([("a", rep, "a.json"), ("b", rep, "b.json")])
    assert analysis.host_totals(merged)[FAR]["tests"] == 2 * len(far)  # the run, twice
    assert analysis.host_totals(merged)[FAR]["peak_mb"] == far_peak(rep)
    # The socket server loops: a second session on the same worker process works the same
    # (no state of the first one leaked), with a relay of its own.
    again = _run(tmp_path, port, "test_sock", env={})
    assert again.ret == 0, again.text
    _hosts_ok(again.report)
    assert proc.poll() is None
    assert _relays_gone(server)


def test_proxy_gateway_workers_share_one_relay(tmp_path, server):
    port = server.port
    (tmp_path / "test_proxy.py").write_text(SUITE)
    run = run_in(
        tmp_path,
        "-d",
        f"--px=id=p//socket=127.0.0.1:{port}",
        f"--tx=2*popen//via=p//chdir={tmp_path}",
        "--tx=popen",
        "-p",
        "xdist",
    )
    assert run.ret == 0, run.text
    rep = run.report
    assert len(rep["tests"]) == N
    far = [wid for wid, w in rep["workers"].items() if w["host"] == FAR]
    assert len(far) == 2
    # one relay sampled both: its host's concurrent peak names the workers it saw together
    peak = rep["hosts"][FAR]["concurrent_memory_peak"]
    assert set(peak["workers"]) == set(far) and peak["total_rss_mb"] > 0


KEYS = """
import time, zmq

def _answered(endpoint, *peers):
    # One DEALER per peer (its keys, or None: plain TCP), all waiting at once: for each, whether
    # an answer came within 3 s of its hello.
    ctx = zmq.Context()
    socks = []
    for keys in peers:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        if keys:
            s.curve_publickey, s.curve_secretkey, s.curve_serverkey = keys
        s.connect(endpoint)
        s.send(b"\\x93\\x01\\xa5hello\\x80")
        socks.append(s)
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    got = set()
    deadline = time.monotonic() + 3.0
    while len(got) < len(socks) and time.monotonic() < deadline:
        for s, _ in poller.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            got.add(s)
            poller.unregister(s)  # answered: no busy loop on it for the rest of the wait
    answered = [s in got for s in socks]
    for s in socks:
        s.close()
    ctx.term()
    return answered

def test_keys(request):
    up = request.config.workerinput["perfmon_remote"]
    assert up["endpoint"].startswith("tcp://127.0.0.1:")
    server = up["server"].encode()
    # the session's keys are answered (an error reply: the hello is not a valid one) ...
    mine = (up["public"].encode(), up["secret"].encode(), server)
    # ... a peer without them never is: no plain TCP, no other client key
    other = (*zmq.curve_keypair(), server)
    assert _answered(up["endpoint"], mine, None, other) == [True, False, False]
"""


def test_collector_refuses_a_wrong_key(tmp_path_factory, servers):
    """KEYS's test, on the remote worker of test_relay_killed_mid_run's run (test_k.py runs
    before that run's kill, on the first relay, as its own run did): it only asks the
    collector, whose endpoint and keys the relay does not change."""
    run, _ = _relay_killed_run(tmp_path_factory, servers)
    assert run.ret == 0, run.text
    keys = run.report["tests"]["test_k.py::test_keys"]
    assert keys["outcome"] == "passed" and keys["host"] == FAR, keys


#: The other remote host of _relay_settings_run.
FAR2 = "far-host-2"


def _relay_settings_run(tmp_path_factory) -> tuple:
    """One run of SUITE, made once (helpers.shared_once) for the two tests that read it, each
    about its own remote worker: one on FAR whose relay is told a collector where nothing
    listens (test_unreachable_collector_hands_records_back), one on FAR2 whose relay's
    PERFMON_RELAY_GRACE is not a number (test_a_bad_relay_grace_is_one_warning), each from a
    socket server of its own (another relay, in its own TMPDIR), and a local worker. N tests
    on three workers: fewer than two each, xdist hands them all out at once, round robin, so
    each worker has one at least. Its Run, and whether each server's relays were gone after it
    ([FAR, FAR2]). It was two runs (one per setting): their servers' environments differ."""

    def make(path) -> None:
        (path / "test_a.py").write_text(SUITE)
        (path / "far").mkdir()
        (path / "far2").mkdir()
        closed = _free_port()  # where FAR's side is told the collector is: nothing listens
        # Nothing will ever answer: the relay's wait for the handshake need not be the default
        # 5 s (its default and parsing: test_relay_grace_from_the_environment).
        unreachable = {"PERFMON_RELAY_UPSTREAM": f"127.0.0.1:{closed}", "PERFMON_RELAY_GRACE": "1"}
        with contextlib.ExitStack() as servers:  # (parenthesized with: Python 3.10 on)
            far = servers.enter_context(_server(path / "far", **unreachable))
            far2 = servers.enter_context(
                _server(path / "far2", PERFMON_HOST_ID=FAR2, PERFMON_RELAY_GRACE="soon")
            )
            run = run_in(
                path,
                "-d",
                f"--tx=socket=127.0.0.1:{far.port}//chdir={path}",
                f"--tx=socket=127.0.0.1:{far2.port}//chdir={path}",
                "--tx=popen",
                "-p",
                "xdist",
            )
            gone = [_relays_gone(far), _relays_gone(far2)]
        outcome = [run.ret, run.result.outlines, run.result.errlines, gone]
        (path / "result.json").write_text(json.dumps(outcome), encoding="utf-8")

    return _shared(tmp_path_factory, "remote-relay-settings", make)


def _shared(tmp_path_factory, name: str, make) -> tuple:
    """The Run that ``make`` made once in a directory (helpers.shared_once) and wrote as
    result.json (its return code, output lines and a last item), and that item."""
    path = shared_once(tmp_path_factory, name, make)
    ret, outlines, errlines, extra = json.loads((path / "result.json").read_text("utf-8"))
    out = path / "perf.json"
    report = validate(json.loads(out.read_text("utf-8"))) if out.exists() else None
    return Run(pytest.RunResult(ret, outlines, errlines, 0.0), report, out), extra


def test_unreachable_collector_hands_records_back(tmp_path_factory):
    run, gone = _relay_settings_run(tmp_path_factory)
    assert gone[0]  # the relay, having told its worker, ended with it
    assert run.ret == 0, run.text
    rep = run.report
    assert len(rep["tests"]) == N
    far = [t for t in rep["tests"].values() if t["host"] == FAR]
    assert far and all(t["memory"]["peak_mb"] and t["cpu_percent"] is not None for t in far)
    warnings = [w for w in rep["session"]["warnings"] if "came back at the end through xdist" in w]
    assert len(warnings) == 1 and "cannot reach the collector" in warnings[0], warnings
    assert "--perf-listen" in warnings[0]
    assert "no CURVE handshake within 1 s" in warnings[0], warnings


def test_relay_grace_from_the_environment():
    from pytest_perfmon.monitor import relay

    assert relay.upstream_grace({}) == relay.UPSTREAM_GRACE == 5.0
    assert relay.upstream_grace({relay.GRACE_ENV: "0.5"}) == 0.5
    assert relay.upstream_grace({relay.GRACE_ENV: "12"}) == 12.0
    for bad in ("", "0", "-1", "soon", "nan", "inf"):
        assert relay.upstream_grace({relay.GRACE_ENV: bad}) == relay.UPSTREAM_GRACE, bad
    # what the remote worker says of a value the relay could not use (unset or empty: nothing)
    assert relay.grace_problem({}) is None and relay.grace_problem({relay.GRACE_ENV: ""}) is None
    assert relay.grace_problem({relay.GRACE_ENV: "0.5"}) is None
    for bad in ("0", "-1", "soon", "nan", "inf"):
        said = relay.grace_problem({relay.GRACE_ENV: bad})
        assert said == (
            f"PERFMON_RELAY_GRACE={bad!r} is not a positive number of seconds; its relay waited "
            "the default 5 s for the collector"
        ), said


def test_a_bad_relay_grace_is_one_warning(tmp_path_factory):
    """PERFMON_RELAY_GRACE on the remote side that is not a number of seconds: the run is as
    without it (the relay waits its default, reaches the collector and samples its worker),
    and the report and terminal say so once (FAR2 of _relay_settings_run)."""
    run, gone = _relay_settings_run(tmp_path_factory)
    assert gone[1]
    assert run.ret == 0, run.text
    assert len(run.report["tests"]) == N
    said = [w for w in run.report["session"]["warnings"] if "PERFMON_RELAY_GRACE" in w]
    assert said == [
        f"remote workers on {FAR2}: PERFMON_RELAY_GRACE='soon' is not a positive number of "
        "seconds; its relay waited the default 5 s for the collector"
    ], run.report["session"]["warnings"]
    # (the one warning of a handback is FAR's: test_unreachable_collector_hands_records_back)
    assert run.report["hosts"][FAR2]["system"] is not None  # its relay sampled, live
    assert any(t["host"] == FAR2 for t in run.report["tests"].values())
    assert run.text.count("PERFMON_RELAY_GRACE='soon'") == 1, run.text


KILL_RELAY = """
import glob, os, signal, tempfile, time, pytest

@pytest.mark.parametrize("i", range(8))
def test_x(i, request):
    wi = getattr(request.config, "workerinput", {})
    if i == 3 and os.environ.get("PERFMON_HOST_ID"):
        uid = os.getuid()
        where = os.path.join(tempfile.gettempdir(), f"perfmon-relay-{uid}-{wi['perfmon_session']}")
        with open(os.path.join(where, "relay.pid")) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGKILL)
        with open("killed-relay", "w") as f:
            f.write(str(pid))
    block = bytearray(30 * 1024 * 1024)
    time.sleep(0.3)
"""


def _relay_killed_run(tmp_path_factory, servers) -> tuple:
    """One run, on a socket worker only (``servers``' server), of KILL_RELAY (test_kill.py)
    and KEYS (test_k.py, after it), made once for the two tests that read it
    (helpers.shared_once): its Run, and whether its relays were gone after it."""

    def make(path) -> None:
        (path / "test_kill.py").write_text(KILL_RELAY)
        (path / "test_k.py").write_text(KEYS)
        srv = servers()
        tx = f"--tx=socket=127.0.0.1:{srv.port}//chdir={path}"
        run = run_in(path, "-d", tx, "-p", "xdist")
        gone = _relays_gone(srv)
        outcome = [run.ret, run.result.outlines, run.result.errlines, gone]
        (path / "result.json").write_text(json.dumps(outcome), encoding="utf-8")

    return _shared(tmp_path_factory, "remote-relay-killed", make)


def test_relay_killed_mid_run(tmp_path_factory, servers):
    run, relays_gone = _relay_killed_run(tmp_path_factory, servers)
    assert run.ret == 0, run.text
    rep = run.report
    assert (run.path.parent / "killed-relay").exists()
    killed = {k: t for k, t in rep["tests"].items() if k.startswith("test_kill.py::")}
    assert len(killed) == 8  # none lost: the worker started another relay, resent all
    # ... through the new relay, live: nothing came back through xdist at the end
    assert not rep["session"]["warnings"] and not rep["session"].get("possibly_incomplete")
    for t in killed.values():
        assert t["host"] == FAR and t["memory"]["peak_mb"] > 30 and t["cpu_percent"] is not None
    # the resent batches were taken once: no test counted twice (KEYS's one test is the ninth)
    assert len(rep["tests"]) == 9
    assert sum(w["tests"] for w in rep["workers"].values()) == 9
    assert relays_gone


KILL_WORKER = """
import os, signal, time, pytest

@pytest.mark.parametrize("i", range(4))
def test_x(i):
    if i == 2 and os.environ.get("PERFMON_HOST_ID"):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
"""


def test_remote_worker_killed_mid_test(tmp_path, own_server):
    server = own_server  # the worker it kills is the server's own process
    port, proc = server.port, server.proc
    (tmp_path / "test_a.py").write_text(KILL_WORKER)
    run = run_in(
        tmp_path,
        "-d",
        f"--tx=socket=127.0.0.1:{port}//chdir={tmp_path}",
        "-p",
        "xdist",
        "--max-worker-restart=0",
    )
    proc.wait(30)  # the worker was the server's own process
    rep = run.report
    assert rep is not None, run.text
    crashed = [t for t in rep["tests"].values() if t["outcome"] == "crashed"]
    assert len(crashed) == 1 and crashed[0]["host"] == FAR
    done = [t for t in rep["tests"].values() if t["outcome"] == "passed"]
    assert len(done) == 2 and all(t["host"] == FAR for t in done)
    assert _relays_gone(server)  # the relay saw its worker gone and ended


def test_host_identity(monkeypatch):
    from pytest_perfmon.monitor import host

    monkeypatch.delenv(host.ENV, raising=False)
    mine = host.identity()
    assert mine.startswith(socket.gethostname() + "|")
    if sys.platform.startswith("linux"):
        assert os.readlink("/proc/self/ns/pid") in mine  # another PID namespace: another host
    assert host.label() == socket.gethostname()
    monkeypatch.setenv(host.ENV, "elsewhere")
    assert host.identity() == host.label() == "elsewhere"


def test_listen_endpoint():
    from pytest_perfmon._remote import listen_endpoint

    assert listen_endpoint(None, ["popen", "3*popen//python=python3"]) is None
    assert listen_endpoint(None, ["socket=127.0.0.1:8888"]) == "tcp://127.0.0.1:0"
    assert listen_endpoint(None, ["popen//via=p"]) == "tcp://127.0.0.1:0"
    assert listen_endpoint("10.1.2.3:5555", ["popen"]) == "tcp://10.1.2.3:5555"
    assert listen_endpoint("127.0.0.1", ["popen"]) == "tcp://127.0.0.1:0"
    assert listen_endpoint("[::1]:7", ["popen"]) == "tcp://[::1]:7"
    assert listen_endpoint("127.0.0.1", []) is None  # no xdist: nobody to listen for
    for bad in ("host:port", ":80", "h:99999"):
        with pytest.raises(ValueError):
            listen_endpoint(bad, ["popen"])


@pytest.mark.parametrize(
    "body",
    [
        [1],
        {"t": [1.0], "rss": []},
        {"t": [float("nan")], "rss": [1]},
        {"t": [1.0], "rss": ["x"]},
        {"peak": [1.0, 2]},
        {"system": "linux"},
    ],
)
def test_bad_samples_are_refused(body):
    from pytest_perfmon.monitor import protocol

    with pytest.raises(protocol.ProtocolError):
        protocol.parse_samples(body)


def test_handback_needs_a_host():
    from pytest_perfmon.monitor import protocol

    with pytest.raises(protocol.ProtocolError):
        protocol.parse_handback({"worker": "gw0", "records": []})
    h = protocol.parse_handback({"worker": "gw0", "host": "far", "records": [[1]], "pid": 3})
    assert (h.worker, h.host, h.pid, h.records, h.rejected) == ("gw0", "far", 3, [], 1)


KILL_MONITOR = """
import os, signal, time, pytest

@pytest.mark.parametrize("i", range(10))
def test_x(i, request):
    wi = request.config.workerinput
    if i == 4 and not os.environ.get("PERFMON_HOST_ID"):  # on the controller's host
        os.kill(wi["perfmon_monitor_pid"], signal.SIGKILL)
        open("killed-monitor", "w").close()
    block = bytearray(30 * 1024 * 1024)
    time.sleep(0.3)
"""


def test_monitor_replaced_mid_run_hears_the_relay_again(tmp_path, server):
    port = server.port
    (tmp_path / "test_replaced.py").write_text(KILL_MONITOR)
    run = run_in(
        tmp_path,
        "--dist=each",  # not -d: xdist's -d is --dist=load
        f"--tx=socket=127.0.0.1:{port}//chdir={tmp_path}",
        "--tx=popen",
        "-p",
        "xdist",
    )
    assert (tmp_path / "killed-monitor").exists(), run.text
    rep = run.report
    assert rep is not None and rep["session"]["collector"] == "monitor", run.text
    assert len(rep["session"]["monitor_restarts"]) == 1
    # --dist each: every test ran on both hosts; the new monitor heard the relay's worker again
    # (its hello and every batch), on the same port
    assert {t["host"] for t in rep["tests"].values()} == {f"{FAR}, {socket.gethostname()}"}
    far = next(wid for wid, w in rep["workers"].items() if w["host"] == FAR)
    assert rep["workers"][far]["tests"] == 10
    assert not [w for w in rep["session"]["warnings"] if "through xdist" in w]
    assert not rep["session"].get("possibly_incomplete")
    assert _relays_gone(server)


def test_memory_budget_holds_per_host():
    """--perf-max-memory: each host's workers share the budget, not every worker of the run."""
    from types import SimpleNamespace

    from pytest_perfmon import _schedule as schedule
    from pytest_perfmon import _schedule_inputs
    from sched_sim import Sim

    durs = [0.05] * 20 + [0.5] * 4
    extras = [5.0] * 20 + [400.0] * 4
    ids = [f"t.py::test_{i}" for i in range(len(durs))]
    plan = _schedule_inputs.Plan(durs, extras, 100.0, 0, "test")
    said: list = []

    class Inner:
        nodes: list = []

        def __getattr__(self, name):
            return lambda *a: None

    sched = schedule.PerfScheduling(4, "load", Inner(), lambda _: plan, 700.0, said.append)
    sim = Sim(sched, ids, durs, extras)
    add = sim.add_node
    specs = ["popen", "popen", "socket=10.0.0.2:8888", "socket=10.0.0.2:8888"]

    def add_node(name):  # each node's --tx spec, before the scheduler plans (sim.run)
        node = add(name)
        key, _, value = specs[len(sim.nodes) - 1].partition("=")
        spec = SimpleNamespace(popen=key == "popen", ssh=None, socket=value or None, via=None)
        node.gateway = SimpleNamespace(spec=spec)
        return node

    sim.add_node = add_node
    sim.run(4)
    assert sorted(sim.completed) == list(range(len(durs)))
    assert not said, said  # 2 x 100 MB + one 400 MB test fits each host's 700 MB
    heavy = [
        (schedule.host_of(n), start, end)
        for n in sim.nodes
        for i, start, end in n.ran
        if extras[i] > 100
    ]
    for host, start, end in heavy:  # never two heavy tests at once on one host ...
        same = [h for h, s, e in heavy if h == host and s < end and e > start]
        assert len(same) == 1, heavy
    # ... but one on each host at a time (a budget over every worker would allow one in all)
    assert any(h1 != h2 and s1 < e2 and e1 > s2 for h1, s1, e1 in heavy for h2, s2, e2 in heavy), (
        heavy
    )


def test_a_listen_address_that_cannot_be_bound(tmp_path, server):
    """--perf-listen on an address not of this machine: the local worker is sampled as ever,
    the remote one hands its records back at the end; one warning says why."""
    port = server.port
    run = _run(tmp_path, port, "test_listen", "--perf-listen=192.0.2.1:9")  # TEST-NET-1
    assert run.ret == 0, run.text
    rep = run.report
    assert len(rep["tests"]) == N and rep["session"]["collector"] == "monitor"
    warnings = rep["session"]["warnings"]
    assert len(warnings) == 1 and "cannot listen at tcp://192.0.2.1:9" in warnings[0], warnings
    here = [t for t in rep["tests"].values() if t["host"] != FAR]
    far = [t for t in rep["tests"].values() if t["host"] == FAR]
    assert here and far
    assert all(t["memory"]["peak_mb"] and t["cpu_percent"] is not None for t in here + far)
    assert rep["hosts"][socket.gethostname()]["concurrent_memory_peak"] is not None
    assert rep["hosts"][FAR]["system"] is None  # no relay ran there


@pytest.mark.parametrize("listen", [True, False], ids=["perf-listen", "no-listener"])
def test_popen_worker_in_another_namespace(tmp_path, listen):
    """A popen worker that is another host (a Python in a container, here marked with
    PERFMON_HOST_ID through xdist's env: spec): with --perf-listen it reports through a relay;
    without, nothing listens (only popen specs) and its records come back at the end."""
    (tmp_path / "test_a.py").write_text(SUITE)
    run = run_in(
        tmp_path,
        "-d",
        "--tx=popen//env:PERFMON_HOST_ID=box",
        "--tx=popen",
        "-p",
        "xdist",
        *(["--perf-listen=127.0.0.1"] if listen else []),
    )
    assert run.ret == 0, run.text
    rep = run.report
    assert {t["host"] for t in rep["tests"].values()} == {"box", socket.gethostname()}
    box = [t for t in rep["tests"].values() if t["host"] == "box"]
    assert all(t["memory"]["peak_mb"] > 20 and t["cpu_percent"] is not None for t in box)
    warnings = rep["session"]["warnings"]
    if listen:
        assert not warnings, warnings
        assert all(t["children"]["peak_rss_mb"] > 40 for t in box)  # sampled by the relay
        assert rep["hosts"]["box"]["system"] is not None
    else:
        assert len(warnings) == 1 and "does not listen for remote workers" in warnings[0]
        assert rep["hosts"]["box"]["system"] is None
