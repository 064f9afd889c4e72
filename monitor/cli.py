"""The ``perfmon`` console script: read, compare and merge pytest-perfmon reports in CI.

    perfmon report performance_metrics.json --top 10
    perfmon compare baseline.json current.json --fail-on-regression
    perfmon merge perf-*.json -o combined.json
    perfmon html performance_metrics.json -o perf.html
    perfmon export performance_metrics.json --format openmetrics -o perf.prom
    perfmon profile tests/test_x.py::test_slow --svg flame.svg

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
from typing import Any, Callable, Optional

from . import about, analysis, github, profile_view, shards
from .analysis import Comparison, ReportError, Threshold
from .argtypes import nonneg_float, positive_int, runs_window, wait_seconds
from .command import EXIT_BAD_INPUT, EXIT_OK, EXIT_REGRESSION, emit
from .history import cli as history_cli
from .history import predict_command
from .render import (
    DEFAULT_CPU_PERCENT,
    DEFAULT_MEMORY_MB,
    DEFAULT_TOP,
    Doc,
    compare_doc,
    ratio_text,
    report_data,
    report_doc,
    value_text,
)
from .report import write_atomic
from .sections import Line, Section, Table
from .units import number

FORMATS = ("table", "markdown", "json")


def regression_warnings(cmp: Comparison, current: dict) -> list:
    """One GitHub ``::warning`` workflow command per regression."""
    lines = []
    for c in cmp.regressions:
        test = current["tests"].get(c.test) or {}
        nodeid = c.test
        job = test.get("job")
        if isinstance(job, str) and nodeid.startswith(job + analysis.JOB_SEP):
            nodeid = nodeid[len(job) + len(analysis.JOB_SEP) :]
        msg = (
            f"{c.test}: {c.metric.title} {value_text(c.metric, c.baseline)} -> "
            f"{value_text(c.metric, c.current)} ({value_text(c.metric, c.delta, signed=True)}, "
            f"{ratio_text(c)})"
        )
        if c.repeated:
            msg += (
                f"; executed {c.baseline_runs} -> {c.current_runs} time(s), figures summed "
                "over every execution (reruns included)"
            )
        lines.append(github.warning(nodeid, f"perfmon: {c.metric.title} regression", msg))
    return lines


def _wait_text(lost: tuple) -> str:
    return " -> ".join("-" if v is None else f"{v:.3f}s" for v in lost)


def not_judged_section(cmp: Comparison) -> Section:
    """compare's "contended, not judged": the changes the tests' waiting for a CPU explains."""
    rows = [
        [
            c.kind,
            c.metric.title,
            value_text(c.metric, c.baseline),
            value_text(c.metric, c.current),
            f"{value_text(c.metric, c.baseline_unwaited)} -> "
            f"{value_text(c.metric, c.current_unwaited)}",
            _wait_text(c.lost),
            c.test,
        ]
        for c in cmp.not_judged
    ]
    return Section(
        f"Contended, not judged: {len(cmp.not_judged)}",
        lines=[
            Line(
                "These changed as measured, not without the time the test waited for a CPU "
                "(its noise certificate's wait_time): the machine was busy, the test was not "
                "slower. --noise off judges them as measured."
            )
        ]
        if rows
        else [],
        table=Table(
            ["as measured", "metric", "baseline", "current", "without the wait", "waited", "test"],
            rows,
            [False, False, True, True, True, True, False],
        ),
    )


def compare_document(cmp: Comparison, base: str, cur: str) -> Doc:
    """compare's document: :func:`.render.compare_doc`, and the noise discount's part."""
    doc = compare_doc(cmp, base, cur)
    if not cmp.noise:
        doc.lines.append(Line("Times judged as measured (--noise off)."))
        return doc
    if not cmp.with_noise:
        return doc  # neither report measured the wait (older reports): as measured
    doc.lines.append(
        Line(
            "Times and CPU shares are judged without the time each test waited for a CPU "
            f"(--noise on; {cmp.with_noise} of {cmp.compared} test(s) with a noise certificate)."
        )
    )
    if cmp.not_judged:
        n = len({c.test for c in cmp.not_judged})
        doc.lines.append(
            Line(
                f"{n} test(s) with a change that their waiting for a CPU explains: "
                "contended, not judged.",
                warn=True,
            )
        )
    at = next(
        (i + 1 for i, s in enumerate(doc.sections) if s.title.startswith("Improvements")),
        len(doc.sections),
    )
    doc.sections.insert(at, not_judged_section(cmp))
    return doc


# --------------------------------------------------------------------------- plumbing


def _render(doc: Doc, data: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "markdown":
        return doc.markdown()
    return doc.text()


def _emit(text: str, output: Optional[str]) -> None:
    if output is None:
        emit(text)
    else:
        analysis.write_text(output, text)


def cmd_report(args: argparse.Namespace) -> int:
    report = analysis.load_report(args.file)
    data = report_data(report, args.file, args.top, args.memory_threshold, args.cpu_threshold)
    doc = report_doc(data)
    _emit(_render(doc, data, args.format), args.output)
    github.append_step_summary(doc.markdown())
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    baseline = analysis.load_report(args.baseline)
    current = analysis.load_report(args.current)
    thresholds = {
        "time": Threshold(args.time_rel, args.time_abs),
        "memory": Threshold(args.memory_rel, args.memory_abs),
        "cpu": Threshold(args.cpu_rel, args.cpu_abs),
    }
    cmp = analysis.compare(
        baseline, current, thresholds, args.cpu_min_duration, noise=args.noise == "on"
    )
    doc = compare_document(cmp, args.baseline, args.current)
    data = {"baseline": args.baseline, "current": args.current}
    data.update(cmp.as_dict())
    _emit(_render(doc, data, args.format), args.output)
    github.append_step_summary(doc.markdown())
    if github.in_actions():
        for line in regression_warnings(cmp, current):
            print(line)
        sys.stdout.flush()
    if cmp.regressions and args.fail_on_regression:
        return EXIT_REGRESSION
    return EXIT_OK


def _not_finite(value: Any, where: str = "") -> Optional[str]:
    """The JSON path of the first number in ``value`` that no reader takes (infinite, NaN, an
    integer beyond a float's range), or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if number(value) is not None else (where or "/")
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _not_finite(v, f"{where}/{k}")
        if found is not None:
            return found
    return None


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
    where = _not_finite(merged)
    if where is not None:  # JSON has no such number: the file would not be a report
        raise ReportError(
            f"the merged report would hold a number no reader takes at {where} (infinite, or "
            "beyond a float's range: the inputs' figures add up past it): nothing written"
        )
    try:
        write_atomic(merged, args.output)
    except OSError as e:
        raise ReportError(f"{args.output}: cannot write ({e.strerror or e})") from None
    print(
        f"perfmon: merged {len(args.files)} file(s), {len(merged['jobs'])} job(s), "
        f"{len(merged['tests'])} test(s) into {args.output}"
    )
    if "matrix" in merged:  # the shards of a --perf-shard matrix
        emit(shards.matrix_text(merged["matrix"]))
    return EXIT_OK


def _html_history(args: argparse.Namespace, report: dict) -> dict:
    """The trend data of ``perfmon html --db`` (one-line ReportError on any problem)."""
    from .history.url import INSTALL_HINT, URLError, redact

    try:
        import sqlalchemy

        from .history import store, trends
    except ImportError as exc:
        raise ReportError(f"--db needs {exc.name or 'the history extra'}: {INSTALL_HINT}") from None
    try:
        return trends.trends(args.db, report, runs=args.window, timeout=args.timeout)
    except (URLError, store.HistoryError) as exc:
        raise ReportError(str(exc)) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise ReportError(store.describe_error(exc, args.db)) from None
    except OSError as exc:
        raise ReportError(f"{redact(args.db)}: {exc.strerror or exc}") from None
    except (ValueError, TypeError, ArithmeticError, KeyError) as exc:  # a value it cannot use
        raise ReportError(store.unreadable(exc, args.db)) from None


def cmd_html(args: argparse.Namespace) -> int:
    from .html import write_html

    report = analysis.load_report(args.file)
    history = None
    if args.db is not None:
        history = _html_history(args, report)
    try:
        write_html(report, args.output, history=history)
    except OSError as e:
        raise ReportError(f"{args.output}: cannot write ({e.strerror or e})") from None
    print(f"perfmon: wrote {args.output} ({len(report['tests'])} test(s))")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .export import EXPORTS

    report = analysis.load_report(args.file)
    _emit(EXPORTS[args.format](report), args.output)
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
    about.add_version_option(parser)
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
        "--top",
        type=positive_int,
        default=DEFAULT_TOP,
        metavar="N",
        help=f"rows per list (default: {DEFAULT_TOP})",
    )
    p.add_argument(
        "--memory-threshold",
        type=nonneg_float,
        default=DEFAULT_MEMORY_MB,
        metavar="MB",
        help=f"list tests whose memory.delta_mb is above MB (default: {DEFAULT_MEMORY_MB:g})",
    )
    p.add_argument(
        "--cpu-threshold",
        type=nonneg_float,
        default=DEFAULT_CPU_PERCENT,
        metavar="PCT",
        help=f"list tests whose cpu_percent is above PCT (default: {DEFAULT_CPU_PERCENT:g})",
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
            type=nonneg_float,
            default=d[group].rel,
            metavar="FRACTION",
            help=f"relative threshold for {rel_help}: 0.2 is 20%% of the baseline "
            f"(default: {d[group].rel:g})",
        )
        p.add_argument(
            f"--{flag}-abs",
            type=nonneg_float,
            default=d[group].abs,
            metavar="N",
            help=f"absolute floor for {rel_help}, in {abs_help} (default: {d[group].abs:g})",
        )
    p.add_argument(
        "--cpu-min-duration",
        type=nonneg_float,
        default=analysis.DEFAULT_CPU_MIN_DURATION,
        metavar="SECONDS",
        help="compare CPU only for tests that took at least SECONDS in both reports: the CPU "
        f"share of a very short test is noise (default: {analysis.DEFAULT_CPU_MIN_DURATION:g})",
    )
    p.add_argument(
        "--noise",
        choices=("on", "off"),
        default="on",
        help="on (default): judge each test's time and CPU share without the time it waited "
        "for a CPU (its noise certificate's wait_time), and list a change that the waiting "
        "explains as 'contended, not judged', not as a regression; off: as measured",
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

    p = sub.add_parser(
        "html",
        help="one self-contained HTML page: headline figures, test table, charts",
        description="Write one HTML file that works offline (scripts, styles and the uPlot "
        "charting library inline): headline figures, a sortable and filterable table of the "
        "tests, a timeline per worker, memory over time per worker with the concurrent peak "
        "marked, and CPU against duration.",
    )
    p.add_argument("file", metavar="FILE", help="a perfmon report (single run or merged)")
    p.add_argument("-o", "--output", required=True, metavar="HTML", help="the page to write")
    p.add_argument(
        "--db",
        metavar="URL",
        help="a history store (needs the history extra): adds per-test trend charts with the "
        "change points `perfmon history check` finds, and the suite's duration per commit",
    )
    p.add_argument(
        "--window",
        type=runs_window,
        default=30,
        metavar="N",
        help="with --db: the last N runs of the report's machine (default: 30)",
    )
    p.add_argument(
        "--timeout",
        type=wait_seconds,
        default=10.0,
        metavar="S",
        help="with --db: seconds to wait for the store (default: 10)",
    )
    p.set_defaults(func=cmd_html)

    p = sub.add_parser(
        "export",
        help="github-action-benchmark JSON, OpenMetrics text or CSV",
        description="Convert a report for other tools: 'github-action-benchmark' is the "
        "customSmallerIsBetter JSON of benchmark-action/github-action-benchmark (duration, "
        "memory peak and memory delta per test); 'openmetrics' is text for the node-exporter "
        "textfile collector or a Pushgateway; 'csv' is one row per test.",
    )
    p.add_argument("file", metavar="FILE", help="a perfmon report (single run or merged)")
    p.add_argument(
        "--format",
        required=True,
        choices=("github-action-benchmark", "openmetrics", "csv"),
        help="the output format",
    )
    p.add_argument(
        "-o", "--output", metavar="FILE", help="write the output to FILE instead of stdout"
    )
    p.set_defaults(func=cmd_export)

    history_cli.register(sub)
    predict_command.register(sub)
    shards.register(sub)
    profile_view.register(sub)
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
