"""Shared helpers: run real pytest subprocesses with the real monitor, validate their reports."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import textwrap
from pathlib import Path

import jsonschema
import pytest
from pytest_perfmon.monitor.report import load_schema

pytest_plugins = ["pytester"]

# Most tests start Python processes (inner pytest runs, monitors, daemons). Where the environment
# sets PYTHONDONTWRITEBYTECODE (this project's CI machines do), each of them compiled pytest and
# this package again: 0.85 s for a one-test run instead of 0.38 s. A private bytecode cache, out
# of the source tree, is shared by all of them; it changes no behaviour under test.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault(
    "PYTHONPYCACHEPREFIX", os.path.join(tempfile.gettempdir(), "pytest-perfmon-tests-pycache")
)


#: The pytest plugins the test extra installs for the compatibility matrix
#: (tests/test_compat.py), by the name pytest knows each under (its entry point), with
#: hypothesis's, which our own tests use. The pytest runs the tests start switch them all off:
#: pytest-randomly would shuffle and reseed every one of them, pytest-asyncio warns at start
#: without its ini option, pytest-benchmark adds lines and warnings, and each costs start-up
#: time in every run and xdist worker. tests/test_compat.py switches on the one under test.
#: pytest-subtests (entry point "subtests") only below pytest 9: from pytest 9 on that name is
#: pytest's own built-in subtests plugin (which shadows the third-party one), kept on.
INNER_PLUGINS_OFF = [
    "hypothesispytest",
    "randomly",
    "asyncio",
    "benchmark",
    "pytest_cov",
    "timeout",
    "rerunfailures",
    "repeat",
] + (["subtests"] if int(pytest.__version__.split(".")[0]) < 9 else [])


def inner_addopts(*enable: str) -> str:
    """PYTEST_ADDOPTS for an inner pytest run: every plugin of INNER_PLUGINS_OFF off but
    those in enable."""
    return " ".join(f"-p no:{name}" for name in INNER_PLUGINS_OFF if name not in enable)


def pytest_configure(config: pytest.Config) -> None:
    """The pytest runs the tests start never use hypothesis, whose pytest plugin costs each of
    them (and each of their xdist workers) about 0.5 s to load and to exit, nor the other
    plugins of INNER_PLUGINS_OFF: they are off there. Not set in an xdist controller, whose
    workers (which run our hypothesis tests) would inherit it."""
    if (
        getattr(config, "workerinput", None) is None
        and getattr(config.option, "dist", "no") != "no"
    ):
        return  # an xdist controller (its workers do not exist yet)
    addopts = os.environ.get("PYTEST_ADDOPTS", "")
    if "no:hypothesispytest" not in addopts:
        os.environ["PYTEST_ADDOPTS"] = f"{addopts} {inner_addopts()}".strip()


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytest's pytester, whose runs get the PYTEST_ADDOPTS above too (pytester removes it from
    the environment it sets up)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", inner_addopts())
    return pytester


@pytest.fixture
def inprocess(pytester, monkeypatch):
    """For a pytest run inside this process (pytester's in-process runs): without hypothesis's
    part of the PYTEST_ADDOPTS set above for subprocesses. Switching hypothesis's plugin off in
    a process that has it loaded makes hypothesis believe its initialisation restarted. The
    other plugins stay off (an in-process run loads the installed plugins afresh)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", inner_addopts("hypothesispytest"))


#: Every end-to-end case runs without xdist and with real xdist workers.
XDIST = [
    pytest.param([], id="no-xdist"),
    pytest.param(["-n", "1"], id="n1"),
    pytest.param(["-n", "2"], id="n2"),
]

#: Where xdist matters but one worker says nothing two do not: no xdist, and two workers.
XDIST_ENDS = [XDIST[0], XDIST[2]]

_VALIDATOR = jsonschema.Draft202012Validator(load_schema())

#: Bound on one inner pytest run: a hang is a failure, not a stuck CI job.
RUN_TIMEOUT = 180


#: The history extra (SQLAlchemy, psycopg, numpy) is part of the test extra: its tests skip,
#: saying why, only where someone installed less; with CI=true that fails instead.
HISTORY_MISSING = importlib.util.find_spec("sqlalchemy") is None
HISTORY_WHY = 'the history extra is not installed (pip install -e ".[test]" installs it)'


def need_history(allow_module_level: bool = False) -> None:
    """Skip (or, with CI=true, fail) when the history extra is missing."""
    if HISTORY_MISSING:
        if os.environ.get("CI") == "true":
            pytest.fail(HISTORY_WHY + " (CI=true: not skipping)", pytrace=False)
        pytest.skip(HISTORY_WHY, allow_module_level=allow_module_level)


def validate(report: dict) -> dict:
    errors = sorted(_VALIDATOR.iter_errors(report), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
    return report


class Run:
    def __init__(self, result: pytest.RunResult, report: dict | None, path) -> None:
        self.result = result
        self.report = report
        self.path = path
        self.ret = result.ret
        self.text = result.stdout.str() + "\n" + result.stderr.str()

    @property
    def tests(self) -> dict:
        assert self.report is not None, self.text
        return self.report["tests"]

    def test(self, name: str) -> dict:
        matches = [v for k, v in self.tests.items() if k.endswith("::" + name)]
        assert len(matches) == 1, (name, list(self.tests))
        return matches[0]


def run_in(
    path, *args: str, output: str = "perf.json", monitor: bool = True, env: dict | None = None
) -> Run:
    """run_perf's run in a directory of one's own, for a run that several tests share (a
    module-scoped fixture; pytester is per test): the same command, ini and environment as
    pytester gives run_perf's runs (our plugins off, PY_COLORS=0, HOME there). The files are
    the caller's; the report, if any, is validated."""
    import subprocess
    import sys
    import time

    (path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    out = path / output
    extra = ["--perf-monitor", f"--perf-output={out}"] if monitor else []
    environ = dict(os.environ, PYTEST_ADDOPTS=inner_addopts(), PY_COLORS="0", HOME=str(path))
    for name in ("GITHUB_STEP_SUMMARY", "TOX_ENV_DIR"):
        environ.pop(name, None)
    environ.update(env or {})
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *extra, *args],
        cwd=path,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=RUN_TIMEOUT,
    )
    res = pytest.RunResult(
        proc.returncode,
        proc.stdout.splitlines(),
        proc.stderr.splitlines(),
        time.monotonic() - start,
    )
    report = validate(json.loads(out.read_text(encoding="utf-8"))) if out.exists() else None
    return Run(res, report, out)


#: Bound on waiting for what another xdist worker is making (shared_once): a build and an
#: install from the package index (tests/test_dist.py) at most.
SHARED_TIMEOUT = 900


def shared_once(tmp_path_factory: pytest.TempPathFactory, name: str, make) -> Path:
    """The directory ``make(directory)`` fills, made once per session: by whichever xdist
    worker asks first (the others wait for it) or, without xdist, by this process. A module- or
    session-scoped fixture alone is made once per worker, however many tests share it.

    If ``make`` fails, every test that asks fails, saying so."""
    import time

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's: each worker's basetemp is a directory in it
    path = root / f"shared-{name}"
    lock = root / f"shared-{name}.lock"
    deadline = time.monotonic() + SHARED_TIMEOUT
    while True:
        try:
            os.mkdir(lock)  # atomic on every platform: the lock
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                pytest.fail(f"waited {SHARED_TIMEOUT} s for another worker to make {path}")
            time.sleep(0.05)
    try:
        failed = path / ".failed"
        if failed.exists():
            pytest.fail(f"making {path} failed (in another test): {failed.read_text()}")
        if not (path / ".done").exists():
            path.mkdir(exist_ok=True)
            try:
                make(path)
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}", encoding="utf-8")
                raise
            (path / ".done").touch()
    finally:
        os.rmdir(lock)
    return path


def shared_run(
    tmp_path_factory: pytest.TempPathFactory,
    files: dict,
    *args: str,
    output: str = "perf.json",
    env: dict | None = None,
) -> Run:
    """One run_in of the suite ``files`` ({module name: source}) with ``args``, made once per
    session (shared_once) for the tests that only read its report and output. ``env``: set
    for the run; a value may name a file in its directory as {dir}/NAME."""
    key = json.dumps([sorted(files.items()), args, output, sorted((env or {}).items())])
    name = hashlib.sha256(key.encode()).hexdigest()[:16]

    def make(path) -> None:
        for module, source in files.items():  # as pytester.makepyfile writes them
            text = textwrap.dedent(source).strip() + "\n"
            (path / f"{module}.py").write_text(text, encoding="utf-8")
        environ = {k: v.format(dir=path) for k, v in (env or {}).items()}
        run = run_in(path, *args, output=output, env=environ)
        (path / "result.json").write_text(
            json.dumps([run.ret, run.result.outlines, run.result.errlines]), encoding="utf-8"
        )

    path = shared_once(tmp_path_factory, name, make)
    ret, outlines, errlines = json.loads((path / "result.json").read_text(encoding="utf-8"))
    out = path / output
    report = json.loads(out.read_text(encoding="utf-8")) if out.exists() else None
    return Run(pytest.RunResult(ret, outlines, errlines, 0.0), report, out)


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
