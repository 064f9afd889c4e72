"""Rendering of ``perfmon report`` and ``perfmon compare``: a small document model, plain text
or GitHub Markdown, and the step summary the plugin appends on GitHub Actions.

Sits between the analyses and the command line: the plugin imports this, never the CLI.
Standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from . import analysis
from .analysis import Change, Comparison
from .summary import outcomes_text
from .tables import text_table

#: `perfmon report`'s defaults (also the step summary's).
DEFAULT_TOP = 10
DEFAULT_MEMORY_MB = 10.0
DEFAULT_CPU_PERCENT = 80.0

# --------------------------------------------------------------------------- formatting


def _f(v: Optional[float], fmt: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{unit}"


def value_text(metric: analysis.Metric, v: Optional[float], signed: bool = False) -> str:
    sign = "+" if signed else ""
    if metric.unit == "s":
        return _f(v, f"{sign}.3f", "s")
    if metric.unit == "MB":
        return _f(v, f"{sign}.1f", " MB")
    return _f(v, "+.1f", " pts") if signed else _f(v, ".1f", "%")


def ratio_text(change: Change) -> str:
    r = change.ratio
    return "new" if r is None else f"{r * 100:+.0f}%"


_outcomes = outcomes_text


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{_md_cell(text)}{pad}{fence}"


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

    def text(self, width: Optional[int] = None) -> str:
        """Plain text; with ``width``, every table line fits in ``width`` characters."""
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
                out.extend(text_table(headers, rows, right, width))
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
    kids = analysis.has_children(report["tests"])
    return {
        "file": source,
        "schema_version": report["schema_version"],
        "totals": analysis.totals(report),
        "thresholds": {
            "top": top,
            "memory_mb": mem_mb,
            "cpu_percent": cpu_pct,
            "cpu_min_duration": analysis.CPU_MIN_DURATION,
        },
        "slowest": [
            {
                "test": k,
                "duration": t.get("duration"),
                "setup_time": t.get("setup_time"),
                "call_time": t.get("call_time"),
                "teardown_time": t.get("teardown_time"),
                "outcome": t.get("outcome"),
                "executions": analysis.runs(t),
                "subtests": analysis.subtests(t),
            }
            for k, t in analysis.slowest(report, top)
        ],
        "repeated": _repeated_data(report, top),
        "subtests": _subtests_data(report, top),
        "interrupted": _interrupted_data(report, top),
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
            "tests": [_cpu_row(k, t, kids) for k, t in cpu[:top]],
            **({"with_children": True} if kids else {}),
        },
        **_fixtures_data(report, top),
    }


def _repeated_data(report: dict, top: int) -> dict:
    """The tests pytest executed more than once (their times are the sums over them)."""
    hits = analysis.repeated(report)
    return {
        "count": len(hits),
        "tests": [
            {
                "test": k,
                "executions": analysis.runs(t),
                "reruns": analysis.reruns(t),
                "duration": t.get("duration"),
                "outcome": t.get("outcome"),
                "attempts": [
                    {
                        "attempt": x.get("attempt"),
                        "outcome": x.get("outcome"),
                        "duration": x.get("duration"),
                        "worker": x.get("worker"),
                    }
                    for x in analysis.executions(t)
                ],
            }
            for k, t in hits[:top]
        ],
    }


def _subtests_data(report: dict, top: int) -> dict:
    hits = analysis.with_subtests(report)
    return {
        "count": len(hits),
        "tests": [
            {"test": k, **(analysis.subtests(t) or {}), "outcome": t.get("outcome")}
            for k, t in hits[:top]
        ],
    }


def _interrupted_data(report: dict, top: int) -> dict:
    """The tests the run ended in (Ctrl-C, pytest.exit(), a signal): times as far as they ran."""
    hits = sorted(k for k, t in report["tests"].items() if t.get("outcome") == "interrupted")
    tests = report["tests"]
    return {
        "count": len(hits),
        "tests": [
            {"test": k, "duration": tests[k].get("duration"), "worker": tests[k].get("worker")}
            for k in hits[:top]
        ],
    }


def _cpu_row(k: str, t: dict, kids: bool) -> dict:
    row = {"test": k, "cpu_percent": t.get("cpu_percent"), "duration": t.get("duration")}
    if kids:  # ranked by process + children
        c = analysis.children(t) or {}
        row["cpu_with_children_percent"] = analysis.cpu_with_children(t)
        row["children_cpu_time"] = c.get("cpu_time")
        row["children_peak_rss_mb"] = c.get("peak_rss_mb")
    return row


def _fixtures_data(report: dict, top: int) -> dict:
    """The costliest shared fixtures, when the report has any."""
    fx = analysis.costliest_fixtures(report, top)
    if not fx:
        return {}
    keys = ("name", "scope", "location", "worker", "setup_time", "teardown_time")
    return {
        "fixtures": {
            "count": len(report.get("fixtures") or ()),
            "tests": [{**{k: f.get(k) for k in keys}, "total_time": cost} for f, cost in fx],
        }
    }


def run_times(tot: dict) -> str:
    """Each time figure of a run named for what it measures (pytest's own "in 1.43s" also
    counts its start-up and collection, which no figure here does)."""
    if tot["jobs"] is not None:
        head = f"The jobs' perfmon sessions add up to {_f(tot['session_duration'], '.2f', ' s')}"
    else:
        head = f"perfmon session {_f(tot['session_duration'], '.2f', ' s')}"
        if tot.get("tests_span") is not None:
            head = (
                f"Tests ran for {tot['tests_span']:.2f} s (first test start to last test end); "
                + head
            )
    return (
        f"{head}. Test durations (setup + call + teardown): "
        f"sum {_f(tot['total_duration'], '.3f', ' s')}, "
        f"mean {_f(tot['avg_duration'], '.3f', ' s')}, max {_f(tot['max_duration'], '.3f', ' s')}."
    )


def _count(section: dict) -> str:
    shown, count = len(section["tests"]), section["count"]
    return f"{count} test(s)" + (f", top {shown} shown" if shown < count else "")


def repeated_text(tot: dict) -> Optional[str]:
    """The line on tests pytest executed more than once, or None when there are none."""
    n = tot.get("repeated_tests")
    if not n:
        return None
    reruns = tot.get("rerun_attempts") or 0
    how = f", {reruns} of them rerun attempts" if reruns else ""
    return (
        f"{n} test(s) executed more than once ({tot['repeated_executions']} executions{how}): "
        "their times are the sums over every execution."
    )


def subtests_line(tot: dict) -> Optional[str]:
    s = tot.get("subtests")
    if not s:
        return None
    return f"Subtests: {analysis.subtests_text(s)} in {s['tests']} test(s)."


def runs_cell(n: int, outcomes: str) -> str:
    """An entry's executions for a table cell: ``"3: rerun x2, passed"``, or its one outcome."""
    return outcomes if n == 1 else f"{n}: {outcomes}"


def report_doc(data: dict) -> Doc:
    tot = data["totals"]
    th = data["thresholds"]
    doc = Doc()
    doc.heading(f"perfmon report: {data['file']}")
    jobs = f" in {tot['jobs']} jobs" if tot["jobs"] is not None else ""
    doc.line(f"{tot['tests']} tests ({_outcomes(tot['outcomes'])}){jobs}. {run_times(tot)}")
    doc.line(
        f"Memory: mean delta {_f(tot['avg_memory_delta_mb'], '+.1f', ' MB')}, "
        f"max delta {_f(tot['max_memory_delta_mb'], '+.1f', ' MB')}, "
        f"peak RSS {_f(tot['peak_rss_mb'], '.1f', ' MB')}; "
        f"{tot['workers']} worker(s), collector {tot['collector']}, "
        f"{tot['records_dropped']} record(s) dropped, {tot['warnings']} warning(s)."
    )
    for extra in (repeated_text(tot), subtests_line(tot)):
        if extra:
            doc.line(extra)

    n_slow = len(data["slowest"])
    doc.heading(f"Slowest tests (top {n_slow} of {tot['tests']})")
    if data["slowest"]:
        # the runs column only when one of the rows was executed more than once
        runs = any(r["executions"] > 1 for r in data["slowest"])
        doc.table(
            ["duration", "setup", "call", "teardown", "outcome"]
            + (["runs"] if runs else [])
            + ["test"],
            [
                [
                    _f(r["duration"], ".3f", "s"),
                    _f(r["setup_time"], ".3f", "s"),
                    _f(r["call_time"], ".3f", "s"),
                    _f(r["teardown_time"], ".3f", "s"),
                    str(r["outcome"]),
                ]
                + ([str(r["executions"])] if runs else [])
                + [r["test"]]
                for r in data["slowest"]
            ],
            [True, True, True, True, False] + ([True] if runs else []) + [False],
        )
    else:
        doc.line("(no timed tests)")
    _report_runs(doc, data)

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
    floor = th["cpu_min_duration"] * 1000
    kids = bool(cpu.get("with_children"))
    doc.heading(
        f"CPU over {th['cpu_percent']:g}% (tests of {floor:g} ms or more"
        + ("; process + child processes" if kids else "")
        + f"): {_count(cpu)}"
    )
    if cpu["tests"] and kids:
        doc.table(
            ["cpu", "own", "children", "children peak", "duration", "test"],
            [
                [
                    _f(r["cpu_with_children_percent"], ".1f", "%"),
                    _f(r["cpu_percent"], ".1f", "%"),
                    _f(r["children_cpu_time"], ".3f", "s"),
                    _f(r["children_peak_rss_mb"], ".1f", " MB"),
                    _f(r["duration"], ".3f", "s"),
                    r["test"],
                ]
                for r in cpu["tests"]
            ],
            [True, True, True, True, True, False],
        )
    elif cpu["tests"]:
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
    fx = data.get("fixtures")
    if fx:
        shown = f", top {len(fx['tests'])} shown" if len(fx["tests"]) < fx["count"] else ""
        doc.heading(f"Costliest shared fixtures (setup + teardown): {fx['count']} setup(s){shown}")
        doc.table(
            ["total", "setup", "teardown", "scope", "worker", "fixture"],
            [
                [
                    _f(r["total_time"], ".3f", "s"),
                    _f(r["setup_time"], ".3f", "s"),
                    _f(r["teardown_time"], ".3f", "s"),
                    str(r["scope"]),
                    str(r["worker"]),
                    f"{r['name']} ({r['location']})",
                ]
                for r in fx["tests"]
            ],
            [True, True, True, False, False, False],
        )
    return doc


def _report_runs(doc: Doc, data: dict) -> None:
    """The sections on tests executed more than once, subtests and interrupted tests: only
    when the report has any."""
    rep = data["repeated"]
    if rep["count"]:
        doc.heading(
            f"Executed more than once: {_count(rep)} (times are the sums over the executions)"
        )
        doc.table(
            ["runs", "duration", "outcome", "executions", "test"],
            [
                [
                    str(r["executions"]),
                    _f(r["duration"], ".3f", "s"),
                    str(r["outcome"]),
                    analysis.outcome_runs({"executions": r["attempts"]}),
                    r["test"],
                ]
                for r in rep["tests"]
            ],
            [True, True, False, False, False],
        )
    subs = data["subtests"]
    if subs["count"]:
        doc.heading(f"Subtests: {_count(subs)}")
        doc.table(
            ["passed", "failed", "skipped", "outcome", "test"],
            [
                [
                    str(r["passed"]),
                    str(r["failed"]),
                    str(r["skipped"]),
                    str(r["outcome"]),
                    r["test"],
                ]
                for r in subs["tests"]
            ],
            [True, True, True, False, False],
        )
    stopped = data["interrupted"]
    if stopped["count"]:
        doc.heading(
            f"Interrupted: {_count(stopped)} (the run ended while they ran: Ctrl-C, "
            "pytest.exit(), a signal; times as far as they ran)"
        )
        doc.table(
            ["duration", "worker", "test"],
            [
                [_f(r["duration"], ".3f", "s"), str(r["worker"]), r["test"]]
                for r in stopped["tests"]
            ],
            [True, False, False],
        )


# --------------------------------------------------------------------------- compare


def _change_rows(changes: list, runs: bool = False) -> list:
    return [
        [
            c.metric.title,
            value_text(c.metric, c.baseline),
            value_text(c.metric, c.current),
            value_text(c.metric, c.delta, signed=True),
            ratio_text(c),
        ]
        + ([f"{c.baseline_runs}->{c.current_runs}"] if runs else [])
        + [c.test]
        for c in changes
    ]


CHANGE_HEADERS = ["metric", "baseline", "current", "change", "rel", "test"]
CHANGE_RIGHT = [False, True, True, True, True, False]


def _change_table(doc: Doc, changes: list) -> None:
    """A table of changes; with a ``runs`` column (executions, baseline->current) when one of
    them is of a test executed more than once."""
    runs = any(c.repeated for c in changes)
    headers = CHANGE_HEADERS[:-1] + (["runs"] if runs else []) + CHANGE_HEADERS[-1:]
    right = CHANGE_RIGHT[:-1] + ([True] if runs else []) + CHANGE_RIGHT[-1:]
    doc.table(headers, _change_rows(changes, runs), right)


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
    again = (
        f"; {len(cmp.repeated)} executed more than once (compared on all their executions)"
        if cmp.repeated
        else ""
    )
    doc.line(
        f"Result: {verdict}. {cmp.compared} test(s) compared: "
        f"{len(cmp.regressions)} regression(s), {len(cmp.improvements)} improvement(s); "
        f"{len(cmp.new)} new, {len(cmp.gone)} gone, "
        f"{len(cmp.outcome_changes)} outcome change(s){again}."
    )
    doc.line(f"A change counts when it passes both thresholds: {describe_thresholds(cmp)}.")
    if any(c.repeated for c in cmp.regressions + cmp.improvements):
        doc.line(
            "runs: how many times pytest executed the test, baseline->current (reruns, "
            "--dist each, ...); its figures are the sums over every execution."
        )
    doc.heading(f"Regressions: {len(cmp.regressions)}")
    if cmp.regressions:
        _change_table(doc, cmp.regressions)
    else:
        doc.line("(none)")
    doc.heading(f"Improvements: {len(cmp.improvements)}")
    if cmp.improvements:
        _change_table(doc, cmp.improvements)
    else:
        doc.line("(none)")
    if cmp.outcome_changes:
        doc.heading(f"Outcome changes: {len(cmp.outcome_changes)} (metrics not compared)")
        doc.table(
            ["baseline", "current", "test"],
            [[str(old), str(new), k] for k, old, new in cmp.outcome_changes],
            [False, False, False],
        )
    if cmp.repeated:
        doc.heading(
            f"Executed more than once: {len(cmp.repeated)} (compared on the sums over all "
            "executions, never the last one alone)"
        )
        doc.table(
            ["baseline", "current", "test"],
            [
                [
                    runs_cell(analysis.runs(old), analysis.outcome_runs(old)),
                    runs_cell(analysis.runs(new), analysis.outcome_runs(new)),
                    k,
                ]
                for k, old, new in cmp.repeated
            ],
            [False, False, False],
        )
    for title, names in (("New tests", cmp.new), ("Gone tests", cmp.gone)):
        if names:
            doc.heading(f"{title}: {len(names)}")
            doc.table(["test"], [[k] for k in names], [False])
    return doc


def step_summary_markdown(report: dict, path: str) -> str:
    """What the plugin appends to ``$GITHUB_STEP_SUMMARY``: ``perfmon report``'s Markdown with
    its default options, for the report written to ``path``."""
    data = report_data(report, path, 10, DEFAULT_MEMORY_MB, DEFAULT_CPU_PERCENT)
    return report_doc(data).markdown()
