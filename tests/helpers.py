"""Helpers that several test modules share (no test module imports another): constants,
report builders, stand-ins and wrappers of real processes. Fixtures are in conftest.py."""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import pwd
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import jsonschema
import msgpack
import preloaded
import pytest
import zmq
from hypothesis import strategies as st
from pytest_perfmon.monitor import analysis, protocol
from pytest_perfmon.monitor.daemon import DaemonError, request
from pytest_perfmon.monitor.html import OUTCOMES
from pytest_perfmon.monitor.report import iso, load_schema

#: The pytest plugins the test extra installs for the compatibility matrix
#: (tests/test_compat.py), by the name pytest knows each under (its entry point), with
#: hypothesis's and time-machine's, which our own tests use. The pytest runs the tests start
#: switch them all off: pytest-randomly would shuffle and reseed every one of them,
#: pytest-asyncio warns at start without its ini option, pytest-benchmark adds lines and
#: warnings, and each costs start-up time in every run and xdist worker (time-machine's about
#: 10 ms). tests/test_compat.py switches on the one under test.
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
    "time_machine",  # its fixture plugin: tests/test_accuracy.py uses the library itself
] + (["subtests"] if int(pytest.__version__.split(".")[0]) < 9 else [])


def inner_addopts(*enable: str) -> str:
    """PYTEST_ADDOPTS for an inner pytest run: every plugin of INNER_PLUGINS_OFF off but
    those in enable."""
    return " ".join(f"-p no:{name}" for name in INNER_PLUGINS_OFF if name not in enable)


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


def need(present: bool, why: str, allow_module_level: bool = False) -> None:
    """Skip, saying ``why``, unless what the test extra installs is ``present``; with CI=true
    fail instead: there the README's install has run, and a skip would hide it."""
    if not present:
        if os.environ.get("CI") == "true":
            pytest.fail(why + " (CI=true: not skipping)", pytrace=False)
        pytest.skip(why, allow_module_level=allow_module_level)


def need_installed(module: str, why: str, allow_module_level: bool = False) -> None:
    """:func:`need` of an importable ``module``."""
    need(importlib.util.find_spec(module) is not None, why, allow_module_level)


def need_py_spy() -> None:
    """:func:`need` of py-spy, which --perf-profile samples with."""
    from pytest_perfmon.monitor import profile

    need(profile.find_sampler() is not None, "py-spy is not installed (the test extra installs it)")


def need_history(allow_module_level: bool = False) -> None:
    """Skip (or, with CI=true, fail) when the history extra is missing."""
    need_installed("sqlalchemy", HISTORY_WHY, allow_module_level)


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
    path,
    *args: str,
    output: str = "perf.json",
    monitor: bool = True,
    env: dict | None = None,
    command: list | None = None,
) -> Run:
    """run_perf's run in a directory of one's own, for a run that several tests share (a
    module-scoped fixture; pytester is per test): the same command, ini and environment as
    pytester gives run_perf's runs (our plugins off, PY_COLORS=0, HOME there). The files are
    the caller's; the report, if any, is validated. ``command``: the interpreter (default:
    this Python)."""
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
    proc = preloaded.run(
        [*(command or [sys.executable]), "-m", "pytest", "-p", "no:cacheprovider", *extra, *args],
        path,
        environ,
        RUN_TIMEOUT,
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


# --- reports (tests/test_html.py's)

CHROMIUM = os.environ.get("PERFMON_CHROMIUM", "/usr/bin/chromium")
T0 = 1_750_000_000.0
SCREENSHOTS = os.environ.get("PERFMON_SCREENSHOTS")


def synthetic_report(n: int, workers: int = 3, seed: int = 1) -> dict:
    """A valid report of ``n`` tests run back to back on ``workers`` xdist workers."""
    rnd = random.Random(seed)
    clock = [T0 + 0.05 * w for w in range(workers)]
    rss = [40.0 + 3 * w for w in range(workers)]
    tests, spans = {}, []
    weights = (0.86, 0.04, 0.01, 0.0, 0.03, 0.01, 0.05)
    modules = [f"tests/test_{m}.py" for m in ("api", "cache", "parser", "db", "cli", "render")]
    for i in range(n):
        w = min(range(workers), key=lambda k: clock[k])
        duration = round(rnd.lognormvariate(-3.0, 1.3), 6)
        outcome = rnd.choices(OUTCOMES[: len(weights)], weights)[0]
        grow = round(rnd.expovariate(0.5), 3) if rnd.random() < 0.05 else 0.0
        peak = round(rss[w] + grow + rnd.expovariate(0.3), 3)
        start = clock[w]
        nodeid = f"{modules[i % len(modules)]}::test_case_{i:05d}[p{i % 7}]"
        tests[nodeid] = {
            "duration": duration,
            "setup_time": round(duration * 0.1, 6),
            "call_time": round(duration * 0.85, 6),
            "teardown_time": round(duration * 0.05, 6),
            "memory": {
                "start_mb": rss[w],
                "peak_mb": peak,
                "end_mb": round(rss[w] + grow, 3),
                "delta_mb": grow,
            },
            "cpu_percent": round(min(100.0, rnd.random() * 100), 1),
            "outcome": outcome,
            "worker": f"gw{w}",
            "pid": 1000 + w,
            "start": round(start, 6),
        }
        spans.append((start, start + duration, w, peak, nodeid))
        rss[w] = round(rss[w] + grow, 3)
        clock[w] = start + duration + 0.001
    wall = max(clock) - T0
    # the concurrent peak: the moment (a test's start) where the running tests' peaks add up most
    best, early = None, spans[:400]  # spans come in start order: the peak among the first ones
    for s, _, _, _, _ in early:
        running = {w: (p, k) for (a, b, w, p, k) in early if a <= s < b}
        total = sum(p for p, _ in running.values())
        if best is None or total > best[0]:
            best = (total, s, running)
    assert best is not None
    workers_block = {}
    for w in range(workers):
        mine = [t for t in tests.values() if t["worker"] == f"gw{w}"]
        busy = sum(t["duration"] for t in mine)
        workers_block[f"gw{w}"] = {
            "pid": 1000 + w,
            "tests": len(mine),
            "busy_time": round(busy, 6),
            "idle_time": round(max(0.0, wall - busy), 6),
            "peak_rss_mb": max(t["memory"]["peak_mb"] for t in mine),
        }
    durations = [t["duration"] for t in tests.values()]
    outcomes: dict = {}
    for t in tests.values():
        outcomes[t["outcome"]] = outcomes.get(t["outcome"], 0) + 1
    report = {
        "schema_version": 1,
        "session": {
            "duration": round(wall, 6),
            "total_tests": n,
            "timestamp": iso(T0),
            "exit_status": 1,
            "aborted": False,
            "pytest_version": "8.3.0",
            "perfmon_version": "0.1.0",
            "collector": "monitor",
            "measurement": {
                "time": "pytest-report-durations",
                "cpu": "process-cpu-time",
                "memory": "proc-statm-at-boundaries",
                "memory_peak": "kernel-peak-rss-reset-at-boundaries",
                "sample_interval": 0.1,
            },
            "records_dropped": 0,
        },
        "system": {
            "platform": "Linux",
            "python_version": "3.12.4",
            "cpu_count": 4,
            "memory_total_mb": 16000.0,
            "timestamp": iso(T0),
        },
        "tests": tests,
        "summary": {
            "total_duration": round(sum(durations), 6),
            "avg_duration": round(sum(durations) / n, 6),
            "max_duration": max(durations),
            "min_duration": min(durations),
            "avg_memory_delta_mb": 0.0,
            "max_memory_delta_mb": max(t["memory"]["delta_mb"] for t in tests.values()),
            "outcomes": outcomes,
            "parallel_efficiency": round(sum(durations) / (wall * workers), 4),
        },
        "workers": workers_block,
        "concurrent_memory_peak": {
            "total_rss_mb": round(best[0], 3),
            "time": iso(best[1]),
            "workers": {f"gw{w}": {"rss_mb": p, "test": k} for w, (p, k) in best[2].items()},
        },
    }
    analysis.check_report(report)
    return report


def page_json(page: str) -> dict:
    m = re.search(r'<script id="perfmon-data" type="application/json">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


INK = """sel => { const c = document.querySelector(sel); const g = c.getContext('2d');
  const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return [c.width, c.height, n]; }"""


# --- the wire (tests/test_protocol.py's, tests/test_server.py's)

MB = 1 << 20


def record(nodeid=b"t.py::test_x", start: float = 1000.0) -> list:
    rec = [None] * protocol.N_FIELDS
    rec[protocol.NODEID] = nodeid
    rec[protocol.START], rec[protocol.STOP] = start, start + 0.01
    rec[protocol.SETUP], rec[protocol.CALL], rec[protocol.TEARDOWN] = 0.001, 0.008, 0.001
    rec[protocol.OUTCOME] = "passed"
    rec[protocol.RSS_START], rec[protocol.RSS_PEAK], rec[protocol.RSS_END] = MB, 2 * MB, MB
    rec[protocol.CPU], rec[protocol.WALL] = 0.005, 0.01
    return rec


class FakeSock:
    """Stands in for the ROUTER socket: keeps what the server sends."""

    def __init__(self) -> None:
        self.sent: list = []

    def send_multipart(self, parts, flags=0) -> None:
        self.sent.append((parts[0], protocol.unpack(parts[1])))

    def close(self, linger=None) -> None:
        pass


class InProcess:
    """A Monitor or Daemon, never bound, its socket a FakeSock."""

    def __init__(self, srv) -> None:
        self.srv = srv
        self.real_sock = srv.sock
        srv.sock = FakeSock()

    def send(self, ident: bytes, kind: str, body=None):
        """Handle one message; the reply to it, if any: (kind, body)."""
        before = len(self.srv.sock.sent)
        self.srv.handle([ident, protocol.pack(kind, body)])
        replies = self.srv.sock.sent[before:]
        assert len(replies) <= 1
        return replies[0][1] if replies else None

    def close(self) -> None:
        self.srv.sock = self.real_sock
        self.srv.close()


def hello(role="local", worker="main", session="feedface" * 4, **extra) -> dict:
    return {"session": session, "role": role, "pid": os.getpid(), "worker": worker, **extra}


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
records = st.lists(
    st.one_of(
        st.lists(values, min_size=protocol.N_FIELDS, max_size=protocol.N_FIELDS),
        st.builds(
            lambda nodeid, start, outcome, peak: (
                record(nodeid, start)[: protocol.OUTCOME] + [outcome, 1, peak, 1, 0.1, 0.1, None]
            ),
            st.binary(max_size=30),
            st.floats(),
            st.sampled_from(["passed", "failed", "crashed", ""]),
            st.integers(-5, 2**40) | st.none(),
        ),
        st.just(record()),
        values,
    ),
    max_size=6,
)
sessions = st.sampled_from(["f" * 32, "0" * 32]) | st.text(max_size=70)
hellos = st.fixed_dictionaries(
    {
        "session": sessions,
        "pid": st.sampled_from([os.getpid(), 0, -1, 2**31 + 5]) | st.integers(-(2**63), 2**63),
        "role": st.sampled_from(["local", "worker", "controller", "admin"]) | values,
        "worker": st.sampled_from(["gw0", "main", None]) | values,
    },
    optional={"methods": values, "python": values, "system_info": values},
)
bodies = st.one_of(
    values,
    hellos,
    st.tuples(st.integers(-3, 5) | values, records).map(list),  # batches
    st.fixed_dictionaries({"sent": values | st.integers(-5, 10**10)}),  # byes
    st.fixed_dictionaries(  # crashes
        {"nodeid": st.binary(max_size=20) | values, "worker": values, "recent": records},
        optional={"time": values, "start": values},
    ),
    st.fixed_dictionaries(  # finishes
        {},
        optional={
            "start": values,
            "stop": values,
            "exit_status": values,
            "warnings": values,
            "records_dropped": values,
            "system_info": values,
            "session": sessions,
        },
    ),
)
KINDS = [*protocol.CLIENT_KINDS, protocol.READY, "", "x" * 300]
TOO_LARGE = protocol.pack(protocol.HELLO, b"x" * (protocol.MAX_FRAME + 1))


def _envelope(version, kind, body) -> bytes:
    if isinstance(body, dict):
        body.pop("output", None)  # never let the fuzzer choose where a report is written
    return msgpack.packb([version, kind, body], use_bin_type=True)


frames = st.one_of(
    st.binary(max_size=300),
    st.builds(_envelope, st.just(protocol.VERSION), st.sampled_from(KINDS), bodies),
    st.builds(_envelope, st.just(protocol.VERSION), st.text(max_size=12), values),
    st.builds(_envelope, values, st.sampled_from(KINDS) | values, values),
    values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.just(TOO_LARGE),
)


# --- a real daemon (tests/test_daemon.py's)

SCRIPT = os.path.join(os.path.dirname(sys.executable), "perfmon-daemon")
DAEMON = (
    [SCRIPT] if os.path.exists(SCRIPT) else [sys.executable, "-m", "pytest_perfmon.monitor.daemon"]
)
WAIT = 60.0

#: Five quick tests, one that outlasts the plugin's 0.5 s batch interval (so that everything
#: before it reaches the daemon), one that blocks until the test lets it go, one more.
SUITE = """
import os, time
import pytest

@pytest.mark.parametrize("i", range(5))
def test_quick(i):
    pass

def test_flush():
    time.sleep(0.6)

def test_block():
    release = os.environ.get("PERFMON_TEST_RELEASE", "")
    deadline = time.monotonic() + 120
    while release and not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)

def test_after():
    pass
"""
BEFORE_BLOCK = {f"test_quick[{i}]" for i in range(5)} | {"test_flush"}
ALL = BEFORE_BLOCK | {"test_block", "test_after"}


def names(tests: dict) -> set:
    return {k.rsplit("::", 1)[1] for k in tests}


class Daemon:
    """A real perfmon-daemon process, reaped by close()."""

    def __init__(self, directory, *extra: str, endpoint: str | None = None, env=None) -> None:
        self.dir = directory
        self.endpoint = endpoint or f"ipc://{directory}/d.sock"
        self.output = directory / "combined.json"
        self.journal = directory / "combined.json.journal"
        self.log_path = directory / "daemon.log"
        args = ["--output", str(self.output), *extra]
        if endpoint != "":
            args = ["--endpoint", self.endpoint, *args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                DAEMON + args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=directory,
                env=env,
            )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def status(self, timeout: float = 5.0) -> dict:
        return request(self.endpoint, protocol.STATUS, timeout)

    def wait_up(self) -> dict:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                return self.status(timeout=1.0)
            except DaemonError:
                time.sleep(0.1)
        raise AssertionError("the daemon never answered: " + self.log())

    def wait_for(self, predicate, what: str) -> dict:
        deadline = time.monotonic() + WAIT
        st = self.status()
        while not predicate(st):
            assert time.monotonic() < deadline, f"waited for {what}: {st}\n{self.log()}"
            assert self.proc.poll() is None, self.log()
            time.sleep(0.1)
            st = self.status()
        return st

    def session(self, st: dict, owner_pid: int) -> dict:
        for s in st["sessions"].values():
            if s["owner_pid"] == owner_pid:
                return s
        return {}

    def wait_exit(self) -> int:
        return self.proc.wait(WAIT)

    def combined(self) -> dict:
        return validate(json.loads(self.output.read_text(encoding="utf-8")))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)


class Pytest:
    """A real pytest run reporting into the daemon, reaped by close()."""

    def __init__(self, directory, output: str, *args: str, daemon: str | None, env=None):
        self.output = directory / output
        self.release = directory / "release"
        environ = dict(os.environ, PERFMON_TEST_RELEASE=str(self.release), **(env or {}))
        environ.pop("PERFMON_DAEMON", None)
        environ.update(env or {})
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--perf-monitor"]
        cmd += [f"--perf-output={self.output}", *args]
        if daemon:
            cmd += ["--perf-daemon", daemon]
        self.proc = preloaded.popen(  # forked where it can be (tests/preloaded.py)
            cmd, directory, environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.text = ""

    def wait(self) -> int:
        out, _ = self.proc.communicate(timeout=RUN_TIMEOUT)
        self.text = out.decode("utf-8", "replace")
        return self.proc.returncode

    def report(self) -> dict:
        return validate(json.loads(self.output.read_text(encoding="utf-8")))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=WAIT)


class Raw:
    """A bare DEALER speaking the protocol by hand."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def ask(self, frame: bytes, timeout: float = 10.0):
        self.sock.send(frame)
        if not self.sock.poll(timeout * 1000, zmq.POLLIN):
            raise AssertionError("no reply")
        return protocol.unpack(self.sock.recv())

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


# --- waits (tests/test_cli.py's)


def waited_entry(t: dict, cpu: float, wait: float, blocked: float = 0.0) -> None:
    """Make the entry ``t`` a single-threaded test of ``cpu`` seconds of work that waited
    ``wait`` seconds for a CPU and slept ``blocked``: its times and noise certificate (also
    tests/test_history_*.py's)."""
    d = cpu + wait + blocked
    t.update(duration=d, setup_time=0.0, call_time=d, teardown_time=0.0)
    t["cpu_percent"] = round(100.0 * cpu / d, 4)
    t["noise"] = {
        "wait_time": wait,
        "throttled_time": None,
        "steal_time": 0.0,
        "pressure": 0.5,
        "involuntary_switches": 10,
        "contended": wait >= 0.1 * d,
    }


# --- history (tests/test_history_*.py's)

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
PG_WAIT = 30  # seconds: bound of every wait for the PostgreSQL server

# --- PostgreSQL


def pg_bin() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return os.path.dirname(found)
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: d.split("/")[-2])
    for d in reversed(dirs):
        if os.path.exists(os.path.join(d, "pg_ctl")):
            return d
    return None


class PG:
    """A throwaway PostgreSQL server on a Unix socket in a temp dir.

    Under xdist one server serves every worker (``shared``: the directory the controller made,
    conftest's PERFMON_TESTS_PG; it stops the server and removes it): the first worker that
    needs it starts it, each takes a database of its own. An initdb and a start cost 1.5 CPU-s,
    once instead of once a worker."""

    def __init__(self, bindir: str, shared: str | None = None) -> None:
        self.bindir = bindir
        self.shared = shared is not None
        self.dir = shared if shared is not None else tempfile.mkdtemp(prefix="perfmon-pg-")
        self.user = None
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # postgres refuses to run as root
            self.user = "nobody"
            pw = pwd.getpwnam("nobody")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, "data")
        self.has_db = False
        # this process's database (one per xdist worker on a shared server)
        self.db = "history_" + os.environ.get("PYTEST_XDIST_WORKER", "main").replace("-", "_")

    def run_command(self, *args: str) -> None:
        subprocess.run(
            args, check=True, capture_output=True, timeout=PG_WAIT, user=self.user, cwd=self.dir
        )

    def start(self) -> None:
        if not self.shared:
            self._start()
            return
        import fcntl

        with open(os.path.join(self.dir, "lock"), "a") as lock:  # one worker starts it
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.exists(os.path.join(self.dir, "up")):
                try:
                    self._start()
                except BaseException:  # left clean, so that the next worker tries afresh
                    try:
                        self._stop_postmaster()
                    except (OSError, subprocess.SubprocessError):
                        pass
                    shutil.rmtree(self.data, ignore_errors=True)
                    raise
                open(os.path.join(self.dir, "up"), "w").close()  # noqa: SIM115

    def _start(self) -> None:
        b = self.bindir
        self.run_command(
            f"{b}/initdb",
            "-D",
            self.data,
            "-A",
            "trust",
            "-U",
            "perfmon",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        opts = (
            f"-c listen_addresses='' -k {self.dir} -c fsync=off -c full_page_writes=off "
            "-c synchronous_commit=off -c max_connections=100"
        )
        self.run_command(
            f"{b}/pg_ctl",
            "-D",
            self.data,
            "-l",
            os.path.join(self.dir, "log"),
            "-w",
            "-t",
            str(PG_WAIT),
            "-o",
            opts,
            "start",
        )

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://perfmon@/{db}?host={self.dir}"

    def new_db(self) -> str:
        """The URL of an empty store: this process's database, its schema dropped."""
        import sqlalchemy as sa  # the history extra: only where a test needs PostgreSQL
        from pytest_perfmon.monitor.history import store

        eng = sa.create_engine(
            store.store_url.normalize(self.url()),
            isolation_level="AUTOCOMMIT",
            poolclass=sa.pool.NullPool,
        )
        with eng.connect() as c:
            if not self.has_db:
                c.exec_driver_sql(f"CREATE DATABASE {self.db} TEMPLATE template0")
                self.has_db = True
        eng.dispose()
        eng = sa.create_engine(
            store.store_url.normalize(self.url(self.db)),
            isolation_level="AUTOCOMMIT",
            poolclass=sa.pool.NullPool,
        )
        with eng.connect() as c:
            c.exec_driver_sql("DROP SCHEMA public CASCADE")
            c.exec_driver_sql("CREATE SCHEMA public")
        eng.dispose()
        return self.url(self.db)

    def stop(self) -> None:
        """Stop the server and remove its directory (a shared one: only where it was made)."""
        if self.shared:
            return
        self.stop_server()

    def stop_server(self) -> None:
        try:
            self._stop_postmaster()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_postmaster(self) -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self.run_command(
                f"{self.bindir}/pg_ctl",
                "-D",
                self.data,
                "-m",
                "immediate",
                "-w",
                "-t",
                str(PG_WAIT),
                "stop",
            )


def pg_bin_or_skip() -> str:
    """The PostgreSQL server binaries' directory; a skip that says why (with CI=true, a
    failure) when they are missing."""
    bindir = pg_bin()
    if bindir is None:
        why = "PostgreSQL server binaries (initdb, pg_ctl) not found; .ci/run installs them"
        if os.environ.get("CI") == "true":
            pytest.fail(why + " (CI=true: not skipping)")
        pytest.skip(why)
    return bindir


def golden(name: str = "current.json") -> dict:
    with open(os.path.join(GOLDEN, name), encoding="utf-8") as f:
        return json.load(f)


def make_report(i: int, durations: dict, peak: float = 50.0, ts: float | None = None) -> dict:
    """A small valid report: run ``i``, the tests' durations in seconds."""
    ts = 1_700_000_000 + 3600 * i if ts is None else ts
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".000000Z"
    tests = {}
    for nodeid, d in durations.items():
        tests[nodeid] = {
            "duration": d,
            "setup_time": d * 0.1,
            "call_time": d * 0.8,
            "teardown_time": d * 0.1,
            "memory": {"start_mb": 40.0, "peak_mb": peak, "end_mb": 40.0, "delta_mb": 0.0},
            "cpu_percent": 90.0,
            "outcome": "passed",
            "worker": "main",
            "pid": 100,
        }
    rep = golden()
    rep["session"] = dict(rep["session"], timestamp=stamp, total_tests=len(tests), exit_status=0)
    rep["tests"] = tests
    return rep


#: ``find_monitor(owner)``: the monitor process started for the pytest process ``owner``, or
#: None. The monitor is a child of neither pytest nor its xdist controller. Started by a new
#: interpreter, it is found by its command line, which names the pid it watches (its launcher,
#: a short-lived child of ``owner``, excluded); forked from pytest (issue 25), by its name
#: (``perfmon-monitor``) and the pidfd of ``owner`` it holds (/proc/PID/fdinfo says whose).
FIND_MONITOR_SOURCE = """
def find_monitor(owner):
    import os
    import psutil

    def watches(pid):
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    if f"Pid:\\t{owner}\\n" in f.read():
                        return True
            except OSError:
                pass
        return False

    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            cmd = proc.info["cmdline"] or []
            if "pytest_perfmon.monitor.launch" in cmd and "--parent" in cmd:
                mine = cmd[cmd.index("--parent") + 1] == str(owner)
            else:
                mine = proc.info["name"] == "perfmon-monitor" and watches(proc.pid)
            if mine and proc.ppid() != owner:
                return proc
        except (psutil.Error, OSError, ValueError, IndexError):
            continue
    return None
"""

_found: dict = {}
exec(FIND_MONITOR_SOURCE, _found)
find_monitor = _found["find_monitor"]

#: For a test's own code in an inner run: ``_monitor()``, the monitor process of this pytest
#: (plain) or of its xdist controller. An xdist worker finds its controller as its parent: such
#: a run needs ``REAL_WORKERS``.
FIND_MONITOR = (
    FIND_MONITOR_SOURCE
    + """
def _monitor():
    import psutil
    me = psutil.Process()
    for owner in (me.pid, me.ppid()):
        mon = find_monitor(owner)
        if mon is not None and mon.ppid() not in (me.pid, me.ppid()):
            return mon
    raise AssertionError("no monitor process found")
"""
)


#: ``_monitor()`` for a test's own code in an inner run: the monitor process of this pytest
#: (plain) or of its xdist controller, as FIND_MONITOR's, which finds the controller as
#: its worker's parent and so needs real worker starts (helpers.REAL_WORKERS: about 0.4 CPU-s a
#: worker). Here the controller names itself to its workers (OWNER_CONFTEST, the environment
#: they inherit), whatever started them; the monitor is the one that watches it (its pidfd)
#: and is the child of none of the test's process, its parent and its controller.
FIND_OWN_MONITOR = (
    FIND_MONITOR_SOURCE
    + """
def _monitor():
    import os
    import psutil
    me = psutil.Process()
    owner = int(os.environ["PERFMON_TESTS_OWNER"])
    assert owner == me.pid or "PYTEST_XDIST_WORKER" in os.environ
    mon = find_monitor(owner)
    if mon is not None and mon.ppid() not in (me.pid, me.ppid(), owner):
        return mon
    raise AssertionError("no monitor process found")
"""
)

#: The inner run's conftest for FIND_OWN_MONITOR: pytest (plain, or the xdist controller, before
#: it starts its workers) names itself in the environment.
OWNER_CONFTEST = """
import os


def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        os.environ["PERFMON_TESTS_OWNER"] = str(os.getpid())
"""

#: The environment of an inner run whose xdist workers must be real starts, their controller's
#: children (tests/preloaded.py forks them from its server otherwise): its tests look at their
#: worker's parent.
REAL_WORKERS = {"PERFMON_TESTS_EXEC": "workers"}


# --- history stores (tests/test_history_*.py's)

#: A run's commit and branch as GitHub Actions gives them.
HISTORY_ENV = {"GITHUB_SHA": "a" * 40, "GITHUB_REF_NAME": "main"}


def count_rows(url: str, table: str) -> int:
    """The rows of ``table`` in the history store at ``url``."""
    from pytest_perfmon.monitor.history import store  # the history extra

    eng = store.engine(url)
    try:
        with eng.connect() as c:
            return c.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
    finally:
        eng.dispose()


def fill_history(url: str, n: int, slow_from: int | None = None, factor: float = 1.3) -> None:
    """``n`` runs of three tests with run-to-run noise; test_b slower from run ``slow_from``."""
    import numpy as np  # the history extra
    from pytest_perfmon.monitor import history

    rng = np.random.default_rng(7)
    for i in range(n):
        slow = slow_from is not None and i >= slow_from
        durations = {
            "t.py::test_a": 0.050 * (1 + 0.02 * rng.standard_normal()),
            "t.py::test_b": 0.100 * (factor if slow else 1.0) * (1 + 0.02 * rng.standard_normal()),
            "t.py::test_c": 0.001 * (1 + 0.3 * rng.standard_normal()),
        }
        env = {"GITHUB_SHA": f"c{i:02d}".ljust(40, "0"), "GITHUB_REF_NAME": "main"}
        assert history.record_run(url, make_report(i, durations), {}, None, env=env) is None


def noisy_entry(rep: dict, nodeid: str, cpu: float, wait: float) -> None:
    """Make ``nodeid`` of ``rep`` a single-threaded test of ``cpu`` seconds of work that waited
    ``wait`` seconds for a CPU: its times and noise certificate (as compare's tests do)."""
    waited_entry(rep["tests"][nodeid], cpu, wait)
    rep["tests"][nodeid]["noise"]["pressure"] = 0.9 if wait > 0.1 * (cpu + wait) else 0.05
    rep["tests"][nodeid]["noise"]["involuntary_switches"] = int(wait * 1000)


# --- the profiled run (tests/test_profile.py's; tests/test_html.py draws its page)

#: A suite with two slow tests (one failing) and a quick one, for --perf-profile runs.
PROFILED_SUITE = """
    import time

    def spin_here(seconds):
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < seconds:
            n += 1
        return n

    def spin_then_fail(seconds):
        spin_here(seconds)
        raise AssertionError("slow and failing")

    def test_slow():
        assert spin_here(0.5) > 0

    def test_slow_fails():
        spin_then_fail(0.45)

    def test_quick():
        assert 1 + 1 == 2
"""

#: The arguments of PROFILED_SUITE's runs (with the xdist ones). Over 0.3 s, not the default
#: 1 s (test_slow_with_history_keeps_a_test_well_over_its_median relies on the default): the
#: slow tests spin 0.5 and 0.45 s of wall time (over the bar however busy the machine: their
#: spin ends by the clock), the quick one stays far under (it would need to be kept off the CPU
#: for 0.3 s). Their CPU (the spins, and py-spy sampling them) is most of those tests'; the
#: checks of tests/test_profile.py are shares of the samples, which hold as they did at 0.8
#: and 0.7 s (50 and 45 samples, at 100 per second). tests/test_html.py draws the serial run's
#: page in Chromium: shared_run with the same files and arguments makes that run once a
#: session for both modules.
PROFILE_ARGS = ("--perf-profile", "slow", "--perf-profile-over", "0.3", "--perf-html", "perf.html")


# --- the terminal summary (tests/test_plugin.py's and tests/test_xdist.py's)


def check_print_summary(out: str, tests: dict, largest_delta: str) -> list:
    """--perf-print-summary's block in ``out`` at 80 columns: each section once, every line
    fits, the ten slowest tests of the report ``tests`` as it ranks them (slowest first, then
    by node id: equal durations tie to the microsecond), the largest memory delta the test whose
    node id ends with ``largest_delta``. Returns the block's lines."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "performance summary" in line)
    block = lines[start:]

    def title(prefix: str) -> int:
        found = [i for i, line in enumerate(block) if line.startswith(prefix)]
        assert len(found) == 1, (prefix, block)
        return found[0]

    slow = title("slowest tests")
    mem = title("largest memory deltas")
    title("CPU over")
    table = [line for line in block if not line.startswith("perfmon: report written")]
    assert all(len(line) <= 80 for line in table), [line for line in table if len(line) > 80]
    rows = []
    for line in block[slow + 2 :]:
        if not line.startswith("  "):
            break
        rows.append(line)
    assert len(rows) == 10
    slowest = sorted(tests, key=lambda k: (-tests[k]["duration"], k))[:10]
    # (no assertion on which tests are slowest: the first test a worker runs also pays for
    # that process's first-time work, so a 0 ms test can rank anywhere on a busy machine)
    assert [r.split()[-1] for r in rows] == slowest
    assert block[mem + 2].rstrip().endswith(largest_delta)
    assert "perfmon: report written to" in out
    return block
