"""--perf-print-summary: the brief's three analyses in pytest's terminal summary."""

from __future__ import annotations

from typing import Any

ROWS = 10
MIN_MB = 0.1  # a memory row needs at least this delta or peak rise
MIN_CPU_DURATION = 0.01  # CPU percent of shorter tests is mostly noise


def _fit(nodeid: str, width: int) -> str:
    if len(nodeid) <= width:
        return nodeid
    return "..." + nodeid[-(width - 3) :] if width > 3 else nodeid[:width]


def _table(tr: Any, title: str, rows: list, headers: tuple) -> None:
    """rows: (nodeid, *cells); cells are already strings, right-aligned; the node id fills."""
    tr.write_line(title, bold=True)
    if not rows:
        tr.write_line("  (none)")
        return
    widths = [max(len(h), *(len(r[i + 1]) for r in rows)) for i, h in enumerate(headers)]
    cells_w = sum(w + 2 for w in widths)
    name_w = max(20, tr._tw.fullwidth - cells_w - 3)
    head = "  " + "".join(h.rjust(w) + "  " for h, w in zip(headers, widths)) + "test"
    tr.write_line(head)
    for r in rows:
        cells = "".join(c.rjust(w) + "  " for c, w in zip(r[1:], widths))
        tr.write_line("  " + cells + _fit(r[0], name_w))


def _mb(v: Any) -> str:
    return "-" if v is None else f"{v:+.1f}"


def _secs(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"  # "-": the phase never ran


def _plain(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def write_summary(tr: Any, report: dict) -> None:
    tests: dict = report.get("tests", {})
    session = report.get("session", {})
    summary = report.get("summary", {})
    tr.write_sep("=", "performance summary (pytest-perfmon)")
    meas = session.get("measurement", {})
    outcomes = ", ".join(f"{n} {k}" for k, n in sorted(summary.get("outcomes", {}).items()))
    tr.write_line(
        f"{session.get('total_tests', 0)} tests ({outcomes or 'none'}) in "
        f"{session.get('duration', 0):.2f}s wall; sum of test durations "
        f"{summary.get('total_duration', 0):.2f}s, "
        f"mean {summary.get('avg_duration', 0) * 1000:.1f} ms"
    )
    width = tr._tw.fullwidth - 1
    tr.write_line(
        f"memory: mean delta {summary.get('avg_memory_delta_mb', 0):+.2f} MB, "
        f"max delta {summary.get('max_memory_delta_mb', 0):+.2f} MB"
    )
    tr.write_line(
        _fit(f"measured by: peak {meas.get('memory_peak')}, cpu {meas.get('cpu')}", width)
    )
    items = list(tests.items())

    slow = sorted(items, key=lambda kv: kv[1]["duration"] or 0.0, reverse=True)[:ROWS]
    _table(
        tr,
        "slowest tests",
        [
            (
                k,
                f"{(t['duration'] or 0):.3f}s",
                _secs(t["setup_time"]),
                _secs(t["call_time"]),
                _secs(t["teardown_time"]),
            )
            for k, t in slow
        ],
        ("total", "setup", "call", "teardown"),
    )

    def rise(t: dict) -> float:
        m = t["memory"]
        if m["peak_mb"] is None or m["start_mb"] is None:
            return 0.0
        return m["peak_mb"] - m["start_mb"]

    def weight(t: dict) -> float:
        return max(abs(t["memory"]["delta_mb"] or 0.0), rise(t))

    mem = [kv for kv in items if weight(kv[1]) >= MIN_MB]
    mem = sorted(mem, key=lambda kv: weight(kv[1]), reverse=True)[:ROWS]
    _table(
        tr,
        "largest memory deltas (MB)",
        [
            (k, _mb(t["memory"]["delta_mb"]), f"{rise(t):.1f}", _plain(t["memory"]["end_mb"]))
            for k, t in mem
        ],
        ("delta", "peak-start", "end"),
    )

    cpu = [
        kv
        for kv in items
        if kv[1]["cpu_percent"] is not None and (kv[1]["duration"] or 0) >= MIN_CPU_DURATION
    ]
    cpu = sorted(cpu, key=lambda kv: kv[1]["cpu_percent"], reverse=True)[:ROWS]
    _table(
        tr,
        "most CPU-intensive tests",
        [(k, f"{t['cpu_percent']:.0f}%", f"{(t['duration'] or 0):.3f}s") for k, t in cpu],
        ("cpu", "duration"),
    )
    tr.write_line(
        f"  (memory: tests that moved at least {MIN_MB} MB; "
        f"cpu: tests of at least {MIN_CPU_DURATION * 1000:.0f} ms)"
    )

    workers = report.get("workers") or {}
    if len(workers) > 1:
        tr.write_line("workers", bold=True)
        tr.write_line(f"  {'worker':<8}{'tests':>7}{'busy s':>10}{'idle s':>10}{'peak RSS MB':>13}")
        for wid, w in sorted(workers.items()):
            peak = w.get("peak_rss_mb")
            tr.write_line(
                f"  {wid:<8}{w['tests']:>7}{w['busy_time']:>10.2f}{w['idle_time']:>10.2f}"
                f"{'-' if peak is None else f'{peak:.1f}':>13}"
            )
        eff = summary.get("parallel_efficiency")
        if eff is not None:
            tr.write_line(
                f"  worker utilisation: {eff * 100:.0f}% (sum of test durations / "
                f"(wall time x {len(workers)} workers))"
            )
    cp = report.get("concurrent_memory_peak")
    if cp and len(workers) > 1:
        running = ", ".join(
            f"{wid}: {w['rss_mb']:.0f} MB in {w['test'] or '(between tests)'}"
            for wid, w in sorted(cp["workers"].items())
        )
        tr.write_line(
            f"concurrent memory peak: {cp['total_rss_mb']:.0f} MB at {cp['time']}", bold=True
        )
        tr.write_line(_fit("  " + running, tr._tw.fullwidth - 1))
