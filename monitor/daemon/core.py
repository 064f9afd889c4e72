"""The daemon's server: the ROUTER socket, its message handlers, the main loop, shutdown."""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import zmq

from .. import __version__, protocol, sampler, server
from ..deliver import Delivered
from ..journal import Journal
from . import curve, metrics
from .book import SessionBook
from .client import answers
from .common import DaemonError, log, mb
from .session import Session
from .status import status

#: How often owners are checked, the live snapshot refreshed, pending samples journaled.
HOUSEKEEPING = 0.5
SAMPLES_TO_JOURNAL = 2.0


class Peer:
    __slots__ = ("session", "wid", "seqs")

    def __init__(self, session: Session, wid: Optional[str]) -> None:
        self.session = session
        self.wid = wid  # None for an xdist controller, which runs no tests
        self.seqs: set = set()


class Daemon(server.RouterServer):
    def __init__(
        self,
        endpoint: str,
        output: str,
        journal: str,
        interval: float = 0.1,
        system_info: bool = True,
        keep_journal: bool = False,
    ) -> None:
        self.peers: dict[bytes, Peer] = {}
        self.counters: dict = {}  # protocol errors and drops not tied to a session
        self.endpoint = endpoint
        self.output = output
        self.journal_path = journal
        self.keep_journal = keep_journal
        self.interval = interval
        self.stop_reason: Optional[str] = None
        self.started = time.time()
        self.metrics_url: Optional[str] = None
        self.snapshot: dict = {}
        self.auth: Any = None
        self.http: Any = None
        self.bound_path: Optional[str] = None  # our ipc socket file, removed by close()
        self.book = SessionBook(Journal(journal), output, interval, system_info, self.counters)
        self.ctx = zmq.Context()
        self.sock = server.router_socket(self.ctx, protocol.HARD_MAX_FRAME, 100000)

    @property
    def sessions(self) -> dict:
        return self.book.sessions

    # -- set-up ---------------------------------------------------------------------------
    def use_curve(self, secret_file: str, clients_dir: str) -> None:
        self.auth = curve.serve(self.ctx, self.sock, secret_file, clients_dir)

    def bind(self) -> None:
        path = server.ipc_path(self.endpoint)
        if path and os.path.exists(path):
            if answers(self.endpoint):
                raise DaemonError(f"a perfmon-daemon already runs at {self.endpoint}")
            os.unlink(path)  # a stale socket left by a daemon that was killed
        self.endpoint = server.bind(self.sock, self.endpoint)
        self.bound_path = path

    def serve_metrics(self, host: str, port: int) -> None:
        self.http, self.metrics_url = metrics.serve(lambda: self.snapshot, host, port)

    def close(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        self.sock.close(0)
        self.ctx.term()
        self.book.journal.close()
        if self.bound_path is not None:
            try:
                os.unlink(self.bound_path)
            except OSError:
                pass
            self.bound_path = None

    def on_internal(self, kind: str, exc: BaseException) -> None:
        log.error("internal error on %s: %s: %s", kind, type(exc).__name__, exc)

    # -- messages -------------------------------------------------------------------------
    def _peer(self, ident: bytes, what: str) -> Peer:
        peer = self.peers.get(ident)
        if peer is None:
            raise protocol.ProtocolError(protocol.E_UNKNOWN_PEER, f"{what} before hello")
        if peer.session.state != "running":
            raise protocol.ProtocolError(
                protocol.E_SESSION, f"{what} for session {peer.session.label}, closed"
            )
        return peer

    def on_hello(self, ident: bytes, body: Any) -> None:
        h = protocol.parse_hello(body)
        if h.session is None:
            raise protocol.ProtocolError(protocol.E_FIELD, "hello to a daemon needs a 'session' id")
        if not 0 < h.pid < 2**31 or not sampler.own_process(h.pid):
            raise protocol.ProtocolError(
                protocol.E_PID, f"pid {h.pid} is not a process of this user"
            )
        ctime = None
        if h.role != "worker":
            ctime = sampler.create_time(h.pid)
            if ctime is None:
                raise protocol.ProtocolError(protocol.E_PID, f"pid {h.pid} is gone")
        s = self.book.get(h.session)
        if s is None:
            s = self.book.open(h.session)
            log.info("session %s joined (pid %d, %s)", s.label, h.pid, h.role)
        elif s.state != "running":
            raise protocol.ProtocolError(protocol.E_SESSION, f"session {s.label} is closed")
        entry = {
            "k": "hello",
            "s": s.sid,
            "w": h.worker,
            "p": h.pid,
            "r": h.role,
            "t": time.time(),
            "m": h.methods,
            "py": h.python,
            "ct": ctime,
            "si": h.system_info,
        }
        self.book.record(s, entry)
        self.peers[ident] = Peer(s, None if h.role == "controller" else h.worker)
        self.reply(
            ident, protocol.pack(protocol.READY, {"monitor_pid": os.getpid(), "session": s.sid})
        )

    def on_batch(self, ident: bytes, body: Any) -> None:
        peer = self._peer(ident, "batch")
        b = protocol.parse_batch(body)
        if peer.wid is None:
            raise protocol.ProtocolError(protocol.E_FIELD, "a controller runs no tests")
        if b.seq in peer.seqs:
            self.count("duplicate-batch")
            return
        peer.seqs.add(b.seq)
        s = peer.session
        if b.records:
            self.book.record(s, {"k": "batch", "s": s.sid, "w": peer.wid, "r": b.records})
        if b.rejected:
            self.book.record(s, {"k": "rejected", "s": s.sid, "n": b.rejected})

    def on_crash(self, ident: bytes, body: Any) -> None:
        s = self._peer(ident, "crash").session
        c = protocol.parse_crash(body)
        if c.rejected:
            self.book.record(s, {"k": "rejected", "s": s.sid, "n": c.rejected})
        crash = {**c.entry(time.time()), "recent": c.recent}
        self.book.record(s, {"k": "crash", "s": s.sid, "c": crash})

    def on_bye(self, ident: bytes, body: Any) -> None:
        peer = self._peer(ident, "bye")
        sent = protocol.parse_bye(body).sent
        missing = server.missing(peer.seqs, sent)
        if not missing and peer.wid is not None:
            s = peer.session
            self.book.record(s, {"k": "left", "s": s.sid, "w": peer.wid, "t": time.time()})
        self.reply(ident, protocol.pack(protocol.ACK, {"missing": missing}))

    def on_finish(self, ident: bytes, body: Any) -> None:
        s = self._peer(ident, "finish").session
        f = protocol.parse_finish(body)
        if f.session not in (None, s.sid):
            raise protocol.ProtocolError(protocol.E_FIELD, "finish for another session")
        info = {k: v for k, v in f._asdict().items() if v is not None and k != "session"}
        self.book.journal_samples(s)
        self.book.record(s, {"k": "finish", "s": s.sid, "i": info})
        done = self.close_session(s, "finished")
        self.reply(ident, protocol.pack(protocol.DONE, done.done()))

    def on_status(self, ident: bytes, body: Any) -> None:
        protocol.parse_status(body)
        self.reply(ident, protocol.pack(protocol.STATUS_REPLY, self.status()))

    def on_stop(self, ident: bytes, body: Any) -> None:
        protocol.parse_stop(body)
        self.reply(ident, protocol.pack(protocol.STOPPING, {"pid": os.getpid()}))
        self.stop_reason = "stop command"

    KINDS = frozenset(protocol.CLIENT_KINDS)

    def close_session(self, s: Session, state: str, reason: Optional[str] = None) -> Delivered:
        for peer in self.peers.values():  # kept, small, to answer late messages E_SESSION
            if peer.session is s:
                peer.seqs = set()
        return self.book.close_session(s, state, reason)

    # -- live view ------------------------------------------------------------------------
    def status(self) -> dict:
        own = {
            "pid": os.getpid(),
            "version": __version__,
            "endpoint": self.endpoint,
            "output": self.output,
            "journal": self.journal_path,
            "metrics": self.metrics_url,
            "uptime": round(time.time() - self.started, 3),
            "rss_mb": mb(sampler.own_rss()),
            "interval": self.interval,
        }
        return status(self.sessions.values(), self.counters, own)

    # -- main loop ------------------------------------------------------------------------
    def housekeeping(self) -> None:
        self.book.check_owners()
        self.snapshot = self.status()

    def run(self) -> int:
        self.loop(
            [
                [0.0, self.interval, self.book.sample],
                [0.0, HOUSEKEEPING, self.housekeeping],
                [SAMPLES_TO_JOURNAL, SAMPLES_TO_JOURNAL, self.book.journal_all_samples],
            ]
        )
        return self.shutdown()

    def shutdown(self) -> int:
        log.info("stopping (%s)", self.stop_reason)
        self.book.close_all(f"daemon stopped ({self.stop_reason})")
        t0 = time.perf_counter()
        try:
            self.book.write_combined()
        except Exception as exc:
            log.error("cannot write the combined report %s: %s", self.output, exc)
            log.error("the journal %s is kept: perfmon-daemon rebuild can retry", self.journal_path)
            return 1
        tests = sum(s.tests for s in self.sessions.values())
        log.info(
            "combined report %s: %d sessions, %d tests (written in %.2f s)",
            self.output,
            len(self.sessions),
            tests,
            time.perf_counter() - t0,
        )
        if not self.keep_journal and self.book.journal_ok:
            self.book.journal.close()
            try:
                os.unlink(self.journal_path)
            except OSError:
                pass
        return 0
