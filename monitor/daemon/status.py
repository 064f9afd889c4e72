"""The daemon's live view: the ``status`` reply, and its text for ``perfmon-daemon status``."""

from __future__ import annotations

import time
from collections.abc import Iterable

from .. import protocol
from ..tables import text_table
from ..units import number
from .common import mb
from .session import Session

#: Finished sessions listed by ``status`` (the newest); running ones are always listed.
STATUS_FINISHED = 20


def _workers(s: Session, now: float) -> dict:
    workers = {}
    for wid, pid in s.pids.items():
        w = s.data.workers.get(wid) if s.data is not None else None
        live = w if s.state == "running" and w is not None and w.left is None else None
        last = s.last.get(wid)
        since = None
        if live is not None:
            since = round(max(0.0, now - (last[1] if last else live.joined)), 3)
        rss = live.samples_rss[-1] if live is not None and live.samples_rss else None
        workers[wid] = {
            "pid": pid,
            "tests": s.counts.get(wid, 0),
            "last_test": last[0] if last else None,
            "in_test_for": since,
            "rss_mb": mb(rss),
            "running": live is not None,
        }
    return workers


def status(sessions: Iterable[Session], counters: dict, daemon: dict) -> dict:
    """The ``status-reply`` body: ``daemon`` is the daemon's own block (pid, endpoint, ...)."""
    now = time.time()
    sessions = list(sessions)
    finished = [s for s in sessions if s.state != "running"]
    shown = {id(s) for s in finished[-STATUS_FINISHED:]}
    tests = rejected = dropped = 0
    states = {"running": 0, "finished": 0, "aborted": 0}
    out = {}
    for s in sessions:
        states[s.state] += 1
        tests += s.tests
        rejected += s.rejected
        if s.info and isinstance(s.info.get("records_dropped"), int):
            dropped += s.info["records_dropped"]
        if s.state != "running" and id(s) not in shown:
            continue
        out[s.sid] = {
            "label": s.label,
            "state": s.state,
            "reason": s.reason,
            "owner_pid": s.owner_pid,
            "started": s.started,
            "stopped": s.stopped,
            "tests": s.tests,
            "crashed": s.crashes,
            "records_rejected": s.rejected,
            "possibly_incomplete": s.state != "running" and s.possibly_incomplete,
            "report": s.report_path,
            "report_error": s.report_error,
            "workers": _workers(s, now),
        }
    return {
        "daemon": daemon,
        "sessions_total": len(sessions),
        "sessions_running": states["running"],
        "sessions_by_state": states,
        "tests": tests,
        "records_rejected": rejected,
        "records_dropped": dropped,
        "hello_refused": counters.get(protocol.ERROR_NAMES[protocol.E_PID], 0),
        "protocol_errors": dict(counters),
        "sessions": out,
    }


def _session_line(s: dict) -> str:
    head = f"session {s['label']}  {s['state']}"
    if s["reason"] and s["state"] != "finished":
        head += f" ({s['reason']})"
    head += f"  owner pid {s['owner_pid']}  tests {s['tests']}"
    if s["crashed"]:
        head += f"  crashed {s['crashed']}"
    if s["records_rejected"]:
        head += f"  rejected {s['records_rejected']}"
    if s.get("possibly_incomplete"):
        head += "  possibly incomplete"
    if s["report"]:
        head += f"  report {s['report']}"
    return head


def format_status(st: dict, width: int | None = None) -> str:
    """``perfmon-daemon status`` as text; worker tables fitted to ``width`` columns."""
    d = st["daemon"]
    rss = d["rss_mb"]
    lines = [
        f"perfmon-daemon pid {d['pid']} at {d['endpoint']}, up {d['uptime']:.0f} s, "
        + (f"RSS {rss:.1f} MB" if number(rss) is not None else "RSS unknown"),
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
        lines.append(_session_line(s))
        if s["state"] == "running" and s["workers"]:
            rows = []
            for wid, w in s["workers"].items():
                rows.append(
                    [
                        wid,
                        str(w["pid"]),
                        str(w["tests"]),
                        "-" if w["rss_mb"] is None else f"{w['rss_mb']:.1f}",
                        "-" if w["in_test_for"] is None else f"{w['in_test_for']:.1f} s",
                        w["last_test"] or "-",
                    ]
                )
            lines += text_table(
                ["worker", "pid", "tests", "RSS MB", "in test*", "last test completed"],
                rows,
                [False, True, True, True, True, False],
                width,
            )
    if any(s["state"] == "running" for s in st["sessions"].values()):
        lines.append(
            "* approximate: time since the end of the worker's last test the daemon received "
            "(tests arrive in batches, every 128 tests or 0.5 s)"
        )
    return "\n".join(lines)
