"""``perfmon predict``: read the history store, predict with :mod:`..predict`, print.

The database layer is imported when the command runs (``perfmon`` works without the history
extra). Exit status: 0 fine; 2 bad usage, bad input, a store that cannot be used or holds no
data for the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Optional

from .. import predict as prediction
from ..argtypes import positive_int, wait_seconds
from ..command import UsageError
from ..tables import text_table
from ..units import MB
from .runner import run_command

DEFAULT_RUNS = 10


def load(
    eng: Any,
    store: Any,
    nodeids: Optional[Sequence[str]],
    last: int,
    machine_id: Optional[int],
    exclude: Sequence[int] = (),
) -> tuple[list[str], dict, list[prediction.RunStats]]:
    """The last ``last`` runs (of ``machine_id``, or all; never those in ``exclude``, run
    ids): the node ids to predict (``nodeids`` in their order, else the newest run's tests
    sorted), per node id of those runs
    {"duration": [...], "peak_mb": [...]} oldest first, and per run its
    :class:`~..predict.RunStats` (with each worker's largest test peak).

    A test's series holds only results that measure one whole execution of it
    (:func:`store.one_execution`): not a test executed more than once in its run (reruns,
    --dist each: the sums over its executions), not a crashed or interrupted one. The run's
    figures (each worker's busy time and memory) keep every result: that time was spent."""
    sa = store.sa
    runs, results, tests = store.runs, store.results, store.tests
    rq = sa.select(runs.c.id, runs.c.duration, runs.c.workers)
    if machine_id is not None:
        rq = rq.where(runs.c.machine_id == machine_id)
    if exclude:
        rq = rq.where(runs.c.id.not_in(list(exclude)))
    rq = rq.order_by(*store.NEWEST_FIRST).limit(last)
    with eng.connect() as conn:
        run_rows = list(conn.execute(rq))
        if not run_rows:
            raise store.HistoryError("the history store holds no runs")
        order = {r.id: i for i, r in enumerate(reversed(run_rows))}
        q = (
            sa.select(
                tests.c.nodeid,
                results.c.run_id,
                results.c.duration,
                results.c.peak_mb,
                results.c.start_mb,
                results.c.worker,
                results.c.outcome,
            )
            .join(tests, tests.c.id == results.c.test_id)
            .where(results.c.run_id.in_(list(order)))
        )
        rows = list(conn.execute(q))
    newest = run_rows[0].id
    if nodeids is None:
        nodeids = sorted({r.nodeid for r in rows if r.run_id == newest})
    per: dict[str, list] = {}
    busy: dict[int, dict] = {}
    first_mb: dict[int, dict] = {}
    high_mb: dict[int, dict] = {}  # per run and worker its largest test peak
    for r in sorted(rows, key=lambda r: order[r.run_id]):
        if r.duration is not None:
            w = busy.setdefault(r.run_id, {})
            w[r.worker] = w.get(r.worker, 0.0) + r.duration
        if r.start_mb is not None:
            m = first_mb.setdefault(r.run_id, {})
            m[r.worker] = min(m.get(r.worker, r.start_mb), r.start_mb)
        if r.peak_mb is not None:
            h = high_mb.setdefault(r.run_id, {})
            h[r.worker] = max(h.get(r.worker, r.peak_mb), r.peak_mb)
        if store.one_execution(r.outcome):
            per.setdefault(r.nodeid, []).append((r.duration, r.peak_mb))
    series = {
        nid: {"duration": [d for d, _ in pts], "peak_mb": [p for _, p in pts]}
        for nid, pts in per.items()
    }
    stats = []
    for r in run_rows:
        loads = busy.get(r.id)
        if r.duration is None or not loads:
            continue
        mbs = list(first_mb.get(r.id, {}).values())
        stats.append(
            prediction.RunStats(
                workers=r.workers or len(loads),
                duration=r.duration,
                busy_max=max(loads.values()),
                baseline_mb=prediction.median(mbs) if mbs else None,
                worker_peaks_mb=tuple(sorted(high_mb.get(r.id, {}).values(), reverse=True)),
            )
        )
    return list(nodeids), series, stats


def _machine(eng: Any, store: Any) -> tuple[Optional[int], bool]:
    """This machine's id when the store has runs of it, else the newest run's machine.
    Returns (id, is this machine)."""
    from . import context

    fp = context.fingerprint(context.local_machine())
    m = store.machines
    with eng.connect() as conn:
        mid = conn.execute(store.sa.select(m.c.id).where(m.c.fingerprint == fp)).scalar()
        if mid is not None:
            has = conn.execute(
                store.sa.select(store.runs.c.id).where(store.runs.c.machine_id == mid).limit(1)
            ).scalar()
            if has is not None:
                return mid, True
    return store.newest_machine(eng), False


def _budget(text: str) -> float:
    """--memory-budget in MB; ``auto`` = the memory available now."""
    if text == "auto":
        import psutil

        return psutil.virtual_memory().available / MB
    try:
        return prediction.parse_size(text)
    except ValueError as exc:
        raise UsageError(f"--memory-budget: {exc}") from None


def _secs(v: float) -> str:
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"


def _wall_keys(scheduled: bool) -> tuple[str, str, str]:
    """A prediction's wall time keys (figure, low, high): plain ``-n N`` or ``-n N
    --perf-schedule``."""
    stem = "wall_scheduled" if scheduled else "wall"
    return f"{stem}_s", f"{stem}_low_s", f"{stem}_high_s"


def table(result: dict, budget_mb: Optional[float], fits: bool, scheduled: bool = False) -> str:
    mid, low, high = _wall_keys(scheduled)
    rows = []
    for p in result["predictions"]:
        mark = "*" if p["workers"] == result["recommended_workers"] else ""
        over = budget_mb is not None and p["peak_mb"] > budget_mb
        rows.append(
            [
                f"{p['workers']}{mark}",
                _secs(p[mid]),
                f"{_secs(p[low])} - {_secs(p[high])}",
                f"{p['peak_mb']:.0f} MB" + (" (over)" if over else ""),
            ]
        )
    lines = text_table(["workers", "wall", "interval", "peak"], rows, [True, True, True, True])
    budget = f"{budget_mb:.0f} MB" if budget_mb is not None else "none"
    lines.append("")
    how = " --perf-schedule" if scheduled else ""
    lines.append(
        f"recommended: -n {result['recommended_workers']}{how} (memory budget {budget}"
        + ("" if fits else ", exceeded by every worker count")
        + f"); tests without history: {result['unknown_tests']}"
    )
    return "\n".join(lines) + "\n"


def cmd_predict(args: argparse.Namespace, store: Any) -> int:
    if args.workers == "auto":
        workers = prediction.auto_workers(os.cpu_count() or 1)
    else:
        try:
            workers = prediction.parse_workers(args.workers)
        except ValueError as exc:
            raise UsageError(f"--workers: {exc}") from None
    budget_mb = _budget(args.memory_budget) if args.memory_budget else None
    nodeids = None
    if args.tests:
        try:
            with open(args.tests, encoding="utf-8", errors="replace") as f:
                nodeids = prediction.parse_nodeids(f.read())
        except OSError as exc:
            raise UsageError(f"{args.tests}: {exc.strerror or exc}") from None
        if not nodeids:
            raise UsageError(f"{args.tests}: no node ids (expected `pytest --collect-only -q`)")
    eng = store.open_store(args.db, args.timeout, create=False, others_ok=False)
    try:
        machine, local = _machine(eng, store)
        nodeids, series, runs = load(eng, store, nodeids, args.runs, machine)
    finally:
        eng.dispose()
    try:
        estimates, unknown = prediction.estimate_tests(nodeids, series)
    except prediction.PredictError as exc:
        raise UsageError(str(exc)) from None
    if not local:
        print(
            "perfmon: note: the store has no runs of this machine; predicting from the "
            "machine of its newest run",
            file=sys.stderr,
        )
    predictions = prediction.predict(estimates, runs, workers)
    k, fits = prediction.recommend(predictions, budget_mb, _wall_keys(args.perf_schedule)[0])
    result = {
        "predictions": predictions,
        "recommended_workers": k,
        "unknown_tests": unknown,
        "perf_schedule": args.perf_schedule,
    }
    if not fits:
        print(
            f"perfmon: warning: every worker count's predicted peak exceeds the memory budget "
            f"({budget_mb:.0f} MB); recommending the smallest peak",
            file=sys.stderr,
        )
    if args.format == "json":
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(table(result, budget_mb, fits, args.perf_schedule))
    sys.stdout.flush()
    return 0


def register(subparsers: Any) -> None:
    """Add ``predict`` to ``perfmon``'s subparsers."""
    p = subparsers.add_parser(
        "predict",
        help="predict wall time and memory peak per worker count from the history",
        description="From the last runs of this machine in a history store: per worker count "
        "the suite's wall time (the tests in collection order handed out as pytest-xdist's "
        "--dist load does, or longest first with --perf-schedule, plus the start-up the "
        "history shows), a low-high interval, and the concurrent memory peak; recommends the "
        "fastest worker count whose peak stays under --memory-budget. Tests without history "
        "are predicted from their function, class, file or the suite median. Exit status: 0 "
        "fine; 2 bad input, usage, or a store without data for the tests.",
    )
    p.add_argument("--db", required=True, metavar="URL", help="the history store")
    p.add_argument(
        "--workers",
        default="auto",
        metavar="1,2,4,8|auto",
        help="worker counts to predict (default: auto = 1, 2, 4, ... up to the CPU count)",
    )
    p.add_argument(
        "--memory-budget",
        metavar="SIZE|auto",
        help="e.g. 8G or 512M; auto = the memory available now (default: no budget)",
    )
    p.add_argument(
        "--tests",
        metavar="FILE",
        help="node ids, one per line as `pytest --collect-only -q` prints them, in "
        "collection order (default: the tests of the newest run, sorted by node id)",
    )
    p.add_argument(
        "--perf-schedule",
        action="store_true",
        help="recommend and show the wall times of `pytest -n N --perf-schedule` (longest "
        "first) instead of plain `pytest -n N` (JSON has both either way)",
    )
    p.add_argument(
        "--runs",
        type=positive_int,
        default=DEFAULT_RUNS,
        metavar="N",
        help=f"use the last N runs (default: {DEFAULT_RUNS})",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--timeout",
        type=wait_seconds,
        default=10.0,
        metavar="SECONDS",
        help="wait at most this long for a locked or remote store (default: 10)",
    )
    p.set_defaults(func=run_command(cmd_predict))
