"""The monitor process: collects the plugin's records, samples the pytest processes, writes JSON.

Spawned by the plugin (``python -m pytest_perfmon.monitor.monitor``, or the ``perfmon-monitor`` script). It binds
a ROUTER socket, samples every process that introduced itself with ``hello`` every ``--interval``
seconds, and on ``finish`` writes the report atomically, answers ``done`` and exits. It exits on
its own when its parent (the pytest process that spawned it) goes away, writing what it has as an
aborted session.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any, Optional

import zmq

from . import protocol as P
from . import report as R

#: Per-process samples kept before the timeline is halved (max of each pair kept).
MAX_SAMPLES = 20000
#: How often the parent is checked, seconds.
PARENT_CHECK = 0.25


def _die_with_parent() -> None:
    """Linux: ask the kernel to send SIGTERM when the parent dies (polling covers the rest)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class RouterServer:
    """What the monitor and perfmon-daemon share: a ROUTER socket whose frames are dispatched by
    message kind to ``HANDLERS``, with every protocol error answered and counted."""

    HANDLERS: dict = {}
    sock: Any
    counters: dict

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def reply(self, ident: bytes, frame: bytes) -> None:
        try:
            self.sock.send_multipart([ident, frame], zmq.NOBLOCK)
        except zmq.ZMQError:
            self.count("reply-failed")

    stop_reason: Optional[str] = None

    def serve(self, poller: Any, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for frames; handle what came, at most 1000 at once
        (the caller's sampler is never starved)."""
        if not poller.poll(timeout * 1000):
            return
        for _ in range(1000):
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handle(parts)
            if self.stop_reason is not None:
                return

    def loop(self, timers: list) -> None:
        """Serve frames until ``stop_reason`` is set, and run each timer when it is due.

        ``timers``: ``[first, period, fn]`` lists; ``fn`` runs ``first`` seconds from now, then
        every ``period`` seconds (a late run is not repeated to catch up).
        """
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        now = time.monotonic()
        due = [now + first for first, _, _ in timers]
        while self.stop_reason is None:
            self.serve(poller, max(0.0, min(due) - time.monotonic()))
            now = time.monotonic()
            for i, (_, period, fn) in enumerate(timers):
                if now >= due[i]:
                    due[i] = max(due[i] + period, now)
                    fn()

    def handle(self, parts: list) -> None:
        if len(parts) != 2:
            self.count(P.ERROR_NAMES[P.E_MALFORMED])
            return
        ident, frame = parts
        try:
            kind, body = P.unpack(frame)
            handler = self.HANDLERS.get(kind)
            if handler is None:
                raise P.ProtocolError(P.E_KIND, f"unknown message kind {kind[:50]!r}")
            handler(self, ident, body)
        except P.ProtocolError as exc:
            self.count(P.ERROR_NAMES.get(exc.code, "?"))
            self.reply(ident, P.error_reply(exc.code, str(exc)))


class Monitor(RouterServer):
    def __init__(
        self,
        endpoint: str,
        output: Optional[str],
        interval: float,
        parent: Optional[int],
        system_info: bool,
        endpoint_file: Optional[str] = None,
    ) -> None:
        self.endpoint = endpoint
        self.output = output
        self.interval = interval
        self.parent = parent
        self.system_info = system_info
        self.endpoint_file = endpoint_file
        self.data = R.RunData(sample_interval=interval)
        self.counters = self.data.counters  # protocol errors and drops, into the report
        self.peers: dict[bytes, dict] = {}  # identity -> {"worker": Worker, "seqs": set}
        self.procs: dict[int, Any] = {}  # pid -> psutil.Process
        self.stop_reason: Optional[str] = None
        self.python_version: Optional[str] = None
        self.started = time.time()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, P.MAX_FRAME)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)

    # -- set-up ---------------------------------------------------------------------------
    def bind(self) -> None:
        if self.endpoint.endswith(":0") and self.endpoint.startswith("tcp://"):
            port = self.sock.bind_to_random_port(self.endpoint.rsplit(":", 1)[0])
            self.endpoint = f"{self.endpoint.rsplit(':', 1)[0]}:{port}"
        else:
            self.sock.bind(self.endpoint)
        if self.endpoint_file:
            tmp = self.endpoint_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(self.endpoint)
            os.replace(tmp, self.endpoint_file)

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()

    # -- sampling -------------------------------------------------------------------------
    def sample_one(self, w: R.Worker) -> Optional[int]:
        """One RSS sample of one process, appended to its timeline; None if unreadable."""
        import psutil

        proc = self.procs.get(w.pid)
        try:
            if proc is None:
                proc = self.procs[w.pid] = psutil.Process(w.pid)
            rss = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        w.samples_t.append(time.time())
        w.samples_rss.append(rss)
        if rss > w.sampled_peak:
            w.sampled_peak = rss
        if len(w.samples_t) > MAX_SAMPLES:
            _halve(w)
        return rss

    def sample(self) -> None:
        now = time.time()
        total = 0
        per: dict[str, int] = {}
        for peer in self.peers.values():
            w: R.Worker = peer["worker"]
            if w.left is not None or w.pid <= 0:
                continue
            rss = self.sample_one(w)
            if rss is None:
                continue
            total += rss
            per[w.wid] = rss
        cp = self.data.concurrent_peak
        if per and (cp is None or total > cp[1]):
            self.data.concurrent_peak = (now, total, per)

    # -- messages -------------------------------------------------------------------------
    def on_hello(self, ident: bytes, body: Any) -> None:
        pid, wid, methods = parse_hello(body)
        if isinstance(body.get("python"), str):
            self.python_version = body["python"]
        w = R.Worker(wid=wid, pid=pid, joined=time.time(), boundary_methods=methods)
        if body.get("role") == "controller":
            w.pid = -pid  # the controller runs no tests: never sampled, not in the report
        else:
            self.data.workers[wid] = w
        self.peers[ident] = {"worker": w, "seqs": set(), "role": body.get("role")}
        self.reply(ident, P.pack(P.READY, {"monitor_pid": os.getpid()}))  # the first test waits
        if w.pid > 0:
            self.sample_one(w)  # a first sample, as the process's first test begins

    def on_batch(self, ident: bytes, body: Any) -> None:
        peer = self.peers.get(ident)
        if peer is None:
            raise P.ProtocolError(P.E_UNKNOWN_PEER, "batch before hello")
        if not isinstance(body, list) or len(body) != 2 or not isinstance(body[1], list):
            raise P.ProtocolError(P.E_FIELD, "batch body is not [seq, records]")
        seq, records = body
        if not isinstance(seq, int) or seq in peer["seqs"]:
            self.count("duplicate-batch")
            return
        peer["seqs"].add(seq)
        out = peer["worker"].records
        bad = 0
        for rec in records:
            try:
                out.append(P.check_record(rec))
            except P.ProtocolError:
                bad += 1
        if bad:
            self.count("records-rejected", bad)

    def on_crash(self, ident: bytes, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("nodeid"), (str, bytes)):
            raise P.ProtocolError(P.E_FIELD, "crash needs a nodeid")
        nodeid = body["nodeid"]
        if isinstance(nodeid, bytes):
            nodeid = nodeid.decode("utf-8", "backslashreplace")
        t = body.get("time")
        start = body.get("start")
        self.data.crashed.append(
            {
                "nodeid": nodeid,
                "worker": body.get("worker"),
                "time": t if isinstance(t, (int, float)) else time.time(),
                "start": start if isinstance(start, (int, float)) else None,
            }
        )
        w = self.data.workers.get(body.get("worker"))
        if w is None:
            return
        if w.left is None:
            w.left = time.time()
        # Tests the worker finished but never sent, as the controller saw them.
        recent = body.get("recent")
        if isinstance(recent, list):
            have = {r[0] for r in w.records}
            for rec in recent:
                try:
                    rec = P.check_record(rec)
                except P.ProtocolError:
                    self.count("records-rejected")
                    continue
                if rec[0] not in have:
                    w.records.append(rec)

    def on_bye(self, ident: bytes, body: Any) -> None:
        peer = self.peers.get(ident)
        if peer is None:
            raise P.ProtocolError(P.E_UNKNOWN_PEER, "bye before hello")
        sent = body.get("sent") if isinstance(body, dict) else None
        if not isinstance(sent, int) or sent < 0 or sent > 10**9:
            raise P.ProtocolError(P.E_FIELD, "bye needs an int 'sent'")
        missing = [s for s in range(sent) if s not in peer["seqs"]]
        if not missing:
            peer["worker"].left = time.time()
        self.reply(ident, P.pack(P.ACK, {"missing": missing[:10000]}))

    def on_finish(self, ident: bytes, body: Any) -> None:
        if not isinstance(body, dict):
            raise P.ProtocolError(P.E_FIELD, "finish needs a dict")
        ok, error, saved_to = self.write(body)
        reply = {"ok": ok, "path": self.output, "error": error, "saved_to": saved_to}
        self.reply(ident, P.pack(P.DONE, reply))
        self.stop_reason = "finished"

    HANDLERS = {
        P.HELLO: on_hello,
        P.BATCH: on_batch,
        P.CRASH: on_crash,
        P.BYE: on_bye,
        P.FINISH: on_finish,
    }

    # -- the report -----------------------------------------------------------------------
    def write(self, session: dict) -> tuple[bool, Optional[str], Optional[str]]:
        """Build and write the report: (ok, error, path it was saved to instead)."""
        for k in ("records_dropped",):
            if isinstance(session.get(k), int):
                self.data.records_dropped += session[k]
        warnings = session.get("warnings")
        if isinstance(warnings, list):
            self.data.warnings.extend(str(w) for w in warnings)
        system = R.system_info(self.python_version) if self.system_info else None
        try:
            rep = R.build(self.data, session, system)
        except Exception as exc:  # a report must never take the monitor down silently
            return False, f"cannot build the report: {type(exc).__name__}: {exc}", None
        if not self.output:
            return False, "no output path given", R.save_elsewhere(rep)
        try:
            R.write_atomic(rep, self.output)
        except OSError as exc:
            saved = R.save_elsewhere(rep)
            where = f"; saved to {saved} instead" if saved else ""
            return False, f"cannot write {self.output}: {exc.strerror or exc}{where}", saved
        return True, None, None

    # -- main loop ------------------------------------------------------------------------
    def parent_alive(self) -> bool:
        if self.parent is None:
            return True
        if os.name == "posix":
            return os.getppid() == self.parent
        import psutil

        return psutil.pid_exists(self.parent)

    def check_parent(self) -> None:
        if not self.parent_alive():
            self.stop_reason = "parent-gone"

    def run(self) -> int:
        self.loop(
            [[0.0, self.interval, self.sample], [PARENT_CHECK, PARENT_CHECK, self.check_parent]]
        )
        if self.stop_reason != "finished":
            self.data.warnings.append(f"session aborted: {self.stop_reason}")
            self.write({"start": self.started, "stop": time.time(), "aborted": True})
        return 0


def parse_hello(body: Any) -> tuple[int, str, dict]:
    """Check a hello body: (pid, worker id, boundary methods); ProtocolError if off-protocol.

    The pid must be a live process of the user running this monitor (E_PID otherwise).
    """
    if not isinstance(body, dict) or not isinstance(body.get("pid"), int):
        raise P.ProtocolError(P.E_FIELD, "hello needs a dict with an int pid")
    pid = body["pid"]
    wid = body.get("worker") or "main"
    if not isinstance(wid, str) or len(wid) > 200:
        raise P.ProtocolError(P.E_FIELD, "worker is not a short string")
    if isinstance(pid, bool) or not 0 < pid < 2**31 or not _own_process(pid):
        raise P.ProtocolError(P.E_PID, f"pid {pid} is not a process of this user")
    methods = body.get("methods") if isinstance(body.get("methods"), dict) else {}
    return pid, wid, methods


def _halve(w: R.Worker) -> None:
    """Halve a worker's timeline, keeping the larger sample of each pair (peaks survive)."""
    ts, rs = w.samples_t, w.samples_rss
    nt, nr = [], []
    for i in range(0, len(ts) - 1, 2):
        j = i if rs[i] >= rs[i + 1] else i + 1
        nt.append(ts[j])
        nr.append(rs[j])
    if len(ts) % 2:
        nt.append(ts[-1])
        nr.append(rs[-1])
    w.samples_t, w.samples_rss = nt, nr


def _own_process(pid: int) -> bool:
    if os.path.isdir("/proc/self"):  # Linux: no need to import psutil for this
        try:
            return os.stat(f"/proc/{pid}").st_uid == os.getuid()
        except OSError:
            return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if os.name == "posix":
            return proc.uids().real == os.getuid()
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def positive(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="perfmon-monitor",
        description="The pytest-perfmon monitor process (spawned by pytest --perf-monitor).",
    )
    ap.add_argument("--endpoint", required=True, help="ZeroMQ endpoint to bind (ipc:// or tcp://)")
    ap.add_argument("--output", help="where to write the JSON report")
    ap.add_argument("--interval", type=positive, default=0.1, help="sampling interval, seconds")
    ap.add_argument("--parent", type=int, help="exit when this parent process is gone")
    ap.add_argument("--endpoint-file", help="write the bound endpoint here once bound")
    ap.add_argument("--no-system-info", action="store_true", help="leave the system block out")
    args = ap.parse_args(argv)

    if args.parent is not None:
        _die_with_parent()
        if os.name == "posix" and os.getppid() != args.parent:
            return 0  # parent already gone
    mon = Monitor(
        args.endpoint,
        args.output,
        args.interval,
        args.parent,
        not args.no_system_info,
        args.endpoint_file,
    )
    try:
        mon.bind()
    except (zmq.ZMQError, OSError) as exc:
        print(f"perfmon-monitor: cannot bind {args.endpoint}: {exc}", file=sys.stderr)
        mon.close()
        return 2
    signal.signal(signal.SIGTERM, lambda s, f: setattr(mon, "stop_reason", "signal"))
    if args.parent is not None and hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is pytest's to handle
    else:
        signal.signal(signal.SIGINT, lambda s, f: setattr(mon, "stop_reason", "signal"))
    try:
        return mon.run()
    finally:
        mon.close()


if __name__ == "__main__":
    sys.exit(main())
