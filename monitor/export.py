"""Exports of a perfmon report for the dashboards teams already run (``perfmon export``).

- ``github-action-benchmark``: the ``customSmallerIsBetter`` JSON list that
  benchmark-action/github-action-benchmark reads: ``{"name", "unit", "value", "extra"}`` per test
  and metric (duration in s, peak memory and memory growth in MB).
- ``openmetrics``: OpenMetrics text (gauges in base units, ending ``# EOF``) for the node-exporter
  textfile collector or a Pushgateway. No timestamps (the textfile collector refuses them).
- ``csv``: one row per test, empty cells for values that were not measured.

A test pytest executed more than once (pytest-rerunfailures attempts, ``--dist each``, a crashed
worker's test run again) is one entry whose figures are the sums over its executions: every
export says how many there were (benchmark ``extra``, ``perfmon_test_executions``, CSV columns).

Standard library only. Each function takes a report that passed
:func:`pytest_perfmon.monitor.analysis.check_report` and returns the text to write.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any, Callable, Optional

from .units import MB as MIB
from .units import number as _num
from .vocabulary import BY_NAME, CSV

#: Outcomes whose figures are not a measurement of the test's work (left out of the benchmark
#: export: a skipped test "gets faster" by being skipped; a crashed one has no end; an
#: interrupted one stopped when the run ended).
NOT_MEASURED = ("skipped", "crashed", "interrupted")

CSV_COLUMNS = (
    "test",
    "job",
    "worker",
    "outcome",
    "start",
    # the metrics' columns (:data:`.vocabulary.CSV`): duration, ..., memory_delta_mb
    *(m.csv for m in CSV if m.csv),
    "executions",  # how many times pytest executed the test (the figures are their sums)
    "execution_outcomes",  # each execution's outcome, in order, space-separated
    "subtests_passed",
    "subtests_failed",
    "subtests_skipped",
)

_duration = BY_NAME["duration"].get
_peak = BY_NAME["peak_mb"].get
_delta = BY_NAME["delta_mb"].get
_cpu = BY_NAME["cpu_percent"].get


def _executions(test: dict) -> list:
    ex = test.get("executions")
    return [x for x in ex if isinstance(x, dict)] if isinstance(ex, list) else []


def _runs(test: dict) -> int:
    return len(_executions(test)) or 1


def _tests(report: dict) -> Iterator[tuple[str, dict]]:
    for key, test in report["tests"].items():
        if isinstance(test, dict):
            yield key, test


# --------------------------------------------------------------------------- benchmark JSON

BENCH_METRICS: tuple[tuple[str, str, Callable[[dict], Optional[float]]], ...] = (
    ("duration", "s", _duration),
    ("memory peak", "MB", _peak),
    ("memory delta", "MB", _delta),
)


def github_action_benchmark(report: dict) -> str:
    """``customSmallerIsBetter`` entries: ``"<test> - <metric>"``, then the session's duration."""
    entries = []
    for key, test in _tests(report):
        if test.get("outcome") in NOT_MEASURED:
            continue
        extra = f"outcome: {test.get('outcome')}; worker: {test.get('worker')}"
        execs = _executions(test)
        if execs:
            outcomes = ", ".join(str(x.get("outcome")) for x in execs)
            extra += f"; executions: {len(execs)} ({outcomes}), figures summed over them"
        subs = test.get("subtests")
        if isinstance(subs, dict):
            extra += "; subtests: " + ", ".join(
                f"{subs.get(k, 0)} {k}" for k in ("passed", "failed", "skipped")
            )
        for metric, unit, get in BENCH_METRICS:
            value = get(test)
            if value is not None:
                entries.append(
                    {"name": f"{key} - {metric}", "unit": unit, "value": value, "extra": extra}
                )
    session = report.get("session") or {}
    duration = _num(session.get("duration"))
    if duration is not None:
        entries.append({"name": "session - duration", "unit": "s", "value": duration})
    return json.dumps(entries, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- OpenMetrics


def _label(value: Any) -> str:
    text = "" if value is None else str(value)
    # (a raw carriage return: prometheus_client's parsers refuse the line; escaped as OpenMetrics
    # escapes a line feed)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


def _labels(**labels: Any) -> str:
    parts = [f'{k}="{_label(v)}"' for k, v in labels.items() if v is not None]
    return "{" + ",".join(parts) + "}" if parts else ""


def _value(v: float) -> str:
    return repr(float(v))


class _Family:
    def __init__(self, name: str, help_text: str, unit: str = "") -> None:
        self.name, self.help, self.unit = name, help_text, unit
        self.samples: list[str] = []

    def add(self, value: Optional[float], **labels: Any) -> None:
        if value is not None:
            self.samples.append(f"{self.name}{_labels(**labels)} {_value(value)}")

    def lines(self) -> list[str]:
        if not self.samples:
            return []
        out = [f"# TYPE {self.name} gauge"]
        if self.unit:
            out.append(f"# UNIT {self.name} {self.unit}")
        out.append(f"# HELP {self.name} {self.help}")
        return out + self.samples


def _scaled(v: Optional[float], factor: float) -> Optional[float]:
    return None if v is None else v * factor


def openmetrics(report: dict) -> str:
    """Gauges per test (``test``, ``worker``, ``outcome`` and, when merged, ``job`` labels),
    per worker and for the session, in seconds, bytes and ratios."""
    duration = _Family("perfmon_test_duration_seconds", "setup + call + teardown", "seconds")
    cpu = _Family("perfmon_test_cpu_ratio", "process CPU time / wall time of the test", "ratio")
    peak = _Family("perfmon_test_memory_peak_bytes", "peak RSS during the test", "bytes")
    delta = _Family("perfmon_test_memory_delta_bytes", "RSS at the end minus the start", "bytes")
    runs = _Family(
        "perfmon_test_executions",
        "how many times pytest executed the test, for tests executed more than once only "
        "(reruns, --dist each); their other figures are the sums over the executions",
    )
    repeated = reruns = 0
    for key, test in _tests(report):
        labels = {
            "test": key,
            "worker": test.get("worker"),
            "outcome": test.get("outcome"),
            "job": test.get("job") or test.get("session"),
        }
        duration.add(_duration(test), **labels)
        cpu.add(_scaled(_cpu(test), 0.01), **labels)
        peak.add(_scaled(_peak(test), MIB), **labels)
        delta.add(_scaled(_delta(test), MIB), **labels)
        n = _runs(test)
        if n > 1:  # only those: a test run once has no such series (cardinality)
            runs.add(float(n), **labels)
            repeated += 1
            reruns += sum(1 for x in _executions(test) if x.get("outcome") == "rerun")

    worker_peak = _Family("perfmon_worker_peak_rss_bytes", "highest RSS of the worker", "bytes")
    worker_busy = _Family(
        "perfmon_worker_busy_seconds", "time the worker spent in tests", "seconds"
    )
    for wid, w in (report.get("workers") or {}).items():
        if isinstance(w, dict):
            worker_peak.add(_scaled(_num(w.get("peak_rss_mb")), MIB), worker=wid)
            worker_busy.add(_num(w.get("busy_time")), worker=wid)

    session = report.get("session") or {}
    summary = report.get("summary") or {}
    s_duration = _Family("perfmon_session_duration_seconds", "wall time of the session", "seconds")
    s_duration.add(_num(session.get("duration")))
    s_tests = _Family("perfmon_session_tests", "tests in the report, by outcome")
    for outcome, n in sorted((summary.get("outcomes") or {}).items()):
        s_tests.add(_num(n), outcome=outcome)
    s_dropped = _Family("perfmon_session_records_dropped", "test records known to be lost")
    s_dropped.add(_num(session.get("records_dropped")))
    s_repeated = _Family(
        "perfmon_session_tests_executed_more_than_once", "tests pytest executed more than once"
    )
    s_repeated.add(float(repeated))
    s_reruns = _Family("perfmon_session_rerun_attempts", "attempts pytest-rerunfailures ran again")
    s_reruns.add(float(reruns))
    s_eff = _Family(
        "perfmon_session_parallel_efficiency_ratio",
        "sum of test durations / (wall time x workers)",
        "ratio",
    )
    s_eff.add(_num(summary.get("parallel_efficiency")))
    concurrent = report.get("concurrent_memory_peak")
    s_conc = _Family(
        "perfmon_session_concurrent_memory_peak_bytes",
        "highest sum of the workers' RSS at one moment",
        "bytes",
    )
    if isinstance(concurrent, dict):
        s_conc.add(_scaled(_num(concurrent.get("total_rss_mb")), MIB))

    lines: list[str] = []
    for fam in (
        duration,
        cpu,
        peak,
        delta,
        runs,
        worker_peak,
        worker_busy,
        s_duration,
        s_tests,
        s_dropped,
        s_repeated,
        s_reruns,
        s_eff,
        s_conc,
    ):
        lines.extend(fam.lines())
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CSV


def _cell(v: Any) -> Any:
    return "" if v is None else v


class _LineEnd:
    """A text sink for csv.writer whose "\r\n" row ends it turns into "\n"."""

    def __init__(self, buf: io.StringIO) -> None:
        self.buf = buf

    def write(self, text: str) -> int:
        if text.endswith("\r\n"):
            text = text[:-2] + "\n"
        return self.buf.write(text)


def csv_text(report: dict) -> str:
    """One row per test, columns :data:`CSV_COLUMNS`; ``start`` in seconds since the epoch."""
    buf = io.StringIO()
    # rows end in "\n"; "\r\n" as the writer's terminator makes it quote a cell holding a
    # carriage return (a node id may: its file's name) as well as one holding a newline
    writer = csv.writer(_LineEnd(buf), lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for key, test in _tests(report):
        subs = test.get("subtests")
        if not isinstance(subs, dict):
            subs = {}
        writer.writerow(
            [
                _cell(v)
                for v in (
                    key,
                    test.get("job") or test.get("session"),
                    test.get("worker"),
                    test.get("outcome"),
                    _num(test.get("start")),
                    *(m.get(test) for m in CSV),
                    _runs(test),
                    " ".join(str(x.get("outcome")) for x in _executions(test))
                    or test.get("outcome"),
                    subs.get("passed"),
                    subs.get("failed"),
                    subs.get("skipped"),
                )
            ]
        )
    return buf.getvalue()


EXPORTS: dict[str, Callable[[dict], str]] = {
    "github-action-benchmark": github_action_benchmark,
    "openmetrics": openmetrics,
    "csv": csv_text,
}
