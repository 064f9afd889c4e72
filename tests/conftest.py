"""Hooks and fixtures; the helpers they and the tests share are in tests/helpers.py."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

pytest.register_assert_rewrite("helpers")  # its asserts explain themselves like the tests'

# Most tests start Python processes (inner pytest runs, monitors, daemons). Where the environment
# sets PYTHONDONTWRITEBYTECODE (this project's CI machines do), each of them compiled this package
# (and the tests' own files) again. Without it they read the bytecode pip wrote at install and
# write this package's next to its sources once, as Python does by default.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

import preloaded  # noqa: E402  (after the lines above: its server starts with this environment)
from helpers import CHROMIUM, RUN_TIMEOUT, Run, inner_addopts, validate  # noqa: E402

pytest_plugins = ["pytester"]

#: Set by the xdist controller for its workers: the directory of their one PostgreSQL server.
SHARED_PG = "PERFMON_TESTS_PG"


def pytest_configure(config: pytest.Config) -> None:
    """The pytest runs the tests start never use hypothesis, whose pytest plugin costs each of
    them (and each of their xdist workers) about 0.5 s to load and to exit, nor the other
    plugins of INNER_PLUGINS_OFF: they are off there. Not set in an xdist controller, whose
    workers (which run our hypothesis tests) would inherit it."""
    if _xdist_controller(config):  # its workers do not exist yet
        # one PostgreSQL server for all of them (helpers.PG), started by the first that needs it
        config.perfmon_tests_pg = os.environ[SHARED_PG] = tempfile.mkdtemp(prefix="perfmon-pg-")
        _write_rewritten_tests(config)
        return
    addopts = os.environ.get("PYTEST_ADDOPTS", "")
    if "no:hypothesispytest" not in addopts:
        os.environ["PYTEST_ADDOPTS"] = f"{addopts} {inner_addopts()}".strip()


def _write_rewritten_tests(config: pytest.Config) -> None:
    """In the xdist controller, before its workers start: the test modules' asserts rewritten
    once and cached where pytest looks for them. In a fresh clone every worker rewrote every
    test module as it collected, all at the same moment (about 1.9 CPU-s each; five workers:
    about 8 CPU-s of a cold run more than a warm one, docs/benchmarks.md). pytest's own
    rewriting and cache (private: anything unexpected leaves it to the workers, as before);
    this package's modules and the helpers pytest does not rewrite are compiled too
    (compileall, 0.2 s)."""
    import compileall
    import warnings
    from pathlib import Path

    # As pytest names the modules (not resolved: a symlinked checkout keeps its paths).
    here = Path(__file__).parent
    # Any warning (a rewrite warning, a SyntaxWarning) raises and ends this: the workers then
    # rewrite and compile as before, and warn or fail under the ini's filters as before.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            for package in ("plugin", "monitor"):
                compileall.compile_dir(here.parent / package, quiet=2, workers=1)
            asserts = {"conftest.py", "helpers.py"}  # helpers: register_assert_rewrite above
            sources = sorted(here.glob("*.py"))
            rewritten = [f for f in sources if f.name.startswith("test_") or f.name in asserts]
            plain = [f for f in sources if f not in rewritten]
            for fn in plain:
                compileall.compile_file(fn, quiet=2)
            from _pytest.assertion import assertstate_key, rewrite

            state = config.stash.get(assertstate_key, None)
            if state is None:  # --assert=plain
                return
            for fn in rewritten:
                pyc = rewrite.get_cache_dir(fn) / (fn.name[:-3] + rewrite.PYC_TAIL)
                if rewrite._read_pyc(fn, pyc, state.trace) is not None:
                    continue  # cached (a warm checkout): nothing to do
                if not rewrite.try_makedirs(pyc.parent):
                    return
                source_hash, co = rewrite._rewrite_test(fn, config)
                rewrite._write_pyc(state, co, source_hash, pyc)
        except Exception:  # noqa: BLE001 - another pytest's internals: the workers' way
            return


def _xdist_controller(config: pytest.Config) -> bool:
    return (
        getattr(config, "workerinput", None) is None
        and getattr(config.option, "dist", "no") != "no"
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    """The xdist controller stops the workers' PostgreSQL server (if one started it)."""
    shared = getattr(config, "perfmon_tests_pg", None)
    if shared is not None:
        from helpers import PG, pg_bin

        try:
            PG(pg_bin() or "", shared=shared).stop_server()
        except (OSError, subprocess.SubprocessError) as exc:  # said; the run's outcome stands
            sys.stderr.write(f"tests/conftest.py: cannot stop the PostgreSQL server: {exc}\n")


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytest's pytester, whose runs get the PYTEST_ADDOPTS above too (pytester removes it from
    the environment it sets up), and whose subprocess runs are forked from a Python with pytest
    imported (tests/preloaded.py)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", inner_addopts())
    monkeypatch.setattr(
        pytester,
        "runpytest_subprocess",
        functools.partial(preloaded.runpytest_subprocess, pytester),
    )
    return pytester


@pytest.fixture
def inprocess(pytester, monkeypatch):
    """For a pytest run inside this process (pytester's in-process runs): without hypothesis's
    part of the PYTEST_ADDOPTS set above for subprocesses. Switching hypothesis's plugin off in
    a process that has it loaded makes hypothesis believe its initialisation restarted. The
    other plugins stay off (an in-process run loads the installed plugins afresh)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", inner_addopts("hypothesispytest"))


@pytest.fixture
def run_perf(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run pytest --perf-monitor in a real subprocess; return a Run with the parsed report."""
    pytester.makeini("[pytest]\n")  # keep our own ini (filterwarnings=error) out of inner runs

    def run(*args: str, output: str = "perf.json", monitor: bool = True, env: dict | None = None):
        out = pytester.path / output
        extra = ["--perf-monitor", f"--perf-output={out}"] if monitor else []
        with monkeypatch.context() as mp:
            mp.delenv("GITHUB_STEP_SUMMARY", raising=False)  # ours, if CI runs on Actions
            for k, v in (env or {}).items():
                mp.setenv(k, v)
            res = pytester.runpytest_subprocess(
                "-p", "no:cacheprovider", *extra, *args, timeout=RUN_TIMEOUT
            )
        report = None
        if out.exists():
            report = validate(json.loads(out.read_text(encoding="utf-8")))
        return Run(res, report, out)

    return run


# Headless Chromium (the new headless mode, a whole browser) opens a window for every page
# Playwright creates, and each window starts renderers for its two omnibox popups (WebUI pages
# at chrome://omnibox-popup.top-chrome), which nobody sees: 0.6 of the 0.9 CPU-s a new page
# costs here. Switched off, the pages the tests open are drawn exactly as before.
UNSEEN_WEBUI = ("WebUIOmniboxPopup", "WebUIOmniboxAimPopup")


def playwright_disabled_features() -> list[str]:
    """The features Playwright's own --disable-features switches off (it needs them off),
    read from the installed driver (a list since Playwright 1.5x, one string before); [] if
    they cannot be read."""
    import playwright

    lib = os.path.join(os.path.dirname(playwright.__file__), "driver", "package", "lib")
    for path in (
        os.path.join(lib, "coreBundle.js"),
        os.path.join(lib, "server", "chromium", "chromiumSwitches.js"),
    ):
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            code = f.read()
        found = re.search(r"\bdisabledFeatures = \[(.*?)\]", code, re.S)
        if found:
            listed = re.sub(r"//[^\n]*", "", found.group(1))  # its comments
            return [name for name in re.findall(r"['\"]([^'\"]*)['\"]", listed) if name]
        found = re.search(r"['\"]--disable-features=([\w,]+)['\"]", code)
        if found:
            return found.group(1).split(",")
    return []


def chromium_args() -> list[str]:
    """--no-sandbox, and Playwright's --disable-features with UNSEEN_WEBUI added. Chromium
    honours only the last --disable-features (Playwright's comes first), so ours must repeat
    Playwright's list; without it ours is left out (each page then costs more, and that is
    all)."""
    args = ["--no-sandbox"]
    features = playwright_disabled_features()
    if features:
        args.append("--disable-features=" + ",".join([*features, *UNSEEN_WEBUI]))
    return args


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, one per test module (its processes are the test process's children,
    which other modules' tests count: not session-scoped). Each test opens its own context."""
    if not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=chromium_args())
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def pg():
    """A throwaway PostgreSQL server (helpers.PG) for the whole session (under xdist one for all
    workers, started by the first that asks for it; else this process's), started when a test
    first asks for it: each test takes a new, empty store from it (``pg.new_db()``, a database
    per process). Skips, saying why, without the server binaries (CI=true: fails)."""
    from helpers import PG, need_history, pg_bin_or_skip

    need_history()
    server = PG(pg_bin_or_skip(), shared=os.environ.get(SHARED_PG))
    try:
        server.start()
    except (OSError, subprocess.SubprocessError) as exc:
        server.stop()
        pytest.fail(f"cannot start PostgreSQL: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """The URL of a new, empty history store on each back end."""
    from helpers import need_history

    need_history()
    if request.param == "sqlite":
        return str(tmp_path / "history.db")
    return request.getfixturevalue("pg").new_db()


@pytest.fixture
def inprocess_monitor(tmp_path):
    """A Monitor in this process (helpers.InProcess), never bound."""
    from helpers import InProcess
    from pytest_perfmon.monitor.collector import Monitor

    m = InProcess(Monitor("ipc://unused", str(tmp_path / "perf.json"), 0.1, None, False))
    yield m
    m.close()


@pytest.fixture
def inprocess_daemon(tmp_path, monkeypatch):
    """A Daemon in this process (helpers.InProcess), never bound; what it saves elsewhere goes
    to tmp_path."""
    from helpers import InProcess
    from pytest_perfmon.monitor.daemon.core import Daemon

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where save_elsewhere writes
    out = tmp_path / "combined.json"
    d = InProcess(Daemon("ipc://unused", str(out), str(out) + ".journal", 0.1, False))
    yield d
    d.close()


def pytest_collection_finish(session: pytest.Session) -> None:
    """What the test process holds once collected (pytest, the test modules, hypothesis,
    SQLAlchemy, jsonschema...) is frozen out of the garbage collector: its full collections
    walked all of it again and again, 1-3 s of each xdist worker's CPU (docs/benchmarks.md).
    Garbage made afterwards is collected as before."""
    import gc

    gc.collect()
    gc.freeze()
