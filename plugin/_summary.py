"""--perf-print-summary: the report's analyses in pytest's terminal summary.

The terminal's document: the sections of ``perfmon report`` in their compact form
(:mod:`pytest_perfmon.monitor.render`, the same analyses and thresholds) and the terminal's own
(memory deltas and peak rises over a small floor, workers, the concurrent memory peak), laid
out by :func:`pytest_perfmon.monitor.sections.terminal`: every line fits the terminal. Runs
once, at the end of a monitored session.
"""

from __future__ import annotations

from typing import Any, Optional

from pytest_perfmon.monitor import analysis, render
from pytest_perfmon.monitor.github import escape_data, escape_property
from pytest_perfmon.monitor.render import DEFAULT_CPU_PERCENT, DEFAULT_MEMORY_MB
from pytest_perfmon.monitor.sections import Document, Line, Section, Table, Terminal, terminal

ROWS = 10


def _mb(v: Any, signed: bool = False) -> str:
    return "-" if v is None else (f"{v:+.1f}" if signed else f"{v:.1f}")


def _span(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _head(report: dict, data: dict) -> list:
    """The prose under the title: what ran, for how long, how it was measured, what to mind."""
    tot, session = data["totals"], report["session"]
    span = tot["tests_span"]
    lines = [
        Line(f"{tot['tests']} tests ({render.outcomes_text(tot['outcomes'])})"),
        Line(
            (f"tests ran for {span:.2f} s (first test start to last test end); " if span else "")
            + f"sum of test durations {tot['total_duration']:.2f} s, mean "
            f"{tot['avg_duration']:.3f} s; perfmon session {_span(tot['session_duration'])} "
            "(pytest's own time also counts its start-up and collection)"
        ),
        Line(
            f"memory (end - start of each test): mean delta {tot['avg_memory_delta_mb']:+.2f} "
            f"MB, max delta {tot['max_memory_delta_mb']:+.2f} MB"
        ),
    ]
    meas = session.get("measurement") or {}
    lines.append(Line(f"measured by: memory {meas.get('memory')}, peak {meas.get('memory_peak')}"))
    if session.get("records_dropped") or session.get("possibly_incomplete"):
        lines.append(
            Line(
                f"incomplete: {session.get('records_dropped') or 0} record(s) known lost"
                + (
                    "; a measuring process died, so its last tests may be missing"
                    if session.get("possibly_incomplete")
                    else ""
                ),
                warn=True,
            )
        )
    again = render.repeated_text(tot, compact=True)
    if again:
        lines.append(Line(again, warn=True))
    subs = tot["subtests"]
    if subs:
        lines.append(Line(f"subtests: {analysis.subtests_text(subs)} in {subs['tests']} test(s)"))
    stopped = data["interrupted"]
    if stopped["count"]:
        more = stopped["count"] - len(stopped["tests"])
        lines.append(
            Line(
                f"{stopped['count']} test(s) interrupted (the run ended while they ran; their "
                "times are as far as they ran): "
                + ", ".join(r["test"] for r in stopped["tests"])
                + (f" and {more} more" if more else ""),
                warn=True,
            )
        )
    noisy = render.noise_line(data, compact=True)
    if noisy:
        lines.append(noisy)
    return lines


def _memory_sections(report: dict) -> list:
    """|end - start| and peak - start over a small floor (``perfmon report`` shows deltas over
    its --memory-threshold only)."""
    floor = analysis.MEMORY_MIN_MB
    deltas = analysis.largest_deltas(report, ROWS, floor)
    out = [
        Section(
            f"largest memory deltas, |end - start| (MB, {floor:g} or more)",
            table=Table(
                ["delta", "start", "end", "test"],
                [
                    [
                        _mb(analysis.memory_delta(t), True),
                        _mb(t["memory"]["start_mb"]),
                        _mb(t["memory"]["end_mb"]),
                        k,
                    ]
                    for k, t in deltas
                ],
                [True, True, True, False],
            ),
        )
    ]
    # with child processes, ranked by process + children: a column says how much is theirs
    kids = analysis.has_children(report["tests"])
    rise = analysis.growth_with_children if kids else analysis.memory_growth
    out.append(
        Section(
            "largest peak rises, peak - start"
            + (" + children's peak" if kids else "")
            + f" (MB, {floor:g} or more"
            + ("; process + child processes)" if kids else ")"),
            table=Table(
                ["rise", "start", "peak"] + (["children"] if kids else []) + ["test"],
                [
                    [
                        _mb(rise(t), True),
                        _mb(t["memory"]["start_mb"]),
                        _mb(t["memory"]["peak_mb"]),
                    ]
                    + ([_mb((analysis.children(t) or {}).get("peak_rss_mb"))] if kids else [])
                    + [k]
                    for k, t in analysis.largest_rises(report, ROWS, floor)
                ],
                [True] * (4 if kids else 3) + [False],
            ),
        )
    )
    return out


def _worker_sections(report: dict, data: dict) -> list:
    """Each worker's tests and time, and the concurrent memory peak: with xdist only."""
    workers = report.get("workers") or {}
    if len(workers) < 2:
        return []
    eff = data["totals"]["parallel_efficiency"]
    out = [
        Section(
            "workers",
            table=Table(
                ["tests", "busy s", "idle s", "peak RSS MB", "worker"],
                [
                    [
                        str(w.get("tests")),
                        f"{w.get('busy_time') or 0:.2f}",
                        f"{w.get('idle_time') or 0:.2f}",
                        _mb(w.get("peak_rss_mb")),
                        wid,
                    ]
                    for wid, w in sorted(workers.items())
                ],
                [True, True, True, True, False],
            ),
            notes=[]
            if eff is None
            else [
                Line(
                    f"worker utilisation: {eff * 100:.0f}% (sum of test durations / (perfmon "
                    f"session x {len(workers)} workers))"
                )
            ],
        )
    ]
    cp = report.get("concurrent_memory_peak")
    if cp:
        out.append(
            Section(
                f"concurrent memory peak: {cp['total_rss_mb']:.0f} MB at {cp['time']}",
                lines=[
                    Line(
                        f"  {wid}: {_mb(w.get('rss_mb'))} MB in ",
                        name=w.get("test") or "(between tests)",
                    )
                    for wid, w in sorted(cp["workers"].items())
                ],
            )
        )
    return out


def summary_doc(report: dict) -> Document:
    """The terminal summary of ``report`` as a document."""
    report = {
        **report,
        "tests": report.get("tests") or {},
        "session": report.get("session") or {},
    }
    data = render.report_data(report, "", ROWS, DEFAULT_MEMORY_MB, DEFAULT_CPU_PERCENT)
    cpu = render.cpu_section(data, compact=True)
    cpu.notes.append(
        Line(
            f"(perfmon report lists the same CPU tests, and memory deltas over "
            f"{DEFAULT_MEMORY_MB:g} MB only: --memory-threshold)"
        )
    )
    sections = [
        render.slowest_section(data, compact=True),
        render.repeated_section(data, compact=True),
        render.contended_section(data, compact=True),
        *_memory_sections(report),
        cpu,
        render.fixtures_section(data, compact=True),
        *_worker_sections(report, data),
    ]
    return Document(
        "performance summary (pytest-perfmon)",
        _head(report, data),
        [s for s in sections if s],
    )


def write_summary(tr: Any, report: dict) -> None:
    terminal(summary_doc(report), tr)


def write_limits(tr: Any, rows: list, github: bool) -> None:
    """The tests over a performance limit: ``rows`` of (nodeid, location, action, message).

    ``fail``: the test failed because of it; ``warn``: --perf-limits warn; ``note``: the test had
    failed already; ``xfail``: the test is marked xfail; ``unchecked``: not measurable here.
    With ``github`` (GitHub Actions), every violation that did not fail its test also becomes a
    ``::warning`` workflow command, annotated at the test's line.
    """
    rows = sorted(rows, key=lambda r: r[0])  # by test, whatever order the workers finished
    out = Terminal(tr)
    tr.write_sep("=", "performance limits (pytest-perfmon)")
    hows: dict = {}
    table = []
    for nodeid, _, action, text in rows:
        short, _, how = text.partition(" (")
        metric = short.split(" ", 1)[0]
        if how:
            hows.setdefault(metric, how[:-1] if how.endswith(")") else how)  # the " (" one
        table.append([action, short, nodeid])
    tests = len({r[0] for r in rows})
    out.prose(f"{len(rows)} limit violation(s) in {tests} test(s)")
    out.table(Table(["action", "measured > limit", "test"], table, [False] * 3))
    for metric, how in hows.items():
        out.prose(f"{metric}: {how}", indent="  ")
    if not github:
        return
    for nodeid, location, action, text in rows:
        if action == "fail":
            continue  # a failed test is shown by pytest itself
        where = ""
        if location and location[0]:
            where = f"file={escape_property(str(location[0]))}"
            if isinstance(location[1], int):
                where += f",line={location[1] + 1}"
            where += ","
        title = escape_property(f"perf_limit {action}")
        tr.write_line(f"::warning {where}title={title}::{escape_data(f'{nodeid}: {text}')}")
