"""``perfmon history ...``: import reports, list runs, show a test's series, check for
regressions, prune. The database layer is imported when a command runs, so ``perfmon`` works
without the ``history`` extra; without it these commands say how to install it (exit 2).

Exit status as for ``perfmon compare``: 0 fine; 1 a regression found (``check``); 2 bad input,
bad usage, or a store that cannot be used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from typing import Any, Optional

from .. import github
from ..argtypes import label_lengths, nonneg_float, positive_int, probability, wait_seconds
from ..command import EXIT_OK, EXIT_REGRESSION, UsageError, emit
from ..sections import md_code
from ..tables import shorten, text_table
from ..vocabulary import DEFAULT_CHECK_METRICS, DEFAULT_GATE, UNITS
from ..vocabulary import HISTORY_METRICS as METRICS
from .changes import P_MAX, PERMUTATIONS, default_gates, find_changes
from .runner import run_command
from .url import INSTALL_HINT, redact

DEFAULT_WINDOW = 30
DEFAULT_RECENT = 5
SPARK = "▁▂▃▄▅▆▇█"


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"not KEY=VALUE: {text!r}")
    label_lengths(text, key.strip(), value)
    return key.strip(), value


def _abs_floor(text: str) -> tuple[str, float]:
    metric, sep, value = text.partition("=")
    if not sep or metric not in METRICS:
        raise argparse.ArgumentTypeError(
            f"not METRIC=N with METRIC one of {', '.join(METRICS)}: {text!r}"
        )
    return metric, nonneg_float(value)


def sparkline(values: list) -> str:
    nums = [v for v in values if v is not None]
    if not nums:
        return ""
    lo, hi = min(nums), max(nums)
    span = hi - lo
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        else:
            out.append(SPARK[int((v - lo) / span * (len(SPARK) - 1) + 0.5) if span else 0])
    return "".join(out)


def _fmt(metric: str, v: Optional[float]) -> str:
    if v is None:
        return "-"
    if UNITS[metric] == "s":
        return f"{v * 1000:.1f} ms" if abs(v) < 1 else f"{v:.3f} s"
    if UNITS[metric] == "MB":
        return f"{v:.1f} MB"
    return f"{v:.0f}%"


def _width() -> int:
    return shutil.get_terminal_size((120, 24)).columns


def _time(t: Any) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if hasattr(t, "strftime") else str(t or "-")


def _jsonable(v: Any) -> Any:
    """Times as ISO 8601 UTC with a Z (SQLite gives them back naive, PostgreSQL aware)."""
    if not hasattr(v, "isoformat"):
        return v
    if v.tzinfo is not None:
        v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return v.isoformat(timespec="microseconds") + "Z"


# --------------------------------------------------------------------------- commands


def cmd_import(args: argparse.Namespace, store: Any) -> int:
    from ..analysis import ReportError, load_report
    from . import context

    labels = dict(args.label or [])
    reports = []
    for path in args.files:
        try:
            rep = load_report(path)
        except ReportError as e:
            raise UsageError(str(e)) from None
        if "jobs" in rep or "sessions" in rep:
            raise UsageError(
                f"{path}: a merged or daemon-combined report; import each run's own report"
            )
        reports.append((path, rep))
    commit, branch = context.commit_branch(os.getcwd())
    commit = labels.get("commit", commit)
    branch = labels.get("branch", branch)
    eng = store.open_store(args.db, args.timeout)
    try:
        for path, rep in reports:
            desc = context.machine(rep.get("system"))
            rid, new = store.insert_run(
                eng,
                rep,
                commit=commit,
                branch=branch,
                labels=labels,
                machine_fp=context.fingerprint(desc),
                machine_desc=desc,
                source="import",
            )
            what = "stored as" if new else "already stored as"
            print(f"perfmon: {path}: {what} run {rid} ({len(rep['tests'])} tests)")
    finally:
        eng.dispose()
    return EXIT_OK


def cmd_runs(args: argparse.Namespace, store: Any) -> int:
    eng = store.open_store(args.db, args.timeout, create=False, others_ok=False)
    try:
        rows = store.list_runs(eng, args.limit)
    finally:
        eng.dispose()
    if args.format == "json":
        emit(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], indent=2) + "\n")
        return EXIT_OK
    table = [
        [
            str(r["id"]),
            _time(r["started_at"]),
            (r["commit_sha"] or "-")[:12],
            r["branch"] or "-",
            r["fingerprint"][:8],
            str(r["total_tests"]),
            "aborted" if r["aborted"] else str(r["exit_status"]),
            f"{r['duration']:.1f}s" if r["duration"] is not None else "-",
            " ".join(f"{k}={v}" for k, v in sorted(r["labels"].items())) or "-",
        ]
        for r in rows
    ]
    headers = ["run", "started (UTC)", "commit", "branch", "machine", "tests", "exit", "wall"]
    lines = text_table(
        headers + ["labels"],
        table,
        [True, False, False, False, False, True, True, True, False],
        _width(),
    )
    emit("\n".join(lines) + "\n" if rows else "perfmon: the store holds no run\n")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, store: Any) -> int:
    eng = store.open_store(args.db, args.timeout, create=False, others_ok=False)
    try:
        tid = store.test_id(eng, args.nodeid)
        if tid is None:
            raise UsageError(f"no test {args.nodeid!r} in {redact(args.db)}")
        machine = None if args.any_machine else store.newest_machine(eng, tid)
        points = store.series(eng, tid, args.metric, machine, args.limit)
    finally:
        eng.dispose()
    values = [p["value"] if p["outcome"] == "passed" else None for p in points]
    if args.format == "json":
        out = {
            "test": args.nodeid,
            "metric": args.metric,
            "machine_id": machine,
            "points": [{k: _jsonable(v) for k, v in p.items()} for p in points],
        }
        emit(json.dumps(out, indent=2) + "\n")
        return EXIT_OK
    head = f"{args.nodeid}  {args.metric}  ({len(points)} runs, oldest first; passed runs only)"
    rows = [
        [
            str(p["run"]),
            _time(p["started_at"]),
            (p["commit_sha"] or "-")[:12],
            p["outcome"] or "-",
            _fmt(args.metric, p["value"]),
        ]
        for p in points
    ]
    lines = [shorten(head, _width()), "  " + sparkline(values), ""]
    lines += text_table(
        ["run", "started (UTC)", "commit", "outcome", args.metric],
        rows,
        [True, False, False, False, True],
    )
    emit("\n".join(lines) + "\n")
    return EXIT_OK


def _change_text(c: dict) -> str:
    pct = "new" if c["change_percent"] is None else f"{c['change_percent']:+.1f}%"
    return (
        f"{c['metric']} {_fmt(c['metric'], c['before'])} -> {_fmt(c['metric'], c['after'])} "
        f"({pct}, p={c['p_value']:.3f}) from run {c['run']}"
        + (f" (commit {c['commit'][:12]})" if c["commit"] else "")
    )


NOISE_ON = (
    "Times judged without the time each test waited for a CPU (--noise on; where the store "
    "has its noise certificate)."
)


def _not_judged_text(result: dict) -> Optional[str]:
    """The line on the changes the tests' waiting for a CPU explains."""
    nj = result.get("contended_not_judged") or []
    if not nj:
        return None
    head = (
        f"Contended, not judged: {len(nj)} change(s) as measured that the time the tests "
        "waited for a CPU explains (without the wait they are no change): "
    )
    return head + "; ".join(
        f"{c['test']} {c['metric']} {_fmt(c['metric'], c['before'])} -> "
        f"{_fmt(c['metric'], c['after'])} from run {c['run']} "
        f"({c['contended_after']} of {c['runs_after']} run(s) after it contended)"
        for c in nj
    )


def check_markdown(result: dict) -> str:
    regs = [c for c in result["changes"] if c["kind"] == "regression"]
    imps = [c for c in result["changes"] if c["kind"] == "improvement"]
    lines = ["## perfmon history check", ""]
    lines.append(
        f"{result['series']} series over the last {result['runs']} runs; "
        f"{len(regs)} regression(s), {len(imps)} improvement(s) in the last "
        f"{result['recent']} runs."
    )
    if result.get("noise") == "on":
        lines += ["", NOISE_ON]
    nj = _not_judged_text(result)
    if nj:
        lines += ["", nj]
    if result["changes"]:
        lines += [
            "",
            "| | test | metric | run | commit | before | after | change | p |",
            "|---|---|---|---:|---|---:|---:|---:|---:|",
        ]
        for c in result["changes"]:
            mark = "🔴" if c["kind"] == "regression" else "🟢"
            pct = "new" if c["change_percent"] is None else f"{c['change_percent']:+.1f}%"
            lines.append(
                f"| {mark} | {md_code(c['test'])} | {c['metric']} | {c['run']} | "
                f"{(c['commit'] or '-')[:12]} | {_fmt(c['metric'], c['before'])} | "
                f"{_fmt(c['metric'], c['after'])} | {pct} | {c['p_value']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def check_text(result: dict) -> str:
    regs = sum(c["kind"] == "regression" for c in result["changes"])
    head = (
        f"perfmon history check: {result['series']} series over the last {result['runs']} "
        f"runs; {regs} regression(s), {len(result['changes']) - regs} improvement(s) in the "
        f"last {result['recent']} runs"
    )
    nj = _not_judged_text(result)
    if nj:
        head += "\n" + nj
    if not result["changes"]:
        return head + "\n"
    rows = [
        [
            c["kind"],
            c["metric"],
            str(c["run"]),
            (c["commit"] or "-")[:12],
            _fmt(c["metric"], c["before"]),
            _fmt(c["metric"], c["after"]),
            "new" if c["change_percent"] is None else f"{c['change_percent']:+.1f}%",
            f"{c['p_value']:.3f}",
            c["test"],
        ]
        for c in result["changes"]
    ]
    headers = ["change", "metric", "run", "commit", "before", "after", "%", "p", "test"]
    right = [False, False, True, False, True, True, True, True, False]
    return head + "\n" + "\n".join(text_table(headers, rows, right, _width())) + "\n"


def cmd_check(args: argparse.Namespace, store: Any) -> int:
    metrics = list(dict.fromkeys(args.metric or DEFAULT_CHECK_METRICS))
    gates = {
        m: (rel if args.rel is None else args.rel, floor)
        for m, (rel, floor) in default_gates(metrics).items()
    }
    for m, v in args.abs or []:
        if m not in gates:
            raise UsageError(f"--abs {m}=...: {m} is not a checked metric (--metric {m})")
        gates[m] = (gates[m][0], v)
    if args.recent > args.window:
        raise UsageError(f"--recent {args.recent} is more than --window {args.window}")
    noise = args.noise == "on"
    eng = store.open_store(args.db, args.timeout, create=False, others_ok=False)
    try:
        machine = None if args.any_machine else store.newest_machine(eng)
        run_rows, data = store.window(eng, machine, args.window, metrics, noise=noise)
    finally:
        eng.dispose()
    not_judged: Optional[list] = [] if noise else None
    changes = find_changes(
        run_rows, data, metrics, gates, args.p_value, args.recent, args.permutations, not_judged
    )
    result = {
        "runs": len(run_rows),
        "series": len(data) * len(metrics),
        "recent": args.recent,
        "machine_id": machine,
        "p_max": args.p_value,
        "gates": {m: {"rel": g[0], "abs": g[1]} for m, g in gates.items()},
        "noise": "on" if noise else "off",
        "changes": changes,
        "contended_not_judged": not_judged or [],
    }
    md = check_markdown(result)
    if args.format == "json":
        emit(json.dumps(result, indent=2) + "\n")
    elif args.format == "markdown":
        emit(md)
    else:
        emit(check_text(result))
    github.append_step_summary(md)
    regressions = [c for c in changes if c["kind"] == "regression"]
    if github.in_actions():
        for c in regressions:
            title = f"perfmon: {c['metric']} regression"
            print(github.warning(c["test"], title, f"{c['test']}: {_change_text(c)}"))
        sys.stdout.flush()
    return EXIT_REGRESSION if regressions else EXIT_OK


def cmd_prune(args: argparse.Namespace, store: Any) -> int:
    eng = store.open_store(args.db, args.timeout, create=False, others_ok=False)
    try:
        gone = store.prune(eng, args.keep)
    finally:
        eng.dispose()
    print(f"perfmon: pruned {gone} run(s); kept the newest {args.keep}")
    return EXIT_OK


# --------------------------------------------------------------------------- wiring


def register(subparsers: Any) -> None:
    """Add ``history`` and its subcommands to ``perfmon``'s subparsers."""
    h = subparsers.add_parser(
        "history",
        help="run history in SQLite or PostgreSQL; regression detection over it",
        description="Keep runs in a history store (a file path means SQLite; or "
        "sqlite:///PATH, postgresql://user:pass@host:port/db) and find regressions with "
        "change-point detection (E-divisive means, permutation test). Needs the history "
        f"extra: {INSTALL_HINT}. Exit status: 0 fine; 1 regression (check); 2 bad input, "
        "usage or store.",
    )
    sub = h.add_subparsers(dest="history_command", metavar="SUBCOMMAND")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", required=True, metavar="URL", help="the history store")
        p.add_argument(
            "--timeout",
            type=wait_seconds,
            default=10.0,
            metavar="SECONDS",
            help="wait at most this long for a locked or remote store (default: 10)",
        )

    def fmt(p: argparse.ArgumentParser, choices: tuple) -> None:
        p.add_argument(
            "--format", choices=choices, default="table", help="output format (default: table)"
        )

    p = sub.add_parser(
        "import",
        help="store reports (CI artifacts); idempotent",
        description="Store each report as a run. The same report imported "
        "twice is stored once. Commit and branch: --label commit=/branch=, "
        "else the CI variables (GITHUB_SHA, ...), else git in the current "
        "directory.",
    )
    p.add_argument("files", nargs="+", metavar="REPORT.json")
    common(p)
    p.add_argument(
        "--label",
        action="append",
        type=_label,
        metavar="KEY=VALUE",
        help="a label of the run (repeatable); commit= and branch= override",
    )
    p.set_defaults(func=run_command(cmd_import))

    p = sub.add_parser("runs", help="the newest runs", description="The newest runs.")
    common(p)
    p.add_argument("--limit", type=positive_int, default=20, metavar="N", help="default: 20")
    fmt(p, ("table", "json"))
    p.set_defaults(func=run_command(cmd_runs))

    p = sub.add_parser(
        "show",
        help="one test's series, with a sparkline",
        description="One test's values run by run (runs of the machine of its "
        "newest run unless --any-machine), with a sparkline.",
    )
    p.add_argument("nodeid", metavar="NODEID")
    common(p)
    p.add_argument("--metric", choices=METRICS, default="duration", help="default: duration")
    p.add_argument("--limit", type=positive_int, default=50, metavar="N", help="default: 50")
    p.add_argument("--any-machine", action="store_true", help="runs of every machine")
    fmt(p, ("table", "json"))
    p.set_defaults(func=run_command(cmd_show))

    p = sub.add_parser(
        "check",
        help="regressions in the latest runs (exit 1 when found)",
        description="For each test and metric, find change points in its series over the "
        "last --window runs (of the newest run's machine unless --any-machine; passed results "
        "only) and report those in the last --recent runs that are significant (p <= "
        "--p-value) AND at least --rel of the median before AND at least the metric's --abs "
        "floor. Exit 1 when one of them is an increase. On GitHub Actions: step summary and "
        "::warning lines.",
    )
    common(p)
    p.add_argument(
        "--window",
        type=positive_int,
        default=DEFAULT_WINDOW,
        metavar="N",
        help=f"runs per series (default: {DEFAULT_WINDOW})",
    )
    p.add_argument(
        "--recent",
        type=positive_int,
        default=DEFAULT_RECENT,
        metavar="N",
        help="report changes in the newest N runs; older ones were reported "
        f"when they were new (default: {DEFAULT_RECENT})",
    )
    p.add_argument(
        "--metric",
        action="append",
        choices=METRICS,
        help="repeatable (default: "
        + " and ".join([", ".join(DEFAULT_CHECK_METRICS[:-1]), DEFAULT_CHECK_METRICS[-1]])
        + ")",
    )
    p.add_argument(
        "--p-value",
        type=probability,
        default=P_MAX,
        metavar="P",
        help=f"significance level (default: {P_MAX:g})",
    )
    p.add_argument(
        "--rel",
        type=nonneg_float,
        metavar="FRACTION",
        help="relative threshold for every metric (defaults: "
        + ", ".join(f"{m} {g[0]:g}" for m, g in DEFAULT_GATE.items())
        + ")",
    )
    p.add_argument(
        "--abs",
        type=_abs_floor,
        action="append",
        metavar="METRIC=N",
        help="absolute floor of a metric (defaults: "
        + ", ".join(f"{m} {g[1]:g}" for m, g in DEFAULT_GATE.items())
        + ")",
    )
    p.add_argument(
        "--permutations",
        type=positive_int,
        default=PERMUTATIONS,
        metavar="N",
        help=f"shuffles of the permutation test (default: {PERMUTATIONS})",
    )
    p.add_argument("--any-machine", action="store_true", help="mix runs of every machine")
    p.add_argument(
        "--noise",
        choices=("on", "off"),
        default="on",
        help="on (default): judge times and CPU shares without the time each test waited for "
        "a CPU (the stored noise certificate), and list a change that the waiting explains as "
        "'contended, not judged'; off: as measured",
    )
    fmt(p, ("table", "markdown", "json"))
    p.set_defaults(func=run_command(cmd_check))

    p = sub.add_parser(
        "prune",
        help="delete all but the newest N runs",
        description="Delete all but the newest --keep runs, in one transaction.",
    )
    common(p)
    p.add_argument("--keep", type=positive_int, required=True, metavar="N")
    p.set_defaults(func=run_command(cmd_prune))
