"""The ``perfmon`` console script: read, compare and merge pytest-perfmon reports in CI.

    perfmon report performance_metrics.json --top 10
    perfmon compare baseline.json current.json --fail-on-regression
    perfmon merge perf-*.json -o combined.json

Exit status: 0 fine; 1 regression (``compare --fail-on-regression`` only); 2 bad input or usage.
On GitHub Actions, ``report`` and ``compare`` append their Markdown to ``$GITHUB_STEP_SUMMARY``
and ``compare`` prints a ``::warning`` annotation per regression.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Callable, Optional

from . import __version__, analysis
from .analysis import Change, Comparison, ReportError, Threshold
from .report import write_atomic

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2

FORMATS = ("table", "markdown", "json")


# --------------------------------------------------------------------------- formatting


def _f(v: Optional[float], fmt: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{unit}"


def _value(metric: analysis.Metric, v: Optional[float], signed: bool = False) -> str:
    sign = "+" if signed else ""
    if metric.unit == "s":
        return _f(v, f"{sign}.3f", "s")
    if metric.unit == "MB":
        return _f(v, f"{sign}.1f", " MB")
    return _f(v, "+.1f", " pts") if signed else _f(v, ".1f", "%")


def _ratio(change: Change) -> str:
    r = change.ratio
    return "new" if r is None else f"{r * 100:+.0f}%"


def _outcomes(outcomes: dict) -> str:
    return ", ".join(f"{n} {k}" for k, n in outcomes.items()) or "none"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{_md_cell(text)}{pad}{fence}"


def _text_row(cells: Sequence[str], widths: list, right: list) -> str:
    """Aligned cells, two spaces apart; the last cell (the test id) is never padded."""
    parts = []
    for i, c in enumerate(cells):
        if i == len(cells) - 1:
            parts.append(c)
        else:
            parts.append(c.rjust(widths[i]) if right[i] else c.ljust(widths[i]))
    return ("  " + "  ".join(parts)).rstrip()


class Doc:
    """A small document model rendered as plain text or as GitHub Markdown."""

    def __init__(self) -> None:
        self.blocks: list = []

    def heading(self, text: str) -> None:
        self.blocks.append(("h", text))

    def line(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: Sequence[str], rows: list, right: Sequence[bool]) -> None:
        """``rows``: lists of strings; the last column holds the test id (code in Markdown)."""
        self.blocks.append(("t", (list(headers), rows, list(right))))

    def text(self) -> str:
        out: list = []
        for kind, body in self.blocks:
            if kind == "h":
                if out:
                    out.append("")
                out.append(body)
            elif kind == "p":
                out.append(body)
            else:
                headers, rows, right = body
                widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
                out.append(_text_row(headers, widths, right))
                out.extend(_text_row(r, widths, right) for r in rows)
        return "\n".join(out) + "\n"

    def markdown(self) -> str:
        out: list = []
        for kind, body in self.blocks:
            if kind == "h":
                if out and out[-1] != "":
                    out.append("")
                out.extend([f"#### {body}", ""] if out else [f"### {body}", ""])
            elif kind == "p":
                out.extend([body, ""])
            else:
                headers, rows, right = body
                out.append("| " + " | ".join(headers) + " |")
                out.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
                for r in rows:
                    cells = [_md_cell(c) for c in r[:-1]] + [_md_code(r[-1])]
                    out.append("| " + " | ".join(cells) + " |")
                out.append("")
        while out and out[-1] == "":
            out.pop()
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- report


def report_data(report: dict, source: str, top: int, mem_mb: float, cpu_pct: float) -> dict:
    mem = analysis.memory_over(report, mem_mb)
    cpu = analysis.cpu_over(report, cpu_pct)
    return {
        "file": source,
        "schema_version": report["schema_version"],
        "totals": analysis.totals(report),
        "thresholds": {"top": top, "memory_mb": mem_mb, "cpu_percent": cpu_pct},
        "slowest": [
            {
                "test": k,
                "duration": t.get("duration"),
                "setup_time": t.get("setup_time"),
                "call_time": t.get("call_time"),
                "teardown_time": t.get("teardown_time"),
                "outcome": t.get("outcome"),
            }
            for k, t in analysis.slowest(report, top)
        ],
        "memory": {
            "count": len(mem),
            "tests": [
                {
                    "test": k,
                    "delta_mb": analysis.memory_delta(t),
                    "growth_mb": analysis.memory_growth(t),
                    "start_mb": t["memory"].get("start_mb"),
                    "peak_mb": t["memory"].get("peak_mb"),
                    "end_mb": t["memory"].get("end_mb"),
                }
                for k, t in mem[:top]
            ],
        },
        "cpu": {
            "count": len(cpu),
            "tests": [
                {"test": k, "cpu_percent": t.get("cpu_percent"), "duration": t.get("duration")}
                for k, t in cpu[:top]
            ],
        },
    }


def _count(section: dict) -> str:
    shown, count = len(section["tests"]), section["count"]
    return f"{count} test(s)" + (f", top {shown} shown" if shown < count else "")


def report_doc(data: dict) -> Doc:
    tot = data["totals"]
    th = data["thresholds"]
    doc = Doc()
    doc.heading(f"perfmon report: {data['file']}")
    if tot["jobs"] is not None:
        where = f" in {tot['jobs']} jobs; jobs' sessions {_f(tot['session_duration'], '.2f', 's')}"
    else:
        where = f"; session {_f(tot['session_duration'], '.2f', 's')} wall"
    doc.line(
        f"{tot['tests']} tests ({_outcomes(tot['outcomes'])}){where}, "
        f"tests' total {_f(tot['total_duration'], '.3f', 's')}, "
        f"mean {_f(tot['avg_duration'], '.3f', 's')}, max {_f(tot['max_duration'], '.3f', 's')}."
    )
    doc.line(
        f"Memory: mean delta {_f(tot['avg_memory_delta_mb'], '+.1f', ' MB')}, "
        f"max delta {_f(tot['max_memory_delta_mb'], '+.1f', ' MB')}, "
        f"peak RSS {_f(tot['peak_rss_mb'], '.1f', ' MB')}; "
        f"{tot['workers']} worker(s), collector {tot['collector']}, "
        f"{tot['records_dropped']} record(s) dropped, {tot['warnings']} warning(s)."
    )

    n_slow = len(data["slowest"])
    doc.heading(f"Slowest tests (top {n_slow} of {tot['tests']})")
    if data["slowest"]:
        doc.table(
            ["duration", "setup", "call", "teardown", "outcome", "test"],
            [
                [
                    _f(r["duration"], ".3f", "s"),
                    _f(r["setup_time"], ".3f", "s"),
                    _f(r["call_time"], ".3f", "s"),
                    _f(r["teardown_time"], ".3f", "s"),
                    str(r["outcome"]),
                    r["test"],
                ]
                for r in data["slowest"]
            ],
            [True, True, True, True, False, False],
        )
    else:
        doc.line("(no timed tests)")

    mem = data["memory"]
    doc.heading(f"Memory delta over {th['memory_mb']:g} MB: {_count(mem)}")
    if mem["tests"]:
        doc.table(
            ["delta", "peak-start", "start", "peak", "end", "test"],
            [
                [
                    _f(r["delta_mb"], "+.1f", " MB"),
                    _f(r["growth_mb"], "+.1f", " MB"),
                    _f(r["start_mb"], ".1f", " MB"),
                    _f(r["peak_mb"], ".1f", " MB"),
                    _f(r["end_mb"], ".1f", " MB"),
                    r["test"],
                ]
                for r in mem["tests"]
            ],
            [True, True, True, True, True, False],
        )
    else:
        doc.line("(none)")

    cpu = data["cpu"]
    doc.heading(f"CPU over {th['cpu_percent']:g}%: {_count(cpu)}")
    if cpu["tests"]:
        doc.table(
            ["cpu", "duration", "test"],
            [
                [_f(r["cpu_percent"], ".1f", "%"), _f(r["duration"], ".3f", "s"), r["test"]]
                for r in cpu["tests"]
            ],
            [True, True, False],
        )
    else:
        doc.line("(none)")
    return doc


# --------------------------------------------------------------------------- compare


def _change_rows(changes: list) -> list:
    return [
        [
            c.metric.title,
            _value(c.metric, c.baseline),
            _value(c.metric, c.current),
            _value(c.metric, c.delta, signed=True),
            _ratio(c),
            c.test,
        ]
        for c in changes
    ]


CHANGE_HEADERS = ["metric", "baseline", "current", "change", "rel", "test"]
CHANGE_RIGHT = [False, True, True, True, True, False]


def describe_thresholds(cmp: Comparison) -> str:
    t, m, c = (cmp.thresholds[k] for k in ("time", "memory", "cpu"))
    return (
        f"time >= {t.rel * 100:g}% and >= {t.abs:g}s; "
        f"memory >= {m.rel * 100:g}% and >= {m.abs:g} MB; "
        f"CPU >= {c.rel * 100:g}% and >= {c.abs:g} points "
        f"(tests of {cmp.cpu_min_duration:g}s or more)"
    )


def compare_doc(cmp: Comparison, base: str, cur: str) -> Doc:
    doc = Doc()
    doc.heading(f"perfmon compare: {base} -> {cur}")
    verdict = f"REGRESSION ({len(cmp.regressions)})" if cmp.regressions else "OK"
    doc.line(
        f"Result: {verdict}. {cmp.compared} test(s) compared: "
        f"{len(cmp.regressions)} regression(s), {len(cmp.improvements)} improvement(s); "
        f"{len(cmp.new)} new, {len(cmp.gone)} gone, "
        f"{len(cmp.outcome_changes)} outcome change(s)."
    )
    doc.line(f"A change counts when it passes both thresholds: {describe_thresholds(cmp)}.")
    doc.heading(f"Regressions: {len(cmp.regressions)}")
    if cmp.regressions:
        doc.table(CHANGE_HEADERS, _change_rows(cmp.regressions), CHANGE_RIGHT)
    else:
        doc.line("(none)")
    doc.heading(f"Improvements: {len(cmp.improvements)}")
    if cmp.improvements:
        doc.table(CHANGE_HEADERS, _change_rows(cmp.improvements), CHANGE_RIGHT)
    else:
        doc.line("(none)")
    if cmp.outcome_changes:
        doc.heading(f"Outcome changes: {len(cmp.outcome_changes)} (metrics not compared)")
        doc.table(
            ["baseline", "current", "test"],
            [[str(old), str(new), k] for k, old, new in cmp.outcome_changes],
            [False, False, False],
        )
    for title, names in (("New tests", cmp.new), ("Gone tests", cmp.gone)):
        if names:
            doc.heading(f"{title}: {len(names)}")
            doc.table(["test"], [[k] for k in names], [False])
    return doc


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def annotations(cmp: Comparison, current: dict) -> list:
    """One GitHub ``::warning`` workflow command per regression."""
    lines = []
    for c in cmp.regressions:
        test = current["tests"].get(c.test) or {}
        nodeid = c.test
        job = test.get("job")
        if isinstance(job, str) and nodeid.startswith(job + analysis.JOB_SEP):
            nodeid = nodeid[len(job) + len(analysis.JOB_SEP) :]
        props = []
        path = nodeid.split("::", 1)[0]
        if path.endswith(".py"):
            props.append(f"file={_escape_property(path)}")
        props.append(f"title={_escape_property(f'perfmon: {c.metric.title} regression')}")
        msg = (
            f"{c.test}: {c.metric.title} {_value(c.metric, c.baseline)} -> "
            f"{_value(c.metric, c.current)} ({_value(c.metric, c.delta, signed=True)}, "
            f"{_ratio(c)})"
        )
        lines.append(f"::warning {','.join(props)}::{_escape_data(msg)}")
    return lines


# --------------------------------------------------------------------------- plumbing


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return v


def _pos_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return v


def _render(doc: Doc, data: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "markdown":
        return doc.markdown()
    return doc.text()


def _emit(text: str, output: Optional[str]) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ReportError(f"{output}: cannot write ({e.strerror or e})") from None


def _step_summary(markdown: str) -> None:
    """Append to ``$GITHUB_STEP_SUMMARY`` when set; a failure there is a warning, not an error."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown + "\n")
    except OSError as e:
        print(
            f"perfmon: warning: cannot append to GITHUB_STEP_SUMMARY {path} ({e.strerror or e})",
            file=sys.stderr,
        )


def cmd_report(args: argparse.Namespace) -> int:
    report = analysis.load_report(args.file)
    data = report_data(report, args.file, args.top, args.memory_threshold, args.cpu_threshold)
    doc = report_doc(data)
    _emit(_render(doc, data, args.format), args.output)
    _step_summary(doc.markdown())
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    baseline = analysis.load_report(args.baseline)
    current = analysis.load_report(args.current)
    thresholds = {
        "time": Threshold(args.time_rel, args.time_abs),
        "memory": Threshold(args.memory_rel, args.memory_abs),
        "cpu": Threshold(args.cpu_rel, args.cpu_abs),
    }
    cmp = analysis.compare(baseline, current, thresholds, args.cpu_min_duration)
    doc = compare_doc(cmp, args.baseline, args.current)
    data = {"baseline": args.baseline, "current": args.current}
    data.update(cmp.as_dict())
    _emit(_render(doc, data, args.format), args.output)
    _step_summary(doc.markdown())
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for line in annotations(cmp, current):
            print(line)
        sys.stdout.flush()
    if cmp.regressions and args.fail_on_regression:
        return EXIT_REGRESSION
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    labels = args.label or []
    if labels and len(labels) != len(args.files):
        raise ReportError(
            f"--label given {len(labels)} time(s) for {len(args.files)} file(s); "
            "give one per file, in file order"
        )
    reports = [analysis.load_report(path) for path in args.files]
    inputs = [
        (labels[i] if labels else None, report, path)
        for i, (report, path) in enumerate(zip(reports, args.files))
    ]
    merged = analysis.merge(inputs)
    try:
        write_atomic(merged, args.output)
    except OSError as e:
        raise ReportError(f"{args.output}: cannot write ({e.strerror or e})") from None
    print(
        f"perfmon: merged {len(args.files)} file(s), {len(merged['jobs'])} job(s), "
        f"{len(merged['tests'])} test(s) into {args.output}"
    )
    return EXIT_OK


# --------------------------------------------------------------------------- argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfmon",
        description="Read, compare and merge pytest-perfmon JSON reports (for CI runners).",
        epilog="Exit status: 0 fine; 1 regression (compare --fail-on-regression); "
        "2 bad input (missing file, not JSON, not a perfmon report, other schema_version) "
        "or bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"perfmon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    gha = "When GITHUB_STEP_SUMMARY is set, the Markdown version is also appended to that file."

    def add_format(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--format",
            choices=FORMATS,
            default="table",
            help="output format (default: table)",
        )
        p.add_argument(
            "-o",
            "--output",
            metavar="FILE",
            help="write the output to FILE instead of stdout",
        )

    p = sub.add_parser(
        "report",
        help="slowest tests, memory growth, CPU-intensive tests, session totals",
        description="The three analyses of one report: the slowest tests, tests whose "
        "memory.delta_mb exceeds a threshold (possible leaks), CPU-intensive tests; plus "
        "session totals. " + gha,
    )
    p.add_argument("file", metavar="FILE", help="a perfmon report (single run or merged)")
    p.add_argument(
        "--top", type=_pos_int, default=10, metavar="N", help="rows per list (default: 10)"
    )
    p.add_argument(
        "--memory-threshold",
        type=_nonneg_float,
        default=10.0,
        metavar="MB",
        help="list tests whose memory.delta_mb is above MB (default: 10)",
    )
    p.add_argument(
        "--cpu-threshold",
        type=_nonneg_float,
        default=80.0,
        metavar="PCT",
        help="list tests whose cpu_percent is above PCT (default: 80)",
    )
    add_format(p)
    p.set_defaults(func=cmd_report)

    d = analysis.DEFAULT_THRESHOLDS
    p = sub.add_parser(
        "compare",
        help="per-test regressions and improvements between two reports",
        description="Per test: what got slower (duration), hungrier (memory delta, memory "
        "peak-start) or more CPU-bound (cpu_percent); what improved; which tests are new or "
        "gone. Noise-aware: a change counts only when it passes BOTH the relative threshold "
        "(fraction of the baseline value) AND the absolute floor of its metric. Metrics are "
        "compared only when a test has the same outcome in both reports. " + gha + " With "
        "GITHUB_ACTIONS=true, each regression is also printed as a ::warning annotation.",
    )
    p.add_argument("baseline", metavar="BASELINE", help="the reference report (e.g. from main)")
    p.add_argument("current", metavar="CURRENT", help="the report to check")
    p.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when there is at least one regression (default: exit 0)",
    )
    for flag, group, rel_help, abs_help in (
        ("time", "time", "duration", "seconds"),
        ("memory", "memory", "memory delta and peak-start", "MB"),
        ("cpu", "cpu", "cpu_percent", "percentage points"),
    ):
        p.add_argument(
            f"--{flag}-rel",
            type=_nonneg_float,
            default=d[group].rel,
            metavar="FRACTION",
            help=f"relative threshold for {rel_help}: 0.2 is 20%% of the baseline "
            f"(default: {d[group].rel:g})",
        )
        p.add_argument(
            f"--{flag}-abs",
            type=_nonneg_float,
            default=d[group].abs,
            metavar="N",
            help=f"absolute floor for {rel_help}, in {abs_help} (default: {d[group].abs:g})",
        )
    p.add_argument(
        "--cpu-min-duration",
        type=_nonneg_float,
        default=analysis.DEFAULT_CPU_MIN_DURATION,
        metavar="SECONDS",
        help="compare CPU only for tests that took at least SECONDS in both reports: the CPU "
        f"share of a very short test is noise (default: {analysis.DEFAULT_CPU_MIN_DURATION:g})",
    )
    add_format(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "merge",
        help="combine the reports of a CI matrix into one",
        description="Combine reports (single runs or merged ones) into one report. Each job's "
        "tests are kept apart under 'LABEL::nodeid'; each job's session, system, summary and "
        "workers are kept under the top-level 'jobs' object; the summary is recomputed from "
        "the merged tests. Merging is associative: merging merged files gives the same tests "
        "and summary as merging all single runs at once.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="reports to merge, in order")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the merged report")
    p.add_argument(
        "--label",
        action="append",
        metavar="NAME",
        help="job label, once per FILE in file order (default: the report's session.label, "
        "else the file name without .json). For an already merged FILE, NAME prefixes its "
        "job labels (NAME/job).",
    )
    p.set_defaults(func=cmd_merge)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ReportError as e:
        print(f"perfmon: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # e.g. `perfmon report x.json | head`: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
