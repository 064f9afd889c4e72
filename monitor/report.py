"""Turn what was measured into the report: the brief's structure plus what users need.

Used by the monitor process, and by the plugin itself when the monitor is gone, so it never
imports pytest, zmq or psutil.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from typing import Any, Optional

from . import __version__
from . import children as _kids
from . import noise as _noise
from .files import (  # noqa: F401 (html.py, cli.py, daemon/combined.py import them here)
    atomic_text,
    dumps,
    save_elsewhere,
    write_atomic,
)
from .record import (
    CALL,
    CPU,
    EXTRA,
    NODEID,
    OUTCOME,
    RSS_END,
    RSS_PEAK,
    RSS_START,
    SAME_START,
    SETUP,
    START,
    STOP,
    TEARDOWN,
    WALL,
)
from .record import (
    amount as _amount,
)
from .schema import (  # noqa: F401 (re-exported: the monitor, daemon and plugin use R.<name>)
    METHOD_CHILDREN,
    METHOD_CPU,
    METHOD_FIXTURES,
    METHOD_PEAK_KERNEL,
    METHOD_RSS_BOUNDARY,
    METHOD_SAMPLED,
    METHOD_TIME,
    SCHEMA_VERSION,
    load_schema,
)
from .summary import summarize
from .units import MB

# Imported by the monitor at start-up, where every millisecond delays the first test: no
# dataclasses, tempfile or datetime at module level (about 15 ms together).


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


class Worker:
    """One process that ran tests: the pytest process itself, or one xdist worker."""

    def __init__(
        self,
        wid: str,
        pid: int,
        joined: float,
        left: Optional[float] = None,
        records: Optional[list] = None,
        boundary_methods: Optional[dict] = None,
    ) -> None:
        self.wid = wid
        self.pid = pid
        self.joined = joined
        self.left = left
        self.records: list = [] if records is None else records
        self.samples_t: list = []  # sample times, ascending
        self.samples_rss: list = []  # RSS bytes at those times
        self.sampled_peak = 0
        self.child_t: list = []  # descendant sample times, ascending (only with children on)
        self.child_s: list = []  # None, or (RSS sum, {(pid, ctime): cpu s}, {pid: ppid})
        self.boundary_methods = boundary_methods  # what the plugin could read in this process
        self.noise_t: list = []  # noise sample times, ascending (monitor/noise.py)
        # (wait s, invol, steal s/CPU, PSI s, throttled s, on-CPU s, descendants' wait s),
        # cumulative (noise.WAIT ... noise.KIDS_WAIT; rows of older relays end at throttled)
        self.noise_v: list = []
        self.noise_how: Optional[dict] = None  # the method of each noise field
        self.host: Optional[str] = None  # the host it ran on, when not the collector's

    def add_told(self, records: list) -> int:
        """Add the records of this worker's tests that someone else told (the xdist controller's
        copies of a crashed worker's last tests, a slot's records never sent), leaving out each
        execution already here: the same node id starting within ``SAME_START`` of a record here
        (each record here stands for one told execution: a node id can run twice in a row,
        --keep-duplicates), or starting inside one (an attempt of a rerun protocol). Returns
        how many were added."""
        mine: dict = {}
        for r in self.records:
            mine.setdefault(r[NODEID], []).append(r)
        free = {nodeid: list(rs) for nodeid, rs in mine.items()}
        added = 0
        for rec in records:
            nodeid, t0 = rec[NODEID], rec[START]
            near = [r for r in free.get(nodeid, ()) if abs(r[START] - t0) < SAME_START]
            if near:
                free[nodeid].remove(min(near, key=lambda r: abs(r[START] - t0)))
            elif not any(r[START] <= t0 <= r[STOP] for r in mine.get(nodeid, ())):
                self.records.append(rec)
                added += 1
        return added


class RunData:
    """Everything the monitor (or the plugin's fallback) holds when the run ends."""

    def __init__(self, sample_interval: Optional[float] = None) -> None:
        self.workers: dict = {}  # wid -> Worker
        self.crashed: list = []  # [{"nodeid", "worker", "time", "start"}]
        self.concurrent_peak: Optional[tuple] = None  # (time, total_bytes, {wid: rss_bytes})
        self.sample_interval = sample_interval
        self.counters: dict = {}  # protocol errors and drops by name
        self.records_dropped = 0
        self.collector = "monitor"  # "monitor" or "plugin-fallback"
        #: How the monitor was started: "fork" or "exec" (None: the plugin wrote the report).
        self.monitor_start: Optional[str] = None
        #: Remote hosts (their relays): name -> {"system": dict, "peak": (t, total, per)}.
        self.hosts: dict = {}
        self.warnings: list = []


def _bent_clock_words(data: RunData) -> list:
    """The warning for tests whose phases the plugin timed with its own clock (EXTRA's
    ``phases_timed``): pytest's durations were off the real clock."""
    n = sum(
        1
        for w in data.workers.values()
        for r in w.records
        if isinstance(r[EXTRA], dict) and r[EXTRA].get("phases_timed") == "perfmon"
    )
    if not n:
        return []
    return [
        f"pytest's own phase times of {n} test(s) were off the real clock (a clock patched in "
        "a fixture: freezegun, time-machine?); perfmon's clock timed their setup, call and "
        "teardown"
    ]


def _window(
    w: Worker, start: float, stop: float, slack: float, lo: float, hi: float
) -> tuple[Optional[int], Optional[int], Optional[int]]:
    """Sampled (start, end, peak) RSS of worker ``w`` over [start, stop).

    A sample belongs to the test that was running when it was taken; one taken at the very
    instant a test starts is that test's. Only samples in [lo, hi) can count: ``lo`` is where the
    worker's previous test ended and ``hi`` where its next test (or the test it crashed in)
    began, so nothing bleeds between tests. Start and end are the samples nearest before
    ``start`` and at or after ``stop`` (at most ``slack`` seconds away, in that range), else the
    first and last inside the test; the peak is the largest of them all. None where the samples
    say nothing about this test.
    """
    ts = w.samples_t
    rss = w.samples_rss
    a = bisect_left(ts, max(lo, start - slack))
    b = bisect_left(ts, start)
    c = bisect_left(ts, stop)
    d = bisect_left(ts, min(hi, stop + slack))
    inside = rss[b:c]
    s = rss[b - 1] if b > a else (inside[0] if inside else None)
    e = rss[c] if d > c else (inside[-1] if inside else None)
    candidates = [v for v in (s, e) if v is not None] + inside
    return s, e, (max(candidates) if candidates else None)


def _round(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v, 6)


def _mb(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v / MB, 3)


def _memory(rss0: Optional[int], peak: Optional[int], rss1: Optional[int]) -> dict:
    return {
        "start_mb": _mb(rss0),
        "peak_mb": _mb(peak),
        "end_mb": _mb(rss1),
        "delta_mb": None if rss0 is None or rss1 is None else round((rss1 - rss0) / MB, 3),
    }


LIMIT_KEYS = ("metric", "limit", "value", "action", "how")
SUBTEST_KEYS = ("passed", "failed", "skipped")


#: The fixture scopes the plugin times (the schema's enum of fixtures[].scope).
SHARED_SCOPES = ("session", "package", "module", "class")


def _limits(extra: Any) -> Optional[list]:
    """The performance-limit violations the plugin put in a record's EXTRA, checked: a list of
    {metric, limit, value, action, how}; anything else is left out."""
    items = extra.get("limits") if isinstance(extra, dict) else None
    if not isinstance(items, list):
        return None
    out = []
    for v in items:
        if not (isinstance(v, dict) and set(v) == set(LIMIT_KEYS)):
            continue
        num = (int, float)
        if (
            isinstance(v["metric"], str)
            and isinstance(v["action"], str)
            and isinstance(v["how"], str)
            and isinstance(v["limit"], num)
            and _amount(v["limit"])
            and (v["value"] is None or _amount(v["value"]))
        ):
            out.append({k: v[k] for k in LIMIT_KEYS})
    return out or None


def _children_on(w: Optional[Worker]) -> bool:
    return w is not None and bool(w.boundary_methods and w.boundary_methods.get("children"))


def _test_entry(
    rec: list,
    w: Worker,
    slack: float,
    lo: float,
    hi: float,
    kids: Optional[dict] = None,
    wait: Optional[float] = None,
) -> dict:
    """One finished test. ``lo``/``hi``: where the worker's previous test ended and its next
    test (or the test it crashed in) began; no sample outside them counts for this test.
    ``wait``: its wait, its process's threads' shared by CPU time (noise.cpu_shared_waits)."""
    start, stop = rec[START], rec[STOP]
    setup, call, teardown = rec[SETUP], rec[CALL], rec[TEARDOWN]
    rss0, peak, rss1 = rec[RSS_START], rec[RSS_PEAK], rec[RSS_END]
    # A phase that never ran (the call of a test skipped in setup) stays null, not 0.0.
    if rss0 is not None and rss1 is not None:
        if peak is None:  # boundary RSS readable but no kernel peak: samples decide the peak
            peak = max(_window(w, start, stop, slack, lo, hi)[2] or 0, rss0, rss1)
        else:
            peak = max(peak, rss0, rss1)
    else:
        rss0, rss1, peak = _window(w, start, stop, slack, lo, hi)
    cpu, wall = rec[CPU], rec[WALL]
    cpu_percent = None
    if cpu is not None and wall:
        cpu_percent = round(100.0 * cpu / wall, 1)
    entry = {
        "duration": round(sum(p for p in (setup, call, teardown) if p is not None), 6),
        "setup_time": _round(setup),
        "call_time": _round(call),
        "teardown_time": _round(teardown),
        "memory": _memory(rss0, peak, rss1),
        "cpu_percent": cpu_percent,
        "outcome": rec[OUTCOME],
        "worker": w.wid,
        "pid": w.pid,
        "start": round(start, 6),
    }
    extra = rec[EXTRA]
    shared = extra.get("shared_setup") if isinstance(extra, dict) else None
    if _amount(shared) and setup is not None:
        entry["shared_setup_time"] = round(max(0.0, min(shared, setup)), 6)
    else:
        entry["shared_setup_time"] = 0.0 if setup is not None else None
    if _children_on(w):
        st = kids.get(id(rec)) if kids is not None else None
        entry["children"] = _kids.block(st) if st is not None else None
    limits = _limits(rec[EXTRA])
    if limits:
        entry["limits"] = limits
    subtests = _subtests(extra)
    if subtests is not None:
        entry["subtests"] = subtests
    attempts = _attempts(extra, w.wid)
    if attempts is not None:  # pytest-rerunfailures ran it more than once in this protocol
        attempts[0]["start"] = entry["start"]  # the first began with the protocol
        entry["executions"] = attempts
        _sum_phases(entry, attempts)
    if w.noise_t:  # the collector's noise samples of this process
        entry["noise"] = _noise.entry_noise(w, start, stop, entry["duration"], slack, wait)
    return entry


def _subtests(extra: Any) -> Optional[dict]:
    """``[passed, failed, skipped]`` counts of the test's subtests from EXTRA, checked."""
    v = extra.get("subtests") if isinstance(extra, dict) else None
    if not (isinstance(v, list) and len(v) == 3):
        return None
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v):
        return None
    return dict(zip(SUBTEST_KEYS, v))


#: The outcomes an execution of a test may have: a record's, the collector's ("crashed"), and
#: "rerun" (an attempt pytest-rerunfailures ran again).
EXECUTION_OUTCOMES = frozenset(
    ("passed", "failed", "skipped", "error", "xfailed", "xpassed", "interrupted", "crashed")
    + ("rerun",)
)


def _execution(
    outcome: str, start: Any, setup: Any, call: Any, teardown: Any, wid: Optional[str]
) -> dict:
    phases = [_round(p) if _amount(p) else None for p in (setup, call, teardown)]
    return {
        "attempt": 0,  # numbered once every execution of the node id is known
        "outcome": outcome,
        "start": round(start, 6) if _amount(start) else None,
        "duration": round(sum(p for p in phases if p is not None), 6),
        "setup_time": phases[0],
        "call_time": phases[1],
        "teardown_time": phases[2],
        "worker": wid,
    }


def _attempts(extra: Any, wid: str) -> Optional[list]:
    """The attempts of one protocol call (pytest-rerunfailures) from EXTRA, checked: None
    unless there are two or more well-formed ones."""
    items = extra.get("attempts") if isinstance(extra, dict) else None
    if not isinstance(items, list) or len(items) < 2:
        return None
    out = []
    for a in items:
        if not (isinstance(a, list) and len(a) == 5 and a[0] in EXECUTION_OUTCOMES):
            return None
        out.append(_execution(a[0], a[4], a[1], a[2], a[3], wid))
        out[-1]["attempt"] = len(out)
    return out


def _sum_phases(entry: dict, execs: list) -> None:
    """The entry's duration and phase times: the sums over its executions."""
    for key in ("setup_time", "call_time", "teardown_time"):
        vals = [e[key] for e in execs if e[key] is not None]
        entry[key] = round(sum(vals), 6) if vals else None
    entry["duration"] = round(sum(e["duration"] for e in execs), 6)


#: Most severe first: the outcome of a node id pytest executed more than once (reruns left out).
SEVERITY = ("interrupted", "crashed", "error", "failed", "xpassed", "passed", "xfailed", "skipped")


def final_outcome(execs: list) -> str:
    """The outcome of a node id executed more than once: pytest-rerunfailures' "rerun"
    attempts left out, the most severe of the rest (for reruns: the last attempt's)."""
    rest = {e["outcome"] for e in execs if e["outcome"] != "rerun"}
    for o in SEVERITY:
        if o in rest:
            return o
    return execs[-1]["outcome"]


def _merge(runs: list) -> dict:
    """One entry for a node id pytest executed more than once (``--keep-duplicates``,
    ``--dist each``, a crashed worker's test run again, reruns across protocol calls): each
    execution in ``executions``; times summed; memory from the first start to the last end."""
    runs = sorted(runs, key=lambda r: r[1]["start"] if r[1]["start"] is not None else 0.0)
    execs: list = []
    for wid, e, _ in runs:
        if "executions" in e:
            execs.extend(e["executions"])
        else:
            execs.append(
                _execution(
                    e["outcome"],
                    e["start"],
                    e["setup_time"],
                    e["call_time"],
                    e["teardown_time"],
                    wid,
                )
            )
            if e["setup_time"] is None and e["call_time"] is None and e["teardown_time"] is None:
                execs[-1]["duration"] = e["duration"]  # a crash with no phase known
    for i, x in enumerate(execs, 1):
        x["attempt"] = i
    first, last = runs[0][1], runs[-1][1]
    entry = dict(last)
    entry["executions"] = execs
    _sum_phases(entry, execs)
    entry["duration"] = round(sum(x["duration"] or 0.0 for x in execs), 6)
    entry["start"] = first["start"]
    entry["outcome"] = final_outcome(execs)
    m0, m1 = first["memory"], last["memory"]
    peaks = [e["memory"]["peak_mb"] for _, e, _ in runs if e["memory"]["peak_mb"] is not None]
    entry["memory"] = {
        "start_mb": m0["start_mb"],
        "peak_mb": max(peaks) if peaks else None,
        "end_mb": m1["end_mb"],
        "delta_mb": None
        if m0["start_mb"] is None or m1["end_mb"] is None
        else round(m1["end_mb"] - m0["start_mb"], 3),
    }
    cpu = [c for _, _, c in runs if c is not None]
    wall = sum(c[1] for c in cpu)
    entry["cpu_percent"] = round(100.0 * sum(c[0] for c in cpu) / wall, 1) if wall else None
    shared = [e["shared_setup_time"] for _, e, _ in runs if e["shared_setup_time"] is not None]
    entry["shared_setup_time"] = round(sum(shared), 6) if shared else None
    if "children" in entry:
        kids = [e.get("children") for _, e, _ in runs if e.get("children")]
        entry["children"] = (
            {
                "cpu_time": round(sum(k["cpu_time"] for k in kids), 6),
                "peak_rss_mb": max(
                    (k["peak_rss_mb"] for k in kids if k["peak_rss_mb"] is not None),
                    default=None,
                ),
                "processes": sum(k["processes"] for k in kids),
            }
            if kids
            else None
        )
    limits = [v for _, e, _ in runs for v in e.get("limits", ())]
    entry.pop("limits", None)
    if limits:
        entry["limits"] = limits
    subs = [e["subtests"] for _, e, _ in runs if "subtests" in e]
    entry.pop("subtests", None)
    if subs:
        entry["subtests"] = {k: sum(x[k] for x in subs) for k in SUBTEST_KEYS}
    return entry


def _fixture_entry(name: Any, scope: Any, loc: Any, wid: str) -> dict:
    return {
        "name": name,
        "scope": scope,
        "location": loc,
        "worker": wid,
        "setup_time": None,
        "teardown_time": None,
        "setup_test": None,
        "teardown_test": None,
    }


def _fixtures(per_worker: dict) -> list:
    """The ``fixtures`` block from each worker's :func:`_worker_fixtures`."""
    return [entry for got in per_worker.values() for entry, _ in got]


def _worker_fixtures(w: Worker) -> list:
    """The shared fixtures of one worker, ``(entry, Starter)`` each: one entry per setup of a
    shared fixture, its teardown paired with it (the latest setup of the same fixture not yet
    torn down); the Starter holds its spans and what the plugin counted of its children
    (children on)."""
    out: list = []
    pending: dict = {}
    for rec in sorted(w.records, key=lambda r: r[START]):
        extra = rec[EXTRA]
        events = extra.get("fixtures") if isinstance(extra, dict) else None
        if not isinstance(events, list):
            continue
        test = rec[NODEID]
        for ev in events:
            if not (isinstance(ev, (list, tuple)) and len(ev) in (5, 8)):
                continue
            name, scope, loc, what, spent = ev[:5]
            if not (isinstance(name, str) and _amount(spent)):
                continue
            if scope not in SHARED_SCOPES or not (loc is None or isinstance(loc, str)):
                continue
            ident = (name, scope, loc)
            if what == "setup":
                entry = _fixture_entry(name, scope, loc, w.wid)
                entry["setup_time"] = round(spent, 6)
                entry["setup_test"] = test
                st = _kids.Starter(entry, [], 0.0, 0, True)
                out.append((entry, st))
                pending.setdefault(ident, []).append((entry, st))
            elif what == "teardown":
                stack = pending.get(ident)
                if stack:
                    entry, st = stack.pop()
                else:  # its setup was not measured
                    entry = _fixture_entry(name, scope, loc, w.wid)
                    st = _kids.Starter(entry, [], 0.0, 0, True)
                    out.append((entry, st))
                entry["teardown_time"] = round(spent, 6)
                entry["teardown_test"] = test
            else:
                continue
            if len(ev) == 8:  # children on: [wall clock start, processes started, CPU s]
                began, started, cpu = ev[5:]
                if _amount(began):
                    st.spans.append((began, began + spent))
                if isinstance(started, int) and started > 0:
                    st.started += started
                if _amount(cpu) and cpu > 0:
                    st.cpu += cpu
    return out


def _bill_children(w: Worker, fixtures: list) -> dict:
    """Every test's and shared fixture's children in ``w``: {id(record): Starter}; each
    fixture's ``children`` block set in its entry."""
    starters, of_rec = [], {}
    for rec in w.records:
        extra = rec[EXTRA] if isinstance(rec[EXTRA], dict) else {}
        st = _kids.Starter(
            rec[NODEID],
            [(rec[START], rec[STOP])],
            extra.get("children_cpu"),
            extra.get("started"),
            False,
        )
        starters.append(st)
        of_rec[id(rec)] = st
    starters.extend(st for _, st in fixtures)
    _kids.bill(w, starters)
    for entry, st in fixtures:
        entry["children"] = _kids.block(st)
    return of_rec


def _previous(w: Worker, t: float) -> Optional[list]:
    """The record of the last test ``w`` finished at or before ``t``."""
    before = [r for r in w.records if r[STOP] <= t]
    return max(before, key=lambda r: r[STOP]) if before else None


def _crash_entry(crash: dict, w: Optional[Worker], slack: float) -> dict:
    """A test whose worker died under it: what was measured from its start to the crash.

    It started when its worker's previous test ended (the boundary RSS measured there is its
    start); the samples from then up to the crash give its peak and its last RSS. Samples
    taken before that end belong to the previous test and never count here (nor the other way:
    see :func:`build`).
    """
    start = crash.get("start")
    stop = crash["time"]
    rss0 = rss1 = peak = None
    if w is not None:
        prev = _previous(w, start if start is not None else stop)
        lo = w.joined if prev is None else prev[STOP]
        if prev is not None:
            start = prev[STOP]
            rss0 = prev[RSS_END]
        elif start is None:
            start = w.joined
        if rss0 is None:
            # the last sample taken before the test began (at most ``slack`` before the
            # previous test, or the worker, started): the RSS this test started from
            i = bisect_left(w.samples_t, start)
            floor = (prev[START] if prev is not None else lo) - slack
            if i > 0 and w.samples_t[i - 1] >= floor:
                rss0 = w.samples_rss[i - 1]
        first, rss1, peak = _window(w, start, stop, slack, max(lo, start), stop + slack)
        if rss0 is None:  # no sample before it: its own first one
            rss0 = first
        if peak is not None and rss0 is not None:
            peak = max(peak, rss0)
    dur = None if start is None else round(max(0.0, stop - start), 6)
    # pytest's setup report, when it came before the end: the rest of the time was the call's
    setup = crash.get("setup")
    setup = _round(setup) if _amount(setup) else None
    call = None
    if setup is not None and dur is not None:
        setup = min(setup, dur)
        call = round(dur - setup, 6)
    outcome = crash.get("outcome") or "crashed"
    return {
        "duration": dur,
        "setup_time": setup,
        "call_time": call,
        "teardown_time": None,
        "memory": _memory(rss0, peak, rss1),
        "cpu_percent": None,
        "outcome": "rerun" if crash.get("rerun") else outcome,
        "worker": crash.get("worker"),
        "pid": None if w is None else w.pid,
        "start": None if start is None else round(start, 6),
        "shared_setup_time": None,
        **({"children": None} if _children_on(w) else {}),
    }


def _methods(data: RunData) -> dict:
    peak_kernel = rss_boundary = children = True
    for w in data.workers.values():
        m = w.boundary_methods or {}
        children &= bool(m.get("children"))
        peak_kernel &= bool(m.get("peak"))
        rss_boundary &= bool(m.get("rss"))
    sampled = data.sample_interval is not None
    fallback = METHOD_SAMPLED if sampled else None
    return {
        "time": METHOD_TIME,
        "cpu": METHOD_CPU,
        "memory": METHOD_RSS_BOUNDARY if rss_boundary and data.workers else fallback,
        "memory_peak": METHOD_PEAK_KERNEL if peak_kernel and data.workers else fallback,
        "sample_interval": data.sample_interval,
        "children": METHOD_CHILDREN if children and data.workers else None,
        "fixtures": METHOD_FIXTURES,
        "noise": _noise.methods(data.workers.values()),
    }


def build(data: RunData, session: dict, system: Optional[dict]) -> dict:
    """Build the report dict. ``session`` carries what only pytest knows (start, exit status)."""
    slack = 2 * (data.sample_interval or 0.1)
    crash_times: dict[str, list] = {}
    for crash in data.crashed:
        crash_times.setdefault(crash.get("worker"), []).append(crash["time"])
    # Every execution, as (worker id, entry, (cpu s, wall s) or None), by node id: pytest runs
    # a node id more than once with reruns, --keep-duplicates, --dist each, or a crashed
    # worker's test run again; its entry keeps the node id as its key and lists them all.
    runs: dict[str, list] = {}
    by_worker_peak: dict[str, int] = {}
    fixtures: dict = {}
    for w in data.workers.values():
        fixtures[w.wid] = _worker_fixtures(w)
        kids = _bill_children(w, fixtures[w.wid]) if _children_on(w) else None
        peak = w.sampled_peak
        recs = sorted(w.records, key=lambda r: r[START])
        crashes = sorted(crash_times.get(w.wid, ()))
        waits = (
            _noise.cpu_shared_waits(
                w.noise_t, w.noise_v, [(r[START], r[STOP], r[CPU], r[WALL]) for r in recs]
            )
            if w.noise_t
            else None
        )
        for i, rec in enumerate(recs):
            lo = recs[i - 1][STOP] if i else w.joined
            hi = recs[i + 1][START] if i + 1 < len(recs) else float("inf")
            j = bisect_left(crashes, rec[STOP])
            if j < len(crashes) and crashes[j] < hi:
                # the worker died in a test that began when this one ended: nothing sampled
                # after this test's end is this test's
                hi = rec[STOP]
            cpu = (rec[CPU], rec[WALL]) if rec[CPU] is not None and rec[WALL] else None
            wait = waits[i] if waits is not None else None
            entry = _test_entry(rec, w, slack, lo, hi, kids, wait)
            runs.setdefault(rec[NODEID], []).append((w.wid, entry, cpu))
            if rec[RSS_PEAK] is not None and rec[RSS_PEAK] > peak:
                peak = rec[RSS_PEAK]
        by_worker_peak[w.wid] = peak
    crash_entries = []
    for crash in data.crashed:
        w = data.workers.get(crash.get("worker"))
        entry = _crash_entry(crash, w, slack)
        crash_entries.append(entry)
        runs.setdefault(crash["nodeid"], []).append((crash.get("worker"), entry, None))
    tests: dict[str, dict] = {
        nodeid: (_merge(rs) if len(rs) > 1 else rs[0][1]) for nodeid, rs in runs.items()
    }

    start = session.get("start") or time.time()
    stop = session.get("stop") or time.time()
    wall = max(0.0, stop - start)
    summary = summarize(tests)
    if wall > 0:
        workers_n = max(1, len(data.workers))
        summary["parallel_efficiency"] = round(summary["total_duration"] / (wall * workers_n), 4)
    _noise.merge_executions(tests, runs)  # a node id run more than once: its noise summed
    noise = _noise.summary(tests)
    if noise is not None:
        summary["noise"] = noise

    workers = {}
    for w in data.workers.values():
        mine = [e for rs in runs.values() for wid, e, _ in rs if wid == w.wid]
        busy = sum(e["duration"] or 0.0 for e in mine)
        left = w.left if w.left is not None else stop
        life = max(0.0, left - w.joined)
        workers[w.wid] = {
            "pid": w.pid,
            "tests": len(mine),
            "busy_time": round(busy, 6),
            "idle_time": round(max(0.0, life - busy), 6),
            "peak_rss_mb": _mb(by_worker_peak.get(w.wid) or None),
        }

    concurrent = _concurrent(data.concurrent_peak, data, crash_entries)

    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "session": {
            "duration": round(wall, 6),
            "total_tests": len(tests),
            "timestamp": iso(start),
            "exit_status": session.get("exit_status"),
            "aborted": bool(session.get("aborted")),
            "pytest_version": session.get("pytest_version"),
            "perfmon_version": __version__,
            "collector": data.collector,
            "measurement": _methods(data),
            "records_dropped": data.records_dropped,
            "collector_cpu_time": round(time.process_time(), 4),
            "protocol_errors": dict(data.counters),
            "warnings": list(data.warnings) + _bent_clock_words(data),
        },
    }
    if data.monitor_start is not None:
        report["session"]["monitor_start"] = data.monitor_start
    if isinstance(session.get("shard"), dict):  # --perf-shard
        report["session"]["shard"] = session["shard"]
    if session.get("monitor_restarts"):  # a monitor that died mid-run
        report["session"]["monitor_restarts"] = [
            {**r, "at": iso(r["at"])} for r in session["monitor_restarts"]
        ]
    if system is not None:
        report["system"] = system
    report["tests"] = tests
    report["summary"] = summary
    report["workers"] = workers
    report["concurrent_memory_peak"] = concurrent
    report["fixtures"] = _fixtures(fixtures)
    if data.hosts:  # remote workers: one block per host, the collector's own first
        _hosts(report, data, tests, runs, system, concurrent, crash_entries)
    return report


def _concurrent(peak: Optional[tuple], data: RunData, crash_entries: list) -> Optional[dict]:
    """The ``concurrent_memory_peak`` block of one peak ``(time, total, {wid: rss})``."""
    if peak is None:
        return None
    t_peak, total_rss, per = peak
    running = {}
    for wid, rss in per.items():
        # the test whose protocol [start, stop] holds the moment (a record's stop comes a
        # little after the end of its teardown: start + duration would miss that end)
        test = None
        w = data.workers.get(wid)
        for rec in w.records if w is not None else ():
            if rec[START] <= t_peak <= rec[STOP] + 0.001:
                test = rec[NODEID]
                break
        if test is None:  # a test its worker died in
            for crash, entry in zip(data.crashed, crash_entries):
                began = entry["start"]
                if crash.get("worker") == wid and began is not None:
                    if began <= t_peak <= crash["time"] + 0.001:
                        test = crash["nodeid"]
                        break
        running[wid] = {"rss_mb": _mb(rss), "test": test}
    return {"total_rss_mb": _mb(total_rss), "time": iso(t_peak), "workers": running}


def _hosts(
    report: dict,
    data: RunData,
    tests: dict,
    runs: dict,
    system: Optional[dict],
    concurrent: Optional[dict],
    crash_entries: list,
) -> None:
    """Name each test's and worker's host; ``hosts``: each host's system block and concurrent
    peak (the collector's host: its own samples; a remote host: its relay's)."""
    from .host import label

    here = label()
    where = {w.wid: (w.host or here) for w in data.workers.values()}
    for nodeid, rs in runs.items():
        hosts = sorted({where.get(wid) or here for wid, _, _ in rs})
        tests[nodeid]["host"] = hosts[0] if len(hosts) == 1 else ", ".join(hosts)
    for wid, block in report["workers"].items():
        block["host"] = where.get(wid, here)
    out = {here: {"system": system, "concurrent_memory_peak": concurrent}}
    for name, h in sorted(data.hosts.items()):
        out[name] = {
            "system": h.get("system"),
            "concurrent_memory_peak": _concurrent(h.get("peak"), data, crash_entries),
        }
    report["hosts"] = out


def _cpu_model() -> str:
    from .machine import cpu_model  # stdlib only

    return cpu_model()


def _meminfo_total() -> Optional[int]:
    """Linux: MemTotal of /proc/meminfo in bytes (psutil's ``virtual_memory().total``); None
    elsewhere or when unreadable."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def system_info(python_version: Optional[str] = None) -> dict:
    """The brief's system block. Uses psutil where present, the standard library otherwise."""
    import platform

    mem_total = _meminfo_total()  # Linux: what psutil reads, without importing it (~20 ms)
    try:
        if mem_total is None:
            import psutil

            mem_total = psutil.virtual_memory().total
    except Exception:
        try:
            mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            pass
    return {
        "platform": platform.system(),
        "platform_release": platform.release(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "python_implementation": platform.python_implementation(),
        "python_version": python_version or platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_total_mb": _mb(mem_total),
        "timestamp": iso(time.time()),
    }
