"""The ``perfmon`` command: in-process through ``cli.main(argv)``, plus a few smoke tests of
the installed console script as a subprocess.

(a) Hand-written reports in tests/golden/ against golden outputs (table, markdown, json).
    Regenerate the golden outputs with ``PERFMON_UPDATE_GOLDEN=1 pytest tests/test_cli.py``
    and review the diff.
(b) Reports of real monitored pytest runs (serial and ``-n 2``), merged and validated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import preloaded
import pytest
from helpers import inner_addopts, shared_once, waited_entry
from pytest_perfmon import __version__
from pytest_perfmon.monitor import analysis, cli, render
from pytest_perfmon.monitor.report import load_schema

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
TIMEOUT = 60  # seconds, for every perfmon call
RUN_TIMEOUT = 300  # seconds, for a monitored pytest run
UPDATE = os.environ.get("PERFMON_UPDATE_GOLDEN") == "1"

#: Never let a test write into the real step summary when our own suite runs on GitHub Actions.
GITHUB_VARS = ("GITHUB_STEP_SUMMARY", "GITHUB_ACTIONS")


@pytest.fixture(scope="session")
def perfmon_exe() -> str:
    name = "perfmon.exe" if os.name == "nt" else "perfmon"
    for candidate in (
        Path(sys.executable).parent / name,
        Path(sys.executable).parent / "Scripts" / name,
    ):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("perfmon")
    if found is None:
        pytest.fail("the perfmon console script is not installed (pip install -e .)")
    return found


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in GITHUB_VARS}
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


@pytest.fixture
def perfmon_proc(perfmon_exe: str):
    """The installed console script as a subprocess: for the few smoke tests only."""

    def run(*args: str, cwd: object = GOLDEN, env: dict | None = None):
        return subprocess.run(
            [perfmon_exe, *args],
            cwd=str(cwd),
            env=env if env is not None else clean_env(),
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )

    return run


@pytest.fixture
def perfmon(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """``perfmon ARGS`` in-process through ``cli.main(argv)``: same result shape as a
    subprocess (returncode, stdout, stderr), in a fraction of the time."""

    def run(*args: str, cwd: object = GOLDEN, env: dict | None = None):
        capsys.readouterr()  # drop anything printed before
        with monkeypatch.context() as mp:
            mp.chdir(str(cwd))
            for k in GITHUB_VARS:
                mp.delenv(k, raising=False)
            if env is not None:
                for k in GITHUB_VARS:
                    if k in env:
                        mp.setenv(k, env[k])
            try:
                code = cli.main(list(args))
            except SystemExit as e:  # argparse: usage errors, --help, --version
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run


@pytest.fixture(scope="session")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid(validator, report: dict) -> None:
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- golden outputs

GOLDEN_CASES = {
    "report_table.txt": ["report", "current.json", "--top", "3"],
    "report_markdown.md": ["report", "current.json", "--top", "3", "--format", "markdown"],
    "report_json.json": ["report", "current.json", "--top", "3", "--format", "json"],
    "report_thresholds_table.txt": [
        "report",
        "baseline.json",
        "--memory-threshold",
        "0",
        "--cpu-threshold",
        "30",
    ],
    "compare_table.txt": ["compare", "baseline.json", "current.json"],
    "compare_markdown.md": ["compare", "baseline.json", "current.json", "--format", "markdown"],
    "compare_json.json": ["compare", "baseline.json", "current.json", "--format", "json"],
    # issue 20: reruns (pytest-rerunfailures, a crashed worker's test run again), --dist each,
    # subtests and an interrupted test (reruns_*.json: reports built by report.build)
    "report_reruns_table.txt": ["report", "reruns_current.json"],
    "report_reruns_markdown.md": ["report", "reruns_current.json", "--format", "markdown"],
    "report_reruns_json.json": ["report", "reruns_current.json", "--format", "json"],
    "compare_reruns_table.txt": ["compare", "reruns_baseline.json", "reruns_current.json"],
    "compare_reruns_markdown.md": [
        "compare",
        "reruns_baseline.json",
        "reruns_current.json",
        "--format",
        "markdown",
    ],
    "compare_reruns_json.json": [
        "compare",
        "reruns_baseline.json",
        "reruns_current.json",
        "--format",
        "json",
    ],
    # issue 21: a run with a noise certificate (noise_current.json: current.json with tests.*.noise,
    # summary.noise and session.measurement.noise): the headline and the contended tests
    "report_noise_table.txt": ["report", "noise_current.json"],
    "report_noise_markdown.md": ["report", "noise_current.json", "--format", "markdown"],
    "report_noise_json.json": ["report", "noise_current.json", "--top", "2", "--format", "json"],
    "compare_loose_table.txt": [
        "compare",
        "baseline.json",
        "current.json",
        "--time-rel",
        "0.6",
        "--memory-abs",
        "25",
        "--cpu-abs",
        "60",
    ],
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_output(perfmon, name: str) -> None:
    proc = perfmon(*GOLDEN_CASES[name])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    path = GOLDEN / name
    if UPDATE:
        path.write_text(proc.stdout, encoding="utf-8", newline="\n")
    assert proc.stdout == path.read_text(encoding="utf-8")


def test_console_script_smoke(perfmon_proc, tmp_path: Path) -> None:
    """The installed ``perfmon`` script: output, a bad input and a usage error, as a user sees."""
    proc = perfmon_proc(*GOLDEN_CASES["compare_table.txt"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (GOLDEN / "compare_table.txt").read_text(encoding="utf-8")
    bad = tmp_path / "half.json"
    bad.write_text('{"schema_version": 1, "session": {}, "tests": {}, "summary": {}}')
    proc = perfmon_proc("report", str(bad))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"perfmon: error: {bad}: ") and proc.stderr.count("\n") == 1
    proc = perfmon_proc("frobnicate")
    assert (
        proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr
    )


@pytest.mark.parametrize(
    "command, name",
    [
        ("perfmon report current.json --top 3", "report_table.txt"),
        ("perfmon compare baseline.json current.json", "compare_table.txt"),
    ],
)
def test_docs_examples_are_golden(command: str, name: str) -> None:
    """docs/ci.md shows real output: the same as the golden files."""
    docs = (HERE.parent / "docs" / "ci.md").read_text(encoding="utf-8")
    start = docs.index(f"$ {command}\n") + len(command) + 3
    assert docs[start : docs.index("```", start)] == (GOLDEN / name).read_text(encoding="utf-8")


def test_golden_fixtures_are_valid_reports(validator) -> None:
    for name in (
        "baseline.json",
        "current.json",
        "reruns_baseline.json",
        "reruns_current.json",
        "noise_current.json",
    ):
        assert_valid(validator, load(GOLDEN / name))


def test_report_json_content(perfmon) -> None:
    data = json.loads(perfmon("report", "current.json", "--format", "json").stdout)
    assert data["totals"]["tests"] == 9
    assert data["totals"]["outcomes"] == {"failed": 1, "passed": 7, "skipped": 1}
    assert [r["test"] for r in data["slowest"][:2]] == [
        "tests/test_api.py::test_big_but_steady",
        "tests/test_api.py::test_slow_query",
    ]
    # the brief's analyses: delta_mb > 10 MB, cpu_percent > 80
    assert [r["test"] for r in data["memory"]["tests"]] == ["tests/test_cache.py::test_leak"]
    assert [r["test"] for r in data["cpu"]["tests"]] == [
        "tests/test_cpu.py::test_crunch",
        "tests/test_cache.py::test_fill[a|b]",
    ]


def test_report_says_how_noisy_the_run_was(perfmon) -> None:
    """Issue 21: the noise headline and the most contended tests in every output of perfmon
    report, and in the plugin's step summary (the same Markdown); nothing of it for a report
    without noise data (the golden outputs of current.json)."""
    data = json.loads(perfmon("report", "noise_current.json", "--format", "json").stdout)
    nz = data["noise"]
    assert nz["headline"].startswith("4.7 % of test time was spent waiting for a CPU;")
    assert nz["summary"] == load(GOLDEN / "noise_current.json")["summary"]["noise"]
    assert nz["contended"]["count"] == 3
    assert [r["test"] for r in nz["contended"]["tests"]] == [
        "tests/test_cpu.py::test_crunch",  # 37.5 % of its time waiting
        "tests/test_api.py::test_slow_query",  # 13.9 %
        "tests/test_cache.py::test_fill[a|b]",  # throttled 40 ms
    ]
    report = load(GOLDEN / "noise_current.json")
    assert render.step_summary_markdown(report, "noise_current.json") == (
        GOLDEN / "report_noise_markdown.md"
    ).read_text(encoding="utf-8")
    plain = json.loads(perfmon("report", "current.json", "--format", "json").stdout)
    assert "noise" not in plain
    for name in ("report_table.txt", "report_markdown.md", "report_reruns_table.txt"):
        text = (GOLDEN / name).read_text(encoding="utf-8")
        assert "Noise" not in text and "ontended" not in text


def test_report_top_limits_every_list(perfmon) -> None:
    data = json.loads(
        perfmon(
            "report", "current.json", "--top", "1", "--cpu-threshold", "0", "--format", "json"
        ).stdout
    )
    assert len(data["slowest"]) == 1
    # 9 tests, 8 with a cpu_percent, 7 of them of 10 ms or more (the one CPU floor)
    assert data["cpu"]["count"] == 7 and len(data["cpu"]["tests"]) == 1
    assert "tests/test_api.py::test_noise" not in [t["test"] for t in data["cpu"]["tests"]]


def test_compare_json_content(perfmon) -> None:
    data = json.loads(
        perfmon("compare", "baseline.json", "current.json", "--format", "json").stdout
    )
    regressions = {(r["test"], r["metric"]) for r in data["regressions"]}
    assert regressions == {
        ("tests/test_api.py::test_slow_query", "duration"),
        ("tests/test_cache.py::test_leak", "memory_delta_mb"),
        ("tests/test_cache.py::test_leak", "memory_growth_mb"),
        ("tests/test_cpu.py::test_crunch", "cpu_percent"),
    }
    improvements = {(r["test"], r["metric"]) for r in data["improvements"]}
    assert improvements == {
        ("tests/test_cache.py::test_fill[a|b]", "duration"),
        ("tests/test_cache.py::test_fill[a|b]", "memory_growth_mb"),
    }
    # noise: +100% but +4 ms, and +0.9 s but +9%: neither passes both thresholds
    changed = {r["test"] for r in data["regressions"] + data["improvements"]}
    assert "tests/test_api.py::test_noise" not in changed
    assert "tests/test_api.py::test_big_but_steady" not in changed
    assert data["new"] == ["tests/test_new.py::test_added"]
    assert data["gone"] == ["tests/test_old.py::test_removed"]
    assert data["outcome_changes"] == [
        {"test": "tests/test_flaky.py::test_sometimes", "baseline": "passed", "current": "failed"}
    ]
    assert data["compared"] == 7
    assert data["thresholds"]["time"] == {"rel": 0.2, "abs": 0.05}


@pytest.mark.parametrize(
    "flags, noisy_counts",
    [
        (["--time-abs", "0.001"], True),  # the 4 ms change now passes the floor
        (["--time-rel", "0.05"], True),  # the +9% change now passes the relative threshold
        ([], False),
    ],
)
def test_compare_thresholds_need_both(perfmon, flags: list, noisy_counts: bool) -> None:
    data = json.loads(
        perfmon("compare", "baseline.json", "current.json", "--format", "json", *flags).stdout
    )
    slower = {r["test"] for r in data["regressions"] if r["metric"] == "duration"}
    noisy = {"tests/test_api.py::test_noise", "tests/test_api.py::test_big_but_steady"}
    if noisy_counts:
        assert len(slower & noisy) == 1
    else:
        assert not slower & noisy


@pytest.mark.parametrize("min_duration, counted", [("0", True), ("0.8", True), ("0.9", False)])
def test_compare_cpu_min_duration(perfmon, min_duration: str, counted: bool) -> None:
    """test_crunch takes 0.8 s in both reports: its CPU change counts only from 0.8 s up."""
    data = json.loads(
        perfmon(
            "compare",
            "baseline.json",
            "current.json",
            "--format",
            "json",
            "--cpu-min-duration",
            min_duration,
        ).stdout
    )
    cpu = [r["test"] for r in data["regressions"] if r["metric"] == "cpu_percent"]
    assert cpu == (["tests/test_cpu.py::test_crunch"] if counted else [])
    assert data["cpu_min_duration"] == float(min_duration)


# --------------------------------------------------------------------------- exit codes


def test_exit_0_with_regressions_without_flag(perfmon) -> None:
    proc = perfmon("compare", "baseline.json", "current.json")
    assert proc.returncode == 0
    assert "Result: REGRESSION (4)" in proc.stdout


def test_exit_1_on_regression_with_flag(perfmon) -> None:
    proc = perfmon("compare", "baseline.json", "current.json", "--fail-on-regression")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""


def test_exit_0_within_budget_with_flag(perfmon) -> None:
    proc = perfmon("compare", "baseline.json", "baseline.json", "--fail-on-regression")
    assert proc.returncode == 0, proc.stderr
    assert "Result: OK" in proc.stdout
    # improvements only (the reverse direction, small changes allowed) are within budget too
    loose = ["--time-abs", "0.5", "--memory-abs", "100", "--cpu-abs", "100"]
    proc = perfmon("compare", "current.json", "baseline.json", "--fail-on-regression", *loose)
    assert proc.returncode == 0, proc.stdout


def _with_test(good: dict, drop: str | None = None, **fields: object) -> str:
    """``good`` with its first test changed; JSON text (NaN and Infinity as Python writes them)."""
    report = json.loads(json.dumps(good))
    nodeid = next(iter(report["tests"]))
    report["tests"][nodeid].update(fields)
    if drop:
        del report["tests"][nodeid][drop]
    return json.dumps(report)


def _bad_inputs(tmp: Path) -> dict:
    good = load(GOLDEN / "baseline.json")
    cases = {
        "missing": (tmp / "nope.json", None),
        "not-json": (tmp / "garbage.json", "this is { not json"),
        "empty": (tmp / "empty.json", ""),
        "not-utf8": (tmp / "latin1.json", b"\xff\xfe\x00garbage"),
        "list": (tmp / "list.json", "[1, 2, 3]"),
        "no-version": (tmp / "noversion.json", json.dumps({"tests": {}, "session": {}})),
        "other-version": (tmp / "v2.json", json.dumps(dict(good, schema_version=2))),
        "no-tests": (tmp / "notests.json", json.dumps({"schema_version": 1, "session": {}})),
        "bad-metric": (
            tmp / "badmetric.json",
            json.dumps(
                dict(
                    good,
                    tests={
                        "t::x": dict(
                            good["tests"]["tests/test_cpu.py::test_crunch"], duration="slow"
                        )
                    },
                )
            ),
        ),
        "directory": (tmp / "adir", "DIR"),
        # accepted with exit 0 before the schema was checked (issue 8, item 8)
        "half-valid": (
            tmp / "half.json",
            json.dumps({"schema_version": 1, "session": {}, "tests": {}, "summary": {}}),
        ),
        "nan": (tmp / "nan.json", _with_test(good, duration=float("nan"))),
        "infinity": (tmp / "inf.json", _with_test(good, cpu_percent=float("inf"))),
        "missing-field": (tmp / "nofield.json", _with_test(good, drop="outcome")),
        "outcome-not-string": (tmp / "outcome.json", _with_test(good, outcome=3)),
        "negative": (tmp / "negative.json", _with_test(good, duration=-1.0)),
        # valid JSON, and the schema's "number": arithmetic on it overflowed in every command
        "beyond-float": (tmp / "huge.json", _with_test(good, duration=10**400)),
    }
    out = {}
    for key, (path, content) in cases.items():
        if content == "DIR":
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content, encoding="utf-8")
        out[key] = str(path)
    return out


BAD_KINDS = [
    "missing",
    "not-json",
    "empty",
    "not-utf8",
    "list",
    "no-version",
    "other-version",
    "no-tests",
    "bad-metric",
    "directory",
    "half-valid",
    "nan",
    "infinity",
    "missing-field",
    "outcome-not-string",
    "negative",
    "beyond-float",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("command", ["report", "compare-baseline", "compare-current", "merge"])
def test_bad_input_exit_2_one_line(perfmon, tmp_path: Path, kind: str, command: str) -> None:
    bad = _bad_inputs(tmp_path)[kind]
    good = str(GOLDEN / "baseline.json")
    args = {
        "report": ["report", bad],
        "compare-baseline": ["compare", bad, good, "--fail-on-regression"],
        "compare-current": ["compare", good, bad],
        "merge": ["merge", good, bad, "-o", str(tmp_path / "out.json")],
    }[command]
    proc = perfmon(*args, cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("perfmon: error: ") and bad in lines[0]
    assert proc.stdout == ""
    assert not (tmp_path / "out.json").exists()


def test_split_refuses_a_report_of_another_schema_version(perfmon, tmp_path: Path) -> None:
    """``perfmon split --from`` refuses a report of another schema_version in one line, as
    report and compare do; ``--perf-schedule`` and ``--perf-shard-from`` read reports through
    the same function (``split.report_durations``)."""
    bad = _bad_inputs(tmp_path)["other-version"]
    proc = perfmon("split", "--from", bad, "--shards", "2", cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.splitlines() == [
        f"perfmon: error: {Path(bad).name}: schema_version 2 is not supported "
        f"(this perfmon {__version__} reads schema_version 1)"
    ]
    assert proc.stdout == ""


def test_bad_input_messages_say_what_is_wrong(perfmon, tmp_path: Path) -> None:
    bad = _bad_inputs(tmp_path)
    expected = {
        "missing": "no such file",
        "not-json": "not JSON",
        "list": "not a perfmon report",
        "no-version": "no schema_version",
        "other-version": "schema_version 2 is not supported",
        "bad-metric": '.duration: "slow" is not of type number or null',
        "half-valid": "session: required field 'duration' is missing",
        "nan": ".duration: nan is not a JSON number",
        "infinity": ".cpu_percent: inf is not a JSON number",
        "missing-field": "required field 'outcome' is missing",
        "outcome-not-string": ".outcome: 3 is not one of",
        "negative": ".duration: -1.0 is less than 0",
        "beyond-float": "a number beyond a float's range (401 digits)",
    }
    for kind, text in expected.items():
        assert text in perfmon("report", bad[kind], cwd=tmp_path).stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["report"],
        ["report", "baseline.json", "--top", "0"],
        ["report", "baseline.json", "--top", "99999999999999999999"],
        ["report", "baseline.json", "--format", "html"],
        ["compare", "baseline.json"],
        ["compare", "baseline.json", "current.json", "--time-abs", "-1"],
        ["merge", "baseline.json"],  # no -o
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(perfmon, args: list) -> None:
    proc = perfmon(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "usage: perfmon" in proc.stderr


@pytest.mark.parametrize(
    "command, expected",
    [
        ([], ["report", "compare", "merge", "Exit status"]),
        (["report"], ["--top", "--memory-threshold", "default: 10", "default: 80", "--format"]),
        (
            ["compare"],
            [
                "--fail-on-regression",
                "--time-rel",
                "--time-abs",
                "default: 0.05",
                "--cpu-abs",
                "--cpu-min-duration",
            ],
        ),
        (["merge"], ["--label", "-o", "associative"]),
    ],
)
def test_help(perfmon, command: list, expected: list) -> None:
    proc = perfmon(*command, "--help")
    assert proc.returncode == 0
    flat = " ".join(proc.stdout.split())  # argparse wraps lines
    for text in expected:
        assert text in flat


def test_output_option_writes_file(perfmon, tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    proc = perfmon("compare", "baseline.json", "current.json", "--format", "json", "-o", str(out))
    assert proc.returncode == 0 and proc.stdout == ""
    assert len(load(out)["regressions"]) == 4


# --------------------------------------------------------------------------- GitHub Actions


def test_step_summary_appended(perfmon, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    env = clean_env(GITHUB_STEP_SUMMARY=str(summary))
    # the step summary is Markdown whatever --format says
    assert (
        perfmon("report", "current.json", "--top", "3", "--format", "json", env=env).returncode == 0
    )
    assert perfmon("compare", "baseline.json", "current.json", env=env).returncode == 0
    expected = (
        "earlier step\n"
        + (GOLDEN / "report_markdown.md").read_text(encoding="utf-8")
        + "\n"
        + (GOLDEN / "compare_markdown.md").read_text(encoding="utf-8")
        + "\n"
    )
    assert summary.read_text(encoding="utf-8") == expected


def test_step_summary_unwritable_is_a_warning(perfmon, tmp_path: Path) -> None:
    env = clean_env(GITHUB_STEP_SUMMARY=str(tmp_path))  # a directory
    proc = perfmon("report", "current.json", env=env)
    assert proc.returncode == 0
    assert proc.stderr.startswith("perfmon: warning: cannot append to GITHUB_STEP_SUMMARY")
    assert len(proc.stderr.splitlines()) == 1


def test_no_step_summary_without_variable(perfmon, tmp_path: Path) -> None:
    proc = perfmon("report", str(GOLDEN / "current.json"), cwd=tmp_path)
    assert proc.returncode == 0
    assert list(tmp_path.iterdir()) == []


def test_annotations_on_github_actions(perfmon) -> None:
    proc = perfmon("compare", "baseline.json", "current.json", env=clean_env(GITHUB_ACTIONS="true"))
    assert proc.returncode == 0
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("::warning ")]
    assert len(warnings) == 4
    assert warnings[0] == (
        "::warning file=tests/test_api.py,title=perfmon%3A duration regression::"
        "tests/test_api.py::test_slow_query: duration 1.200s -> 1.800s (+0.600s, +50%25)"
    )
    assert any("title=perfmon%3A CPU regression" in w for w in warnings)
    # the report itself comes first, untouched
    assert proc.stdout.startswith((GOLDEN / "compare_table.txt").read_text(encoding="utf-8"))


def test_no_annotations_elsewhere(perfmon) -> None:
    proc = perfmon(
        "compare", "baseline.json", "current.json", env=clean_env(GITHUB_ACTIONS="false")
    )
    assert "::warning" not in proc.stdout


def test_annotations_on_merged_reports_point_at_the_file(perfmon, tmp_path: Path) -> None:
    for name, src in (("base.json", "baseline.json"), ("cur.json", "current.json")):
        proc = perfmon("merge", str(GOLDEN / src), "--label", "py3.12", "-o", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
    proc = perfmon(
        "compare", "base.json", "cur.json", cwd=tmp_path, env=clean_env(GITHUB_ACTIONS="true")
    )
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("::warning ")]
    assert len(warnings) == 4
    assert warnings[0].startswith("::warning file=tests/test_api.py,")
    assert "::py3.12::tests/test_api.py::test_slow_query: duration" in warnings[0]


def test_merged_figures_beyond_a_floats_range_are_one_line(perfmon, tmp_path: Path) -> None:
    """Two reports whose durations add up beyond a float's range (each 1e308, a valid report):
    merge wrote "Infinity" into its output, which is no JSON number (every reader refused the
    file afterwards). One line, exit 2, nothing written."""
    report = json.loads((GOLDEN / "current.json").read_text(encoding="utf-8"))
    key = next(iter(report["tests"]))
    report["tests"][key]["duration"] = 1e308
    src = tmp_path / "huge.json"
    src.write_text(json.dumps(report), encoding="utf-8")
    out = tmp_path / "merged.json"
    proc = perfmon("merge", str(src), str(src), "--label", "a", "--label", "b", "-o", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "no reader takes at /" in proc.stderr
    assert not out.exists()
    # an integer too (a count), each one within a float's range, their sum beyond it
    report["tests"][key]["duration"] = 1.0
    report["session"]["records_dropped"] = 10**308
    src.write_text(json.dumps(report), encoding="utf-8")
    proc = perfmon("merge", str(src), str(src), "--label", "a", "--label", "b", "-o", str(out))
    assert proc.returncode == 2 and "records_dropped" in proc.stderr, proc.stdout + proc.stderr
    assert not out.exists()


def test_a_node_id_that_is_not_utf8_prints_on_a_strict_terminal(perfmon_proc, tmp_path):
    """A test file whose name is not UTF-8 gives a node id with os.fsdecode's escapes, which
    the report keeps as JSON's ("\\udcff"): the output names it with the escape, where the
    command ended in a UnicodeEncodeError traceback on a strict stdout (a UTF-8 locale)."""
    report = json.loads((GOLDEN / "current.json").read_text(encoding="utf-8"))
    entry = next(iter(report["tests"].values()))
    report["tests"]["tests/test_\udcff.py::test_x"] = dict(entry, duration=99.0)
    src = tmp_path / "r.json"
    src.write_text(json.dumps(report), encoding="utf-8")
    proc = perfmon_proc("report", str(src), env=clean_env(PYTHONIOENCODING="utf-8:strict"))
    assert proc.returncode == 0, proc.stderr
    assert "tests/test_\\udcff.py::test_x" in proc.stdout


# --------------------------------------------------------------------------- issue 20: executions

FLAKY = "tests/test_net.py::test_flaky"  # pytest-rerunfailures: rerun, rerun, passed
EACH = "tests/test_each.py::test_everywhere"  # --dist each: passed on gw1 and gw0
CRASHY = "tests/test_boom.py::test_crashy"  # its worker crashed; run again on a new one


def test_report_shows_executions_subtests_and_interrupted(perfmon) -> None:
    data = json.loads(perfmon("report", "reruns_current.json", "--format", "json").stdout)
    tot = data["totals"]
    assert tot["outcomes"] == {"failed": 1, "interrupted": 1, "passed": 4}
    assert (tot["repeated_tests"], tot["repeated_executions"], tot["rerun_attempts"]) == (3, 7, 3)
    assert tot["subtests"] == {"tests": 1, "passed": 3, "failed": 1, "skipped": 0}
    runs = {r["test"]: r["executions"] for r in data["slowest"]}
    assert runs[FLAKY] == 3 and runs[EACH] == 2 and runs["tests/test_plain.py::test_steady"] == 1
    (flaky,) = [r for r in data["repeated"]["tests"] if r["test"] == FLAKY]
    assert [a["outcome"] for a in flaky["attempts"]] == ["rerun", "rerun", "passed"]
    assert flaky["reruns"] == 2 and flaky["duration"] == pytest.approx(
        sum(a["duration"] for a in flaky["attempts"])
    )
    assert data["interrupted"]["tests"] == [
        {"test": "tests/test_slow.py::test_long", "duration": 0.2, "worker": "gw0"}
    ]
    text = perfmon("report", "reruns_current.json").stdout
    assert "3 test(s) executed more than once (7 executions, 3 of them rerun attempts)" in text
    assert "Subtests: 3 passed, 1 failed, 0 skipped in 1 test(s)." in text
    assert "rerun x2, passed  tests/test_net.py::test_flaky" in text
    # a report without any: no runs column, no sections (the golden outputs above)
    plain = perfmon("report", "current.json").stdout
    assert "runs" not in plain and "executed more than once" not in plain


def test_compare_flags_tests_executed_more_than_once(perfmon) -> None:
    """A test that needed reruns is compared on all its attempts (their sum), and every output
    says so: it never reads as a plain slowdown."""
    data = json.loads(
        perfmon("compare", "reruns_baseline.json", "reruns_current.json", "--format", "json").stdout
    )
    base = load(GOLDEN / "reruns_baseline.json")["tests"]
    cur = load(GOLDEN / "reruns_current.json")["tests"]
    slower = {r["test"]: r for r in data["regressions"]}
    assert set(slower) == {FLAKY, EACH, CRASHY}
    flaky = slower[FLAKY]
    # the whole entry (every attempt), not the last attempt alone
    assert flaky["current"] == cur[FLAKY]["duration"] != cur[FLAKY]["executions"][-1]["duration"]
    assert flaky["baseline"] == base[FLAKY]["duration"]
    assert (flaky["baseline_executions"], flaky["current_executions"]) == (1, 3)
    again = {r["test"]: r for r in data["executed_more_than_once"]}
    assert again[FLAKY]["current_outcomes"] == ["rerun", "rerun", "passed"]
    assert again[EACH]["current_outcomes"] == ["passed", "passed"]
    assert again[CRASHY]["baseline_outcomes"] == ["passed"]
    table = perfmon("compare", "reruns_baseline.json", "reruns_current.json").stdout
    assert "3 executed more than once (compared on all their executions)" in table
    row = next(line for line in table.splitlines() if line.endswith(FLAKY) and "+" in line)
    assert row.split()[-2] == "1->3"
    md = perfmon(
        "compare", "reruns_baseline.json", "reruns_current.json", "--format", "markdown"
    ).stdout
    assert f"| 1->3 | `{FLAKY}` |" in md
    assert f"| passed | 3: rerun x2, passed | `{FLAKY}` |" in md
    proc = perfmon(
        "compare",
        "reruns_baseline.json",
        "reruns_current.json",
        env=clean_env(GITHUB_ACTIONS="true"),
    )
    (warning,) = [w for w in proc.stdout.splitlines() if w.startswith("::warning ") and FLAKY in w]
    assert "executed 1 -> 3 time(s), figures summed over every execution" in warning


def test_compare_same_outcome_after_reruns_is_compared_not_an_outcome_change() -> None:
    """The entry's outcome leaves rerun attempts out: passed, then passed after a rerun, is no
    outcome change; both its attempts count in its duration."""
    base = load(GOLDEN / "reruns_baseline.json")
    cur = load(GOLDEN / "reruns_current.json")
    cmp = analysis.compare(base, cur)
    assert FLAKY not in {k for k, _, _ in cmp.outcome_changes}
    (change,) = [c for c in cmp.regressions if c.test == FLAKY]
    assert change.repeated and change.current_runs == 3
    # the other way round: a test that ran once in both is not flagged
    assert all(c.repeated for c in cmp.regressions)
    same = analysis.compare(base, base)
    assert same.repeated == [] and not same.regressions


def _noise_pair(tmp_path: Path) -> tuple:
    """baseline.json's tests, each a CPU-bound test of 0.5 s with no wait, and the same run
    where test_slow_query waited 0.6 s beside a busy neighbour and test_big_but_steady did 30 %
    more work, waiting as long."""
    base = load(GOLDEN / "baseline.json")
    cur = json.loads(json.dumps(base))
    for rep in (base, cur):
        for t in rep["tests"].values():
            waited_entry(t, 0.5, 0.0)
    waited_entry(cur["tests"]["tests/test_api.py::test_slow_query"], 0.5, 0.6)
    waited_entry(cur["tests"]["tests/test_api.py::test_big_but_steady"], 0.65, 0.6)
    paths = []
    for name, rep in (("base.json", base), ("cur.json", cur)):
        (tmp_path / name).write_text(json.dumps(rep), encoding="utf-8")
        paths.append(str(tmp_path / name))
    return paths


def test_compare_judges_times_without_the_wait(perfmon, tmp_path: Path) -> None:
    """--noise on (the default): a test whose extra time is its wait for a CPU is "contended,
    not judged", a test that did more work is a regression all the same; --noise off: both are
    regressions, as before."""
    base, cur = _noise_pair(tmp_path)
    proc = perfmon("compare", base, cur, "--fail-on-regression", "--format", "json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["noise"] == "on"
    (reg,) = [r for r in data["regressions"] if r["metric"] == "duration"]
    assert reg["test"] == "tests/test_api.py::test_big_but_steady"
    assert reg["judged"] == "without_wait" and reg["change_ratio"] == pytest.approx(0.3)
    assert (reg["baseline"], reg["current"]) == (0.5, pytest.approx(0.65))
    assert (reg["baseline_measured"], reg["current_measured"]) == (0.5, pytest.approx(1.25))
    assert (reg["baseline_wait"], reg["current_wait"]) == (0.0, 0.6)
    nj = {(c["test"], c["metric"]): c for c in data["contended_not_judged"]}
    c = nj[("tests/test_api.py::test_slow_query", "duration")]
    assert c["would_be"] == "regression" and c["current_contended"]
    assert (c["baseline"], c["current"]) == (0.5, pytest.approx(1.1))
    assert (c["baseline_unwaited"], c["current_unwaited"]) == (0.5, pytest.approx(0.5))
    # its CPU share fell as measured (100 % -> 45 %), not without the wait: not judged either
    assert nj[("tests/test_api.py::test_slow_query", "cpu_percent")]["would_be"] == "improvement"
    assert not any(r["test"].endswith("test_slow_query") for r in data["improvements"])

    text = perfmon("compare", base, cur).stdout
    # test_big_but_steady's CPU share fell by its waiting too: 3 changes of 2 tests
    assert "Contended, not judged: 3" in text and "tests/test_api.py::test_slow_query" in text
    assert "duration less wait" in text and "2 test(s) with a change that their waiting" in text
    assert "judged without the time each test waited for a CPU" in text
    assert "Contended, not judged" in perfmon("compare", base, cur, "--format", "markdown").stdout

    off = json.loads(perfmon("compare", base, cur, "--noise", "off", "--format", "json").stdout)
    assert off["noise"] == "off" and off["contended_not_judged"] == []
    assert {r["test"] for r in off["regressions"] if r["metric"] == "duration"} == {
        "tests/test_api.py::test_slow_query",
        "tests/test_api.py::test_big_but_steady",
    }
    assert all("judged" not in r for r in off["regressions"])
    assert "(--noise off)" in perfmon("compare", base, cur, "--noise", "off").stdout


def test_compare_without_noise_certificates_is_as_before(perfmon) -> None:
    """Reports without a noise certificate (older ones, a platform without the sources) are
    judged as measured, and the text says nothing about it."""
    on = perfmon("compare", "baseline.json", "current.json").stdout
    off = perfmon("compare", "baseline.json", "current.json", "--noise", "off").stdout
    assert "Contended" not in on and "waited for a CPU" not in on
    assert on == off.replace("Times judged as measured (--noise off).\n", "")


def test_merge_keeps_executions_and_subtests(perfmon, tmp_path: Path, validator) -> None:
    """perfmon merge prefixes the keys only: every entry keeps its executions (their workers
    named as the entry's own) and subtests; report and compare read the merged reports."""
    out = tmp_path / "m.json"
    proc = perfmon("merge", "reruns_baseline.json", "reruns_current.json", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    merged = load(out)
    assert_valid(validator, merged)
    cur = load(GOLDEN / "reruns_current.json")["tests"]
    for nodeid, t in cur.items():
        m = merged["tests"][f"reruns_current::{nodeid}"]
        assert m.get("executions") == t.get("executions")
        assert m.get("subtests") == t.get("subtests")
    assert not any("[gw" in k for k in merged["tests"])
    data = json.loads(perfmon("report", str(out), "--format", "json").stdout)
    assert data["totals"]["repeated_tests"] == 3


# --------------------------------------------------------------------------- merge (golden)


def merge_files(perfmon, out: Path, *files: object, labels: tuple = ()) -> dict:
    args = ["merge", *map(str, files), "-o", str(out)]
    for label in labels:
        args += ["--label", label]
    proc = perfmon(*args, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return load(out)


def test_merge_labels_from_file_stems(perfmon, tmp_path: Path, validator) -> None:
    merged = merge_files(
        perfmon, tmp_path / "m.json", GOLDEN / "baseline.json", GOLDEN / "current.json"
    )
    assert_valid(validator, merged)
    assert list(merged["jobs"]) == ["baseline", "current"]
    assert "baseline::tests/test_old.py::test_removed" in merged["tests"]
    assert merged["tests"]["current::tests/test_new.py::test_added"]["job"] == "current"
    assert len(merged["tests"]) == 18 == merged["session"]["total_tests"]
    assert merged["summary"] == analysis.summarize(merged["tests"])
    assert merged["summary"]["outcomes"] == {"failed": 1, "passed": 15, "skipped": 2}
    assert merged["jobs"]["current"]["system"] == load(GOLDEN / "current.json")["system"]
    assert merged["session"]["duration"] == 30.0  # the jobs' sessions, summed
    assert merged["session"]["timestamp"] == "2025-01-01T12:00:00.000000Z"
    assert set(merged["workers"]) == {"baseline::main", "current::main"}


def test_merge_label_from_session(perfmon, tmp_path: Path) -> None:
    report = load(GOLDEN / "current.json")
    report["session"]["label"] = "linux-py3.12"
    (tmp_path / "x.json").write_text(json.dumps(report), encoding="utf-8")
    merged = merge_files(perfmon, tmp_path / "m.json", tmp_path / "x.json")
    assert list(merged["jobs"]) == ["linux-py3.12"]


def test_merge_is_associative_golden(perfmon, tmp_path: Path, validator) -> None:
    runs = {}
    for label, src in (("a", "baseline.json"), ("b", "current.json"), ("c", "baseline.json")):
        report = load(GOLDEN / src)
        report["session"]["label"] = label  # labels travel with the reports
        runs[label] = tmp_path / f"run-{label}.json"
        runs[label].write_text(json.dumps(report), encoding="utf-8")
    flat = merge_files(perfmon, tmp_path / "abc.json", runs["a"], runs["b"], runs["c"])
    merge_files(perfmon, tmp_path / "ab.json", runs["a"], runs["b"])
    merge_files(perfmon, tmp_path / "bc.json", runs["b"], runs["c"])
    left = merge_files(perfmon, tmp_path / "ab_c.json", tmp_path / "ab.json", runs["c"])
    right = merge_files(perfmon, tmp_path / "a_bc.json", runs["a"], tmp_path / "bc.json")
    # the same labels given with --label instead
    flags = merge_files(
        perfmon,
        tmp_path / "flags.json",
        GOLDEN / "baseline.json",
        GOLDEN / "current.json",
        GOLDEN / "baseline.json",
        labels=("a", "b", "c"),
    )
    assert_valid(validator, flat)
    assert list(flat["jobs"]) == ["a", "b", "c"]
    for combined in (left, right, flags):
        assert_valid(validator, combined)
        assert combined["tests"] == flat["tests"]
        assert combined["summary"] == flat["summary"]
        assert list(combined["jobs"]) == ["a", "b", "c"]
    assert left == right


def test_merge_label_prefixes_merged_input(perfmon, tmp_path: Path, validator) -> None:
    merge_files(
        perfmon,
        tmp_path / "linux.json",
        GOLDEN / "baseline.json",
        GOLDEN / "current.json",
        labels=("py3.9", "py3.13"),
    )
    merged = merge_files(
        perfmon,
        tmp_path / "all.json",
        tmp_path / "linux.json",
        GOLDEN / "current.json",
        labels=("linux", "mac-py3.13"),
    )
    assert_valid(validator, merged)
    assert list(merged["jobs"]) == ["linux/py3.9", "linux/py3.13", "mac-py3.13"]
    assert "linux/py3.9::tests/test_api.py::test_noise" in merged["tests"]


@pytest.mark.parametrize(
    "labels, message",
    [
        (("x",), "--label given 1 time(s) for 2 file(s)"),
        (("x", "x"), "job label 'x' comes from both"),
        (("x", "a::b"), "must not contain '::'"),
    ],
)
def test_merge_bad_labels(perfmon, tmp_path: Path, labels: tuple, message: str) -> None:
    args = ["merge", "baseline.json", "current.json", "-o", str(tmp_path / "m.json")]
    for label in labels:
        args += ["--label", label]
    proc = perfmon(*args)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and message in proc.stderr
    assert not (tmp_path / "m.json").exists()


def test_merge_same_stem_twice_is_refused(perfmon, tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    shutil.copy(GOLDEN / "baseline.json", tmp_path / "one" / "baseline.json")
    proc = perfmon(
        "merge",
        str(GOLDEN / "baseline.json"),
        str(tmp_path / "one" / "baseline.json"),
        "-o",
        str(tmp_path / "m.json"),
    )
    assert proc.returncode == 2
    assert "give distinct --label values" in proc.stderr


def test_corrupt_merged_report_is_bad_input(perfmon, tmp_path: Path) -> None:
    merged = merge_files(perfmon, tmp_path / "m.json", GOLDEN / "baseline.json")
    merged["tests"]["stray::tests/x.py::test_y"] = merged["tests"].popitem()[1]
    (tmp_path / "bad.json").write_text(json.dumps(merged), encoding="utf-8")
    proc = perfmon("report", str(tmp_path / "bad.json"))
    assert proc.returncode == 2
    assert "does not belong to one of its jobs" in proc.stderr


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda m: m["tests"][next(iter(m["tests"]))].update(job=["not", "a", "label"]),
        lambda m: m["tests"][next(iter(m["tests"]))].pop("job"),
        lambda m: m["jobs"]["baseline"].update(workers=[1]),
        lambda m: m["jobs"]["baseline"].pop("session"),
        lambda m: m.update(jobs=[]),
    ],
)
def test_corrupt_merged_report_variants(perfmon, tmp_path: Path, corrupt) -> None:
    merged = merge_files(perfmon, tmp_path / "m.json", GOLDEN / "baseline.json")
    corrupt(merged)
    (tmp_path / "bad.json").write_text(json.dumps(merged), encoding="utf-8")
    for args in (["report", "bad.json"], ["merge", "bad.json", "-o", "again.json"]):
        proc = perfmon(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


def test_report_and_compare_on_merged(perfmon, tmp_path: Path) -> None:
    merge_files(perfmon, tmp_path / "base.json", GOLDEN / "baseline.json", labels=("job",))
    merge_files(perfmon, tmp_path / "cur.json", GOLDEN / "current.json", labels=("job",))
    proc = perfmon("report", "cur.json", cwd=tmp_path)
    assert proc.returncode == 0
    assert "9 tests (1 failed, 7 passed, 1 skipped) in 1 jobs" in proc.stdout
    proc = perfmon("compare", "base.json", "cur.json", "--format", "json", cwd=tmp_path)
    data = json.loads(proc.stdout)
    assert len(data["regressions"]) == 4
    assert data["new"] == ["job::tests/test_new.py::test_added"]


# --------------------------------------------------------------------------- real runs

SUITE = """
import time

import pytest


def test_sleep():
    time.sleep(0.02)


def test_alloc():
    data = bytearray(30 * 2**20)
    assert len(data) == 30 * 2**20


def test_cpu():
    assert sum(i * i for i in range(200000)) > 0


@pytest.mark.parametrize("n", [1, 2, 3])
def test_param(n):
    assert n
"""
SUITE_IDS = {
    "test_suite.py::test_sleep",
    "test_suite.py::test_alloc",
    "test_suite.py::test_cpu",
    "test_suite.py::test_param[1]",
    "test_suite.py::test_param[2]",
    "test_suite.py::test_param[3]",
}


def monitored_run(suite: Path, output: Path, *extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in GITHUB_VARS}
    env["PYTEST_ADDOPTS"] = inner_addopts()  # the test extra's plugins off
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--perf-monitor",
        f"--perf-output={output}",
        "-p",
        "no:cacheprovider",
        "-q",
        *extra,
    ]
    proc = preloaded.run(cmd, suite, env, RUN_TIMEOUT)  # forked where it can be
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return load(output)


@pytest.fixture
def real_reports(tmp_path_factory) -> Path:
    """Two real reports of SUITE, serial and on two workers: made once per session (the tests
    only read them)."""
    pytest.importorskip("xdist")

    def make(root: Path) -> None:
        suite = root / "suite"
        suite.mkdir()
        (suite / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        (suite / "test_suite.py").write_text(SUITE, encoding="utf-8")
        monitored_run(suite, root / "serial.json")
        monitored_run(suite, root / "xdist.json", "-n", "2")

    return shared_once(tmp_path_factory, "cli-real-reports", make)


@pytest.mark.slow
def test_real_reports_analysed(perfmon, real_reports: Path, validator) -> None:
    for name in ("serial.json", "xdist.json"):
        report = load(real_reports / name)
        assert_valid(validator, report)
        assert set(report["tests"]) == SUITE_IDS
        proc = perfmon("report", name, "--format", "json", "--top", "4", cwd=real_reports)
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert data["totals"]["tests"] == 6
        assert data["totals"]["outcomes"] == {"passed": 6}
        assert len(data["slowest"]) == 4
        table = perfmon("report", name, cwd=real_reports)
        assert table.returncode == 0 and "Slowest tests (top 6 of 6)" in table.stdout
    assert len(load(real_reports / "xdist.json")["workers"]) == 2


@pytest.mark.slow
def test_real_reports_compared(perfmon, real_reports: Path) -> None:
    proc = perfmon("compare", "serial.json", "xdist.json", "--format", "json", cwd=real_reports)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["new"] == [] and data["gone"] == [] and data["outcome_changes"] == []
    assert data["compared"] == 6
    # whether the machine was noisy decides the count, not the exit status without the flag
    strict = perfmon(
        "compare", "serial.json", "xdist.json", "--fail-on-regression", cwd=real_reports
    )
    assert strict.returncode == (1 if data["regressions"] else 0)
    same = perfmon(
        "compare", "serial.json", "serial.json", "--fail-on-regression", cwd=real_reports
    )
    assert same.returncode == 0 and "Result: OK" in same.stdout


@pytest.mark.slow
def test_real_reports_merged(perfmon, real_reports: Path, validator, tmp_path: Path) -> None:
    serial, xdist = real_reports / "serial.json", real_reports / "xdist.json"
    third = tmp_path / "golden-job.json"
    shutil.copy(GOLDEN / "current.json", third)

    once = merge_files(perfmon, tmp_path / "once.json", serial, xdist, third)
    pair = merge_files(perfmon, tmp_path / "pair.json", serial, xdist)
    twice = merge_files(perfmon, tmp_path / "twice.json", tmp_path / "pair.json", third)
    merge_files(perfmon, tmp_path / "tail.json", xdist, third)
    other = merge_files(perfmon, tmp_path / "other.json", serial, tmp_path / "tail.json")

    assert_valid(validator, once)
    assert_valid(validator, pair)
    for again in (twice, other):
        assert_valid(validator, again)
        assert again["tests"] == once["tests"]
        assert again["summary"] == once["summary"]
        assert again["jobs"] == once["jobs"]
        assert again["session"] == once["session"]
    assert list(once["jobs"]) == ["serial", "xdist", "golden-job"]
    assert {k for k in once["tests"] if k.startswith("xdist::")} == {
        f"xdist::{n}" for n in SUITE_IDS
    }
    assert once["summary"] == analysis.summarize(once["tests"])
    assert once["summary"]["outcomes"]["passed"] == 12 + 7
    assert {w for w in once["workers"] if w.startswith("xdist::")} == {"xdist::gw0", "xdist::gw1"}
    assert once["jobs"]["xdist"]["session"] == load(xdist)["session"]

    report = perfmon("report", "once.json", "--format", "markdown", cwd=tmp_path)
    assert report.returncode == 0
    assert "in 3 jobs" in report.stdout
