"""Trend data for the HTML page's "History" section (``perfmon html REPORT.json --db URL``).

:func:`trends` reads the store and returns a plain, JSON-ready dict: per-test series of the
report's tests over the last runs on the report's machine (the store's :func:`store.window`:
passed results only, as ``history check`` reads them), the change points found in each series
(:func:`.changes.series_changes`: the loop and the default gates of ``history check``), and
the suite's duration per commit. The page module gets this dict, never a connection.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections.abc import Mapping
from typing import Any, Optional

import sqlalchemy as sa

from ..units import number
from ..vocabulary import DEFAULT_CHECK_METRICS as METRICS  # what `history check` watches
from . import context, store
from .changes import MEASURED, P_MAX, PERMUTATIONS, default_gates, series_changes

DEFAULT_RUNS = 30
DEFAULT_MAX_TESTS = 20


def _iso(t: Any) -> Optional[str]:
    if not isinstance(t, dt.datetime):
        return None
    if t.tzinfo is None:  # SQLite gives naive datetimes; the store writes UTC
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _short(sha: Optional[str]) -> str:
    return sha[:8] if sha else "?"


def _machine(eng: sa.Engine, report: Mapping) -> tuple[Optional[int], bool]:
    """(machine id, whether it is the report's own machine): the report's machine when the
    store knows it, else the machine of the newest run."""
    fp = context.fingerprint(context.machine(report.get("system")))
    with eng.connect() as conn:
        mid = conn.execute(
            sa.select(store.machines.c.id).where(store.machines.c.fingerprint == fp)
        ).scalar()
    if mid is not None:
        return mid, True
    return store.newest_machine(eng), False


def _suite(eng: sa.Engine, machine_id: Optional[int], size: int) -> list[dict]:
    """The suite's duration per commit over the newest ``size`` runs of the machine: one
    point per commit (the median of its runs), in the order of each commit's first run."""
    r = store.runs
    q = sa.select(r.c.commit_sha, r.c.started_at, r.c.duration).order_by(*store.NEWEST_FIRST)
    if machine_id is not None:
        q = q.where(r.c.machine_id == machine_id)
    with eng.connect() as conn:
        rows = list(conn.execute(q.limit(size)))
    rows.reverse()
    groups: dict[str, dict] = {}
    for sha, started, duration in rows:
        g = groups.setdefault(
            sha or "",
            {"commit": sha, "short": _short(sha), "first": _iso(started), "values": []},
        )
        if duration is not None:
            g["values"].append(float(duration))
    out = []
    for g in groups.values():
        vals = g.pop("values")
        g["runs"] = len(vals)
        g["duration"] = statistics.median(vals) if vals else None
        g["min"] = min(vals) if vals else None
        g["max"] = max(vals) if vals else None
        out.append(g)
    return out


def trends(
    url: str,
    report: Mapping,
    *,
    runs: int = DEFAULT_RUNS,
    max_tests: int = DEFAULT_MAX_TESTS,
    timeout: float = store.DEFAULT_TIMEOUT,
    p_max: float = P_MAX,
    permutations: int = PERMUTATIONS,
) -> dict:
    """The History section's data for ``report`` from the store at ``url`` (must exist).

    Raises :class:`store.HistoryError`, :class:`url.URLError` or SQLAlchemy errors."""
    eng = store.open_store(url, timeout, create=False, others_ok=False)
    try:
        machine_id, own = _machine(eng, report)
        run_rows, data = store.window(eng, machine_id, runs, METRICS, noise=True)
        suite = _suite(eng, machine_id, runs) if run_rows else []
        desc = None
        if machine_id is not None:
            with eng.connect() as conn:
                desc = conn.execute(
                    sa.select(store.machines.c.description).where(store.machines.c.id == machine_id)
                ).scalar()
    finally:
        eng.dispose()

    gates = default_gates(METRICS)
    out: dict[str, Any] = {
        "runs": [
            {
                "id": r["id"],
                "commit": r["commit_sha"],
                "short": _short(r["commit_sha"]),
                "branch": r["branch"],
                "started_at": _iso(r["started_at"]),
            }
            for r in run_rows
        ],
        "window": runs,
        "own_machine": own,
        "machine": json.loads(desc) if desc else None,
        "p_max": p_max,
        "gates": {m: {"rel": rel, "abs": floor} for m, (rel, floor) in gates.items()},
        "max_tests": max_tests,
        "tests": [],
        "suite": suite,
        "with_history": 0,
        "changed": 0,
    }
    if not run_rows:
        return out

    durations = {
        k: t.get("duration")
        for k, t in (report.get("tests") or {}).items()
        if isinstance(t, Mapping) and k in data
    }
    out["with_history"] = len(durations)
    found: dict[str, dict] = {}
    for nodeid in durations:
        per_metric = {}
        for metric in METRICS:
            pts = data[nodeid][metric]
            if not pts:
                continue
            # the same loop, gates and seeds as `history check`: the same answer (its series
            # judged without the wait for a CPU); the chart draws the values as measured
            marks = [
                {k: c[k] for k in ("run", "before", "after", "change_percent", "p_value", "kind")}
                for c in series_changes(nodeid, metric, pts, gates[metric], p_max, permutations)
            ]
            shown = data[nodeid][(MEASURED, metric)]
            per_metric[metric] = {
                "x": [i for i, _ in shown],
                "y": [v for _, v in shown],
                "changes": marks,
            }
        found[nodeid] = per_metric

    def slow_key(k: str) -> float:
        return -(number(durations[k]) or 0.0)

    slowest = sorted(durations, key=lambda k: (slow_key(k), k))[:max_tests]
    changed = [k for k in sorted(found) if any(m["changes"] for m in found[k].values())]
    out["changed"] = len(changed)
    chosen = list(dict.fromkeys(changed + slowest))
    for k in chosen:
        out["tests"].append(
            {
                "test": k,
                "changed": k in changed,
                "slowest": k in slowest,
                "duration_now": durations[k],
                "metrics": found[k],
            }
        )
    return out
