"""A value of ours written as a separate argument (``--perf-output ../perf.json``) is a test path
to pytest when it decides its rootdir, before it loads this plugin: the rootdir and the ini file
move, every node id changes. Not preventable (see plugin/_rootdir.py); said in one line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from helpers import RUN_TIMEOUT, inner_addopts
from pytest_perfmon import _rootdir, plugin

PROJECT_INI = """
[tool.pytest.ini_options]
perf_monitor = true
"""

PROJECT_TESTS = """
def test_a():
    pass

def test_b():
    assert False
"""

PROJECT_CONFTEST = """
import sys

def pytest_unconfigure(config):
    print("rootdir module imported:", "pytest_perfmon._rootdir" in sys.modules)

def pytest_collection_finish(session):
    print("node ids:", " ".join(item.nodeid for item in session.items))
"""


@pytest.fixture
def project(pytester, monkeypatch):
    """pytester.path/proj (ini file: monitoring on), run from inside it; outside it, a report
    of an earlier run (as a restored CI cache leaves one)."""
    proj = pytester.mkdir("proj")
    (proj / "pyproject.toml").write_text(PROJECT_INI)
    (proj / "test_x.py").write_text(PROJECT_TESTS)
    (proj / "conftest.py").write_text(PROJECT_CONFTEST)
    (pytester.path / "perf.json").write_text("{}")
    monkeypatch.chdir(proj)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)

    def run(*args: str):
        res = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-p", "no:randomly", *args, timeout=RUN_TIMEOUT
        )
        text = res.stdout.str() + "\n" + res.stderr.str()
        warnings = [line for line in text.splitlines() if line.startswith("perfmon: warning:")]
        return res, text, warnings

    return proj, run


def test_space_form_moves_the_rootdir_and_is_named_with_the_equals_form(project, pytester):
    proj, run = project
    report = pytester.path / "perf.json"

    spaced, text, warnings = run("--perf-output", "../perf.json")
    # The defect, as pytest has it: the rootdir is proj's parent, node ids start with proj/,
    # and the ini file that switches monitoring on was not read: no report was written.
    assert "node ids: proj/test_x.py::test_a proj/test_x.py::test_b" in text, text
    assert json.loads(report.read_text()) == {}
    assert warnings == [
        f"perfmon: warning: --perf-output ../perf.json moved pytest's rootdir to "
        f"{pytester.path} (from {proj}) and left the ini file {proj / 'pyproject.toml'} unread: "
        "pytest took the value for a test path (it reads its options before it loads plugins); "
        "write --perf-output=../perf.json"
    ], text

    equals, text, warnings = run("--perf-output=../perf.json")
    assert warnings == [], text
    assert "node ids: test_x.py::test_a test_x.py::test_b" in text, text
    assert "rootdir module imported: False" in text, text  # the = form costs nothing
    assert sorted(json.loads(report.read_text())["tests"]) == [
        "test_x.py::test_a",
        "test_x.py::test_b",
    ]
    assert spaced.ret == equals.ret == 1


def test_values_that_move_nothing_say_nothing(project, pytester, monkeypatch):
    """A value naming no existing path, or one inside the project, moves nothing; a value in
    PYTEST_ADDOPTS does move the rootdir and is named like one on the command line."""
    proj, run = project
    (proj / "perf.json").write_text("{}")
    res, text, warnings = run("--no-perf-monitor", "--perf-output", "perf.json")
    assert warnings == [], text
    assert "rootdir module imported: True" in text, text  # looked, found nothing to say
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{inner_addopts()} --perf-html ../perf.json")
    res, text, warnings = run("--no-perf-monitor", "--perf-label", "nothing=here")
    assert len(warnings) == 1 and warnings[0].endswith("write --perf-html=../perf.json"), text
    assert res.ret == 1


def test_flags_followed_by_their_values():
    flags = {"--perf-output", "--perf-schedule"}
    args = ["-x", "--perf-output", "a b.json", "--perf-schedule", "-n", "2", "--", "--perf-output"]
    assert _rootdir.spaced(args, flags) == [(1, "--perf-output", "a b.json")]
    assert _rootdir.spaced(["--perf-output=x.json", "x.json"], flags) == []


def test_every_option_with_a_value_is_watched():
    # filled by pytest_addoption of this process's own pytest
    assert {"--perf-output", "--perf-html", "--perf-history", "--perf-schedule"} <= (
        plugin.VALUE_FLAGS
    )
    assert {"--perf-daemon", "--perf-label", "--perf-cpu-interval"} <= plugin.VALUE_FLAGS
    assert not {"--perf-monitor", "--no-perf-monitor", "--no-perf-children"} & plugin.VALUE_FLAGS


def test_pytest_internals_that_do_not_answer_mean_silence(tmp_path, monkeypatch):
    (tmp_path / "h.db").write_text("")
    monkeypatch.chdir(tmp_path)
    config = SimpleNamespace(  # no _parser: pytest's private API changed
        invocation_params=SimpleNamespace(args=("--perf-history", "h.db"), dir=tmp_path),
        rootpath=tmp_path.parent,
        inipath=None,
    )
    assert _rootdir.message(config, {"--perf-history"}) is None
