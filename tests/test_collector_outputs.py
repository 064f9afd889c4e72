"""--perf-html and --perf-history end to end: real pytest runs, the real monitor (or daemon) writes
the page and the history store, never the pytest process."""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
from pathlib import Path

import pytest
from helpers import XDIST_ENDS, need_history, run_in, shared_once
from pytest_perfmon.monitor import cli

need_history(allow_module_level=True)

SUITE = {
    "test_outputs": """
        import time

        def test_quick():
            pass

        def test_slow():
            time.sleep(0.05)

        def test_fails():
            assert False
        """
}


def _runs(db: str, capsys) -> list:
    capsys.readouterr()
    assert cli.main(["history", "runs", "--db", db, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_html_page_and_history_written_by_the_collector(run_perf, pytester, capsys, xdist):
    """Without xdist the store is named by PERFMON_HISTORY, the environment's way (which had a
    run of its own, in the test below: this one checks all it checked); with xdist by
    --perf-history. Both end as the same URL handed to the collector, whatever runs the tests."""
    pytester.makepyfile(**SUITE)
    db = pytester.path / "hist" / "perf-history.db"
    db.parent.mkdir()
    store = [f"--perf-history={db}"] if xdist else []
    env = {} if xdist else {"PERFMON_HISTORY": str(db)}
    run = run_perf(
        *xdist,
        "--perf-html=pages/perf.html",
        *store,
        "--perf-label=commit=abc123",
        "--perf-label=suite=unit",
        env=env,
    )
    assert run.ret == 1, run.text  # test_fails fails; monitoring changes nothing
    assert "perfmon: warning" not in run.text, run.text
    assert run.report["session"]["collector"] == "monitor"
    page = pytester.path / "pages" / "perf.html"  # its directory was created, as for the JSON
    html = page.read_text(encoding="utf-8")
    assert "test_outputs.py::test_slow" in html and "<script" in html
    assert f"HTML report written to {page}" in run.text
    runs = _runs(str(db), capsys)
    assert len(runs) == 1, runs
    assert runs[0]["commit_sha"] == "abc123"
    assert runs[0]["labels"]["suite"] == "unit"
    with sqlite3.connect(db) as con:  # every test of the run, once
        assert con.execute("select count(*) from results").fetchone()[0] == 3


def test_a_store_that_cannot_be_written(run_perf, pytester):
    """(The store named by PERFMON_HISTORY: test_html_page_and_history_written_by_the_collector
    without xdist.)"""
    pytester.makepyfile(**SUITE)
    # A store that exists but is not a database: one warning line, report written, exit code kept.
    bad = pytester.path / "not-a-db.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    run = run_perf(f"--perf-history={bad}", output="again.json")
    assert run.ret == 1, run.text
    assert run.report is not None and len(run.tests) == 3
    warnings = [ln for ln in run.text.splitlines() if "history not recorded" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("perfmon: warning: "), run.text
    assert "Traceback" not in run.text


@pytest.mark.parametrize(
    "url, problem",
    [
        ("ftp://host/db", "unsupported history URL scheme"),
        ("postgresql://host:99999/db", "malformed PostgreSQL URL"),
        ("sqlite://", "needs a file"),
        ("no/such/dir/x.db", "does not exist"),
    ],
)
def test_malformed_history_url_is_a_usage_error(pytester, inprocess, url, problem):
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    res = _usage_error(pytester, f"--perf-history={url}")
    lines = [ln for ln in res.stderr.str().splitlines() if ln.strip()]
    assert any(problem in ln and "--perf-history" in ln for ln in lines), lines


def test_bad_label_is_a_usage_error(pytester, inprocess):
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    res = _usage_error(pytester, "--perf-label=novalue")
    assert "is not KEY=VALUE" in res.stderr.str()
    # more than the collector takes (its finish was refused: the monitor's report and the
    # history lost) is a usage error at the start
    res = _usage_error(pytester, "--perf-label=" + "k" * 129 + "=v")
    assert "a label's KEY is at most 128 characters, its VALUE at most 1000" in res.stderr.str()
    res = _usage_error(pytester, "--perf-label=k=" + "v" * 1001)
    assert "a label's KEY is at most 128 characters" in res.stderr.str()
    res = _usage_error(pytester, *(f"--perf-label=k{i}=v" for i in range(101)))
    assert "--perf-label: at most 100 labels (101 given)" in res.stderr.str()


def _usage_error(pytester, *args: str) -> pytest.RunResult:
    """A usage error, in-process: the options are checked before anything is spawned."""
    out = pytester.path / "perf.json"
    res = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--perf-monitor", f"--perf-output={out}", *args
    )
    assert res.ret == pytest.ExitCode.USAGE_ERROR, res.stdout.str() + res.stderr.str()
    assert "Traceback" not in res.stdout.str() + res.stderr.str()
    assert not out.exists()
    return res


def test_html_and_history_without_the_monitor(run_perf, pytester, capsys):
    """The monitor cannot start: the plugin writes the JSON and the page itself, and says that
    the history was not recorded (the pytest process never writes the store)."""
    pytester.makepyfile(**SUITE)
    db = pytester.path / "h.db"
    run = run_perf(
        "--perf-html=p.html",
        f"--perf-history={db}",
        env={"PERFMON_MONITOR_PYTHON": os.path.join(str(pytester.path), "no-such-python")},
    )
    assert run.ret == 1, run.text
    assert run.report["session"]["collector"] == "plugin-fallback"
    assert "test_outputs.py::test_quick" in (pytester.path / "p.html").read_text()
    assert "history not recorded: the collector was lost" in run.text
    assert not db.exists()


HISTORY_SUITE = {
    "test_hist": """
        import os, time

        def test_steady():
            pass

        def test_usual():  # under the 50 ms floor: a wait the samples give it cannot matter
            time.sleep(0.01)

        def test_grows():
            time.sleep(float(os.environ.get("PERFMON_TEST_SLEEP", "0.05")))
        """
}


#: The inner run's conftest: each process that starts a reader of the history's medians
#: (``python -m pytest_perfmon.monitor.history.medians``) notes what it is in readers.txt: an
#: xdist worker, or pytest (serial, or the xdist controller). (PYTEST_XDIST_WORKER cannot say:
#: the inner run inherits this suite's.)
COUNT_READERS = """
import os
import subprocess

import pytest

_run = subprocess.run
ROLE = ["before pytest_configure"]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    ROLE[0] = "worker" if hasattr(config, "workerinput") else "main"


def run(cmd, *args, **kwargs):
    if any("history.medians" in str(part) for part in cmd):
        with open(os.path.join(os.path.dirname(__file__), "readers.txt"), "a") as f:
            f.write(ROLE[0].replace(" ", "-") + "\\n")
    return _run(cmd, *args, **kwargs)


subprocess.run = run
"""


def _one_run_of_history(tmp_path_factory) -> Path:
    """A store (h.db) of one serial run of HISTORY_SUITE at its usual speed, with
    --perf-limit-history 2 on the empty store and green: made once per session; each case
    copies it. One run is history enough (a limit is a factor of the median of the runs found,
    however few); what a second run at the usual speed showed (no test over its limit), test_usual
    shows in each case."""

    def make(path) -> None:
        for module, source in HISTORY_SUITE.items():
            (path / f"{module}.py").write_text(textwrap.dedent(source).strip() + "\n")
        args = ("--perf-history=h.db", "--perf-limit-history=2")
        run = run_in(path, *args, output="seed.json")
        assert run.ret == 0, run.text
        assert "perfmon: warning" not in run.text, run.text

    return shared_once(tmp_path_factory, "history-limits-seed", make)


@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_limits_relative_to_history(run_perf, pytester, tmp_path_factory, xdist):
    """--perf-limit-history 2: after a run of 50 ms, a run of 300 ms fails test_grows (over
    2 x its median and over the median by the 50 ms floor); test_usual (10 ms) and test_steady
    (nothing: within its limit by the floor), at their usual speed, stay green. The first run
    (serial) is recorded once for both cases (each copies the store)."""
    seed = _one_run_of_history(tmp_path_factory)
    pytester.makepyfile(**HISTORY_SUITE)
    pytester.makeconftest(COUNT_READERS)
    db = pytester.path / "h.db"
    for store in seed.glob("h.db*"):  # the database and any journal beside it
        (pytester.path / store.name).write_bytes(store.read_bytes())
    run = run_perf(
        *xdist,
        f"--perf-history={db}",
        "--perf-limit-history=2",
        output="slow.json",
        env={"PERFMON_TEST_SLEEP": "0.3"},
    )
    assert run.ret == 1, run.text
    assert "history limits: 2 x the median of the last 10 run(s)" in run.text, run.text
    assert "(1 found), 3 test(s) with history" in run.text, run.text
    limits = {v["metric"]: v for v in run.test("test_grows")["limits"]}
    assert set(limits) == {"call", "duration"}, limits
    assert limits["call"]["action"] == "fail"  # final in the call report: the test fails
    assert limits["duration"]["action"] == "note"  # final at teardown: the failure stays the call's
    for v in limits.values():
        # 2 x a median of ~0.05 s judged without the time the test waited for a CPU (the noise
        # discount: on a busy machine a sleeping test's wake-ups wait for a CPU, up to ~10 ms
        # of its 50 ms here), so at least 2 x 0.02 s; the slow run's 0.3 s, judged the same
        # way (a few ms less), is over it
        assert 0.04 <= v["limit"] < 0.25 <= v["value"]
        assert "limit from the history: 2 x median" in v["how"]
    for usual in ("test_steady", "test_usual"):  # at its usual speed no test is over its limit
        assert run.test(usual)["outcome"] == "passed" and not run.test(usual).get("limits")
    assert "limit from the history: 2 x median" in run.text
    # one reader of the medians, pytest's or the xdist controller's, which hands them to its
    # workers (each worker started its own before)
    readers = (pytester.path / "readers.txt").read_text().split()
    assert readers == ["main"], readers


def test_limits_relative_to_history_need_a_store(pytester, inprocess):
    pytester.makepyfile(**HISTORY_SUITE)
    res = _usage_error(pytester, "--perf-limit-history=1.5")
    assert "--perf-limit-history needs a history store: --perf-history URL" in res.stderr.str()
    res = _usage_error(pytester, "--perf-limit-history=0.5", f"--perf-history={pytester.path}/x.db")
    assert "must be a finite number >= 1" in res.stderr.str()
