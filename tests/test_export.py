"""perfmon export: github-action-benchmark JSON, OpenMetrics (checked by prometheus_client's
parsers), CSV; bad input is one line and exit 2. All in-process (cli.main)."""

from __future__ import annotations

import copy
import csv
import io
import json
import os

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as prom_parse
from pytest_perfmon.monitor import analysis, cli, export

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
MIB = 1048576


@pytest.fixture
def report() -> dict:
    data = analysis.load_report(os.path.join(GOLDEN, "current.json"))
    # an awkward node id: quotes, backslash, brackets and a comma reach every format intact
    key = next(iter(data["tests"]))
    data["tests"]['tests/t.py::test_q["a\\b",c]'] = copy.deepcopy(data["tests"][key])
    analysis.check_report(data)
    return data


def _run(argv: list, capsys) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _write(tmp_path, report: dict) -> str:
    path = str(tmp_path / "r.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f)
    return path


def test_github_action_benchmark(report, tmp_path, capsys):
    rc, out, err = _run(
        ["export", _write(tmp_path, report), "--format", "github-action-benchmark"], capsys
    )
    assert rc == 0 and err == ""
    entries = json.loads(out)
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names))
    for e in entries:  # the shape customSmallerIsBetter reads
        assert isinstance(e["name"], str) and e["unit"] in ("s", "MB")
        assert isinstance(e["value"], (int, float)) and not isinstance(e["value"], bool)
    by_name = {e["name"]: e for e in entries}
    t = report["tests"]["tests/test_cache.py::test_leak"]
    assert by_name["tests/test_cache.py::test_leak - duration"]["value"] == t["duration"]
    assert by_name["tests/test_cache.py::test_leak - memory peak"]["value"] == 75.0
    assert by_name["tests/test_cache.py::test_leak - memory delta"]["value"] == 31.0
    assert by_name["session - duration"]["value"] == report["session"]["duration"]
    skipped = [k for k, t in report["tests"].items() if t["outcome"] == "skipped"]
    assert skipped and not any(n.startswith(skipped[0] + " - ") for n in names)


def test_openmetrics_parses_and_matches(report, tmp_path, capsys):
    path = _write(tmp_path, report)
    out_path = str(tmp_path / "perf.prom")
    rc, out, err = _run(["export", path, "--format", "openmetrics", "-o", out_path], capsys)
    assert rc == 0 and out == "" and err == ""
    with open(out_path, encoding="utf-8") as f:
        text = f.read()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in om_parse(text)}  # raises on any malformed line
    dur = families["perfmon_test_duration_seconds"]
    assert dur.type == "gauge" and dur.unit == "seconds"
    by_test = {s.labels["test"]: s for s in dur.samples}
    assert set(by_test) == set(report["tests"])
    assert by_test['tests/t.py::test_q["a\\b",c]'].value == pytest.approx(
        report["tests"]['tests/t.py::test_q["a\\b",c]']["duration"]
    )
    leak = report["tests"]["tests/test_cache.py::test_leak"]
    peak = {s.labels["test"]: s.value for s in families["perfmon_test_memory_peak_bytes"].samples}
    assert peak["tests/test_cache.py::test_leak"] == leak["memory"]["peak_mb"] * MIB
    cpu = {s.labels["test"]: s.value for s in families["perfmon_test_cpu_ratio"].samples}
    assert cpu["tests/test_cache.py::test_leak"] == pytest.approx(leak["cpu_percent"] / 100)
    outcomes = {s.labels["outcome"]: s.value for s in families["perfmon_session_tests"].samples}
    assert outcomes == report["summary"]["outcomes"]
    w = families["perfmon_worker_peak_rss_bytes"].samples
    assert [(s.labels["worker"], s.value) for s in w] == [("main", 75.0 * MIB)]
    # the node-exporter textfile collector reads the Prometheus text format: that parser too
    names = {f.name for f in prom_parse(text)}
    assert "perfmon_test_duration_seconds" in names


def test_openmetrics_merged_report_labels_jobs(report, tmp_path, capsys):
    a, b = _write(tmp_path, report), str(tmp_path / "b.json")
    with open(b, "w", encoding="utf-8") as f:
        json.dump(report, f)
    merged = str(tmp_path / "m.json")
    assert cli.main(["merge", a, b, "--label", "py39", "--label", "py312", "-o", merged]) == 0
    capsys.readouterr()
    rc, out, _ = _run(["export", merged, "--format", "openmetrics"], capsys)
    assert rc == 0
    fam = {f.name: f for f in om_parse(out)}["perfmon_test_duration_seconds"]
    assert {s.labels["job"] for s in fam.samples} == {"py39", "py312"}
    assert len(fam.samples) == 2 * len(report["tests"])


def test_csv(report, tmp_path, capsys):
    rc, out, _ = _run(["export", _write(tmp_path, report), "--format", "csv"], capsys)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == list(export.CSV_COLUMNS)
    by_test = {r["test"]: r for r in rows}
    assert set(by_test) == set(report["tests"])
    leak = by_test["tests/test_cache.py::test_leak"]
    assert float(leak["memory_delta_mb"]) == 31.0 and leak["outcome"] == "passed"
    assert leak["start"] == "" and leak["job"] == ""  # not in this report: empty, not "None"


def test_csv_node_ids_with_line_breaks(report, tmp_path, capsys):
    """A node id may hold a carriage return or a newline (a file's or a parameter's name): the
    cell is quoted, so a CSV reader reads one row per test."""
    entry = next(iter(report["tests"].values()))
    odd = ["tests/test_cr\rx.py::test_a", "tests/t.py::test_b[line\nbreak]", 'tests/t.py::test_"q"']
    report["tests"].update({k: dict(entry) for k in odd})
    rc, out, _ = _run(["export", _write(tmp_path, report), "--format", "csv"], capsys)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert [r["test"] for r in rows] == list(report["tests"])
    assert all(len(r) == len(export.CSV_COLUMNS) for r in rows)


def test_null_figures_are_left_out(report, tmp_path, capsys):
    t = report["tests"]["tests/test_cache.py::test_leak"]
    t["memory"] = {"start_mb": None, "peak_mb": None, "end_mb": None, "delta_mb": None}
    t["cpu_percent"] = None
    path = _write(tmp_path, report)
    _, out, _ = _run(["export", path, "--format", "github-action-benchmark"], capsys)
    names = [e["name"] for e in json.loads(out)]
    assert "tests/test_cache.py::test_leak - duration" in names
    assert "tests/test_cache.py::test_leak - memory peak" not in names
    _, out, _ = _run(["export", path, "--format", "openmetrics"], capsys)
    fams = {f.name: f for f in om_parse(out)}
    assert "tests/test_cache.py::test_leak" not in {
        s.labels["test"] for s in fams["perfmon_test_memory_peak_bytes"].samples
    }


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ('{"schema_version": 1}', "not a perfmon report"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, content, message):
    path = str(tmp_path / "r.json")
    if content is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
    rc, out, err = _run(["export", path, "--format", "csv"], capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("perfmon: error: ") and message in err


def test_unwritable_output_is_one_line_exit_2(report, tmp_path, capsys):
    target = str(tmp_path / "no-such-dir" / "out.csv")
    rc, out, err = _run(
        ["export", _write(tmp_path, report), "--format", "csv", "-o", target], capsys
    )
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "cannot write" in err and "Traceback" not in err


def test_unknown_format_is_a_usage_error(report, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", _write(tmp_path, report), "--format", "xml"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --------------------------------------------------------------------------- issue 20: executions

FLAKY = "tests/test_net.py::test_flaky"  # rerun, rerun, passed


@pytest.fixture
def reruns() -> dict:
    return analysis.load_report(os.path.join(GOLDEN, "reruns_current.json"))


def test_exports_carry_executions_and_subtests(reruns, tmp_path, capsys):
    """A test executed more than once: the benchmark entry says so in ``extra``, OpenMetrics
    has its execution count, the CSV its count and outcomes; subtests reach the CSV; an
    interrupted test (it stopped when the run ended) is no benchmark figure."""
    path = _write(tmp_path, reruns)
    _, out, _ = _run(["export", path, "--format", "github-action-benchmark"], capsys)
    by_name = {e["name"]: e for e in json.loads(out)}
    flaky = by_name[f"{FLAKY} - duration"]
    assert flaky["value"] == reruns["tests"][FLAKY]["duration"]  # every attempt's time
    assert "executions: 3 (rerun, rerun, passed), figures summed over them" in flaky["extra"]
    assert (
        "subtests: 3 passed, 1 failed, 0 skipped"
        in (by_name["tests/test_sub.py::test_cases - duration"]["extra"])
    )
    assert not any(n.startswith("tests/test_slow.py::test_long") for n in by_name)

    _, out, _ = _run(["export", path, "--format", "openmetrics"], capsys)
    fams = {f.name: f for f in om_parse(out)}
    runs = {s.labels["test"]: s.value for s in fams["perfmon_test_executions"].samples}
    assert runs == {
        FLAKY: 3.0,
        "tests/test_each.py::test_everywhere": 2.0,
        "tests/test_boom.py::test_crashy": 2.0,
    }
    assert fams["perfmon_session_tests_executed_more_than_once"].samples[0].value == 3.0
    assert fams["perfmon_session_rerun_attempts"].samples[0].value == 3.0
    assert "perfmon_test_executions" in {f.name for f in prom_parse(out)}

    _, out, _ = _run(["export", path, "--format", "csv"], capsys)
    rows = {r["test"]: r for r in csv.DictReader(io.StringIO(out))}
    assert (rows[FLAKY]["executions"], rows[FLAKY]["execution_outcomes"]) == (
        "3",
        "rerun rerun passed",
    )
    plain = rows["tests/test_plain.py::test_steady"]
    assert (plain["executions"], plain["execution_outcomes"]) == ("1", "passed")
    sub = rows["tests/test_sub.py::test_cases"]
    assert [sub[f"subtests_{k}"] for k in ("passed", "failed", "skipped")] == ["3", "1", "0"]
    assert plain["subtests_passed"] == ""


def test_openmetrics_without_executions_has_no_per_test_series(report, tmp_path, capsys):
    _, out, _ = _run(["export", _write(tmp_path, report), "--format", "openmetrics"], capsys)
    fams = {f.name: f for f in om_parse(out)}
    assert "perfmon_test_executions" not in fams
    assert fams["perfmon_session_tests_executed_more_than_once"].samples[0].value == 0.0


def test_line_breaks_in_node_ids_break_no_line_of_any_output(report, tmp_path, capsys):
    """A node id with a line feed or a carriage return (a test file named so; pytest keeps
    them): OpenMetrics escapes both (a raw carriage return made prometheus_client's parsers
    refuse the line), and a Markdown table names them, one row per test (a raw one ended the
    row, and broke the step summary's table)."""
    key = next(iter(report["tests"]))
    odd = ["tests/test_a\rb.py::test_x", "tests/test_c\nd.py::test_y"]
    for nodeid in odd:
        report["tests"][nodeid] = copy.deepcopy(report["tests"][key])
        report["tests"][nodeid]["duration"] = 99.0  # the slowest: in the Markdown's tables
    path = _write(tmp_path, report)
    _, out, _ = _run(["export", path, "--format", "openmetrics"], capsys)
    for parse in (om_parse, lambda text: prom_parse(text.replace("# EOF\n", ""))):
        fams = {f.name: f for f in parse(out)}
        samples = fams["perfmon_test_duration_seconds"].samples
        assert len(samples) == len(report["tests"])
    rc, out, _ = _run(["report", path, "--format", "markdown"], capsys)
    assert rc == 0
    rows = [line for line in out.splitlines() if "test_x" in line or "test_y" in line]
    assert rows and all(line.startswith("|") and line.endswith("|") for line in rows), rows
    assert any("test_a\\rb.py" in line for line in rows) and any(
        "test_c\\nd" in line for line in rows
    )
