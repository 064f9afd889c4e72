"""The daemon's sessions: journaled entries applied to them, sampling, closing, reports."""

from __future__ import annotations

import time
from typing import Optional

from .. import deliver as delivery
from .. import report as report_model
from .. import sampler
from ..journal import Journal
from .combined import write_combined
from .common import log
from .session import Session, aborted_path, check_report_path, label_for, replay, session_report


class SessionBook:
    """Every session of one daemon, and the journal that makes them survive its death."""

    def __init__(
        self, journal: Journal, output: str, interval: float, system_info: bool, counters: dict
    ) -> None:
        self.journal = journal
        self.counters = counters  # the daemon's, where journal failures are counted
        self.output = output
        self.interval = interval
        self.system_info = system_info
        self.sessions: dict[str, Session] = {}
        self.labels: set = set()
        self.sampler = sampler.Sampler()
        self.peak: Optional[tuple] = None  # daemon-wide concurrent RSS peak
        self.journal_ok = True

    def get(self, sid: str) -> Optional[Session]:
        return self.sessions.get(sid)

    def open(self, sid: str) -> Session:
        s = Session(sid, label_for(sid, self.labels), self.interval)
        self.labels.add(s.label)
        self.sessions[sid] = s
        return s

    # -- the journal ----------------------------------------------------------------------
    def record(self, s: Session, entry: dict, apply: bool = True) -> None:
        """Journal ``entry`` of session ``s``, then apply it.

        Every entry has ``k`` (its kind) and ``s`` (the session id); the other keys are short
        because the journal holds one entry per batch of every session of a long-lived daemon.
        Written by :mod:`.core` (the messages) and here; replayed by ``Session.apply``:

        ========  ==============================================================================
        kind      keys
        ========  ==============================================================================
        hello     ``w`` worker id, ``p`` pid, ``r`` role, ``t`` time, ``m`` the counters the
                  process reads (methods), ``py`` Python version, ``ct`` the process's create
                  time, ``si`` whether the system block is wanted
        batch     ``w`` worker id, ``r`` the records (13-field lists, as on the wire)
        rejected  ``n`` how many records were refused
        crash     ``c`` the crashed (or interrupted) test: ``protocol.Crash.entry()`` plus
                  ``recent``, the records the controller had seen of its worker
        left      ``w`` worker id, ``t`` when it said goodbye
        finish    ``i`` what the owner sent at the end (exit status, options, labels)
        samples   ``d`` {worker: [times, RSS]}, ``cp`` the concurrent peak so far; with children
                  on ``c`` {worker: [times, [[total, [[pid, ctime, cpu, ppid]]]]]}; with noise
                  ``n`` {worker: [times, counter rows, methods]}
        end       ``state`` (finished or aborted), ``t`` time, ``reason``
        ========  ==============================================================================
        """
        try:
            s.offsets.append(self.journal.append(entry))
        except OSError as exc:
            if self.journal_ok:
                log.warning("cannot write the journal %s: %s", self.journal.path, exc)
            self.journal_ok = False
            self.counters["journal-write-failed"] = self.counters.get("journal-write-failed", 0) + 1
        if apply:
            s.apply(entry)

    def journal_samples(self, s: Session) -> None:
        if (s.pending or s.pending_children or s.pending_noise) and s.data is not None:
            d = {wid: [ts, vs] for wid, (ts, vs) in s.pending.items()}
            entry = {"k": "samples", "s": s.sid, "d": d, "cp": s.data.concurrent_peak}
            if s.pending_children:  # the tests' descendants: [t], [[total, [[pid, ct, cpu]]]]
                entry["c"] = {wid: [ts, xs] for wid, (ts, xs) in s.pending_children.items()}
            if s.pending_noise:  # the noise counters: [t], [[wait, invol, ...]], their methods
                workers = s.data.workers
                entry["n"] = {
                    wid: [ts, vs, workers[wid].noise_how if wid in workers else None]
                    for wid, (ts, vs) in s.pending_noise.items()
                }
            self.record(s, entry, apply=False)
            s.pending = {}
            s.pending_children = {}
            s.pending_noise = {}

    def journal_all_samples(self) -> None:
        for s in self.sessions.values():
            if s.state == "running":
                self.journal_samples(s)

    # -- sampling -------------------------------------------------------------------------
    def sample(self) -> None:
        now = time.time()
        grand, everyone = 0, {}
        for s in self.sessions.values():
            if s.state != "running" or s.data is None:
                continue
            total, per = self.sampler.sample_group(s.data.workers.values(), now)
            for wid, rss in per.items():
                ts, vs = s.pending.setdefault(wid, ([], []))
                ts.append(now)
                vs.append(rss)
                everyone[f"{s.label}::{wid}"] = rss
                w = s.data.workers[wid]
                if w.child_t and w.child_t[-1] == now:  # its descendants were sampled too
                    ts, xs = s.pending_children.setdefault(wid, ([], []))
                    ts.append(now)
                    xs.append(sampler.child_sample_out(w.child_s[-1]))
                if w.noise_t and w.noise_t[-1] == now:  # and its noise counters
                    ts, vs = s.pending_noise.setdefault(wid, ([], []))
                    ts.append(now)
                    vs.append(list(w.noise_v[-1]))
            s.data.concurrent_peak = sampler.higher_peak(s.data.concurrent_peak, now, total, per)
            grand += total
        self.peak = sampler.higher_peak(self.peak, now, grand, everyone)

    # -- closing --------------------------------------------------------------------------
    def close_session(
        self, s: Session, state: str, reason: Optional[str] = None
    ) -> delivery.Delivered:
        """Close ``s``, deliver its own report (finished: where its finish said, with the HTML
        page and the history it asked for; aborted: the JSON beside the combined report), drop
        its data from memory."""
        self.journal_samples(s)
        self.record(s, {"k": "end", "s": s.sid, "state": state, "t": time.time(), "reason": reason})
        info = (s.info or {}) if state == "finished" else {}
        path = info.get("output") if state == "finished" else aborted_path(self.output, s.label)
        try:
            rep = session_report(s, self.system_info)
        except Exception as exc:  # never take the daemon down for one session
            done = delivery.unbuilt(path, exc)
        else:
            done = delivery.deliver(
                rep,
                path,
                html=info.get("html"),
                history=info.get("history"),
                labels=info.get("labels"),
                rootdir=info.get("rootdir"),
                source="daemon",
                check=lambda p: check_report_path(p, (self.output, self.journal.path)),
                replace=state != "finished",  # its client moved any previous report aside
            )
            del rep
        for problem in (done.html_warning, done.history_warning):
            if problem:
                log.warning("session %s: %s", s.label, problem)
        s.report_path = done.where
        s.report_error = done.error
        if self.journal_ok:
            s.spill()
        what = "finished" if state == "finished" else f"aborted ({reason})"
        where = done.path if done.ok else done.error
        log.info("session %s %s: %d tests; report %s", s.label, what, s.tests, where)
        return done

    def check_owners(self) -> None:
        """Close, as aborted, every running session whose pytest process is gone."""
        for s in list(self.sessions.values()):
            if s.state != "running" or s.data is None:
                continue
            if s.owner_pid is not None:
                alive = sampler.alive(s.owner_pid, s.owner_ctime)
                gone: Optional[int] = s.owner_pid
            else:  # no owner has said hello: alive while any worker is
                pids = [w.pid for w in s.data.workers.values()]
                alive = any(sampler.alive(p, None) for p in pids)
                gone = pids[0] if pids else None
            if not alive:
                self.close_session(s, "aborted", f"pytest process {gone} gone without finish")

    def close_all(self, reason: str) -> None:
        for s in list(self.sessions.values()):
            if s.state == "running":
                self.close_session(s, "aborted", reason)

    def write_combined(self) -> None:
        def build(s: Session) -> dict:
            full = replay(self.journal, s, self.interval) if s.spilled else s
            return session_report(full, self.system_info)

        system = report_model.system_info() if self.system_info else None
        write_combined(
            self.output,
            list(self.sessions.values()),
            build,
            self.interval,
            self.counters,
            self.peak,
            system,
        )
