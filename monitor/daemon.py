"""perfmon-daemon: one long-running monitor that many pytest sessions report into.

    perfmon-daemon --endpoint ENDPOINT --output combined.json      # runs in the foreground
    pytest --perf-monitor --perf-daemon ENDPOINT                     # or PERFMON_DAEMON=ENDPOINT
    perfmon-daemon status --endpoint ENDPOINT                       # live view
    perfmon-daemon stop --endpoint ENDPOINT                         # or SIGTERM / SIGINT
    perfmon-daemon rebuild --journal combined.json.journal --output combined.json

Sessions are keyed by the ``session`` id of their hello (an xdist controller and its workers share
one). Every accepted message is appended to the journal (pytest_perfmon.monitor.journal) before it is applied,
so the combined report can be rebuilt after the daemon dies. A finished session's records are
dropped from memory once its own report is written: the combined report reads them back from the
journal, one session at a time, so the daemon's memory does not grow with the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Any, Callable, Optional

import psutil
import zmq

from . import __version__
from . import protocol as P
from . import report as R
from .journal import Journal, scan
from .monitor import MAX_SAMPLES, RouterServer, _halve, parse_hello, positive

PROG = "perfmon-daemon"
#: How often owners are checked, the live snapshot refreshed, pending samples journaled.
HOUSEKEEPING = 0.5
SAMPLES_TO_JOURNAL = 2.0
#: Finished sessions listed by ``status`` (the newest); running ones are always listed.
STATUS_FINISHED = 20
REQUEST_TIMEOUT = 5.0
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_SESSION_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class DaemonError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


def log(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _mb(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v / R.MB, 3)


# --- one pytest session ----------------------------------------------------------------------


class Session:
    """What the daemon knows about one pytest session; rebuilt entry by entry from the journal."""

    def __init__(self, sid: str, label: str, interval: float) -> None:
        self.sid = sid
        self.label = label
        self.data: Optional[R.RunData] = R.RunData(sample_interval=interval)
        self.state = "running"  # finished | aborted
        self.reason: Optional[str] = None
        self.owner_pid: Optional[int] = None
        self.owner_ctime: Optional[float] = None
        self.python: Optional[str] = None
        self.info: Optional[dict] = None  # the finish body
        self.started: Optional[float] = None
        self.stopped: Optional[float] = None
        self.last_time: Optional[float] = None  # latest time seen in any entry (for rebuild)
        self.offsets: list = []  # journal offsets of every entry of this session
        self.spilled = False  # records and samples dropped from memory (they are in the journal)
        self.tests = 0
        self.rejected = 0
        self.crashes = 0
        self.last: dict = {}  # wid -> [nodeid, stop] of the last record received
        self.counts: dict = {}  # wid -> tests
        self.pids: dict = {}  # wid -> pid
        self.pending: dict = {}  # wid -> ([t], [rss]) sampled, not yet journaled
        self.report_path: Optional[str] = None
        self.report_error: Optional[str] = None

    def _seen(self, t: Any) -> None:
        if isinstance(t, (int, float)) and (self.last_time is None or t > self.last_time):
            self.last_time = t

    def apply(self, e: dict) -> None:
        k = e.get("k")
        data = self.data
        if data is None:
            return
        if k == "hello":
            t = e["t"]
            self._seen(t)
            if self.started is None or t < self.started:
                self.started = t
            if e.get("py"):
                self.python = e["py"]
            role, pid = e.get("r"), e["p"]
            if role in ("local", "controller"):
                self.owner_pid, self.owner_ctime = pid, e.get("ct")
            if role != "controller":
                wid = e["w"]
                w = data.workers.get(wid)
                if w is None:
                    w = R.Worker(wid=wid, pid=pid, joined=t, boundary_methods=e.get("m") or {})
                    data.workers[wid] = w
                else:  # the same worker id again (a reconnect): keep what it measured
                    w.pid, w.left = pid, None
                self.pids[wid] = pid
                self.counts.setdefault(wid, 0)
        elif k == "batch":
            w = data.workers.get(e["w"])
            recs = e["r"]
            if w is None or not recs:
                return
            w.records.extend(recs)
            self.tests += len(recs)
            self.counts[w.wid] = self.counts.get(w.wid, 0) + len(recs)
            self.last[w.wid] = [recs[-1][0], recs[-1][2]]
            self._seen(recs[-1][2])
        elif k == "samples":
            for wid, (ts, vs) in e["d"].items():
                w = data.workers.get(wid)
                if w is None or not ts:
                    continue
                w.samples_t.extend(ts)
                w.samples_rss.extend(vs)
                w.sampled_peak = max(w.sampled_peak, max(vs))
                while len(w.samples_t) > MAX_SAMPLES:
                    _halve(w)
                self._seen(ts[-1])
            cp = e.get("cp")
            if cp and (data.concurrent_peak is None or cp[1] > data.concurrent_peak[1]):
                data.concurrent_peak = (cp[0], cp[1], cp[2])
        elif k == "rejected":
            self.rejected += e["n"]
            data.counters["records-rejected"] = data.counters.get("records-rejected", 0) + e["n"]
        elif k == "crash":
            self._apply_crash(e["c"])
        elif k == "left":
            w = data.workers.get(e["w"])
            if w is not None and w.left is None:
                w.left = e["t"]
        elif k == "finish":
            self.info = e["i"]
        elif k == "end":
            self.state, self.stopped, self.reason = e["state"], e["t"], e.get("reason")
            for w in data.workers.values():
                if w.left is None:
                    w.left = e["t"]

    def _apply_crash(self, c: dict) -> None:
        data = self.data
        assert data is not None
        self.crashes += 1
        recent = c.pop("recent", None) or []
        data.crashed.append(c)
        self._seen(c["time"])
        w = data.workers.get(c.get("worker"))
        if w is None:
            return
        if w.left is None:
            w.left = c["time"]
        have = {r[0] for r in w.records}
        for rec in recent:
            if rec[0] not in have:
                w.records.append(rec)
                self.tests += 1

    def spill(self) -> None:
        """Drop records and samples from memory: from now on they live in the journal only."""
        self.data = None
        self.pending = {}
        self.spilled = True

    def start_stop(self) -> tuple[float, float]:
        info = self.info or {}
        start = info.get("start") if self.state == "finished" else None
        stop = info.get("stop") if self.state == "finished" else None
        start = start or self.started or time.time()
        stop = stop or self.stopped or self.last_time or time.time()
        return start, stop


def _label(sid: str, taken: set) -> str:
    for n in (8, 12, 16, 24, 64):
        label = sid[:n]
        if label not in taken:
            return label
    return sid  # pragma: no cover - ids are unique keys


def replay(journal: Journal, s: Session, interval: float) -> Session:
    """A full copy of session ``s`` read back from the journal (for a spilled session)."""
    fresh = Session(s.sid, s.label, interval)
    for off in s.offsets:
        fresh.apply(journal.read_at(off))
    fresh.state, fresh.stopped, fresh.reason = s.state, s.stopped, s.reason
    return fresh


def session_report(s: Session, system_default: bool) -> dict:
    """The session's own report (schema of pytest_perfmon.monitor.report), from a session that holds data."""
    data = s.data
    assert data is not None
    info = dict(s.info or {})
    start, stop = s.start_stop()
    info["start"], info["stop"] = start, stop
    warnings = [str(w) for w in info.get("warnings") or []]
    if s.state != "finished":
        info["aborted"] = True
        info["exit_status"] = None
        warnings.append(f"session aborted: {s.reason or 'unknown'}")
    data.warnings = warnings
    dropped = info.get("records_dropped")
    data.records_dropped = dropped if isinstance(dropped, int) and dropped >= 0 else 0
    want_system = info.get("system_info")
    if not isinstance(want_system, bool):
        want_system = system_default
    system = R.system_info(s.python) if want_system else None
    return R.build(data, info, system)


def aborted_path(combined: str, label: str) -> str:
    stem = combined[:-5] if combined.endswith(".json") else combined
    return f"{stem}.session-{label}.json"


def check_report_path(path: Any) -> str:
    """A client-supplied report path: absolute, in an existing directory, not a special file."""
    if not isinstance(path, str) or not path or "\0" in path or not os.path.isabs(path):
        raise ValueError("the report path is not an absolute path")
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"directory {os.path.dirname(path)} does not exist")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} exists and is not a regular file")
    return path


def write_report(rep: dict, path: Any) -> tuple[bool, Optional[str], Optional[str]]:
    """(ok, error, saved_to): like the spawned monitor, save elsewhere rather than lose it."""
    try:
        R.write_atomic(rep, check_report_path(path))
        return True, None, None
    except (OSError, ValueError) as exc:
        msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        saved = R.save_elsewhere(rep)
        where = f"; saved to {saved} instead" if saved else ""
        return False, f"cannot write {path}: {msg}{where}", saved


# --- the combined report ---------------------------------------------------------------------


class _Summary:
    def __init__(self) -> None:
        self.total = 0.0
        self.n = 0
        self.max: Optional[float] = None
        self.min: Optional[float] = None
        self.dsum = 0.0
        self.dn = 0
        self.dmax: Optional[float] = None
        self.outcomes: dict = {}

    def add(self, t: dict) -> None:
        d = t["duration"]
        if d is not None:
            self.total += d
            self.n += 1
            self.max = d if self.max is None else max(self.max, d)
            self.min = d if self.min is None else min(self.min, d)
        delta = t["memory"]["delta_mb"]
        if delta is not None:
            self.dsum += delta
            self.dn += 1
            self.dmax = delta if self.dmax is None else max(self.dmax, delta)
        self.outcomes[t["outcome"]] = self.outcomes.get(t["outcome"], 0) + 1

    def block(self) -> dict:
        return {
            "total_duration": round(self.total, 6),
            "avg_duration": round(self.total / self.n, 6) if self.n else 0.0,
            "max_duration": round(self.max or 0.0, 6),
            "min_duration": round(self.min or 0.0, 6),
            "avg_memory_delta_mb": round(self.dsum / self.dn, 3) if self.dn else 0.0,
            "max_memory_delta_mb": round(self.dmax or 0.0, 3),
            "outcomes": self.outcomes,
            "parallel_efficiency": None,  # per session, in "sessions"
        }


def write_combined(
    path: str,
    sessions: Iterable[Session],
    build: Callable[[Session], dict],
    interval: float,
    counters: dict,
    peak: Optional[tuple],
    system: Optional[dict],
) -> None:
    """Write the combined report of ``sessions``, streaming: one session's tests at a time.

    Same schema as a session's own report, tests keyed ``LABEL::nodeid`` with a "session" field,
    workers keyed ``LABEL::wid``, plus "sessions": each session's own blocks keyed by session id.
    """
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    summary = _Summary()
    blocks: dict = {}
    workers: dict = {}
    starts, stops, statuses, versions, warnings, methods = [], [], [], set(), [], []
    errors = dict(counters)
    dropped = total = 0
    best_peak = None
    with R.atomic_text(path) as f:
        f.write(f'{{"schema_version": {R.SCHEMA_VERSION},\n"tests": {{')
        sep = "\n"
        for s in sessions:
            rep = build(s)
            for nodeid, t in rep["tests"].items():
                t["session"] = s.sid
                f.write(f"{sep}{dumps(s.label + '::' + nodeid)}: {dumps(t)}")
                sep = ",\n"
                summary.add(t)
            total += len(rep["tests"])
            for wid, wv in rep["workers"].items():
                workers[f"{s.label}::{wid}"] = wv
            sess = rep["session"]
            start, stop = s.start_stop()
            starts.append(start)
            stops.append(stop)
            statuses.append(sess["exit_status"] if s.state == "finished" else None)
            versions.add(sess["pytest_version"])
            warnings.extend(f"{s.label}: {w}" for w in sess["warnings"])
            methods.append(sess["measurement"])
            dropped += sess["records_dropped"]
            for k, v in sess["protocol_errors"].items():
                errors[k] = errors.get(k, 0) + v
            cp = rep["concurrent_memory_peak"]
            if cp is not None and (best_peak is None or cp["total_rss_mb"] > best_peak[0]):
                best_peak = (cp["total_rss_mb"], s.label, cp)
            block = {
                "label": s.label,
                "state": s.state,
                "output": s.report_path,
                "session": sess,
                "summary": rep["summary"],
                "workers": rep["workers"],
                "concurrent_memory_peak": cp,
            }
            if "system" in rep:
                block["system"] = rep["system"]
            blocks[s.sid] = block
            del rep
        f.write("\n},\n")
        if peak is not None:
            t_peak, total_rss, per = peak
            concurrent = {
                "total_rss_mb": _mb(total_rss),
                "time": R.iso(t_peak),
                "workers": {k: {"rss_mb": _mb(v), "test": None} for k, v in per.items()},
            }
        elif best_peak is not None:  # rebuilt: the largest peak of one session
            label, cp = best_peak[1], best_peak[2]
            concurrent = dict(cp)
            concurrent["workers"] = {f"{label}::{k}": v for k, v in cp["workers"].items()}
        else:
            concurrent = None
        measurement = {
            "time": R.METHOD_TIME,
            "cpu": R.METHOD_CPU,
            "memory": None,
            "memory_peak": None,
            "sample_interval": interval,
        }
        for key in ("memory", "memory_peak"):
            seen = {m[key] for m in methods}
            if len(seen) == 1:
                measurement[key] = seen.pop()
        start = min(starts) if starts else time.time()
        stop = max(stops) if stops else start
        aborted = any(b["state"] != "finished" for b in blocks.values())
        exit_status = None
        if statuses and not aborted:
            exit_status = max(statuses)
        head = {
            "duration": round(max(0.0, stop - start), 6),
            "total_tests": total,
            "timestamp": R.iso(start),
            "exit_status": exit_status,
            "aborted": aborted,
            "pytest_version": versions.pop() if len(versions) == 1 else None,
            "perfmon_version": __version__,
            "collector": "monitor",
            "measurement": measurement,
            "records_dropped": dropped,
            "collector_cpu_time": round(time.process_time(), 4),
            "protocol_errors": errors,
            "warnings": warnings,
        }
        rest: dict = {"session": head}
        if system is not None:
            rest["system"] = system
        rest.update(
            summary=summary.block(),
            workers=workers,
            concurrent_memory_peak=concurrent,
            sessions=blocks,
        )
        f.write(",\n".join(f"{dumps(k)}: {dumps(v)}" for k, v in rest.items()))
        f.write("}\n")


# --- the daemon ------------------------------------------------------------------------------


class Daemon(RouterServer):
    def __init__(
        self,
        endpoint: str,
        output: str,
        journal: str,
        interval: float = 0.1,
        system_info: bool = True,
        keep_journal: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.output = output
        self.journal_path = journal
        self.interval = interval
        self.system_info = system_info
        self.keep_journal = keep_journal
        self.sessions: dict[str, Session] = {}
        self.labels: set = set()
        self.peers: dict[bytes, dict] = {}
        self.procs: dict[int, Any] = {}
        self.counters: dict = {}  # protocol errors and drops not tied to a session
        self.peak: Optional[tuple] = None  # daemon-wide concurrent RSS peak
        self.stop_reason: Optional[str] = None
        self.started = time.time()
        self.metrics_url: Optional[str] = None
        self.snapshot: dict = {}
        self.journal_ok = True
        self.auth: Any = None
        self.http: Any = None
        self.journal = Journal(journal)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100000)
        self.sock.setsockopt(zmq.MAXMSGSIZE, P.HARD_MAX_FRAME)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)

    # -- set-up ---------------------------------------------------------------------------
    def use_curve(self, secret_file: str, clients_dir: str) -> None:
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        if not zmq.has("curve"):
            raise DaemonError("this libzmq has no CURVE support")
        if not os.path.isdir(clients_dir):
            raise DaemonError(f"--curve-client-keys: {clients_dir} is not a directory")
        try:
            public, secret = zmq.auth.load_certificate(secret_file)
        except (OSError, ValueError) as exc:
            raise DaemonError(f"--curve-secret-key: cannot load {secret_file}: {exc}") from None
        if not secret:
            raise DaemonError(f"--curve-secret-key: {secret_file} holds no secret key")
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=clients_dir)
        self.sock.curve_secretkey = secret
        self.sock.curve_publickey = public
        self.sock.curve_server = True

    def bind(self) -> None:
        ep = self.endpoint
        if ep.startswith("tcp://") and ep.endswith(":0"):
            port = self.sock.bind_to_random_port(ep.rsplit(":", 1)[0])
            self.endpoint = f"{ep.rsplit(':', 1)[0]}:{port}"
            return
        if ep.startswith("tcp://[") or ep.startswith("tcp://::1"):
            self.sock.setsockopt(zmq.IPV6, 1)
        path = ep[len("ipc://") :] if ep.startswith("ipc://") else None
        if path and os.path.exists(path):
            if _answers(ep):
                raise DaemonError(f"a perfmon-daemon already runs at {ep}")
            os.unlink(path)  # a stale socket left by a daemon that was killed
        old_umask = os.umask(0o077)  # the socket file is born private ...
        try:
            self.sock.bind(ep)
        finally:
            os.umask(old_umask)
        if path:
            os.chmod(path, 0o600)  # ... and stays so: only this user may connect

    def serve_metrics(self, host: str, port: int) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise DaemonError(
                "--metrics-port needs prometheus-client: pip install 'pytest-perfmon[daemon]'"
            ) from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Metrics(self))
        try:
            server, _thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise DaemonError(f"--metrics-port: cannot listen on {host}:{port}: {exc}") from None
        self.http = server
        shown = f"[{host}]" if ":" in host else host
        self.metrics_url = f"http://{shown}:{server.server_port}/metrics"

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
        self.journal.close()

    # -- the journal ----------------------------------------------------------------------
    def record(self, s: Session, entry: dict, apply: bool = True) -> None:
        try:
            s.offsets.append(self.journal.append(entry))
        except OSError as exc:
            if self.journal_ok:
                log(f"warning: cannot write the journal {self.journal_path}: {exc}")
            self.journal_ok = False
            self.count("journal-write-failed")
        if apply:
            s.apply(entry)

    def journal_samples(self, s: Session) -> None:
        if s.pending and s.data is not None:
            d = {wid: [ts, vs] for wid, (ts, vs) in s.pending.items()}
            cp = s.data.concurrent_peak
            self.record(s, {"k": "samples", "s": s.sid, "d": d, "cp": cp}, apply=False)
            s.pending = {}

    # -- messages -------------------------------------------------------------------------
    def _peer(self, ident: bytes, what: str) -> dict:
        peer = self.peers.get(ident)
        if peer is None:
            raise P.ProtocolError(P.E_UNKNOWN_PEER, f"{what} before hello")
        if peer["s"].state != "running":
            raise P.ProtocolError(P.E_SESSION, f"{what} for session {peer['s'].label}, closed")
        return peer

    def on_hello(self, ident: bytes, body: Any) -> None:
        pid, wid, methods = parse_hello(body)
        sid = body.get("session")
        if not isinstance(sid, str) or not _SESSION_ID.match(sid):
            raise P.ProtocolError(P.E_FIELD, "hello to a daemon needs a 'session' id")
        role = body.get("role")
        if role not in ("local", "controller", "worker"):
            raise P.ProtocolError(P.E_FIELD, "role is not local, controller or worker")
        s = self.sessions.get(sid)
        if s is None:
            s = Session(sid, _label(sid, self.labels), self.interval)
            self.labels.add(s.label)
            self.sessions[sid] = s
            log(f"session {s.label} joined (pid {pid}, {role})")
        elif s.state != "running":
            raise P.ProtocolError(P.E_SESSION, f"session {s.label} is closed")
        ctime = None
        if role != "worker":
            try:
                ctime = psutil.Process(pid).create_time()
            except psutil.Error:
                raise P.ProtocolError(P.E_PID, f"pid {pid} is gone") from None
        python = body.get("python") if isinstance(body.get("python"), str) else None
        entry = {
            "k": "hello",
            "s": sid,
            "w": wid,
            "p": pid,
            "r": role,
            "t": time.time(),
            "m": {k: bool(methods.get(k)) for k in ("rss", "peak")},
            "py": python[:50] if python else None,
            "ct": ctime,
        }
        self.record(s, entry)
        self.peers[ident] = {"s": s, "wid": None if role == "controller" else wid, "seqs": set()}
        self.reply(ident, P.pack(P.READY, {"monitor_pid": os.getpid(), "session": sid}))

    def on_batch(self, ident: bytes, body: Any) -> None:
        peer = self._peer(ident, "batch")
        if not isinstance(body, list) or len(body) != 2 or not isinstance(body[1], list):
            raise P.ProtocolError(P.E_FIELD, "batch body is not [seq, records]")
        if peer["wid"] is None:
            raise P.ProtocolError(P.E_FIELD, "a controller runs no tests")
        seq, records = body
        if not isinstance(seq, int) or seq in peer["seqs"]:
            self.count("duplicate-batch")
            return
        peer["seqs"].add(seq)
        s: Session = peer["s"]
        good, bad = [], 0
        for rec in records:
            try:
                good.append(P.check_record(rec))
            except P.ProtocolError:
                bad += 1
        if good:
            self.record(s, {"k": "batch", "s": s.sid, "w": peer["wid"], "r": good})
        if bad:
            self.record(s, {"k": "rejected", "s": s.sid, "n": bad})

    def on_crash(self, ident: bytes, body: Any) -> None:
        s: Session = self._peer(ident, "crash")["s"]
        if not isinstance(body, dict) or not isinstance(body.get("nodeid"), (str, bytes)):
            raise P.ProtocolError(P.E_FIELD, "crash needs a nodeid")
        nodeid = body["nodeid"]
        if isinstance(nodeid, bytes):
            nodeid = nodeid.decode("utf-8", "backslashreplace")
        t, start, worker = body.get("time"), body.get("start"), body.get("worker")
        recent = []
        if isinstance(body.get("recent"), list):
            for rec in body["recent"]:
                try:
                    recent.append(P.check_record(rec))
                except P.ProtocolError:
                    self.record(s, {"k": "rejected", "s": s.sid, "n": 1})
        crash = {
            "nodeid": nodeid,
            "worker": worker if isinstance(worker, str) else None,
            "time": t if P._finite(t) else time.time(),
            "start": start if P._finite(start) else None,
            "recent": recent,
        }
        self.record(s, {"k": "crash", "s": s.sid, "c": crash})

    def on_bye(self, ident: bytes, body: Any) -> None:
        peer = self._peer(ident, "bye")
        sent = body.get("sent") if isinstance(body, dict) else None
        if not isinstance(sent, int) or sent < 0 or sent > 10**9:
            raise P.ProtocolError(P.E_FIELD, "bye needs an int 'sent'")
        missing = [s for s in range(sent) if s not in peer["seqs"]]
        if not missing and peer["wid"] is not None:
            s: Session = peer["s"]
            self.record(s, {"k": "left", "s": s.sid, "w": peer["wid"], "t": time.time()})
        self.reply(ident, P.pack(P.ACK, {"missing": missing[:10000]}))

    def on_finish(self, ident: bytes, body: Any) -> None:
        s: Session = self._peer(ident, "finish")["s"]
        if not isinstance(body, dict):
            raise P.ProtocolError(P.E_FIELD, "finish needs a dict")
        if body.get("session") not in (None, s.sid):
            raise P.ProtocolError(P.E_FIELD, "finish for another session")
        info: dict = {}
        for key in ("start", "stop"):
            if P._finite(body.get(key)):
                info[key] = body[key]
        for key, types in (
            ("exit_status", int),
            ("pytest_version", str),
            ("output", str),
            ("system_info", bool),
            ("records_dropped", int),
        ):
            if isinstance(body.get(key), types):
                info[key] = body[key]
        warnings = body.get("warnings")
        if isinstance(warnings, list):
            info["warnings"] = [str(w)[:1000] for w in warnings[:100]]
        self.journal_samples(s)
        self.record(s, {"k": "finish", "s": s.sid, "i": info})
        ok, error, saved = self.close_session(s, "finished")
        reply = {"ok": ok, "path": info.get("output"), "error": error, "saved_to": saved}
        self.reply(ident, P.pack(P.DONE, reply))

    def on_status(self, ident: bytes, body: Any) -> None:
        self.reply(ident, P.pack(P.STATUS_REPLY, self.status()))

    def on_stop(self, ident: bytes, body: Any) -> None:
        self.reply(ident, P.pack(P.STOPPING, {"pid": os.getpid()}))
        self.stop_reason = "stop command"

    HANDLERS = {
        P.HELLO: on_hello,
        P.BATCH: on_batch,
        P.CRASH: on_crash,
        P.BYE: on_bye,
        P.FINISH: on_finish,
        P.STATUS: on_status,
        P.STOP: on_stop,
    }

    # -- sessions -------------------------------------------------------------------------
    def close_session(
        self, s: Session, state: str, reason: Optional[str] = None
    ) -> tuple[bool, Optional[str], Optional[str]]:
        """Close ``s``, write its own report, drop its data from memory."""
        self.journal_samples(s)
        self.record(s, {"k": "end", "s": s.sid, "state": state, "t": time.time(), "reason": reason})
        s.reason = reason
        for peer in self.peers.values():  # kept, small, to answer late messages E_SESSION
            if peer["s"] is s:
                peer["seqs"] = set()
        if state == "finished":
            path = (s.info or {}).get("output")
        else:
            path = aborted_path(self.output, s.label)
        try:
            rep = session_report(s, self.system_info)
        except Exception as exc:  # never take the daemon down for one session
            ok, error, saved = False, f"cannot build the report: {type(exc).__name__}: {exc}", None
        else:
            ok, error, saved = write_report(rep, path)
            del rep
        s.report_path = path if ok else saved
        s.report_error = error
        if self.journal_ok:
            s.spill()
        what = "finished" if state == "finished" else f"aborted ({reason})"
        where = s.report_path if ok else error
        log(f"session {s.label} {what}: {s.tests} tests; report {where}")
        return ok, error, saved

    def check_sessions(self) -> None:
        for s in list(self.sessions.values()):
            if s.state != "running" or s.data is None:
                continue
            if s.owner_pid is not None:
                alive = _alive(s.owner_pid, s.owner_ctime)
                gone = s.owner_pid
            else:  # no owner has said hello: alive while any worker is
                pids = [w.pid for w in s.data.workers.values()]
                alive = any(_alive(p, None) for p in pids)
                gone = pids[0] if pids else None
            if not alive:
                self.close_session(s, "aborted", f"pytest process {gone} gone without finish")

    # -- sampling -------------------------------------------------------------------------
    def rss(self, pid: int) -> Optional[int]:
        proc = self.procs.get(pid)
        try:
            if proc is None:
                proc = self.procs[pid] = psutil.Process(pid)
            return proc.memory_info().rss
        except psutil.Error:
            self.procs.pop(pid, None)
            return None

    def sample(self) -> None:
        now = time.time()
        grand, everyone = 0, {}
        for s in self.sessions.values():
            if s.state != "running" or s.data is None:
                continue
            total, per = 0, {}
            for w in s.data.workers.values():
                if w.left is not None:
                    continue
                rss = self.rss(w.pid)
                if rss is None:
                    continue
                w.samples_t.append(now)
                w.samples_rss.append(rss)
                if rss > w.sampled_peak:
                    w.sampled_peak = rss
                if len(w.samples_t) > MAX_SAMPLES:
                    _halve(w)
                ts, vs = s.pending.setdefault(w.wid, ([], []))
                ts.append(now)
                vs.append(rss)
                total += rss
                per[w.wid] = rss
                everyone[f"{s.label}::{w.wid}"] = rss
            cp = s.data.concurrent_peak
            if per and (cp is None or total > cp[1]):
                s.data.concurrent_peak = (now, total, per)
            grand += total
        if everyone and (self.peak is None or grand > self.peak[1]):
            self.peak = (now, grand, everyone)

    # -- live view ------------------------------------------------------------------------
    def status(self) -> dict:
        now = time.time()
        sessions = {}
        finished = [s for s in self.sessions.values() if s.state != "running"]
        shown = set(id(s) for s in finished[-STATUS_FINISHED:])
        tests = rejected = dropped = 0
        states = {"running": 0, "finished": 0, "aborted": 0}
        for s in self.sessions.values():
            states[s.state] += 1
            tests += s.tests
            rejected += s.rejected
            if s.info and isinstance(s.info.get("records_dropped"), int):
                dropped += s.info["records_dropped"]
            if s.state != "running" and id(s) not in shown:
                continue
            workers = {}
            for wid, pid in s.pids.items():
                w = s.data.workers.get(wid) if s.data is not None else None
                live = s.state == "running" and w is not None and w.left is None
                last = s.last.get(wid)
                since = None
                if live:
                    since = round(max(0.0, now - (last[1] if last else w.joined)), 3)
                rss = w.samples_rss[-1] if live and w.samples_rss else None
                workers[wid] = {
                    "pid": pid,
                    "tests": s.counts.get(wid, 0),
                    "last_test": last[0] if last else None,
                    "in_test_for": since,
                    "rss_mb": _mb(rss),
                    "running": live,
                }
            sessions[s.sid] = {
                "label": s.label,
                "state": s.state,
                "reason": s.reason,
                "owner_pid": s.owner_pid,
                "started": s.started,
                "stopped": s.stopped,
                "tests": s.tests,
                "crashed": s.crashes,
                "records_rejected": s.rejected,
                "report": s.report_path,
                "report_error": s.report_error,
                "workers": workers,
            }
        try:
            own_rss = psutil.Process().memory_info().rss
        except psutil.Error:  # pragma: no cover
            own_rss = None
        return {
            "daemon": {
                "pid": os.getpid(),
                "version": __version__,
                "endpoint": self.endpoint,
                "output": self.output,
                "journal": self.journal_path,
                "metrics": self.metrics_url,
                "uptime": round(now - self.started, 3),
                "rss_mb": _mb(own_rss),
                "interval": self.interval,
            },
            "sessions_total": len(self.sessions),
            "sessions_running": states["running"],
            "sessions_by_state": states,
            "tests": tests,
            "records_rejected": rejected,
            "records_dropped": dropped,
            "hello_refused": self.counters.get(P.ERROR_NAMES[P.E_PID], 0),
            "protocol_errors": dict(self.counters),
            "sessions": sessions,
        }

    # -- the combined report --------------------------------------------------------------
    def write_combined(self) -> None:
        def build(s: Session) -> dict:
            full = replay(self.journal, s, self.interval) if s.spilled else s
            full.report_path = s.report_path
            return session_report(full, self.system_info)

        system = R.system_info() if self.system_info else None
        write_combined(
            self.output,
            list(self.sessions.values()),
            build,
            self.interval,
            self.counters,
            self.peak,
            system,
        )

    # -- main loop ------------------------------------------------------------------------
    def housekeeping(self) -> None:
        self.check_sessions()
        self.snapshot = self.status()

    def journal_all_samples(self) -> None:
        for s in self.sessions.values():
            if s.state == "running":
                self.journal_samples(s)

    def run(self) -> int:
        self.loop(
            [
                [0.0, self.interval, self.sample],
                [0.0, HOUSEKEEPING, self.housekeeping],
                [SAMPLES_TO_JOURNAL, SAMPLES_TO_JOURNAL, self.journal_all_samples],
            ]
        )
        return self.shutdown()

    def shutdown(self) -> int:
        log(f"stopping ({self.stop_reason})")
        for s in list(self.sessions.values()):
            if s.state == "running":
                self.close_session(s, "aborted", f"daemon stopped ({self.stop_reason})")
        t0 = time.perf_counter()
        try:
            self.write_combined()
        except Exception as exc:
            log(f"error: cannot write the combined report {self.output}: {exc}")
            log(f"the journal {self.journal_path} is kept: perfmon-daemon rebuild can retry")
            return 1
        tests = sum(s.tests for s in self.sessions.values())
        log(
            f"combined report {self.output}: {len(self.sessions)} sessions, {tests} tests "
            f"(written in {time.perf_counter() - t0:.2f} s)"
        )
        if not self.keep_journal and self.journal_ok:
            self.journal.close()
            try:
                os.unlink(self.journal_path)
            except OSError:
                pass
        return 0


class _Metrics:
    """Prometheus collector over the daemon's last snapshot (never touches live state)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.daemon.snapshot
        if not st:
            return
        g = GaugeMetricFamily(
            "perfmon_sessions", "pytest sessions known to the daemon", labels=["state"]
        )
        for k, v in st["sessions_by_state"].items():
            g.add_metric([k], v)
        yield g
        yield CounterMetricFamily(
            "perfmon_tests_completed", "test records received", value=st["tests"]
        )
        yield CounterMetricFamily(
            "perfmon_records_rejected", "test records rejected", value=st["records_rejected"]
        )
        yield CounterMetricFamily(
            "perfmon_records_dropped",
            "test records the plugins reported lost",
            value=st["records_dropped"],
        )
        yield CounterMetricFamily(
            "perfmon_hello_refused", "hellos refused (pid not ours)", value=st["hello_refused"]
        )
        c = CounterMetricFamily(
            "perfmon_protocol_errors", "bad messages by error name", labels=["error"]
        )
        for k, v in st["protocol_errors"].items():
            c.add_metric([k], v)
        yield c
        rss = st["daemon"]["rss_mb"]
        if rss is not None:
            yield GaugeMetricFamily(
                "perfmon_daemon_rss_bytes", "the daemon's own RSS", value=rss * R.MB
            )
        tests = GaugeMetricFamily(
            "perfmon_session_tests", "tests completed per session", labels=["session", "state"]
        )
        wt = GaugeMetricFamily(
            "perfmon_worker_tests", "tests completed per worker", labels=["session", "worker"]
        )
        wr = GaugeMetricFamily(
            "perfmon_worker_rss_bytes", "sampled RSS per worker", labels=["session", "worker"]
        )
        wi = GaugeMetricFamily(
            "perfmon_worker_in_test_seconds",
            "approximate: seconds since the worker's last completed test was received",
            labels=["session", "worker"],
        )
        for s in st["sessions"].values():
            tests.add_metric([s["label"], s["state"]], s["tests"])
            if s["state"] != "running":
                continue
            for wid, w in s["workers"].items():
                wt.add_metric([s["label"], wid], w["tests"])
                if w["rss_mb"] is not None:
                    wr.add_metric([s["label"], wid], w["rss_mb"] * R.MB)
                if w["in_test_for"] is not None:
                    wi.add_metric([s["label"], wid], w["in_test_for"])
        yield tests
        yield wt
        yield wr
        yield wi


def _alive(pid: int, ctime: Optional[float]) -> bool:
    try:
        proc = psutil.Process(pid)
        if ctime is not None and abs(proc.create_time() - ctime) > 0.01:
            return False  # the pid was reused
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# --- rebuild ---------------------------------------------------------------------------------


def rebuild(journal_path: str, output: str, interval: float = 0.1, system: bool = True) -> dict:
    """Rebuild the combined report (and unfinished sessions' own reports) from a journal."""
    sessions: dict[str, Session] = {}
    labels: set = set()
    for off, e in scan(journal_path):
        sid = e.get("s")
        if not isinstance(sid, str):
            continue
        s = sessions.get(sid)
        if s is None:
            s = sessions[sid] = Session(sid, _label(sid, labels), interval)
            labels.add(s.label)
        s.offsets.append(off)
        k = e.get("k")
        if k == "batch":  # counted now, read again session by session when writing
            s.tests += len(e["r"])
            s._seen(e["r"][-1][2])
        elif k != "samples":
            s.apply(e)
    journal = Journal(journal_path, readonly=True)
    written = {}
    try:
        for s in sessions.values():
            s.spilled = True
            if s.state == "running":
                s.state, s.reason = "aborted", "daemon lost (rebuilt from the journal)"
                s.stopped = s.last_time
            if s.state == "finished":
                path = (s.info or {}).get("output")
                if isinstance(path, str) and os.path.exists(path):
                    s.report_path = path
                    continue
            else:
                path = aborted_path(output, s.label)
            full = replay(journal, s, interval)
            ok, error, saved = write_report(session_report(full, system), path)
            s.report_path = path if ok else saved
            written[s.sid] = s.report_path if ok else error

        def build(s: Session) -> dict:
            full = replay(journal, s, interval)
            return session_report(full, system)

        write_combined(output, list(sessions.values()), build, interval, {}, None, R.system_info())
    finally:
        journal.close()
    return {"sessions": len(sessions), "tests": sum(s.tests for s in sessions.values())}


# --- client commands -------------------------------------------------------------------------


def _curve_client(sock: Any, secret: Optional[str], server: Optional[str]) -> None:
    if not secret and not server:
        return
    import zmq.auth

    if not (secret and server):
        raise DaemonError("CURVE needs both --curve-secret-key and --curve-server-key")
    try:
        public, secret_key = zmq.auth.load_certificate(secret)
        server_key, _ = zmq.auth.load_certificate(server)
    except (OSError, ValueError) as exc:
        raise DaemonError(f"cannot load CURVE keys: {exc}") from None
    if not secret_key:
        raise DaemonError(f"{secret} holds no secret key")
    sock.curve_secretkey = secret_key
    sock.curve_publickey = public
    sock.curve_serverkey = server_key


def request(
    endpoint: str,
    kind: str,
    timeout: float = REQUEST_TIMEOUT,
    curve_secret: Optional[str] = None,
    curve_server: Optional[str] = None,
) -> Any:
    """Send one request to a daemon; its reply body. DaemonError if nobody answers in time."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        _curve_client(sock, curve_secret, curve_server)
        if endpoint.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        sock.connect(endpoint)
        sock.send(P.pack(kind))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(left * 1000, zmq.POLLIN):
                raise DaemonError(f"no perfmon-daemon answered at {endpoint} within {timeout:g} s")
            try:
                got, body = P.unpack(sock.recv(zmq.NOBLOCK))
            except P.ProtocolError:
                continue
            if got == P.ERROR:
                msg = body.get("message") if isinstance(body, dict) else body
                raise DaemonError(f"the daemon refused: {msg}")
            return body
    except zmq.ZMQError as exc:
        raise DaemonError(f"cannot connect to {endpoint}: {exc}") from None
    finally:
        sock.close(0)
        ctx.term()


def _answers(endpoint: str) -> bool:
    try:
        request(endpoint, P.STATUS, timeout=1.0)
        return True
    except DaemonError:
        return False


def format_status(st: dict) -> str:
    d = st["daemon"]
    lines = [
        f"perfmon-daemon pid {d['pid']} at {d['endpoint']}, up {d['uptime']:.0f} s, "
        f"RSS {d['rss_mb']} MB",
        f"  output {d['output']}  journal {d['journal']}"
        + (f"  metrics {d['metrics']}" if d["metrics"] else ""),
        f"tests {st['tests']} in {st['sessions_total']} sessions "
        f"({st['sessions_running']} running); records rejected {st['records_rejected']}, "
        f"dropped {st['records_dropped']}; hellos refused {st['hello_refused']}",
    ]
    if st["protocol_errors"]:
        errs = ", ".join(f"{k} {v}" for k, v in sorted(st["protocol_errors"].items()))
        lines.append(f"protocol errors: {errs}")
    for s in st["sessions"].values():
        head = f"session {s['label']}  {s['state']}"
        if s["reason"] and s["state"] != "finished":
            head += f" ({s['reason']})"
        head += f"  owner pid {s['owner_pid']}  tests {s['tests']}"
        if s["crashed"]:
            head += f"  crashed {s['crashed']}"
        if s["records_rejected"]:
            head += f"  rejected {s['records_rejected']}"
        if s["report"]:
            head += f"  report {s['report']}"
        lines.append(head)
        if s["state"] == "running" and s["workers"]:
            lines.append(
                f"  {'worker':<8} {'pid':>7} {'tests':>7} {'RSS MB':>8} {'in test*':>9}  "
                "last test completed"
            )
            for wid, w in s["workers"].items():
                rss = "-" if w["rss_mb"] is None else f"{w['rss_mb']:.1f}"
                since = "-" if w["in_test_for"] is None else f"{w['in_test_for']:.1f} s"
                lines.append(
                    f"  {wid:<8} {w['pid']:>7} {w['tests']:>7} {rss:>8} {since:>9}  "
                    f"{w['last_test'] or '-'}"
                )
    if any(s["state"] == "running" for s in st["sessions"].values()):
        lines.append(
            "* approximate: time since the end of the worker's last test the daemon received "
            "(tests arrive in batches, every 128 tests or 0.5 s)"
        )
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, no usage dump
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def default_endpoint(create: bool = False) -> str:
    if os.name != "posix" or not zmq.has("ipc"):
        return "tcp://127.0.0.1:47771"
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    directory = os.path.join(base, f"perfmon-{os.getuid()}")
    if create:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            st = os.lstat(directory)
        except OSError as exc:
            raise DaemonError(f"cannot create {directory}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise DaemonError(
                f"{directory} is not a private directory (mode 0700, owned by you): "
                "remove it or pass --endpoint"
            )
    return "ipc://" + os.path.join(directory, "daemon.sock")


def check_endpoint(endpoint: str, curve: bool) -> None:
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if not path or path.startswith("@"):
            raise DaemonError(
                f"--endpoint {endpoint}: give a file path (abstract sockets admit every user)"
            )
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise DaemonError(f"--endpoint {endpoint}: directory does not exist")
        return
    if endpoint.startswith("tcp://"):
        host, sep, port = endpoint[len("tcp://") :].rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise DaemonError(f"--endpoint {endpoint}: expected tcp://HOST:PORT")
        if host not in LOOPBACK and not curve:
            raise DaemonError(
                f"--endpoint {endpoint}: binding {host} would admit other machines; "
                "it needs --curve-secret-key FILE and --curve-client-keys DIR "
                "(or bind 127.0.0.1)"
            )
        return
    scheme = endpoint.split("://", 1)[0] if "://" in endpoint else endpoint
    raise DaemonError(f"--endpoint: unknown scheme {scheme!r} (use ipc://PATH or tcp://HOST:PORT)")


def check_output(output: str, journal: str) -> None:
    directory = os.path.dirname(output)
    if os.path.isdir(output):
        raise DaemonError(f"--output {output} is a directory")
    if not os.path.isdir(directory):
        raise DaemonError(f"--output: directory {directory} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".perfmon-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DaemonError(f"--output: cannot write in {directory}: {exc.strerror or exc}") from None
    jdir = os.path.dirname(journal)
    if os.path.isdir(journal):
        raise DaemonError(f"--journal {journal} is a directory")
    if not os.path.isdir(jdir):
        what = "is a file, not a directory" if os.path.exists(jdir) else "does not exist"
        raise DaemonError(f"--journal: {jdir} {what}")
    if os.path.exists(journal) and os.path.getsize(journal) > 0:
        raise DaemonError(
            f"--journal {journal} holds an earlier run: rebuild its report with "
            f"`perfmon-daemon rebuild --journal {journal} --output FILE`, then remove it"
        )


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", help="the daemon's endpoint (default: the default endpoint)")
    p.add_argument("--timeout", type=positive, default=REQUEST_TIMEOUT, help="seconds to wait")
    p.add_argument(
        "--curve-secret-key",
        default=os.environ.get("PERFMON_CURVE_SECRET_KEY"),
        help="this client's CURVE certificate with its secret key [env: PERFMON_CURVE_SECRET_KEY]",
    )
    p.add_argument(
        "--curve-server-key",
        default=os.environ.get("PERFMON_CURVE_SERVER_KEY"),
        help="the daemon's public CURVE certificate [env: PERFMON_CURVE_SERVER_KEY]",
    )


def parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog=PROG,
        description="A long-running pytest-perfmon monitor that many pytest runs report into. "
        "Commands: run (default), status, stop, rebuild.",
    )
    sub = ap.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser("run", help="run the daemon in the foreground (the default command)")
    run.add_argument(
        "--endpoint",
        help="ipc://PATH or tcp://HOST:PORT to bind (default: ipc:// "
        "in a private directory of this user)",
    )
    run.add_argument("--output", required=True, help="the combined report (JSON)")
    run.add_argument("--journal", help="the journal (default: OUTPUT.journal)")
    run.add_argument("--keep-journal", action="store_true", help="keep it after a clean stop")
    run.add_argument("--interval", type=positive, default=0.1, help="sampling interval, s")
    run.add_argument("--no-system-info", action="store_true", help="leave the system block out")
    run.add_argument("--metrics-port", type=_port, help="serve Prometheus metrics on this port")
    run.add_argument("--metrics-host", default="127.0.0.1", help="... on this address")
    run.add_argument("--curve-secret-key", help="the daemon's CURVE certificate (secret)")
    run.add_argument("--curve-client-keys", help="directory of the clients' public certificates")
    st = sub.add_parser("status", help="print the live state of a running daemon")
    _client_args(st)
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    sp = sub.add_parser("stop", help="stop a running daemon (writes its combined report)")
    _client_args(sp)
    rb = sub.add_parser("rebuild", help="rebuild the reports from a journal (after a crash)")
    rb.add_argument("--journal", required=True, help="the journal a daemon left behind")
    rb.add_argument("--output", required=True, help="where to write the combined report")
    rb.add_argument("--interval", type=positive, default=0.1, help="the daemon's interval")
    return ap


def cmd_run(args: argparse.Namespace) -> int:
    curve = bool(args.curve_secret_key or args.curve_client_keys)
    if curve and not (args.curve_secret_key and args.curve_client_keys):
        raise DaemonError("CURVE needs both --curve-secret-key and --curve-client-keys")
    endpoint = args.endpoint or default_endpoint(create=True)
    check_endpoint(endpoint, curve)
    output = os.path.abspath(args.output)
    journal = os.path.abspath(args.journal or output + ".journal")
    check_output(output, journal)
    try:
        daemon = Daemon(
            endpoint, output, journal, args.interval, not args.no_system_info, args.keep_journal
        )
    except OSError as exc:
        raise DaemonError(f"cannot open the journal {journal}: {exc.strerror or exc}") from None
    try:
        if curve:
            daemon.use_curve(args.curve_secret_key, args.curve_client_keys)
        try:
            daemon.bind()
        except (zmq.ZMQError, OSError) as exc:
            raise DaemonError(f"cannot bind {endpoint}: {exc}") from None
        if args.metrics_port is not None:
            daemon.serve_metrics(args.metrics_host, args.metrics_port)
    except BaseException:
        daemon.close()
        try:
            if os.path.getsize(journal) == 0:
                os.unlink(journal)
        except OSError:
            pass
        raise
    for signum in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGTERM)):
        signal.signal(signum, lambda s, f: setattr(daemon, "stop_reason", signal.Signals(s).name))
    log(f"listening on {daemon.endpoint} (pid {os.getpid()}); output {output}; journal {journal}")
    if daemon.metrics_url:
        log(f"metrics on {daemon.metrics_url}")
    try:
        return daemon.run()
    finally:
        daemon.close()


def main(argv: Optional[list] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "status", "stop", "rebuild", "-h", "--help"):
        argv.insert(0, "run")
    args = parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "rebuild":
            if not os.path.isfile(args.journal):
                raise DaemonError(f"--journal {args.journal}: no such file")
            output = os.path.abspath(args.output)
            if not os.path.isdir(os.path.dirname(output)) or os.path.isdir(output):
                raise DaemonError(f"--output {output}: not a writable file path")
            try:
                done = rebuild(args.journal, output, args.interval)
            except OSError as exc:
                raise DaemonError(f"cannot rebuild: {exc}") from None
            print(f"{output}: {done['sessions']} sessions, {done['tests']} tests")
            return 0
        endpoint = args.endpoint or default_endpoint()
        kind = P.STATUS if args.command == "status" else P.STOP
        body = request(endpoint, kind, args.timeout, args.curve_secret_key, args.curve_server_key)
        if args.command == "stop":
            print(f"perfmon-daemon pid {body.get('pid')} is stopping")
        elif args.json:
            print(json.dumps(body, indent=2, ensure_ascii=False))
        else:
            print(format_status(body))
        return 0
    except DaemonError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2 if args.command == "run" else 1


if __name__ == "__main__":
    sys.exit(main())
