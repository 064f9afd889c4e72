"""--perf-print-summary: the report's analyses in pytest's terminal summary.

The same computations as ``perfmon report`` (summary.py, analysis.py) and the same table
renderer (tables.py); every line fits the terminal. Runs once, at the end of the session.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any, Optional

from pytest_perfmon.monitor import analysis
from pytest_perfmon.monitor.render import DEFAULT_CPU_PERCENT, DEFAULT_MEMORY_MB
from pytest_perfmon.monitor.summary import outcomes_text, summarize
from pytest_perfmon.monitor.tables import shorten, text_table

ROWS = 10


def _secs(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"  # "-": the phase never ran


def _mb(v: Any, signed: bool = False) -> str:
    return "-" if v is None else (f"{v:+.1f}" if signed else f"{v:.1f}")


#: A number and the unit after it, kept on one line by :meth:`_Out.text`.
_UNIT = re.compile(r"(\d) (s|ms|MB|%)\b")


class _Out:
    def __init__(self, tr: Any) -> None:
        self.tr = tr
        full = getattr(getattr(tr, "_tw", None), "fullwidth", None)
        # pytest's own lines stop one short of the edge, so that no terminal wraps them
        self.width: int = max(20, (full if isinstance(full, int) else 80) - 1)

    def text(self, text: str, indent: str = "", **markup: Any) -> None:
        """Prose, wrapped to the terminal: nothing cut, every line fits, and no number is
        parted from its unit ("0.031 s" never breaks after "0.031")."""
        text = _UNIT.sub("\\1\x00\\2", text)
        lines = textwrap.wrap(
            text,
            self.width,
            initial_indent=indent,
            subsequent_indent=indent + "  ",
            break_on_hyphens=False,
        ) or [""]
        for line in lines:
            self.tr.write_line(line.replace("\x00", " "), **markup)

    def table(self, title: str, headers: list, rows: list, right: list) -> None:
        self.text(title, bold=True)
        if not rows:
            self.tr.write_line("  (none)")
            return
        for line in text_table(headers, rows, right, self.width):
            self.tr.write_line(line)


def _span(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f} s"


def write_summary(tr: Any, report: dict) -> None:
    tests: dict = report.get("tests") or {}
    session = report.get("session") or {}
    summary = summarize(tests.values(), (report.get("summary") or {}).get("parallel_efficiency"))
    out = _Out(tr)
    tr.write_sep("=", "performance summary (pytest-perfmon)")
    out.text(f"{len(tests)} tests ({outcomes_text(summary['outcomes'])})")
    span = analysis.tests_span(tests)
    out.text(
        (f"tests ran for {span:.2f} s (first test start to last test end); " if span else "")
        + f"sum of test durations {summary['total_duration']:.2f} s, mean "
        f"{summary['avg_duration']:.3f} s; perfmon session {_span(session.get('duration'))} "
        "(pytest's own time also counts its start-up and collection)"
    )
    out.text(
        f"memory (end - start of each test): mean delta {summary['avg_memory_delta_mb']:+.2f} "
        f"MB, max delta {summary['max_memory_delta_mb']:+.2f} MB"
    )
    meas = session.get("measurement") or {}
    out.text(f"measured by: memory {meas.get('memory')}, peak {meas.get('memory_peak')}")
    if session.get("records_dropped") or session.get("possibly_incomplete"):
        out.text(
            f"incomplete: {session.get('records_dropped') or 0} record(s) known lost"
            + (
                "; a measuring process died, so its last tests may be missing"
                if session.get("possibly_incomplete")
                else ""
            ),
            yellow=True,
        )

    again = analysis.repeated({"tests": tests})
    if again:
        n_runs = sum(analysis.runs(t) for _, t in again)
        n_reruns = sum(analysis.reruns(t) for _, t in again)
        out.text(
            f"{len(again)} test(s) executed more than once ({n_runs} executions"
            + (f", {n_reruns} of them rerun attempts" if n_reruns else "")
            + "): their times below are the sums over every execution",
            yellow=True,
        )
    subs = [analysis.subtests(t) for _, t in analysis.with_subtests({"tests": tests})]
    if subs:
        counts = {k: sum(s.get(k, 0) for s in subs) for k in ("passed", "failed", "skipped")}
        out.text(f"subtests: {analysis.subtests_text(counts)} in {len(subs)} test(s)")
    stopped = sorted(k for k, t in tests.items() if t.get("outcome") == "interrupted")
    if stopped:
        out.text(
            f"{len(stopped)} test(s) interrupted (the run ended while they ran; their times "
            "are as far as they ran): "
            + ", ".join(stopped[:ROWS])
            + (f" and {len(stopped) - ROWS} more" if len(stopped) > ROWS else ""),
            yellow=True,
        )
    slow = analysis.slowest({"tests": tests}, ROWS)
    runs = any(analysis.runs(t) > 1 for _, t in slow)  # a runs column only when it says more
    out.table(
        f"slowest tests (s; top {len(slow)} of {len(tests)})",
        ["total", "setup", "call", "teardown"] + (["runs"] if runs else []) + ["test"],
        [
            [
                _secs(t.get("duration")),
                _secs(t.get("setup_time")),
                _secs(t.get("call_time")),
                _secs(t.get("teardown_time")),
            ]
            + ([str(analysis.runs(t))] if runs else [])
            + [k]
            for k, t in slow
        ],
        [True, True, True, True] + ([True] if runs else []) + [False],
    )
    if again:
        out.table(
            "tests executed more than once (s; the sum over the executions)",
            ["runs", "total", "executions", "test"],
            [
                [str(analysis.runs(t)), _secs(t.get("duration")), analysis.outcome_runs(t), k]
                for k, t in again[:ROWS]
            ],
            [True, True, False, False],
        )
    floor = analysis.MEMORY_MIN_MB
    deltas = analysis.largest_deltas({"tests": tests}, ROWS, floor)
    out.table(
        f"largest memory deltas, |end - start| (MB, {floor:g} or more)",
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
    )
    rises = analysis.largest_rises({"tests": tests}, ROWS, floor)
    kids = analysis.has_children(tests)
    if kids:  # ranked by process + children: the children's columns say how much is theirs
        out.table(
            f"largest peak rises, peak - start + children's peak (MB, {floor:g} or more; "
            "process + child processes)",
            ["rise", "start", "peak", "children", "test"],
            [
                [
                    _mb(analysis.growth_with_children(t), True),
                    _mb(t["memory"]["start_mb"]),
                    _mb(t["memory"]["peak_mb"]),
                    _mb((analysis.children(t) or {}).get("peak_rss_mb")),
                    k,
                ]
                for k, t in rises
            ],
            [True, True, True, True, False],
        )
    else:
        out.table(
            f"largest peak rises, peak - start (MB, {floor:g} or more)",
            ["rise", "start", "peak", "test"],
            [
                [
                    _mb(analysis.memory_growth(t), True),
                    _mb(t["memory"]["start_mb"]),
                    _mb(t["memory"]["peak_mb"]),
                    k,
                ]
                for k, t in rises
            ],
            [True, True, True, False],
        )
    cpu_floor = analysis.CPU_MIN_DURATION
    cpu = analysis.cpu_over({"tests": tests}, DEFAULT_CPU_PERCENT, cpu_floor)
    shown = f", top {ROWS} shown" if len(cpu) > ROWS else ""
    title = (
        f"CPU over {DEFAULT_CPU_PERCENT:g}% (tests of {cpu_floor * 1000:g} ms or more): "
        f"{len(cpu)} test(s){shown}"
    )
    if kids:
        out.table(
            title + "; process + child processes",
            ["cpu", "own", "children s", "duration", "test"],
            [
                [
                    f"{analysis.cpu_with_children(t):.1f}%",
                    "-" if t.get("cpu_percent") is None else f"{t['cpu_percent']:.1f}%",
                    _secs((analysis.children(t) or {}).get("cpu_time")),
                    _secs(t.get("duration")),
                    k,
                ]
                for k, t in cpu[:ROWS]
            ],
            [True, True, True, True, False],
        )
    else:
        out.table(
            title,
            ["cpu", "duration", "test"],
            [[f"{t['cpu_percent']:.1f}%", _secs(t.get("duration")), k] for k, t in cpu[:ROWS]],
            [True, True, False],
        )
    out.text(
        f"(perfmon report lists the same CPU tests, and memory deltas over "
        f"{DEFAULT_MEMORY_MB:g} MB only: --memory-threshold)",
        indent="  ",
    )
    fixtures = analysis.costliest_fixtures(report, ROWS)
    if fixtures:
        out.table(
            "costliest shared fixtures (s; billed by pytest to the tests named in the report's "
            "fixtures block)",
            ["total", "setup", "teardown", "scope", "worker", "fixture"],
            [
                [
                    _secs(cost),
                    _secs(f.get("setup_time")),
                    _secs(f.get("teardown_time")),
                    str(f.get("scope")),
                    str(f.get("worker")),
                    f"{f.get('name')} ({f.get('location')})",
                ]
                for f, cost in fixtures
            ],
            [True, True, True, False, False, False],
        )

    workers = report.get("workers") or {}
    if len(workers) > 1:
        out.table(
            "workers",
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
        )
        eff = summary.get("parallel_efficiency")
        if eff is not None:
            out.text(
                f"worker utilisation: {eff * 100:.0f}% (sum of test durations / (perfmon "
                f"session x {len(workers)} workers))",
                indent="  ",
            )
    cp = report.get("concurrent_memory_peak")
    if cp and len(workers) > 1:
        out.text(f"concurrent memory peak: {cp['total_rss_mb']:.0f} MB at {cp['time']}", bold=True)
        for wid, w in sorted(cp["workers"].items()):
            head = f"  {wid}: {_mb(w.get('rss_mb'))} MB in "
            test = w.get("test") or "(between tests)"
            line = head + shorten(test, max(12, out.width - len(head)))
            tr.write_line(line[: out.width])


def _gh_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def write_limits(tr: Any, rows: list, github: bool) -> None:
    """The tests over a performance limit: ``rows`` of (nodeid, location, action, message).

    ``fail``: the test failed because of it; ``warn``: --perf-limits warn; ``note``: the test had
    failed already; ``xfail``: the test is marked xfail; ``unchecked``: not measurable here.
    With ``github`` (GitHub Actions), every violation that did not fail its test also becomes a
    ``::warning`` workflow command, annotated at the test's line.
    """
    rows = sorted(rows, key=lambda r: r[0])  # by test, whatever order the workers finished
    out = _Out(tr)
    tr.write_sep("=", "performance limits (pytest-perfmon)")
    hows: dict = {}
    table = []
    for nodeid, _, action, text in rows:
        short, _, how = text.partition(" (")
        metric = short.split(" ", 1)[0]
        if how:
            hows.setdefault(metric, how.rstrip(")"))
        table.append([action, short, nodeid])
    tests = len({r[0] for r in rows})
    out.text(f"{len(rows)} limit violation(s) in {tests} test(s)")
    for line in text_table(["action", "measured > limit", "test"], table, [False] * 3, out.width):
        tr.write_line(line)
    for metric, how in hows.items():
        out.text(f"{metric}: {how}", indent="  ")
    if not github:
        return
    for nodeid, location, action, text in rows:
        if action == "fail":
            continue  # a failed test is shown by pytest itself
        where = ""
        if location and location[0]:
            where = f"file={_gh_escape(str(location[0]), True)}"
            if isinstance(location[1], int):
                where += f",line={location[1] + 1}"
            where += ","
        title = _gh_escape(f"perf_limit {action}", True)
        tr.write_line(f"::warning {where}title={title}::{_gh_escape(f'{nodeid}: {text}')}")
