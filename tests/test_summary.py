"""In-process: the one summarize, the one table renderer, the terminal summary, the schema
validator (against jsonschema). The import graph: tests/test_import_root.py."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import jsonschema
import pytest
from pytest_perfmon._summary import write_summary
from pytest_perfmon.monitor import analysis, noise
from pytest_perfmon.monitor.schema import SchemaError, first_problem, load_schema
from pytest_perfmon.monitor.summary import summarize
from pytest_perfmon.monitor.tables import shorten, text_table

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
ROOT = HERE.parent


def _t(duration=0.1, delta=0.0, outcome="passed", start=None, peak=None, cpu=None):
    return {
        "duration": duration,
        "setup_time": None,
        "call_time": duration,
        "teardown_time": None,
        "memory": {"start_mb": 10.0, "peak_mb": peak, "end_mb": None, "delta_mb": delta},
        "cpu_percent": cpu,
        "outcome": outcome,
        "worker": "main",
        "pid": 1,
        "start": start,
    }


# --------------------------------------------------------------------------- summarize


def test_summarize_values():
    tests = [_t(0.5, 2.0, "passed"), _t(1.5, -1.0, "failed"), _t(None, None, "skipped")]
    s = summarize(tests)
    assert s == {
        "total_duration": 2.0,
        "avg_duration": 1.0,
        "max_duration": 1.5,
        "min_duration": 0.5,
        "avg_memory_delta_mb": 0.5,
        "max_memory_delta_mb": 2.0,
        "outcomes": {"failed": 1, "passed": 1, "skipped": 1},
        "parallel_efficiency": None,
    }
    assert list(s["outcomes"]) == ["failed", "passed", "skipped"]  # sorted, whatever the order


def test_summarize_takes_a_stream_a_mapping_or_nothing():
    tests = {f"t{i}": _t(0.1 * i, float(i)) for i in range(1, 5)}
    from_map = summarize(tests, 0.5)
    assert from_map == summarize(iter(list(tests.values())), 0.5)  # read once, as the daemon does
    assert from_map["parallel_efficiency"] == 0.5
    empty = summarize([])
    assert empty["total_duration"] == 0.0 and empty["outcomes"] == {}
    assert not any(isinstance(v, float) and math.isnan(v) for v in empty.values())


def test_summarize_is_the_one_the_report_and_merge_use():
    report = json.loads((GOLDEN / "current.json").read_text(encoding="utf-8"))
    expected = {k: v for k, v in report["summary"].items() if k != "parallel_efficiency"}
    got = summarize(report["tests"])
    assert {k: got[k] for k in expected} == expected
    assert analysis.summarize is summarize


# --------------------------------------------------------------------------- tables


NODE = "tests/unit/deep/test_x.py::TestOuter::TestInner::test_something[param1-param2]"


@pytest.mark.parametrize("width", [80, 60, 45, 30, 20, 12, 5])
def test_shorten_keeps_file_and_test_name(width):
    got = shorten(NODE, width)
    assert len(got) <= width
    if width >= 45:
        assert got.endswith("::test_something[param1-param2]") and "test_x.py" in got
    if width == 60:
        assert got == ".../test_x.py::...::test_something[param1-param2]"


def test_shorten_leaves_short_text_and_cuts_other_text_in_the_middle():
    assert shorten("tests/test_a.py::test_b", 40) == "tests/test_a.py::test_b"
    assert shorten("tests/test_a.py::test_b", 18) == "test_a.py::test_b"
    cut = shorten("abcdefghijklmnopqrstuvwxyz", 11)
    assert cut == "abcd...wxyz" and len(cut) == 11


def test_text_table_aligns_and_fits():
    rows = [["1.0", "x", "tests/a.py::test_one"], ["10.25", "yy", NODE]]
    lines = text_table(["n", "k", "test"], rows, [True, False, False])
    assert lines[0] == "      n  k   test"
    assert lines[1] == "    1.0  x   tests/a.py::test_one"
    assert lines[2].endswith(NODE)  # no width: nothing cut
    for width in (100, 60, 40, 25):
        fitted = text_table(["n", "k", "test"], rows, [True, False, False], width)
        assert all(len(line) <= width for line in fitted), (width, fitted)
        assert fitted[2].endswith("]") or width < 30


# --------------------------------------------------------------------------- terminal summary


class _TW:
    def __init__(self, width: int) -> None:
        self.fullwidth = width


class FakeTerminal:
    """What write_summary uses of pytest's TerminalReporter."""

    def __init__(self, width: int) -> None:
        self._tw = _TW(width)
        self.lines: list = []
        self.markup: list = []

    def write_line(self, line: str, **markup) -> None:
        self.lines.append(line)
        self.markup.append(markup)

    def marked(self, line: str) -> dict:
        return self.markup[self.lines.index(line)]

    def write_sep(self, sep: str, title: str, **markup) -> None:
        # pytest: at least two sep characters a side, the line one short of the width
        n = max(2, (self._tw.fullwidth - 1 - len(title) - 2) // 2)
        self.lines.append(f"{sep * n} {title} {sep * n}")


def _demo_report() -> dict:
    report = json.loads((GOLDEN / "current.json").read_text(encoding="utf-8"))
    start = 1_700_000_000.0
    for i, t in enumerate(report["tests"].values()):
        t["start"] = start + i
    long_id = "tests/integration/very/deep/package/test_module_name.py::TestClass::test_the_name"
    report["tests"][long_id] = dict(_t(0.3, -45.0, start=start + 20, peak=60.0, cpu=99.0))
    report["tests"]["tests/test_x.py::test_instant"] = _t(0.0001, 0.0, start=start, cpu=100.0)
    report["workers"] = {
        "gw0": {"pid": 1, "tests": 5, "busy_time": 1.0, "idle_time": 0.5, "peak_rss_mb": 70.0},
        "gw1": {"pid": 2, "tests": 6, "busy_time": 1.2, "idle_time": 0.3, "peak_rss_mb": 80.0},
    }
    report["concurrent_memory_peak"] = {
        "total_rss_mb": 150.0,
        "time": "2026-01-01T00:00:00.000000Z",
        "workers": {
            "gw0": {"rss_mb": 70.0, "test": long_id},
            "gw1": {"rss_mb": 80.0, "test": None},
        },
    }
    return report


def _block(lines: list, title: str) -> list:
    i = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("  ") or line.startswith("  ("):
            break
        rows.append(line)
    return rows


@pytest.mark.parametrize("columns", [50, 80, 160])
def test_terminal_summary_fits_every_line(columns):
    tr = FakeTerminal(columns)
    write_summary(tr, _demo_report())
    too_long = [line for line in tr.lines if len(line) > columns - 1]
    assert not too_long
    assert tr.lines[1].startswith("11 tests (")
    # the worker's name is kept, the test id cut in the middle
    gw0 = next(line for line in tr.lines if line.startswith("  gw0: 70.0 MB in "))
    assert gw0.endswith("test_the_name") or columns < 60


def test_terminal_tables_sorted_by_their_column_with_one_floor():
    tr = FakeTerminal(200)
    report = _demo_report()
    write_summary(tr, report)
    deltas = _block(tr.lines, "largest memory deltas")
    values = [abs(float(r.split()[0])) for r in deltas]
    assert values == sorted(values, reverse=True) and values[0] == 45.0  # |-45| leads
    assert all(v >= analysis.MEMORY_MIN_MB for v in values)
    rises = _block(tr.lines, "largest peak rises")
    values = [float(r.split()[0]) for r in rises]
    assert values == sorted(values, reverse=True)
    cpu = _block(tr.lines, "CPU over 80%")
    assert not any("test_instant" in r for r in cpu)  # 0.1 ms at 100 %: under the floor
    values = [float(r.split()[0].rstrip("%")) for r in cpu]
    assert values == sorted(values, reverse=True) and all(v > 80 for v in values)
    # the same CPU tests as perfmon report (same analysis, same floor)
    assert [r.split()[-1] for r in cpu] == [k for k, _ in analysis.cpu_over(report, 80.0)]


def test_terminal_names_each_time_figure():
    tr = FakeTerminal(200)
    write_summary(tr, _demo_report())
    text = "\n".join(tr.lines)
    assert "(first test start to last test end)" in text
    assert "sum of test durations" in text
    assert "perfmon session 16.00 s" in text and "pytest's own time" in text
    assert " wall;" not in text


def _summary_of(golden: str, columns: int) -> tuple:
    """The terminal summary of a golden report at ``columns``, checked to fit: the terminal and
    its text on one line."""
    report = json.loads((GOLDEN / golden).read_text(encoding="utf-8"))
    tr = FakeTerminal(columns)
    write_summary(tr, report)
    assert not [line for line in tr.lines if len(line) > columns - 1]
    return tr, " ".join(line.strip() for line in tr.lines)


@pytest.mark.parametrize("columns", [50, 100])
def test_terminal_summary_shows_executions_subtests_and_interrupted(columns):
    """Issue 20: the tests pytest executed more than once (their attempts), subtest counts and
    interrupted tests are in the summary; every line still fits."""
    tr, text = _summary_of("reruns_current.json", columns)
    assert "3 test(s) executed more than once (7 executions, 3 of them rerun attempts)" in text
    assert "subtests: 3 passed, 1 failed, 0 skipped in 1 test(s)" in text
    assert "1 test(s) interrupted" in text and "test_long" in text
    slow = _block(tr.lines, "slowest tests")
    # slowest first: crashy (2 executions), flaky (3), everywhere (2), then tests run once
    assert [r.split()[4] for r in slow] == ["2", "3", "2", "1", "1", "1"]
    if columns >= 100:
        again = _block(tr.lines, "tests executed more than once")
        assert again[0].split() == ["3", "1.170", "rerun", "x2,", "passed", FLAKY]


def test_terminal_summary_without_executions_has_no_runs_column():
    tr = FakeTerminal(200)
    write_summary(tr, _demo_report())
    header = tr.lines[tr.lines.index(next(x for x in tr.lines if x.startswith("slowest"))) + 1]
    assert header.split() == ["total", "setup", "call", "teardown", "test"]
    assert not any("executed more than once" in line for line in tr.lines)
    assert not any(line.startswith("subtests") for line in tr.lines)


@pytest.mark.parametrize("columns", [50, 80, 160])
def test_terminal_summary_says_how_noisy_the_run_was(columns):
    """Issue 21: the noise headline under the totals (yellow: tests ran contended) and the most
    contended tests, the same rows as perfmon report's (one section builder); every line
    fits."""
    tr, text = _summary_of("noise_current.json", columns)
    report = json.loads((GOLDEN / "noise_current.json").read_text(encoding="utf-8"))
    assert "noise: 4.7 % of test time was spent waiting for a CPU;" in text
    assert "3 tests ran contended; their times are not comparable" in text
    assert tr.marked(next(x for x in tr.lines if x.startswith("noise:"))) == {"yellow": True}
    head = next(i for i, x in enumerate(tr.lines) if x.split()[:2] == ["share", "wait"])
    rows = _block(tr.lines[head - 1 :], tr.lines[head - 1])
    if columns >= 80:
        assert [r.split()[-1] for r in rows] == noise.contended_tests(report)
        assert rows[0].split() == [
            "37.5%",
            "0.300",
            "0.000",
            "0.800",
            "tests/test_cpu.py::test_crunch",
        ]
    # without a noise certificate (an old report, a platform without the sources): no word of it
    tr = FakeTerminal(columns)
    write_summary(tr, _demo_report())
    assert not any("contended" in line or line.startswith("noise") for line in tr.lines)


FLAKY = "tests/test_net.py::test_flaky"


# --------------------------------------------------------------------------- schema validator


_JS = jsonschema.Draft202012Validator(load_schema())


def _broken_reports() -> list:
    good = json.loads((GOLDEN / "current.json").read_text(encoding="utf-8"))
    first = next(iter(good["tests"]))
    cases = []

    def case(name, change):
        r = copy.deepcopy(good)
        change(r)
        cases.append(pytest.param(r, id=name))

    case("half-valid", lambda r: r.update(session={}, tests={}, summary={}))
    case("no-summary", lambda r: r.pop("summary"))
    case("version-true", lambda r: r.update(schema_version=True))
    case("outcome-int", lambda r: r["tests"][first].update(outcome=3))
    case("outcome-unknown", lambda r: r["tests"][first].update(outcome="exploded"))
    case("duration-str", lambda r: r["tests"][first].update(duration="1"))
    case("duration-negative", lambda r: r["tests"][first].update(duration=-0.5))
    case("missing-field", lambda r: r["tests"][first].pop("pid"))
    case("memory-extra", lambda r: r["tests"][first]["memory"].update(rss=1))
    case("interval-zero", lambda r: r["session"]["measurement"].update(sample_interval=0))
    case("collector", lambda r: r["session"].update(collector="someone"))
    case("label-empty", lambda r: r["session"].update(label=""))
    case("warnings-int", lambda r: r["session"].update(warnings=[1]))
    case("peak-bad", lambda r: r.update(concurrent_memory_peak={"total_rss_mb": 1}))
    case("worker-bad", lambda r: r.update(workers={"gw0": {"pid": 1}}))
    case("dropped-float", lambda r: r["session"].update(records_dropped=1.5))
    case("bool-as-int", lambda r: r["session"].update(total_tests=True))
    case("job-bad", lambda r: r.update(jobs={"a": {}}))
    case("incomplete-str", lambda r: r["session"].update(possibly_incomplete="yes"))
    return cases


def test_validator_accepts_what_jsonschema_accepts():
    for name in ("baseline.json", "current.json"):
        report = json.loads((GOLDEN / name).read_text(encoding="utf-8"))
        assert not list(_JS.iter_errors(report))
        assert first_problem(report) is None
    report = json.loads((GOLDEN / "current.json").read_text(encoding="utf-8"))
    report["concurrent_memory_peak"] = None
    report["session"]["total_tests"] = 9.0  # an integer, for JSON Schema
    report["session"]["possibly_incomplete"] = True
    report["tests"]["tests/test_x.py::test_a"] = dict(report["tests"].popitem()[1])
    assert not list(_JS.iter_errors(report)) and first_problem(report) is None
    for name in ("reruns_baseline.json", "reruns_current.json"):  # executions, subtests
        report = json.loads((GOLDEN / name).read_text(encoding="utf-8"))
        assert not list(_JS.iter_errors(report)) and first_problem(report) is None


@pytest.mark.parametrize("report", _broken_reports())
def test_validator_rejects_what_jsonschema_rejects(report):
    assert list(_JS.iter_errors(report))
    assert first_problem(report) is not None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_validator_rejects_nan_and_infinity_anywhere(value):
    report = json.loads((GOLDEN / "current.json").read_text(encoding="utf-8"))
    report["tests"]["tests/test_api.py::test_noise"]["memory"]["peak_mb"] = value
    assert "peak_mb" in first_problem(report)
    report = json.loads((GOLDEN / "current.json").read_text(encoding="utf-8"))
    report["session"]["extra"] = {"deep": [value]}  # not in the schema: still not JSON
    assert first_problem(report).startswith("session.extra.deep[0]: ")


def test_validator_refuses_keywords_it_does_not_implement():
    with pytest.raises(SchemaError):
        first_problem({}, {"type": "object", "patternProperties": {}})
