"""The documents of ``perfmon report`` and ``perfmon compare``, the plugin's terminal summary
and the step summary it appends on GitHub Actions, as sections (:mod:`.sections`) built from
the analyses.

Each analysis's section is built once, here (:func:`slowest_section`, :func:`cpu_section`,
:func:`contended_section`, ...), from :func:`report_data` (also ``perfmon report --format json``);
``compact=True`` gives the terminal's form of it (the unit in the title rather than in every
cell, fewer columns). :mod:`.sections` lays them out as text, Markdown or in the terminal.

Sits between the analyses and the command line: the plugin imports this, never the CLI.
Standard library only.
"""

from __future__ import annotations

from typing import Optional

from . import analysis, noise
from .analysis import Change, Comparison
from .sections import Document, Line, Section, Table
from .summary import outcomes_text

#: `perfmon report`'s defaults (also the step summary's and the terminal summary's).
DEFAULT_TOP = 10
DEFAULT_MEMORY_MB = 10.0
DEFAULT_CPU_PERCENT = 80.0

#: The name ``perfmon``'s command line knows the document by.
Doc = Document

# --------------------------------------------------------------------------- formatting


def _f(v: Optional[float], fmt: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{unit}"  # "-": not measured (a phase that never ran)


def secs(v: Optional[float], compact: bool = False) -> str:
    """Seconds for a table cell: ``"0.800s"``; compact (the unit in the title): ``"0.800"``."""
    return _f(v, ".3f", "" if compact else "s")


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


# --------------------------------------------------------------------------- report


def report_data(report: dict, source: str, top: int, mem_mb: float, cpu_pct: float) -> dict:
    mem = analysis.memory_over(report, mem_mb)
    cpu = analysis.cpu_over(report, cpu_pct)
    kids = analysis.has_children(report["tests"])
    return {
        "file": source,
        "schema_version": report.get("schema_version"),
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
        **_noise_data(report, top),
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
    kids = any("children" in f for f, _ in fx)  # children measured: the processes it started
    return {
        "fixtures": {
            "count": len(report.get("fixtures") or ()),
            "tests": [
                {
                    **{k: f.get(k) for k in keys},
                    "total_time": cost,
                    **({"children": f.get("children")} if kids else {}),
                }
                for f, cost in fx
            ],
        }
    }


def _noise_data(report: dict, top: int) -> dict:
    """How noisy the run was and its most contended tests, when the report measured noise
    (``summary.noise``, the tests' ``noise``); nothing for an old report or a platform
    without the sources."""
    line = noise.headline(report)
    if line is None:
        return {}
    s = report.get("summary")
    block = s.get("noise") if isinstance(s, dict) else None
    if not isinstance(block, dict):
        block = noise.summary(report["tests"])
    hits = noise.contended_tests(report)
    tests = report["tests"]

    def row(k: str) -> dict:
        t = tests[k]
        n, d = t["noise"], analysis.duration(t)
        wait = n.get("wait_time")
        return {
            "test": k,
            "wait_share": round(wait / d, 4) if wait is not None and d else None,
            "wait_time": wait,
            "throttled_time": n.get("throttled_time"),
            "duration": d,
        }

    return {
        "noise": {
            "headline": line,
            "summary": block,
            "contended": {"count": len(hits), "tests": [row(k) for k in hits[:top]]},
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


def repeated_text(tot: dict, compact: bool = False) -> Optional[str]:
    """The line on tests pytest executed more than once, or None when there are none."""
    n = tot.get("repeated_tests")
    if not n:
        return None
    reruns = tot.get("rerun_attempts") or 0
    how = f", {reruns} of them rerun attempts" if reruns else ""
    head = f"{n} test(s) executed more than once ({tot['repeated_executions']} executions{how}): "
    if compact:
        return head + "their times below are the sums over every execution"
    return head + "their times are the sums over every execution."


def subtests_line(tot: dict) -> Optional[str]:
    s = tot.get("subtests")
    if not s:
        return None
    return f"Subtests: {analysis.subtests_text(s)} in {s['tests']} test(s)."


def noise_line(data: dict, compact: bool = False) -> Optional[Line]:
    """How noisy the run was, in one line (a warning when a test ran contended); None when the
    report measured no noise."""
    nz = data.get("noise")
    if not nz:
        return None
    text = f"noise: {nz['headline']}" if compact else f"Noise: {nz['headline']}."
    return Line(text, warn=bool(nz["contended"]["count"]))


def runs_cell(n: int, outcomes: str) -> str:
    """An entry's executions for a table cell: ``"3: rerun x2, passed"``, or its one outcome."""
    return outcomes if n == 1 else f"{n}: {outcomes}"


# --------------------------------------------------------------------------- the sections
#
# One builder per analysis, shared by `perfmon report` and the terminal summary; each takes
# report_data()'s dict. compact: the terminal's form (the unit in the title, fewer columns).


def slowest_section(data: dict, compact: bool = False) -> Section:
    slow, n = data["slowest"], data["totals"]["tests"]
    # the outcome column in the report only; the runs column only when a row ran more than once
    runs = any(r["executions"] > 1 for r in slow)
    rows = [
        [secs(r[k], compact) for k in ("duration", "setup_time", "call_time", "teardown_time")]
        + ([] if compact else [str(r["outcome"])])
        + ([str(r["executions"])] if runs else [])
        + [r["test"]]
        for r in slow
    ]
    table = Table(
        ["total" if compact else "duration", "setup", "call", "teardown"]
        + ([] if compact else ["outcome"])
        + (["runs"] if runs else [])
        + ["test"],
        rows,
        [True] * 4 + ([] if compact else [False]) + ([True] if runs else []) + [False],
    )
    if compact:
        return Section(f"slowest tests (s; top {len(slow)} of {n})", table=table)
    return Section(f"Slowest tests (top {len(slow)} of {n})", table=table, empty="(no timed tests)")


def repeated_section(data: dict, compact: bool = False) -> Optional[Section]:
    """The tests executed more than once (reruns, --dist each, ...); None when there are none."""
    rep = data["repeated"]
    if not rep["count"]:
        return None
    rows = [
        [str(r["executions"]), secs(r["duration"], compact)]
        + ([] if compact else [str(r["outcome"])])
        + [analysis.outcome_runs({"executions": r["attempts"]}), r["test"]]
        for r in rep["tests"]
    ]
    if compact:
        return Section(
            "tests executed more than once (s; the sum over the executions)",
            table=Table(["runs", "total", "executions", "test"], rows, [True, True, False, False]),
        )
    return Section(
        f"Executed more than once: {_count(rep)} (times are the sums over the executions)",
        table=Table(
            ["runs", "duration", "outcome", "executions", "test"],
            rows,
            [True, True, False, False, False],
        ),
    )


def subtests_section(data: dict) -> Optional[Section]:
    subs = data["subtests"]
    if not subs["count"]:
        return None
    return Section(
        f"Subtests: {_count(subs)}",
        table=Table(
            ["passed", "failed", "skipped", "outcome", "test"],
            [
                [str(r[k]) for k in ("passed", "failed", "skipped", "outcome")] + [r["test"]]
                for r in subs["tests"]
            ],
            [True, True, True, False, False],
        ),
    )


def interrupted_section(data: dict) -> Optional[Section]:
    stopped = data["interrupted"]
    if not stopped["count"]:
        return None
    return Section(
        f"Interrupted: {_count(stopped)} (the run ended while they ran: Ctrl-C, "
        "pytest.exit(), a signal; times as far as they ran)",
        table=Table(
            ["duration", "worker", "test"],
            [[secs(r["duration"]), str(r["worker"]), r["test"]] for r in stopped["tests"]],
            [True, False, False],
        ),
    )


def contended_section(data: dict, compact: bool = False) -> Optional[Section]:
    """The most contended tests (the largest share of their time spent waiting for a CPU
    first): their times are not comparable. None when the report measured no noise or no test
    ran contended."""
    nz = data.get("noise")
    if not nz or not nz["contended"]["count"]:
        return None
    c = nz["contended"]
    thr = any(r["throttled_time"] for r in c["tests"])  # a column only when it says something
    rows = [
        [_f(None if r["wait_share"] is None else r["wait_share"] * 100, ".1f", "%")]
        + [secs(r["wait_time"], compact)]
        + ([secs(r["throttled_time"], compact)] if thr else [])
        + [secs(r["duration"], compact), r["test"]]
        for r in c["tests"]
    ]
    table = Table(
        ["share" if compact else "wait share", "wait"]
        + (["throttled"] if thr else [])
        + ["total" if compact else "duration", "test"],
        rows,
        [True, True] + ([True] if thr else []) + [True, False],
    )
    rule = [Line(f"A test ran contended when it {noise.CONTENDED_RULE}.")]
    if compact:
        title = f"contended tests (s; their times are not comparable): {_count(c)}"
        return Section(title, lines=rule, table=table)
    title = f"Contended: {_count(c)} (their times are not comparable)"
    return Section(title, lines=rule, table=table)


def memory_section(data: dict) -> Section:
    mem = data["memory"]
    return Section(
        f"Memory delta over {data['thresholds']['memory_mb']:g} MB: {_count(mem)}",
        table=Table(
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
            [True] * 5 + [False],
        ),
    )


def cpu_section(data: dict, compact: bool = False) -> Section:
    cpu, th = data["cpu"], data["thresholds"]
    kids = bool(cpu.get("with_children"))
    title = (
        f"CPU over {th['cpu_percent']:g}% (tests of {th['cpu_min_duration'] * 1000:g} ms or more"
        + ("; process + child processes" if kids else "")
        + f"): {_count(cpu)}"
    )
    if kids:  # ranked by process + children: the children's columns say how much is theirs
        rows = [
            [
                _f(r["cpu_with_children_percent"], ".1f", "%"),
                _f(r["cpu_percent"], ".1f", "%"),
                secs(r["children_cpu_time"], compact),
            ]
            + ([] if compact else [_f(r["children_peak_rss_mb"], ".1f", " MB")])
            + [secs(r["duration"], compact), r["test"]]
            for r in cpu["tests"]
        ]
        headers = ["cpu", "own"] + (["children s"] if compact else ["children", "children peak"])
        table = Table(headers + ["duration", "test"], rows, [True] * (len(headers) + 1) + [False])
    else:
        table = Table(
            ["cpu", "duration", "test"],
            [
                [_f(r["cpu_percent"], ".1f", "%"), secs(r["duration"], compact), r["test"]]
                for r in cpu["tests"]
            ],
            [True, True, False],
        )
    return Section(title, table=table)


def fixtures_section(data: dict, compact: bool = False) -> Optional[Section]:
    """The costliest shared fixtures (setup + teardown), when the report has any."""
    fx = data.get("fixtures")
    if not fx:
        return None
    kids = any("children" in r for r in fx["tests"])  # the processes each one started

    def started(r: dict) -> list:
        if not kids:
            return []
        got = r.get("children")
        c: dict = got if isinstance(got, dict) else {}
        n = c.get("processes")
        row = [str(n) if n else "-", secs(c.get("cpu_time"), compact) if c else "-"]
        return row + ([] if compact else [_f(c.get("peak_rss_mb"), ".1f", " MB")])

    extra = (["procs", "children s"] + ([] if compact else ["children peak"])) if kids else []
    table = Table(
        ["total", "setup", "teardown"] + extra + ["scope", "worker", "fixture"],
        [
            [secs(r[k], compact) for k in ("total_time", "setup_time", "teardown_time")]
            + started(r)
            + [str(r["scope"]), str(r["worker"]), f"{r['name']} ({r['location']})"]
            for r in fx["tests"]
        ],
        [True, True, True] + [True] * len(extra) + [False, False, False],
    )
    if compact:
        title = (
            "costliest shared fixtures (s; billed by pytest to the tests named in the report's "
            "fixtures block)"
        )
    else:
        shown = f", top {len(fx['tests'])} shown" if len(fx["tests"]) < fx["count"] else ""
        title = f"Costliest shared fixtures (setup + teardown): {fx['count']} setup(s){shown}"
    return Section(title, table=table)


# --------------------------------------------------------------------------- report


def hosts_line(tot: dict) -> str:
    """``Hosts: a (2 workers, 7 tests, 4 CPUs, peak 118.2 MB), b (...)`` for a run whose
    workers ran on several hosts; empty otherwise."""
    hosts = tot.get("hosts") or {}
    if not hosts:
        return ""
    parts = []
    for name, h in hosts.items():
        cpus = f", {h['cpu_count']} CPUs" if h.get("cpu_count") else ""
        parts.append(
            f"{name} ({h['workers']} worker(s), {h['tests']} tests{cpus}, "
            f"peak {_f(h.get('peak_mb'), '.1f', ' MB')})"
        )
    return "Hosts: " + ", ".join(parts) + "."


def report_doc(data: dict) -> Document:
    tot = data["totals"]
    jobs = f" in {tot['jobs']} jobs" if tot["jobs"] is not None else ""
    lines = [
        f"{tot['tests']} tests ({_outcomes(tot['outcomes'])}){jobs}. {run_times(tot)}",
        f"Memory: mean delta {_f(tot['avg_memory_delta_mb'], '+.1f', ' MB')}, "
        f"max delta {_f(tot['max_memory_delta_mb'], '+.1f', ' MB')}, "
        f"peak RSS {_f(tot['peak_rss_mb'], '.1f', ' MB')}; "
        f"{tot['workers']} worker(s), collector {tot['collector']}, "
        f"{tot['records_dropped']} record(s) dropped, {tot['warnings']} warning(s).",
        hosts_line(tot),
        repeated_text(tot),
        subtests_line(tot),
    ]
    sections = [
        slowest_section(data),
        repeated_section(data),
        subtests_section(data),
        interrupted_section(data),
        contended_section(data),
        memory_section(data),
        cpu_section(data),
        fixtures_section(data),
    ]
    return Document(
        f"perfmon report: {data['file']}",
        [Line(x) for x in lines if x] + [x for x in [noise_line(data)] if x],
        [s for s in sections if s],
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


def _change_table(changes: list) -> Table:
    """A table of changes; with a ``runs`` column (executions, baseline->current) when one of
    them is of a test executed more than once."""
    runs = any(c.repeated for c in changes)
    headers = CHANGE_HEADERS[:-1] + (["runs"] if runs else []) + CHANGE_HEADERS[-1:]
    right = CHANGE_RIGHT[:-1] + ([True] if runs else []) + CHANGE_RIGHT[-1:]
    return Table(headers, _change_rows(changes, runs), right)


def describe_thresholds(cmp: Comparison) -> str:
    t, m, c = (cmp.thresholds[k] for k in ("time", "memory", "cpu"))
    return (
        f"time >= {t.rel * 100:g}% and >= {t.abs:g}s; "
        f"memory >= {m.rel * 100:g}% and >= {m.abs:g} MB; "
        f"CPU >= {c.rel * 100:g}% and >= {c.abs:g} points "
        f"(tests of {cmp.cpu_min_duration:g}s or more)"
    )


def compare_doc(cmp: Comparison, base: str, cur: str) -> Document:
    verdict = f"REGRESSION ({len(cmp.regressions)})" if cmp.regressions else "OK"
    again = (
        f"; {len(cmp.repeated)} executed more than once (compared on all their executions)"
        if cmp.repeated
        else ""
    )
    lines = [
        Line(
            f"Result: {verdict}. {cmp.compared} test(s) compared: "
            f"{len(cmp.regressions)} regression(s), {len(cmp.improvements)} improvement(s); "
            f"{len(cmp.new)} new, {len(cmp.gone)} gone, "
            f"{len(cmp.outcome_changes)} outcome change(s){again}."
        ),
        Line(f"A change counts when it passes both thresholds: {describe_thresholds(cmp)}."),
    ]
    if any(c.repeated for c in cmp.regressions + cmp.improvements):
        lines.append(
            Line(
                "runs: how many times pytest executed the test, baseline->current (reruns, "
                "--dist each, ...); its figures are the sums over every execution."
            )
        )
    sections = [
        Section(f"Regressions: {len(cmp.regressions)}", table=_change_table(cmp.regressions)),
        Section(f"Improvements: {len(cmp.improvements)}", table=_change_table(cmp.improvements)),
    ]
    if cmp.outcome_changes:
        sections.append(
            Section(
                f"Outcome changes: {len(cmp.outcome_changes)} (metrics not compared)",
                table=Table(
                    ["baseline", "current", "test"],
                    [[str(old), str(new), k] for k, old, new in cmp.outcome_changes],
                    [False, False, False],
                ),
            )
        )
    if cmp.repeated:
        sections.append(
            Section(
                f"Executed more than once: {len(cmp.repeated)} (compared on the sums over all "
                "executions, never the last one alone)",
                table=Table(
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
                ),
            )
        )
    for title, names in (("New tests", cmp.new), ("Gone tests", cmp.gone)):
        if names:
            sections.append(
                Section(
                    f"{title}: {len(names)}", table=Table(["test"], [[k] for k in names], [False])
                )
            )
    return Document(f"perfmon compare: {base} -> {cur}", lines, sections)


def step_summary_markdown(report: dict, path: str) -> str:
    """What the plugin appends to ``$GITHUB_STEP_SUMMARY``: ``perfmon report``'s Markdown with
    its default options, for the report written to ``path``."""
    data = report_data(report, path, DEFAULT_TOP, DEFAULT_MEMORY_MB, DEFAULT_CPU_PERCENT)
    return report_doc(data).markdown()
