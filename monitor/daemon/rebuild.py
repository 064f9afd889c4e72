"""``perfmon-daemon rebuild``: the reports of a daemon that died, from its journal."""

from __future__ import annotations

import os

from .. import deliver as delivery
from .. import report as report_model
from ..journal import Journal, JournalError, scan
from .combined import write_combined
from .session import Session, aborted_path, check_report_path, label_for, replay, session_report


def read_sessions(journal_path: str, interval: float) -> dict[str, Session]:
    """Every session of a journal, its small state applied, its tests counted (records and
    samples are read again, one session at a time, when the reports are written)."""
    sessions: dict[str, Session] = {}
    labels: set = set()
    for off, e in scan(journal_path):
        sid = e.get("s")
        if not isinstance(sid, str):
            continue
        s = sessions.get(sid)
        if s is None:
            s = sessions[sid] = Session(sid, label_for(sid, labels), interval)
            labels.add(s.label)
        s.offsets.append(off)
        k = e.get("k")
        try:
            if k == "batch":
                if e["r"]:
                    s.count_batch(e["w"], e["r"])
            elif k != "samples":
                s.apply(e)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            continue  # an entry this version cannot read: skipped
    return sessions


def rebuild(journal_path: str, output: str, interval: float = 0.1, system: bool = True) -> dict:
    """Rebuild the combined report (and unfinished sessions' own reports) from a journal.
    JournalError, before anything is written, when it holds no session (an empty file, a
    report or anything else given by mistake: ``output`` may be a report worth keeping)."""
    sessions = read_sessions(journal_path, interval)
    if not sessions:
        raise JournalError(
            f"{journal_path}: no session recorded in it (empty, or not a perfmon-daemon "
            "journal); nothing written"
        )
    journal = Journal(journal_path, readonly=True)
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
            rep = session_report(replay(journal, s, interval), system)
            s.report_path = delivery.deliver(rep, path, check=check_report_path).where

        def build(s: Session) -> dict:
            return session_report(replay(journal, s, interval), system)

        write_combined(
            output,
            list(sessions.values()),
            build,
            interval,
            {},
            None,
            report_model.system_info() if system else None,
        )
    finally:
        journal.close()
    return {"sessions": len(sessions), "tests": sum(s.tests for s in sessions.values())}
