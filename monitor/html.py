"""One self-contained HTML page for a perfmon report (``perfmon html``, ``--perf-html``).

The page works offline: its styles, its script, the report's data and the vendored uPlot
charting library (MIT, ``htmlassets/uPlot.LICENSE``) are all inline, and a Content-Security-Policy
forbids any fetch. It shows the headline figures (with a noise certificate, how many tests ran
contended), a sortable and filterable test table (virtualised: only the rows in view are in the
DOM; with a noise certificate, each test's wait for a CPU, contended ones marked), a timeline
per worker, memory over time per worker with the concurrent peak marked, and CPU against
duration; with ``history`` (trend data from the history store, ``perfmon html --db``) also
per-test trend charts with their detected change points and the suite's duration per commit.

Standard library only; nothing here runs while tests are measured::

    from pytest_perfmon.monitor.html import write_html
    write_html(report, "perf.html")
"""

from __future__ import annotations

import html as _html
import json
import os
import re
from datetime import datetime
from typing import Any, Optional

from . import __version__, noise
from .report import atomic_text
from .units import number as _num
from .vocabulary import HTML

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "htmlassets")
OUTCOMES = (
    "passed",
    "failed",
    "error",
    "crashed",
    "xfailed",
    "xpassed",
    "skipped",
    "interrupted",
    "rerun",
)

# The fields of a row of DATA.rows (the page's script finds each by its name in DATA.fields).
ROW_FIELDS = (
    "test",
    "lane",
    "start",
    # the metrics' fields (:data:`.vocabulary.HTML`): duration, setup, ..., mem_delta
    *(m.html for m in HTML if m.html),
    "outcome",
    "runs",  # how many times pytest executed the test (its times are the sums over them)
    "subtests",  # [passed, failed, skipped] or null
    "end",  # when its last execution ended (null: start + duration)
    "wait",  # seconds it waited for a CPU (tests.*.noise.wait_time; null: not measured)
    "contended",  # 1: it ran contended (its time is not comparable), 0: not, null: not measured
)

LANE, START, DUR = (ROW_FIELDS.index(k) for k in ("lane", "start", "duration"))

# Positions in an execution of DATA.execs: one bar each on the timeline, for the tests pytest
# executed more than once (reruns, --dist each, a crashed worker's test run again).
EXEC_FIELDS = (
    "row",
    "lane",
    "start",
    "duration",
    "setup",
    "call",
    "teardown",
    "outcome",
    "attempt",
)


def _epoch(text: Any) -> Optional[float]:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _group(test: dict) -> str:
    """The run a test belongs to: its job (merged report) or its daemon session, else ''."""
    g = test.get("job") or test.get("session") or ""
    return g if isinstance(g, str) else ""


def _blocks(report: dict, group: str) -> dict:
    """The session/workers/concurrent_memory_peak blocks that describe ``group``."""
    if group:
        for key in ("jobs", "sessions"):
            block = (report.get(key) or {}).get(group)
            if isinstance(block, dict):
                return block
        return {}
    return report


def _executions(t: dict) -> list:
    ex = t.get("executions")
    return [x for x in ex if isinstance(x, dict)] if isinstance(ex, list) else []


def _subtests(t: dict) -> Optional[list]:
    s = t.get("subtests")
    if not isinstance(s, dict):
        return None
    return [int(_num(s.get(k)) or 0) for k in ("passed", "failed", "skipped")]


def _noise(t: dict) -> tuple:
    """The row's ``wait`` and ``contended`` fields (tests.*.noise), null without a noise
    certificate."""
    n = t.get("noise")
    if not isinstance(n, dict):
        return (None, None)
    return (_num(n.get("wait_time")), int(bool(n.get("contended"))))


def page_data(report: dict) -> dict:
    """Everything the page's script draws, in compact rows (10,000 tests stay a few MB)."""
    tests = [(k, t) for k, t in report["tests"].items() if isinstance(t, dict)]
    lanes: dict[tuple[str, str], int] = {}
    lane_tests: dict[int, list[int]] = {}
    rows: list[list[Any]] = []
    outcome_index = {o: i for i, o in enumerate(OUTCOMES)}
    outcomes = list(OUTCOMES)

    def index(outcome: Any) -> int:
        outcome = str(outcome)
        if outcome not in outcome_index:
            outcome_index[outcome] = len(outcomes)
            outcomes.append(outcome)
        return outcome_index[outcome]

    def lane_of(group: str, worker: Any) -> int:
        return lanes.setdefault((group, worker if isinstance(worker, str) else "?"), len(lanes))

    # workers on several hosts: their lanes grouped by host (the workers' order within each)
    workers = report.get("workers") or {}
    if not report.get("jobs") and any(
        isinstance(w, dict) and w.get("host") for w in workers.values()
    ):
        for wid, w in sorted(workers.items(), key=lambda kv: str(kv[1].get("host") or "")):
            if isinstance(w, dict) and w.get("tests"):
                lane_of("", wid)

    # every execution of a test executed more than once, on the lane of its own worker
    execs: list[list[Any]] = []
    for key, t in tests:
        group = _group(t)
        lane = lane_of(group, t.get("worker"))
        lane_tests.setdefault(lane, []).append(len(rows))
        outcome = index(t.get("outcome"))
        runs = _executions(t)
        for x in runs:
            execs.append(
                [
                    len(rows),
                    lane_of(group, x.get("worker")),
                    _num(x.get("start")),
                    _num(x.get("duration")),
                    _num(x.get("setup_time")),
                    _num(x.get("call_time")),
                    _num(x.get("teardown_time")),
                    index(x.get("outcome")),
                    x.get("attempt") if isinstance(x.get("attempt"), int) else None,
                ]
            )
        rows.append(
            [
                key,
                lane,
                _num(t.get("start")),
                *(m.get(t) for m in HTML),
                outcome,
                len(runs) or 1,
                _subtests(t),
                None,
                *_noise(t),
            ]
        )

    # Times relative to the start of each run (a merged report's jobs each from their own start).
    # A lane whose tests lack start times is laid end to end in report order, and flagged.
    t0: dict[str, float] = {}
    for (group, _), lane in lanes.items():
        starts = [rows[i][START] for i in lane_tests[lane] if rows[i][START] is not None]
        if starts:
            t0[group] = min(t0.get(group, starts[0]), *starts)
    lane_list = []
    for (group, worker), lane in lanes.items():
        idx = lane_tests.get(lane, [])
        known = all(rows[i][START] is not None for i in idx) and group in t0
        clock = 0.0
        for i in idx:
            if known:
                rows[i][START] = round(rows[i][START] - t0[group], 6)
            else:
                rows[i][START] = round(clock, 6)
                clock += rows[i][DUR] or 0.0
        wblock = ((_blocks(report, group).get("workers") or {}).get(worker)) or {}
        if not wblock and group:  # daemon combined reports key workers LABEL::wid
            wblock = (report.get("workers") or {}).get(f"{group}::{worker}") or {}
        host = f" ({wblock['host']})" if isinstance(wblock.get("host"), str) else ""
        lane_list.append(
            {
                "name": f"{group} {worker}{host}".strip(),
                "group": group,
                "worker": worker,
                "starts_known": known,
                "peak_rss_mb": _num(wblock.get("peak_rss_mb")),
                "busy_time": _num(wblock.get("busy_time")),
                "idle_time": _num(wblock.get("idle_time")),
            }
        )

    # executions: from the start of their run, as the rows; a test whose executions cannot all
    # be placed (no start time, a lane laid end to end) is drawn as one bar, its row's
    place = [info["starts_known"] for info in lane_list]
    end = ROW_FIELDS.index("end")
    by_row: dict[int, list] = {}
    for x in execs:
        by_row.setdefault(x[0], []).append(x)
    kept = []
    for i, xs in by_row.items():
        group = _group(tests[i][1])
        if group not in t0 or not place[rows[i][LANE]]:
            continue
        if not all(x[2] is not None and place[x[1]] for x in xs):
            continue
        for x in xs:
            x[2] = round(x[2] - t0[group], 6)
            kept.append(x)
        rows[i][end] = round(max(x[2] + (x[3] or 0.0) for x in xs), 6)

    peaks = []
    for group in sorted({g for g, _ in lanes}):
        cp = _blocks(report, group).get("concurrent_memory_peak")
        if not isinstance(cp, dict):
            continue
        when = _epoch(cp.get("time"))
        if when is None or group not in t0 or _num(cp.get("total_rss_mb")) is None:
            continue
        at = []
        for wid, w in (cp.get("workers") or {}).items():
            if isinstance(w, dict):
                at.append(
                    {
                        "worker": wid,
                        "lane": lanes.get((group, wid)),
                        "rss_mb": _num(w.get("rss_mb")),
                        "test": w.get("test") if isinstance(w.get("test"), str) else None,
                    }
                )
        peaks.append(
            {
                "group": group,
                "t": round(when - t0[group], 6),
                "total_rss_mb": _num(cp.get("total_rss_mb")),
                "workers": at,
            }
        )

    return {
        "fields": ROW_FIELDS,
        "rows": rows,
        "exec_fields": EXEC_FIELDS,
        "execs": kept,
        "lanes": lane_list,
        "outcomes": outcomes,
        "peaks": peaks,
        "merged": any(g for g, _ in lanes),
    }


def _fmt_s(v: Optional[float]) -> str:
    if v is None:
        return "n/a"
    if v < 1:
        return f"{v * 1000:.1f} ms"
    if v < 120:
        return f"{v:.2f} s"
    return f"{int(v // 60)} min {v % 60:.0f} s"


def _fmt_mb(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:,.1f} MB"


def headline(report: dict) -> tuple[list[dict], list[str]]:
    """The figures at the top of the page ``[{label, value, note}]`` and its warnings."""
    session = report.get("session") or {}
    summary = report.get("summary") or {}
    tests = {k: t for k, t in report["tests"].items() if isinstance(t, dict)}
    outcomes = summary.get("outcomes") or {}
    cards = [
        {
            "label": "Tests",
            "value": f"{len(tests):,}",
            "note": ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())),
        },
        {
            "label": "Wall time",
            "value": _fmt_s(_num(session.get("duration"))),
            "note": "sum over jobs" if report.get("jobs") else "of the perfmon session",
        },
        {
            "label": "Time in tests",
            "value": _fmt_s(_num(summary.get("total_duration"))),
            "note": f"average {_fmt_s(_num(summary.get('avg_duration')))}",
        },
    ]
    noisy = noise.headline(report)
    if noisy is not None:  # only when the report measured noise: how far times compare
        n = len(noise.contended_tests(report))
        cards.append({"label": "Contended tests", "value": f"{n:,}", "note": noisy})
    again = [t for t in tests.values() if len(_executions(t)) > 1]
    if again:
        n = sum(len(_executions(t)) for t in again)
        reruns = sum(1 for t in again for x in _executions(t) if x.get("outcome") == "rerun")
        cards.append(
            {
                "label": "Executed more than once",
                "value": f"{len(again):,} test(s)",
                "note": f"{n:,} executions"
                + (f", {reruns:,} of them rerun attempts" if reruns else "")
                + "; their times are the sums",
            }
        )
    subs = [s for s in (_subtests(t) for t in tests.values()) if s is not None]
    if subs:
        p, f, k = (sum(s[i] for s in subs) for i in range(3))
        cards.append(
            {
                "label": "Subtests",
                "value": f"{p + f + k:,}",
                "note": f"{p} passed, {f} failed, {k} skipped in {len(subs)} test(s)",
            }
        )
    workers = report.get("workers") or {}
    eff = _num(summary.get("parallel_efficiency"))
    cards.append(
        {
            "label": "Workers",
            "value": str(len(workers) or len({t.get("worker") for t in tests.values()})),
            "note": "parallel efficiency n/a" if eff is None else f"parallel efficiency {eff:.0%}",
        }
    )
    hosts = report.get("hosts")
    if isinstance(hosts, dict) and len(hosts) > 1:
        cards.append(
            {"label": "Hosts", "value": str(len(hosts)), "note": ", ".join(map(str, hosts))}
        )
    durations = [(t["duration"], k) for k, t in tests.items() if _num(t.get("duration"))]
    if durations:
        d, k = max(durations)
        cards.append({"label": "Slowest test", "value": _fmt_s(d), "note": k})
    deltas = [
        (t["memory"]["delta_mb"], k)
        for k, t in tests.items()
        if isinstance(t.get("memory"), dict) and _num(t["memory"].get("delta_mb"))
    ]
    if deltas:
        d, k = max(deltas)
        cards.append({"label": "Largest memory growth", "value": _fmt_mb(d), "note": k})
    cp = report.get("concurrent_memory_peak")
    if isinstance(cp, dict) and _num(cp.get("total_rss_mb")) is not None:
        cards.append(
            {
                "label": "Concurrent memory peak",
                "value": _fmt_mb(cp["total_rss_mb"]),
                "note": "the workers' RSS added up, at its highest",
            }
        )
    else:
        maybe = [_num(w.get("peak_rss_mb")) for w in workers.values() if isinstance(w, dict)]
        peaks = [p for p in maybe if p is not None]
        if peaks:
            cards.append(
                {"label": "Peak RSS", "value": _fmt_mb(max(peaks)), "note": "highest worker"}
            )
    warnings = []
    if session.get("aborted"):
        warnings.append("The session was aborted: the report holds the tests that finished.")
    if session.get("possibly_incomplete"):
        warnings.append(
            "Possibly incomplete: a process died before its last tests were acknowledged."
        )
    dropped = _num(session.get("records_dropped"))
    if dropped:
        warnings.append(f"{int(dropped)} test record(s) were sent and lost.")
    warnings.extend(str(w) for w in session.get("warnings") or [])
    return cards, warnings


#: The page draws the flame graphs of at most this many profiled tests (the longest).
MAX_FLAMES = 100


def flames(report: dict) -> Optional[dict]:
    """--perf-profile: {node id: its flame graph (SVG text)} for the longest profiled tests,
    from the profiles file the report names; None without one (or when it cannot be read)."""
    block = (report.get("session") or {}).get("profile")
    if not isinstance(block, dict) or not isinstance(block.get("path"), str):
        return None
    from . import profile_view
    from .analysis import ReportError
    from .files import read_json

    try:  # a file that is not what --perf-profile wrote: the page, without flame graphs
        doc = read_json(block["path"])
        tests = [
            t
            for t in doc["tests"]
            if isinstance(t, dict) and isinstance(t.get("nodeid"), str)
            and isinstance(t.get("stacks"), dict)
        ]  # fmt: skip
        longest: dict = {}
        for t in tests:
            d = _num(t.get("duration")) or 0.0
            longest[t["nodeid"]] = max(longest.get(t["nodeid"], 0.0), d)
        keep = sorted(longest, key=lambda n: -longest[n])[:MAX_FLAMES]
        rate = profile_view.rate_of(doc)
        out = {}
        for nodeid in keep:
            _, stacks, _ = profile_view.select(doc, nodeid)
            out[nodeid] = profile_view.flame_svg(nodeid, stacks, rate)
    except (ValueError, KeyError, TypeError, ArithmeticError, ReportError):
        return None
    return out


def _asset(name: str) -> str:
    with open(os.path.join(ASSETS, name), encoding="utf-8") as f:
        return f.read()


def _inline_script(text: str) -> str:
    # "</script" (any case) would end the element early; "<!--" would start script-data escapes
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def render(report: dict, title: Optional[str] = None, history: Optional[dict] = None) -> str:
    """The page as one string; ``history``: the History section's data
    (:func:`pytest_perfmon.monitor.history.trends.trends`), or None for no such section."""
    session = report.get("session") or {}
    system = report.get("system") or {}
    cards, warnings = headline(report)
    data = page_data(report)
    data["cards"] = cards
    data["warnings"] = warnings
    data["history"] = history
    data["flames"] = flames(report)
    data["meta"] = {
        "timestamp": session.get("timestamp"),
        "perfmon_version": session.get("perfmon_version") or __version__,
        "pytest_version": session.get("pytest_version"),
        "python_version": system.get("python_version"),
        "platform": " ".join(
            str(system[k]) for k in ("platform", "platform_release", "machine") if system.get(k)
        ),
        "cpu_count": _num(system.get("cpu_count")),
        "memory_total_mb": _num(system.get("memory_total_mb")),
        "sample_interval": _num((session.get("measurement") or {}).get("sample_interval")),
        "memory_method": (session.get("measurement") or {}).get("memory"),
    }
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    title = title or f"pytest-perfmon report {session.get('timestamp') or ''}".strip()
    parts = {
        "{{title}}": _html.escape(title),
        "{{uplot_css}}": _asset("uPlot.min.css"),
        "{{uplot_license}}": _html.escape(_asset("uPlot.LICENSE")),
        "{{css}}": _asset("report.css"),
        "{{data}}": payload,
        "{{uplot_js}}": _inline_script(_asset("uPlot.iife.min.js")),
        "{{js}}": _inline_script(_asset("report.js")),
    }
    page = _asset("report.html")
    out = []
    # one pass over the template: a placeholder's text is never searched again
    pattern = re.compile("|".join(re.escape(k) for k in parts))
    pos = 0
    for m in pattern.finditer(page):
        out.append(page[pos : m.start()])
        out.append(parts[m.group(0)])
        pos = m.end()
    out.append(page[pos:])
    return "".join(out)


def write_html(report: dict, path: str, history: Optional[dict] = None) -> None:
    """Write the page for ``report`` (a checked report dict) to ``path``, atomically.

    ``history``: the trend data of ``perfmon html --db`` (a plain dict made by
    :func:`pytest_perfmon.monitor.history.trends.trends`; this module never opens a store), or
    None. Raises OSError when ``path`` cannot be written, TypeError for a ``history`` that is
    not a dict (nothing is written then).
    """
    if history is not None and not isinstance(history, dict):
        raise TypeError(f"history must be a dict of trend data, not {type(history).__name__}")
    text = render(report, history=history)
    with atomic_text(path) as f:
        f.write(text)


def write_html_quietly(report: dict, path: str) -> Optional[str]:
    """:func:`write_html` for the collector at the end of a run (``--perf-html``): None when
    written, else the one-line problem. Never raises: the JSON report is written already."""
    try:
        write_html(report, path)
    except OSError as exc:
        return f"cannot write the HTML report {path}: {exc.strerror or exc}"
    except Exception as exc:  # a report we cannot draw must not take the collector down
        return f"cannot write the HTML report {path}: {type(exc).__name__}: {exc}"
    return None
