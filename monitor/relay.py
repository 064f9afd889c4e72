"""The relay: the monitor of a remote host's xdist workers.

An xdist worker on another host than its controller (another machine, or another PID namespace:
monitor/host.py) cannot be sampled by the controller's monitor, which knows pids of its own host
only. Its plugin starts this process on its own host instead (through monitor/launch.py, outside
the worker's process family), in a private directory named for the session; every worker of
that session on this host shares it. Each worker connects to the relay's ``ipc://`` socket as it
would to a monitor; the relay opens, for each, a DEALER to the controller's collector over TCP
with CURVE (the session's keys, from the directory's ``upstream.json``, 0600) and forwards every
frame both ways: the collector answers the worker itself (``ready``, ``ack``). It samples its
workers with psutil exactly as the monitor does (RSS, descendants, noise counters) and sends the
samples, with this host's system block and concurrent peak, on each worker's connection
(``samples``).

It ends with its workers: when every worker it served has said goodbye (or died), or when none
came within ``IDLE_START``; then it removes its directory. Nothing is left on the host. When it
cannot reach the collector within ``UPSTREAM_GRACE`` (or ``PERFMON_RELAY_GRACE`` seconds; a
firewall, NAT), it answers the worker's hello with an error saying so: the worker then hands its
records back through xdist's ``workeroutput``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import struct
import sys
import time
from typing import Any, Optional

import zmq

from . import protocol, sampler, server
from . import report as report_model

#: The prefix of a relay's directory (in the temporary directory).
DIR_PREFIX = "perfmon-relay-"
#: The collector must complete the CURVE handshake within this long, else the worker is told.
UPSTREAM_GRACE = 5.0
#: Another grace, in seconds, from the relay's environment (the remote workers'): longer for a
#: slow link, shorter where the collector is known to be out of reach.
GRACE_ENV = "PERFMON_RELAY_GRACE"
#: No worker said hello within this long: the relay ends.
IDLE_START = 60.0
#: After the last worker left: forward the last answers for this long, then end.
LINGER = 0.5
#: Every connection to the collector lost this long (the controller and its monitor gone, and
#: no replacement): the relay ends, its workers' records are theirs to hand back.
UPSTREAM_LOST = 30.0
#: Samples go upstream this often.
FLUSH_SECONDS = 0.4
LIFE_CHECK = 0.25

_UP_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


def directory(session: str) -> str:
    """The relay directory of one session for this user (a short path: an ipc socket's)."""
    import tempfile

    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"{DIR_PREFIX}{uid}-{session}")


def grace_problem(environ: Any) -> Optional[str]:
    """What is wrong with ``GRACE_ENV`` in ``environ`` (set, but not a positive number of
    seconds: the relay waits ``UPSTREAM_GRACE`` instead), in words; None when nothing is."""
    raw = environ.get(GRACE_ENV)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if 0 < value < float("inf"):
        return None
    return (
        f"{GRACE_ENV}={raw!r} is not a positive number of seconds; its relay waited the "
        f"default {UPSTREAM_GRACE:g} s for the collector"
    )


def upstream_grace(environ: Any) -> float:
    """The grace from ``GRACE_ENV``; ``UPSTREAM_GRACE`` when unset or not a positive number."""
    try:
        value = float(environ.get(GRACE_ENV) or UPSTREAM_GRACE)
    except ValueError:
        return UPSTREAM_GRACE
    return value if 0 < value < float("inf") else UPSTREAM_GRACE


def write_upstream(path: str, endpoint: str, keys: dict) -> None:
    """The collector's endpoint and the session's CURVE keys, for the relay only (0600)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"endpoint": endpoint, **keys}, f)
    os.replace(tmp, path)


class Upstream:
    """One worker's connection to the collector, through this relay."""

    __slots__ = (
        "sock",
        "events",
        "born",
        "up",
        "failed",
        "told",
        "worker",
        "pending",
        "acked",
        "kept",
        "lost",
    )

    def __init__(self, sock: Any, events: Any, worker: report_model.Worker) -> None:
        self.sock = sock
        self.events = events
        self.born = time.monotonic()
        self.up = False  # the CURVE handshake succeeded
        self.failed: Optional[str] = None
        self.told = False  # the worker was told the collector is out of reach
        self.worker = worker
        self.pending: dict = {"t": [], "rss": [], "ct": [], "c": [], "nt": [], "n": []}
        self.acked = False
        #: Its hello and every batch, for a collector that replaces one that died.
        self.kept: list = []
        self.lost = False  # the connection was lost after the handshake


class Relay(server.RouterServer):
    KINDS = frozenset(protocol.CLIENT_KINDS)  # forwarded, not handled here

    def __init__(self, where: str, interval: float) -> None:
        self.dir = where
        with open(os.path.join(where, "upstream.json")) as f:
            cfg = json.load(f)
        self.upstream_endpoint = str(cfg["endpoint"])
        self.keys = {k: str(cfg[k]).encode() for k in ("server", "public", "secret")}
        self.interval = interval
        self.grace = upstream_grace(os.environ)
        self.counters: dict = {}
        self.ctx = zmq.Context()
        self.sock = server.router_socket(self.ctx, protocol.MAX_FRAME, 0)
        self.up: dict[bytes, Upstream] = {}
        self.by_sock: dict[Any, bytes] = {}
        self.sampler = sampler.Sampler()
        self.peak: Optional[tuple] = None
        self.system: Optional[dict] = None
        self.started = time.monotonic()
        self.empty_since: Optional[float] = None
        self.lost_since: Optional[float] = None
        self.poller = zmq.Poller()

    # -- local side -----------------------------------------------------------------------
    def bind(self) -> str:
        path = os.path.join(self.dir, "relay.sock")
        if os.name == "posix" and zmq.has("ipc") and len(path.encode()) < 100:
            endpoint = server.bind(self.sock, "ipc://" + path)
        else:
            endpoint = server.bind(self.sock, "tcp://127.0.0.1:0")  # loopback only
        tmp = os.path.join(self.dir, "endpoint.tmp")
        with open(tmp, "w") as f:
            f.write(endpoint)
        os.replace(tmp, os.path.join(self.dir, "endpoint"))
        self.poller.register(self.sock, zmq.POLLIN)
        return endpoint

    def handle(self, parts: list) -> None:
        """Forward a worker's frame to the collector on its own connection; a hello opens it."""
        if len(parts) != 2:
            self.count(protocol.ERROR_NAMES[protocol.E_MALFORMED])
            return
        ident, frame = parts
        try:
            kind, body = protocol.unpack(frame)
        except protocol.ProtocolError as exc:
            self.reply(ident, protocol.error_reply(exc.code, str(exc)))
            return
        if kind == protocol.HELLO:
            try:
                h = protocol.parse_hello(body)
            except protocol.ProtocolError as exc:
                self.reply(ident, protocol.error_reply(exc.code, str(exc)))
                return
            self._open(ident, h)
        up = self.up.get(ident)
        if up is None:
            self.reply(
                ident, protocol.error_reply(protocol.E_UNKNOWN_PEER, f"{kind[:50]} before hello")
            )
            return
        if kind in (protocol.HELLO, protocol.BATCH):
            up.kept.append(frame)
        try:
            up.sock.send(frame, zmq.NOBLOCK)
        except zmq.ZMQError:
            self.count("forward-failed")

    def _open(self, ident: bytes, h: protocol.Hello) -> None:
        old = self.up.pop(ident, None)
        if old is not None:
            self._close_up(old)
        w = report_model.Worker(
            wid=h.worker, pid=h.pid, joined=time.time(), boundary_methods=h.methods
        )
        sock, events = self._dealer(ident)
        up = self.up[ident] = Upstream(sock, events, w)
        self.empty_since = None
        if self.system is None:
            self.system = report_model.system_info(h.python)
            up.pending["system"] = self.system  # the first worker's connection carries it
        self.sampler.sample(w, time.time())
        self._took(up, w)

    def _dealer(self, ident: bytes) -> tuple:
        """A DEALER to the collector with the session's CURVE keys, and its events."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 2000)  # the last samples and goodbyes reach the collector
        sock.setsockopt(zmq.SNDHWM, 100000)
        sock.curve_secretkey = self.keys["secret"]
        sock.curve_publickey = self.keys["public"]
        sock.curve_serverkey = self.keys["server"]
        events = sock.get_monitor_socket(_UP_EVENTS)
        sock.connect(self.upstream_endpoint)
        self.by_sock[sock] = self.by_sock[events] = ident
        self.poller.register(sock, zmq.POLLIN)
        self.poller.register(events, zmq.POLLIN)
        return sock, events

    def _reopen(self, ident: bytes, up: Upstream) -> None:
        """The collector closed the connection (its monitor died; the controller starts another
        at the same address): a fresh socket, so that nothing queued reaches the new one before
        the worker's hello, then the hello and every batch (the collector drops duplicates)."""
        self._close_up(up, linger=0)
        up.sock, up.events = self._dealer(ident)
        for frame in up.kept:
            try:
                up.sock.send(frame, zmq.NOBLOCK)
            except zmq.ZMQError:
                self.count("forward-failed")

    def _close_up(self, up: Upstream, linger: Optional[int] = None) -> None:
        for s in (up.sock, up.events):
            self.by_sock.pop(s, None)
            try:
                self.poller.unregister(s)
            except KeyError:
                pass
        try:
            up.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        up.events.close(0)
        up.sock.close(linger)

    # -- upstream side --------------------------------------------------------------------
    def _from_upstream(self, sock: Any) -> None:
        ident = self.by_sock.get(sock)
        up = self.up.get(ident) if ident is not None else None
        if up is None or ident is None:
            return
        if sock is up.events:
            self._events(up, ident)
            return
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.reply(ident, frame)
            try:
                kind, body = protocol.unpack(frame)
            except protocol.ProtocolError:
                continue
            if kind == protocol.ACK and isinstance(body, dict) and not body.get("missing"):
                up.acked = True
                up.worker.left = time.time()

    def _events(self, up: Upstream, ident: bytes) -> None:
        while up.events.poll(0):
            try:
                event = struct.unpack("=HI", up.events.recv_multipart(zmq.NOBLOCK)[0][:6])[0]
            except (zmq.ZMQError, IndexError, struct.error):
                return
            if event & zmq.EVENT_HANDSHAKE_SUCCEEDED:
                up.up = True
                up.lost = False
            elif event & zmq.EVENT_HANDSHAKE_FAILED_AUTH and not up.up:
                up.failed = "the collector refused this session's CURVE key"
            elif event & zmq.EVENT_DISCONNECTED and up.up:
                up.up = False
                up.lost = True
                if up.worker.left is None:
                    self._reopen(ident, up)
                return  # the old events socket is closed
        if up.failed and not up.told:
            self._tell_unreachable(ident, up)

    def _tell_unreachable(self, ident: bytes, up: Upstream) -> None:
        up.told = True
        why = up.failed or f"no CURVE handshake within {self.grace:g} s"
        self.reply(
            ident,
            protocol.error_reply(
                protocol.E_SESSION,
                f"the relay cannot reach the collector at {self.upstream_endpoint} ({why})",
            ),
        )
        up.worker.left = time.time()  # it measures on its own now; nothing to sample for it

    # -- sampling -------------------------------------------------------------------------
    def sample(self) -> None:
        now = time.time()
        ups = [u for u in self.up.values() if u.worker.left is None]
        total, per = self.sampler.sample_group((u.worker for u in ups), now)
        if per:
            self.peak = sampler.higher_peak(self.peak, now, total, per)
        for u in ups:
            w = u.worker
            if w.wid not in per:
                if not sampler.own_process(w.pid):
                    w.left = now  # it died: nothing more to sample
                continue
            self._took(u, w)

    def _took(self, u: Upstream, w: report_model.Worker) -> None:
        """Queue the worker's latest sample (RSS, descendants, noise) for the collector."""
        if not w.samples_t:
            return
        p = u.pending
        now = w.samples_t[-1]
        p["t"].append(now)
        p["rss"].append(w.samples_rss[-1])
        if w.child_t and w.child_t[-1] == now:
            p["ct"].append(now)
            p["c"].append(sampler.child_sample_out(w.child_s[-1]))
        if w.noise_t and w.noise_t[-1] == now:
            p["nt"].append(now)
            p["n"].append(list(w.noise_v[-1]))
            p["how"] = w.noise_how

    def flush(self) -> None:
        """Send each worker's queued samples on its connection, with this host's peak."""
        peak = list(self.peak) if self.peak is not None else None
        for u in self.up.values():
            if not u.up or not (u.pending["t"] or "system" in u.pending):
                continue
            body = {**u.pending, "peak": peak}
            try:
                u.sock.send(protocol.pack(protocol.SAMPLES, body), zmq.NOBLOCK)
            except zmq.ZMQError:
                self.count("samples-dropped")
                continue
            u.pending = {"t": [], "rss": [], "ct": [], "c": [], "nt": [], "n": []}

    # -- life -----------------------------------------------------------------------------
    def check_life(self) -> None:
        mono = time.monotonic()
        for ident, u in self.up.items():
            if not u.up and not u.lost and not u.told and mono - u.born > self.grace:
                self._tell_unreachable(ident, u)
        if not self.up:
            if mono - self.started > IDLE_START:
                self.stop_reason = "idle"
            return
        if all(u.lost for u in self.up.values()):
            if self.lost_since is None:
                self.lost_since = mono
            elif mono - self.lost_since > UPSTREAM_LOST:
                self.stop_reason = "collector-gone"
        else:
            self.lost_since = None
        if all(u.worker.left is not None for u in self.up.values()):
            if self.empty_since is None:
                self.empty_since = mono
            elif mono - self.empty_since > LINGER:
                self.stop_reason = "workers-gone"
        else:
            self.empty_since = None

    def on_signal(self, signum: int, frame: Any) -> None:
        self.stop_reason = "signal"

    def run(self) -> None:
        due = {self.sample: 0.0, self.flush: FLUSH_SECONDS, self.check_life: LIFE_CHECK}
        period = {
            self.sample: self.interval,
            self.flush: FLUSH_SECONDS,
            self.check_life: LIFE_CHECK,
        }
        start = time.monotonic()
        due = {fn: start + d for fn, d in due.items()}
        while self.stop_reason is None:
            timeout = max(0.0, min(due.values()) - time.monotonic())
            for sock, _ in self.poller.poll(server.wait_ms(timeout)):
                if sock is self.sock:
                    self.handle_queued(until_stop=False)
                else:
                    self._from_upstream(sock)
            now = time.monotonic()
            for fn in list(due):
                if now >= due[fn]:
                    due[fn] = max(due[fn] + period[fn], now)
                    try:
                        fn()
                    except Exception as exc:  # a bug: counted, the relay goes on
                        self.count(protocol.ERROR_NAMES[protocol.E_INTERNAL])
                        print(f"perfmon-relay: {exc!r}", file=sys.stderr)
        self.sample()
        self.flush()

    def close(self) -> None:
        for u in list(self.up.values()):
            # Frames queued for a collector never reached (the worker was told) or lost (a
            # replacement hears a fresh connection's hello first) cannot arrive: no LINGER.
            self._close_up(u, 0 if u.told or u.lost else None)
        self.sock.close(0)
        self.ctx.term()  # waits (LINGER) for the last frames to go upstream
        if os.path.basename(self.dir).startswith(DIR_PREFIX):
            shutil.rmtree(self.dir, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="perfmon-relay", description=__doc__.split("\n")[0])
    ap.add_argument("--relay", required=True, help="the relay's private directory")
    ap.add_argument("--interval", type=server.interval, default=0.1, help="sampling interval, s")
    return ap


def main(argv: Optional[list] = None) -> int:
    args = parser().parse_args(argv)
    try:
        relay = Relay(args.relay, args.interval)
        relay.bind()
    except (OSError, ValueError, KeyError, zmq.ZMQError) as exc:
        print(f"perfmon-relay: cannot start in {args.relay}: {exc}", file=sys.stderr)
        shutil.rmtree(args.relay, ignore_errors=True)
        return 2
    signal.signal(signal.SIGTERM, relay.on_signal)
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is pytest's to handle
    try:
        relay.run()
    finally:
        relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
