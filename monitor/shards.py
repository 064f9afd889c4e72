"""``perfmon split`` (the plan of a CI matrix, without running anything), ``perfmon predict
--shards`` (how many shards for a target) and the text of ``perfmon merge``'s matrix check.

The planning is :mod:`.split`'s (pure); the history store is read by
:func:`.history.shards.shard_data`, exactly as ``pytest --perf-shard`` reads it (the newest runs
of any machine, without the runs of this matrix: this commit's shards of N, this CI run's), so
that ``perfmon split`` run in a job of the matrix prints the plan its pytest computes (given the
same tests: ``--tests`` with ``pytest --collect-only -q``'s output). One difference: a SQLite
store that does not exist is an error here (a typo), where pytest plans by count from it (a
matrix's first run meets one).

Exit status: 0 fine; 2 bad usage or input, always one line.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Optional

from . import split as splitting
from .argtypes import MAX_SHARDS, positive_int, shard_count, wait_seconds
from .command import EXIT_OK, UsageError, emit, error
from .tables import text_table


def _secs(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"


# --------------------------------------------------------------------------- the figures


def _figures(args: argparse.Namespace, n: int) -> dict:
    """The figures of --from FILE, or of the store of --db (as a shard of ``n`` reads it)."""
    if args.source_file:
        try:
            return splitting.load_figures(args.source_file)
        except splitting.SplitError as exc:  # the message names the file
            raise UsageError(str(exc)) from None
    from .history.runner import run_command
    from .history.shards import shard_data

    got: dict = {}

    def read(args: argparse.Namespace, store: Any) -> int:
        # A store that does not exist is a typo here, as for `perfmon predict` (a shard's
        # plugin reads it as an empty history: a matrix's first run meets one).
        store.check_readable(args.db, others_ok=False)
        runs = args.runs or splitting.history_runs(n)
        ci = splitting.ci_run(
            os.environ, {splitting.LABEL_CI_RUN: args.ci_run} if args.ci_run else None
        )
        got["data"] = shard_data(args.db, runs, n, args.commit, ci, os.getcwd())
        return EXIT_OK

    status = run_command(read)(args)
    if status != EXIT_OK:
        raise _Failed(status)
    data = got["data"]
    left = data.get("excluded") or 0
    mine = f", {left} of this matrix left out" if left else ""
    data["source"] = f"the history ({data.get('runs') or 0} run(s), any machine{mine})"
    return data


class _Failed(Exception):
    """The store's command wrapper printed its one line already; exit with ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _nodeids(args: argparse.Namespace, data: dict) -> list:
    if args.tests:
        try:
            with open(args.tests, encoding="utf-8", errors="replace") as f:
                ids = splitting.prediction.parse_nodeids(f.read())
        except OSError as exc:
            raise UsageError(f"{args.tests}: {exc.strerror or exc}") from None
        if not ids:
            raise UsageError(f"{args.tests}: no node ids (expected `pytest --collect-only -q`)")
        return ids
    ids = sorted(data.get("tests") or ())
    if not ids:
        raise UsageError("no tests: the source has none (give --tests FILE)")
    return ids


def _budget(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    try:
        return splitting.prediction.parse_size(text)
    except ValueError as exc:
        raise UsageError(f"--memory-budget: {exc}") from None


# --------------------------------------------------------------------------- perfmon split


def plan_json(plan: splitting.Split) -> dict:
    return {
        "shards": [
            {
                "k": s.index,
                "tests": s.tests,
                "predicted_s": round(s.predicted_s, 3),
                "predicted_wall_s": plan.wall(s.index),
                "peak_mb": s.peak_mb,
            }
            for s in plan.shards
        ],
        "n": len(plan.shards),
        "total_tests": plan.total,
        "imbalance": plan.imbalance,
        "plan": plan.digest,
        "source": plan.source,
        "unknown_tests": plan.unknown,
        "by_count": plan.by_count,
        "workers": plan.workers,
        "over_budget": plan.over_budget,
    }


def plan_text(plan: splitting.Split, budget_mb: Optional[float] = None) -> str:
    rows = []
    for s in plan.shards:
        over = budget_mb is not None and s.peak_mb is not None and s.peak_mb > budget_mb
        peak = "-" if s.peak_mb is None else f"{s.peak_mb:.0f} MB" + (" (over)" if over else "")
        rows.append(
            [str(s.index), str(len(s.tests)), _secs(s.predicted_s), _secs(plan.wall(s.index)), peak]
        )
    heads = ["shard", "tests", "test time", "wall", "peak"]
    lines = text_table(heads, rows, [True] * 5)
    lines.append("")
    if not plan.by_count:
        how = f": imbalance {plan.imbalance} (slowest over the mean)"
    else:  # (the source may say it already: "no figures for these tests, split by count")
        how = "" if plan.source.endswith("split by count") else ": split by count"
    lines.append(
        f"{len(plan.shards)} shards of {plan.total} tests from {plan.source}{how}; "
        f"tests without figures: {plan.unknown}; plan {plan.digest}"
    )
    if plan.over_budget:
        lines.append(f"over the memory budget on any shard: {', '.join(plan.over_budget[:5])}")
    return "\n".join(lines) + "\n"


def durations_file(plan: splitting.Split) -> dict:
    """A pytest-split ``.test_durations`` file: every test's planned duration (s)."""
    return {t: round(d, 6) for t, d in sorted(plan.durations.items())}


def cmd_split(args: argparse.Namespace) -> int:
    try:
        data = _figures(args, args.shards)
        ids = _nodeids(args, data)
        budget = _budget(args.memory_budget)
        plan = splitting.split(ids, data, args.shards, budget_mb=budget, workers=args.workers)
    except _Failed as exc:
        return exc.status
    except (UsageError, splitting.SplitError) as exc:
        return error(str(exc))
    if args.format == "json":
        text = json.dumps(plan_json(plan), indent=2) + "\n"
    elif args.format == "pytest-split":
        text = json.dumps(durations_file(plan), indent=2) + "\n"
    else:
        text = plan_text(plan, budget)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            return error(f"{args.output}: cannot write ({exc.strerror or exc})")
        print(f"perfmon: wrote {args.output} ({plan.total} tests, {args.shards} shards)")
    else:
        emit(text)
    return EXIT_OK


def _common(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", metavar="URL", help="the history store")
    src.add_argument(
        "--from",
        dest="source_file",
        metavar="FILE",
        help="one report (single or merged) or a pytest-split .test_durations file",
    )
    p.add_argument(
        "--tests",
        metavar="FILE",
        help="node ids, one per line, as `pytest --collect-only -q` prints them (default: "
        "every test of the source)",
    )
    p.add_argument(
        "--workers",
        type=shard_count,
        default=1,
        metavar="N",
        help="the -n each shard runs with (its wall time and memory; default 1)",
    )
    p.add_argument(
        "--runs",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --db: the newest N runs (default: as --perf-shard: max(10, 3 x shards))",
    )
    p.add_argument(
        "--commit",
        metavar="SHA",
        help="with --db: this matrix's commit, whose shard runs are left out (default: the "
        "CI variable, else git in the current directory)",
    )
    p.add_argument(
        "--ci-run",
        metavar="ID",
        help="with --db: this CI run's id, whose runs are left out (default: GITHUB_RUN_ID and "
        "the like)",
    )
    p.add_argument(
        "--timeout",
        type=wait_seconds,
        default=10.0,
        metavar="SECONDS",
        help="with --db: wait at most this long for a locked or remote store (default: 10)",
    )


def register(subparsers: Any) -> None:
    """Add ``split`` to ``perfmon``'s subparsers."""
    p = subparsers.add_parser(
        "split",
        help="the balanced shards of a CI matrix, as pytest --perf-shard K/N splits",
        description="Split the tests into N shards of about the same predicted time (longest "
        "first, xdist groups aside), from the history store (its newest runs of any machine, "
        "without this matrix's) or one report or .test_durations file, and print per shard its "
        "tests, predicted test time, wall and peak, and the imbalance. --format json gives "
        "each shard's node ids; --format pytest-split a .test_durations file. Exit status: 0 "
        "fine; 2 bad input or usage.",
    )
    p.add_argument("--shards", type=shard_count, required=True, metavar="N")
    _common(p)
    p.add_argument(
        "--memory-budget",
        metavar="SIZE",
        help="each shard's memory budget with its --workers (8G, 512M), as --perf-max-memory",
    )
    p.add_argument("--format", choices=("text", "json", "pytest-split"), default="text")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=cmd_split)
    _extend_predict(subparsers.choices.get("predict"))


def _extend_predict(p: Optional[argparse.ArgumentParser]) -> None:
    """``perfmon predict --shards auto|N [--target TIME]``: the matrix instead of -n."""
    if p is None:
        return
    p.add_argument(
        "--shards",
        metavar="auto|N",
        help="predict a CI matrix of pytest --perf-shard instead: auto (with --target) = the "
        "fewest shards whose slowest is predicted within the target; N = that plan, as "
        "perfmon split prints it",
    )
    p.add_argument("--target", metavar="TIME", help="with --shards auto: e.g. 10m, 90s, 1.5h")
    plain = p.get_default("func")

    def predict(args: argparse.Namespace) -> int:
        if args.shards is not None:
            return predict_shards(args)
        return plain(args)

    p.set_defaults(func=predict)


# --------------------------------------------------------------------------- predict --shards


def predict_shards(args: argparse.Namespace) -> int:
    """``perfmon predict --shards auto --target T``: the smallest N whose slowest shard's
    predicted wall is within T; ``--shards N``: that N's plan (as ``perfmon split``). Each
    shard runs with ``--workers`` when it is one number, else serially."""
    workers = int(args.workers) if str(args.workers).isdigit() and int(args.workers) else 1
    split_args = argparse.Namespace(
        shards=None,
        db=args.db,
        source_file=None,
        tests=args.tests,
        workers=workers,
        runs=args.runs,
        commit=None,
        ci_run=None,
        timeout=args.timeout,
        memory_budget=None,
        format="json" if args.format == "json" else "text",
        output=None,
    )
    try:
        if args.shards != "auto":
            if not str(args.shards).isdigit() or not 1 <= int(args.shards) <= MAX_SHARDS:
                raise UsageError(
                    f"--shards: {args.shards!r} is not auto or a number from 1 to {MAX_SHARDS}"
                )
            split_args.shards = int(args.shards)
            return cmd_split(split_args)
        if args.target is None:
            raise UsageError("--shards auto needs --target TIME (e.g. 10m)")
        try:
            target = splitting.parse_time(args.target)
        except ValueError as exc:
            raise UsageError(f"--target: {exc}") from None
        data = _figures(split_args, 1)
        n, rows = splitting.auto_shards(_nodeids(args, data), data, target, workers)
    except _Failed as exc:
        return exc.status
    except (UsageError, splitting.SplitError) as exc:
        return error(str(exc))
    if args.format == "json":
        out = {
            "target_s": target,
            "shards": n,
            "tried": [{"shards": k, "slowest_wall_s": w, "imbalance": i} for k, w, i in rows],
        }
        emit(json.dumps(out, indent=2) + "\n")
        return EXIT_OK
    lines = text_table(
        ["shards", "slowest wall", "imbalance"],
        [[str(k), _secs(w), str(i)] for k, w, i in rows],
        [True, True, True],
    )
    lines.append("")
    if n is None:
        lines.append(
            f"no number of shards meets {_secs(target)}: the longest test with the start-up, "
            f"or the slowest of {rows[-1][0]} shards, takes longer"
        )
    else:
        lines.append(f"recommended: --perf-shard K/{n} (the slowest shard within {_secs(target)})")
    emit("\n".join(lines) + "\n")
    return EXIT_OK


# --------------------------------------------------------------------------- merge's check


def matrix_text(matrix: dict) -> str:
    """The check of a merged matrix, for ``perfmon merge``'s output."""
    n = matrix["shards"]
    rows = []
    for j in matrix["jobs"]:
        err = j.get("error")
        rows.append(
            [
                f"{j.get('k')}/{j.get('n')}",
                str(j.get("tests")),
                _secs(j.get("test_time_s")),
                _secs(j.get("wall_s")),
                _secs(j.get("predicted_wall_s")),
                "-" if err is None else f"{err * 100:+.1f} %",
                "-" if j.get("start_s") is None else f"+{j['start_s']:.1f} s",
                str(j.get("job")),
            ]
        )
    heads = ["shard", "tests", "test time", "wall", "predicted", "error", "start", "job"]
    lines = [f"perfmon: matrix of {n} shard(s), {matrix.get('tests_seen')} test(s) ran"]
    lines += text_table(heads, rows, [True] * 7 + [False])
    if matrix.get("imbalance") is not None:
        lines.append(f"imbalance: slowest shard's wall {matrix['imbalance']} x the mean")
    cp = matrix.get("critical_path") or {}
    longest = ", ".join(f"{nid} ({_secs(d)})" for nid, d in cp.get("longest") or ())
    lines.append(
        f"critical path: shard {cp.get('k')}/{n} ({_secs(cp.get('wall_s'))})"
        + (f"; longest tests: {longest}" if longest else "")
    )
    for p in matrix.get("problems") or ():
        lines.append(f"perfmon: warning: {p}")
    for nid, labels in list((matrix.get("duplicated") or {}).items())[:20]:
        lines.append(f"  run twice: {nid} ({', '.join(labels)})")
    for nid in (matrix.get("not_run") or [])[:20]:
        lines.append(f"  not run: {nid}")
    if not matrix.get("problems"):
        lines.append("every test of the matrix ran exactly once")
    return "\n".join(lines) + "\n"
