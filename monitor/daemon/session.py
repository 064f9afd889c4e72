"""One pytest session as the daemon knows it, rebuilt entry by entry from the journal, and its
own report."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from typing import Any, Optional

from .. import protocol, sampler, slots
from .. import report as report_model
from ..journal import Journal


class Session:
    """What the daemon knows about one pytest session; :meth:`apply` takes journal entries."""

    def __init__(self, sid: str, label: str, interval: float) -> None:
        self.sid = sid
        self.label = label
        self.data: Optional[report_model.RunData] = report_model.RunData(sample_interval=interval)
        self.state = "running"  # finished | aborted
        self.reason: Optional[str] = None
        self.owner_pid: Optional[int] = None
        self.owner_ctime: Optional[float] = None
        self.python: Optional[str] = None
        self.system_info: Optional[bool] = None  # as the hello asked
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
        self.said_bye: set = set()  # wids whose goodbye was acknowledged with nothing missing
        self.pending: dict = {}  # wid -> ([t], [rss]) sampled, not yet journaled
        self.pending_children: dict = {}  # wid -> ([t], [descendant sample]), the same
        self.pending_noise: dict = {}  # wid -> ([t], [noise sample]), the same
        self.report_path: Optional[str] = None  # where its own report is (None: nowhere)
        self.report_error: Optional[str] = None

    def seen(self, t: Any) -> None:
        if protocol.finite(t) and (self.last_time is None or t > self.last_time):
            self.last_time = t

    @property
    def possibly_incomplete(self) -> bool:
        """A process that measured tests went without an acknowledged goodbye."""
        return any(wid not in self.said_bye for wid in self.pids)

    def apply(self, e: dict) -> None:
        handler = _APPLY.get(e.get("k"))
        if handler is not None and self.data is not None:
            handler(self, self.data, e)

    def _hello(self, data: report_model.RunData, e: dict) -> None:
        t = e["t"]
        self.seen(t)
        if self.started is None or t < self.started:
            self.started = t
        if e.get("py"):
            self.python = e["py"]
        if isinstance(e.get("si"), bool):
            self.system_info = e["si"]
        role, pid = e.get("r"), e["p"]
        if role in ("local", "controller"):
            self.owner_pid, self.owner_ctime = pid, e.get("ct")
        if role == "controller":
            return
        wid = e["w"]
        w = data.workers.get(wid)
        if w is None:
            w = report_model.Worker(wid=wid, pid=pid, joined=t, boundary_methods=e.get("m") or {})
            data.workers[wid] = w
        else:  # the same worker id again (a reconnect): keep what it measured
            w.pid, w.left = pid, None
            self.said_bye.discard(wid)
        self.pids[wid] = pid
        self.counts.setdefault(wid, 0)

    def _batch(self, data: report_model.RunData, e: dict) -> None:
        w = data.workers.get(e["w"])
        recs = e["r"]
        if w is None or not recs:
            return
        w.records.extend(recs)
        self.count_batch(w.wid, recs)

    def count_batch(self, wid: str, recs: list) -> None:
        self.tests += len(recs)
        self.counts[wid] = self.counts.get(wid, 0) + len(recs)
        self.last[wid] = [recs[-1][protocol.NODEID], recs[-1][protocol.STOP]]
        self.seen(recs[-1][protocol.STOP])

    def _samples(self, data: report_model.RunData, e: dict) -> None:
        for wid, (ts, vs) in e["d"].items():
            w = data.workers.get(wid)
            if w is not None and ts:
                sampler.add_samples(w, ts, vs)
                self.seen(ts[-1])
        for wid, (ts, xs) in (e.get("c") or {}).items():
            w = data.workers.get(wid)
            if w is not None and ts:
                sampler.add_child_samples(w, ts, xs)
        for wid, (ts, vs, how) in (e.get("n") or {}).items():
            w = data.workers.get(wid)
            if w is not None and ts:
                sampler.add_noise_samples(w, ts, vs, how)
        cp = e.get("cp")
        if cp and (data.concurrent_peak is None or cp[1] > data.concurrent_peak[1]):
            data.concurrent_peak = (cp[0], cp[1], cp[2])

    def _rejected(self, data: report_model.RunData, e: dict) -> None:
        self.rejected += e["n"]
        data.counters["records-rejected"] = data.counters.get("records-rejected", 0) + e["n"]

    def _crash(self, data: report_model.RunData, e: dict) -> None:
        c = dict(e["c"])
        self.crashes += 1
        recent = c.pop("recent", None) or []
        data.crashed.append(c)
        self.seen(c["time"])
        w = data.workers.get(c.get("worker"))
        if w is None:
            return
        if w.left is None:
            w.left = c["time"]
        self.tests += w.add_told(recent)

    def _left(self, data: report_model.RunData, e: dict) -> None:
        w = data.workers.get(e["w"])
        if w is not None and w.left is None:
            w.left = e["t"]
        self.said_bye.add(e["w"])

    def _finish(self, data: report_model.RunData, e: dict) -> None:
        self.info = e["i"]

    def _end(self, data: report_model.RunData, e: dict) -> None:
        self.state, self.stopped, self.reason = e["state"], e["t"], e.get("reason")
        for w in data.workers.values():
            if w.left is None:
                w.left = e["t"]

    def spill(self) -> None:
        """Drop records and samples from memory: from now on they live in the journal only."""
        self.data = None
        self.pending = {}
        self.pending_children = {}
        self.pending_noise = {}
        self.spilled = True

    def start_stop(self) -> tuple[float, float]:
        info = self.info or {}
        start = info.get("start") if self.state == "finished" else None
        stop = info.get("stop") if self.state == "finished" else None
        start = start or self.started or time.time()
        stop = stop or self.stopped or self.last_time or time.time()
        return start, stop


#: a journal entry's kind (its "k", whatever a journal holds) -> how the session applies it
_APPLY: dict[Any, Callable[[Session, report_model.RunData, dict], None]] = {
    "hello": Session._hello,
    "batch": Session._batch,
    "samples": Session._samples,
    "rejected": Session._rejected,
    "crash": Session._crash,
    "left": Session._left,
    "finish": Session._finish,
    "end": Session._end,
}


def label_for(sid: str, taken: set) -> str:
    """The shortest prefix of ``sid`` (8 characters at least) no other session has."""
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
    fresh.report_path = s.report_path
    return fresh


def session_report(s: Session, system_default: bool) -> dict:
    """The session's own report (the schema of pytest_perfmon.monitor.report), from a session
    that holds its data. ``system_default``: whether to add the system block when the session
    did not say (it says in its hello and its finish)."""
    data = s.data
    assert data is not None
    slots.drop_duplicate_interruptions(data)  # as the spawned monitor: one execution, not two
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
        want_system = s.system_info if s.system_info is not None else system_default
    system = report_model.system_info(s.python) if want_system else None
    rep = report_model.build(data, info, system)
    if s.possibly_incomplete:
        rep["session"]["possibly_incomplete"] = True
    return rep


def aborted_path(combined: str, label: str) -> str:
    stem = combined[:-5] if combined.endswith(".json") else combined
    return f"{stem}.session-{label}.json"


def check_report_path(path: Any, daemons: tuple = ()) -> str:
    """A client-supplied report path: absolute, in an existing directory, not a special file,
    none of ``daemons`` (the daemon's own output and journal)."""
    if not isinstance(path, str) or not path or "\0" in path or not os.path.isabs(path):
        raise ValueError("the report path is not an absolute path")
    real = os.path.realpath(path)
    for own in daemons:
        if real == os.path.realpath(own):
            raise ValueError(f"{path} is the daemon's own output or journal")
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"directory {os.path.dirname(path)} does not exist")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} exists and is not a regular file")
    return path
