"""The daemon's combined report: every session's tests in one file, written streaming."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Callable, Optional

from .. import __version__
from .. import report as report_model
from ..analysis import labelled_fixtures
from ..summary import Summary
from .common import mb
from .session import Session


class _Totals:
    """What the combined report's session block adds up over the sessions."""

    def __init__(self, counters: dict) -> None:
        self.starts: list = []
        self.stops: list = []
        self.statuses: list = []
        self.versions: set = set()
        self.warnings: list = []
        self.methods: list = []
        self.errors = dict(counters)
        self.dropped = 0
        self.total = 0
        self.incomplete = False
        self.best_peak: Optional[tuple] = None  # (total MB, label, block)

    def add(self, s: Session, rep: dict) -> None:
        sess = rep["session"]
        start, stop = s.start_stop()
        self.starts.append(start)
        self.stops.append(stop)
        self.statuses.append(sess["exit_status"] if s.state == "finished" else None)
        self.versions.add(sess["pytest_version"])
        self.warnings.extend(f"{s.label}: {w}" for w in sess["warnings"])
        self.methods.append(sess["measurement"])
        self.dropped += sess["records_dropped"]
        self.incomplete |= bool(sess.get("possibly_incomplete"))
        self.total += len(rep["tests"])
        for k, v in sess["protocol_errors"].items():
            self.errors[k] = self.errors.get(k, 0) + v
        cp = rep["concurrent_memory_peak"]
        if cp is not None and (self.best_peak is None or cp["total_rss_mb"] > self.best_peak[0]):
            self.best_peak = (cp["total_rss_mb"], s.label, cp)

    def concurrent(self, peak: Optional[tuple]) -> Optional[dict]:
        if peak is not None:
            t_peak, total_rss, per = peak
            return {
                "total_rss_mb": mb(total_rss),
                "time": report_model.iso(t_peak),
                "workers": {k: {"rss_mb": mb(v), "test": None} for k, v in per.items()},
            }
        if self.best_peak is not None:  # rebuilt: the largest peak of one session
            label, cp = self.best_peak[1], self.best_peak[2]
            concurrent = dict(cp)
            concurrent["workers"] = {f"{label}::{k}": v for k, v in cp["workers"].items()}
            return concurrent
        return None

    def head(self, interval: float, aborted: bool) -> dict:
        measurement = {
            "time": report_model.METHOD_TIME,
            "cpu": report_model.METHOD_CPU,
            "memory": None,
            "memory_peak": None,
            "sample_interval": interval,
        }
        for key in ("memory", "memory_peak"):
            seen = {m[key] for m in self.methods}
            if len(seen) == 1:
                measurement[key] = seen.pop()
        start = min(self.starts) if self.starts else time.time()
        stop = max(self.stops) if self.stops else start
        head = {
            "duration": round(max(0.0, stop - start), 6),
            "total_tests": self.total,
            "timestamp": report_model.iso(start),
            # a finished session whose owner sent no exit status has None: not a number to order
            "exit_status": None
            if aborted
            else max((x for x in self.statuses if x is not None), default=None),
            "aborted": aborted,
            "pytest_version": self.versions.pop() if len(self.versions) == 1 else None,
            "perfmon_version": __version__,
            "collector": "monitor",
            "measurement": measurement,
            "records_dropped": self.dropped,
            "collector_cpu_time": round(time.process_time(), 4),
            "protocol_errors": self.errors,
            "warnings": self.warnings,
        }
        if self.incomplete:
            head["possibly_incomplete"] = True
        return head


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
    With ``system`` None (the daemon's --no-system-info) no block has a system part.
    """
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    summary = Summary()
    totals = _Totals(counters)
    blocks: dict = {}
    workers: dict = {}
    fixtures: list = []
    with report_model.atomic_text(path) as f:
        f.write(f'{{"schema_version": {report_model.SCHEMA_VERSION},\n"tests": {{')
        sep = "\n"
        for s in sessions:
            rep = build(s)
            for nodeid, t in rep["tests"].items():
                t["session"] = s.sid
                f.write(f"{sep}{dumps(s.label + '::' + nodeid)}: {dumps(t)}")
                sep = ",\n"
                summary.add(t)
            for wid, wv in rep["workers"].items():
                workers[f"{s.label}::{wid}"] = wv
            totals.add(s, rep)
            block = {
                "label": s.label,
                "state": s.state,
                "output": s.report_path,
                "session": rep["session"],
                "summary": rep["summary"],
                "workers": rep["workers"],
                "concurrent_memory_peak": rep["concurrent_memory_peak"],
            }
            if "system" in rep and system is not None:
                block["system"] = rep["system"]
            if rep.get("fixtures"):
                block["fixtures"] = rep["fixtures"]
                fixtures.extend(labelled_fixtures(rep["fixtures"], s.label))
            blocks[s.sid] = block
            del rep
        f.write("\n},\n")
        aborted = any(b["state"] != "finished" for b in blocks.values())
        rest: dict = {"session": totals.head(interval, aborted)}
        if system is not None:
            rest["system"] = system
        rest.update(
            summary=summary.block(None),  # parallel efficiency: per session, in "sessions"
            workers=workers,
            concurrent_memory_peak=totals.concurrent(peak),
            sessions=blocks,
        )
        if fixtures:
            rest["fixtures"] = fixtures
        f.write(",\n".join(f"{dumps(k)}: {dumps(v)}" for k, v in rest.items()))
        f.write("}\n")
