"""Run history: store (SQLite and a real PostgreSQL), recording by the monitor and the daemon,
``perfmon history`` commands, change-point detection, concurrency, faults, Grafana panels.

The PostgreSQL server is started by this module (initdb + pg_ctl in a temp dir, Unix socket
only, as ``nobody`` when run as root) and stopped at its end. Without the binaries its tests
skip, saying why; with CI=true that is a failure.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

import pytest
from helpers import PG, golden, make_report, pg_bin_or_skip

try:
    import numpy as np
    import sqlalchemy as sa
except ImportError as exc:  # the test extra carries the history extra's packages
    if os.environ.get("CI") == "true":
        raise ImportError(f"CI=true: the history extra is missing ({exc.name})") from exc
    pytest.skip(f"the history extra is not installed ({exc.name})", allow_module_level=True)

from pytest_perfmon.monitor import cli  # noqa: E402
from pytest_perfmon.monitor import history as H  # noqa: E402
from pytest_perfmon.monitor import protocol as P  # noqa: E402
from pytest_perfmon.monitor.history import context, detect, predict_io, store  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")


@pytest.fixture(scope="module")
def pg():
    server = PG(pg_bin_or_skip())
    try:
        server.start()
    except (subprocess.SubprocessError, OSError) as exc:
        server.stop()
        pytest.fail(f"cannot start PostgreSQL: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """The URL of a new, empty store on each back end."""
    if request.param == "sqlite":
        return str(tmp_path / "history.db")
    return request.getfixturevalue("pg").new_db()


# --------------------------------------------------------------------------- data


ENV = {"GITHUB_SHA": "a" * 40, "GITHUB_REF_NAME": "main"}


def count(url: str, table: str) -> int:
    eng = store.engine(url)
    try:
        with eng.connect() as c:
            return c.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
    finally:
        eng.dispose()


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    "url, problem",
    [
        ("perf-history.db", None),
        ("sqlite:///perf-history.db", None),
        ("postgresql://u:p@db.example:5432/perf", None),
        ("postgres://u@/perf?host=/run/postgresql", None),
        ("", "empty"),
        ("mysql://u@h/db", "unsupported history URL scheme 'mysql'"),
        ("postgresql://u@h:notaport/db", "malformed PostgreSQL URL"),
        ("postgresql://u@h:5432/", "needs a database name"),
        ("postgresql:///db", "needs a host"),
        ("sqlite://", "needs a file"),
        ("no/such/dir/h.db", "does not exist"),
        (".", "is a directory"),
    ],
)
def test_check_url(url, problem, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = H.check_url(url)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got and "\n" not in got
        assert got.startswith("--perf-history: ")


def test_check_url_names_the_missing_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(H.url, "_missing", lambda m: m == "psycopg")
    assert H.check_url(str(tmp_path / "h.db")) is None
    assert "pytest-perfmon[history]" in H.check_url("postgresql://u@h/db")
    monkeypatch.setattr(H.url, "_missing", lambda m: True)
    assert "needs SQLAlchemy" in H.check_url(str(tmp_path / "h.db"))


def test_light_imports_do_not_load_the_database_layer():
    """The pytest process may call check_url; `perfmon` starts without SQLAlchemy."""
    code = (
        "import sys; from pytest_perfmon.monitor.history import check_url; "
        "import pytest_perfmon.monitor.cli, pytest_perfmon.monitor.monitor; "
        "import pytest_perfmon.monitor.daemon.core; check_url('x.db'); "
        "bad = [m for m in ('sqlalchemy', 'numpy', 'psycopg') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_redact():
    assert H.redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert H.redact("h.db") == "h.db"


# --------------------------------------------------------------------------- context


def test_commit_branch_sources(tmp_path):
    assert context.commit_branch(None, ENV) == ("a" * 40, "main")
    gl = {"CI_COMMIT_SHA": "b" * 40, "CI_COMMIT_REF_NAME": "dev"}
    assert context.commit_branch(None, gl) == ("b" * 40, "dev")
    jenkins = {"GIT_COMMIT": "c" * 40, "GIT_BRANCH": "origin/rel"}
    assert context.commit_branch(None, jenkins) == ("c" * 40, "rel")
    assert context.commit_branch(str(tmp_path), {}) == (None, None)  # not a repository
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "feature"], check=True, timeout=30)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True, timeout=30)
    sha = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    assert context.commit_branch(str(repo), {}) == (sha, "feature")


def test_fingerprint_stable_and_specific():
    local = context.local_machine()
    assert context.fingerprint(local) == context.fingerprint(context.local_machine())
    assert len(context.fingerprint(local)) == 16
    # a report of this machine gives the same print as the machine itself
    system = dict(local, memory_total_mb=(local["memory_total_mb"] or 0) + 3.0)
    assert context.fingerprint(context.machine(system)) == context.fingerprint(local)
    for key, other in (
        ("cpu_model", "Other CPU"),
        ("cpu_count", 999),
        ("platform", "Plan9"),
        ("python_version", "2.7.0"),
        ("python_implementation", "PyPy"),
        ("memory_total_mb", 10**7),
    ):
        assert context.fingerprint(dict(local, **{key: other})) != context.fingerprint(local)


# --------------------------------------------------------------------------- store


def test_record_stores_every_number_once(db):
    rep = golden()
    labels = {"job": "py3.11", "branch": "override"}
    assert H.record_run(db, rep, labels, None, env=ENV) is None
    assert H.record_run(db, rep, labels, None, env=ENV) is None  # the same report: stored once
    assert count(db, "runs") == 1
    assert count(db, "results") == len(rep["tests"])
    eng = store.open_store(db)
    try:
        (run,) = store.list_runs(eng, 10)
        assert run["commit_sha"] == "a" * 40 and run["branch"] == "override"
        assert run["labels"] == labels
        assert run["total_tests"] == len(rep["tests"]) and run["exit_status"] == 1
        assert run["pytest_version"] == "8.3.0" and run["workers"] == len(rep["workers"])
        assert run["source"] == "monitor" and run["aborted"] is False
        nodeid = "tests/test_cache.py::test_leak"
        tid = store.test_id(eng, nodeid)
        t = rep["tests"][nodeid]
        with eng.connect() as c:
            row = c.execute(sa.select(store.results).where(store.results.c.test_id == tid)).one()
        assert row.duration == t["duration"] and row.call_time == t["call_time"]
        assert row.setup_time == t["setup_time"] and row.teardown_time == t["teardown_time"]
        assert (row.start_mb, row.peak_mb, row.end_mb, row.delta_mb) == tuple(
            t["memory"][k] for k in ("start_mb", "peak_mb", "end_mb", "delta_mb")
        )
        assert row.cpu_percent == t["cpu_percent"] and row.outcome == t["outcome"]
        assert row.worker == t["worker"]
        assert row.cpu_time == pytest.approx(t["cpu_percent"] * t["duration"] / 100, rel=1e-12)
        with eng.connect() as c:
            q = sa.select(store.tests.c.nodeid, store.results.c.cpu_time).join(store.tests)
            cpu = dict(c.execute(q).all())
        for nodeid, t in rep["tests"].items():  # no CPU figure (a test skipped in setup): NULL
            assert (cpu[nodeid] is None) == (t["cpu_percent"] is None)
    finally:
        eng.dispose()


def test_newer_store_is_refused(db):
    assert H.record_run(db, golden(), {}, None, env=ENV) is None
    eng = store.engine(db)
    with eng.begin() as c:
        c.execute(sa.update(store.perfmon_meta).values(value="99"))
    eng.dispose()
    warning = H.record_run(db, golden("baseline.json"), {}, None, env=ENV)
    assert "schema version 99" in warning and "newer pytest-perfmon" in warning
    assert cli.main(["history", "runs", "--db", db]) == 2
    assert count(db, "runs") == 1


def test_upgrade_from_empty_is_versioned(tmp_path):
    url = str(tmp_path / "h.db")
    eng = store.engine(url)
    assert store.upgrade(eng, url) == 0  # was empty
    assert store.upgrade(eng, url) == store.SCHEMA_VERSION  # nothing to do
    with eng.connect() as c:
        v = c.execute(sa.select(store.perfmon_meta.c.value)).scalar_one()
    eng.dispose()
    assert v == str(store.SCHEMA_VERSION)


#: the results table as pytest-perfmon with schema version 1 created it
V1_RESULTS = (
    "run_id",
    "test_id",
    "duration",
    "setup_time",
    "call_time",
    "teardown_time",
    "start_mb",
    "peak_mb",
    "end_mb",
    "delta_mb",
    "cpu_percent",
    "outcome",
    "worker",
)


def _version_1_store(url: str) -> None:
    """A store as schema version 1 left it: the shipped step 1 of the migrations, then two runs
    written into its tables (a CPU-bound test, a sleeping one, one without a CPU figure)."""
    eng = store.engine(url)
    try:
        assert store.upgrade(eng, url, target=1) == 0
        v1 = sa.MetaData()
        v1.reflect(eng)
        assert tuple(c.name for c in v1.tables["results"].columns) == V1_RESULTS
        with eng.begin() as c:
            c.execute(
                sa.insert(v1.tables["machines"]), {"fingerprint": "f" * 16, "description": "{}"}
            )
            mid = c.execute(sa.select(v1.tables["machines"].c.id)).scalar_one()
            c.execute(
                sa.insert(v1.tables["tests"]),
                [{"nodeid": f"t.py::{n}"} for n in ("cpu", "sleep", "x")],
            )
            ids = dict(
                c.execute(sa.select(v1.tables["tests"].c.nodeid, v1.tables["tests"].c.id)).all()
            )
            for i in range(2):
                rid = c.execute(
                    sa.insert(v1.tables["runs"]).returning(v1.tables["runs"].c.id),
                    {
                        "run_key": str(i) * 64,
                        "started_at": dt.datetime(2023, 11, 1 + i, tzinfo=dt.timezone.utc),
                        "recorded_at": dt.datetime(2023, 11, 1 + i, tzinfo=dt.timezone.utc),
                        "machine_id": mid,
                        "total_tests": 3,
                        "aborted": False,
                        "possibly_incomplete": False,
                        "source": "import",
                    },
                ).scalar_one()
                rows = [
                    ("cpu", 0.25 + 0.01 * i, 97.5, "passed"),
                    ("sleep", 0.1, 1.2, "passed"),
                    ("x", 0.0002, None, "skipped"),
                ]
                c.execute(
                    sa.insert(v1.tables["results"]),
                    [
                        {
                            "run_id": rid,
                            "test_id": ids[f"t.py::{n}"],
                            "duration": d,
                            "cpu_percent": pct,
                            "outcome": outcome,
                        }
                        for n, d, pct, outcome in rows
                    ],
                )
    finally:
        eng.dispose()


def test_upgrade_from_version_1_fills_cpu_time(db, capsys):
    _version_1_store(db)
    # a writer of this version upgrades the store, then records
    rep = make_report(5, {"t.py::cpu": 0.3})
    assert H.record_run(db, rep, {}, None, env=ENV) is None
    eng = store.engine(db)
    try:
        with eng.connect() as c:
            assert store._read_version(c) == store.SCHEMA_VERSION == 3
            q = (
                sa.select(store.tests.c.nodeid, store.results.c.run_id, store.results.c.cpu_time)
                .join(store.tests)
                .order_by(store.results.c.run_id, store.tests.c.nodeid)
            )
            got = [tuple(r) for r in c.execute(q)]
    finally:
        eng.dispose()
    want = [
        ("t.py::cpu", 1, 0.25 * 97.5 / 100),
        ("t.py::sleep", 1, 0.1 * 1.2 / 100),
        ("t.py::x", 1, None),
        ("t.py::cpu", 2, 0.26 * 97.5 / 100),
        ("t.py::sleep", 2, 0.1 * 1.2 / 100),
        ("t.py::x", 2, None),
        ("t.py::cpu", 3, 0.3 * 90.0 / 100),
    ]
    assert [r[:2] for r in got] == [w[:2] for w in want]
    for (_, _, v), (_, _, w) in zip(got, want):
        assert v == (None if w is None else pytest.approx(w, rel=1e-12))
    capsys.readouterr()
    args = ["history", "show", "t.py::cpu", "--db", db, "--metric", "cpu_time", "--any-machine"]
    assert cli.main(args + ["--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [round(p["value"], 6) for p in shown["points"]] == [0.24375, 0.2535, 0.27]
    assert cli.main(args) == 0
    assert "243.8 ms" in capsys.readouterr().out


def test_a_store_of_this_version_is_refused_by_the_previous_one(tmp_path, monkeypatch):
    url = str(tmp_path / "h.db")
    assert H.record_run(url, golden(), {}, None, env=ENV) is None
    monkeypatch.setattr(store, "SCHEMA_VERSION", 2)  # what the previous release knows
    with pytest.raises(store.HistoryError, match="schema version 3, written by a newer"):
        store.open_store(url)


def test_one_transaction_per_run(db, monkeypatch):
    """A failure while writing the results leaves nothing of the run behind."""
    real = store.insert_run.__globals__["_test_ids"]

    def broken(conn, nodeids):
        real(conn, nodeids)
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(store, "_test_ids", broken)
    warning = H.record_run(db, golden(), {}, None, env=ENV)
    assert "disk I/O error" in warning and "\n" not in warning
    assert count(db, "runs") == 0 and count(db, "tests") == 0 and count(db, "machines") == 0


def test_unreachable_postgresql_is_one_warning(tmp_path):
    t = time.monotonic()
    warning = H.record_run(f"postgresql://u@/db?host={tmp_path}", golden(), {}, None, env=ENV)
    assert warning.startswith("history not recorded: history store postgresql://")
    assert "\n" not in warning and time.monotonic() - t < 10


def test_locked_sqlite_is_one_warning(tmp_path):
    url = str(tmp_path / "h.db")
    assert H.record_run(url, golden(), {}, None, env=ENV) is None
    holder = sqlite3.connect(url, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        warning = H.record_run(url, golden("baseline.json"), {}, None, env=ENV, timeout=0.2)
    finally:
        holder.rollback()
        holder.close()
    assert "database is locked" in warning and "\n" not in warning
    assert H.record_run(url, golden("baseline.json"), {}, None, env=ENV) is None
    assert count(url, "runs") == 2


def test_locked_postgresql_is_one_warning(pg):
    url = pg.new_db()
    assert H.record_run(url, golden(), {}, None, env=ENV) is None
    holder = store.engine(url)
    with holder.connect() as c:
        c.exec_driver_sql("BEGIN")
        c.exec_driver_sql("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        warning = H.record_run(url, golden("baseline.json"), {}, None, env=ENV, timeout=0.3)
        c.exec_driver_sql("ROLLBACK")
    holder.dispose()
    assert "lock timeout" in warning and "\n" not in warning
    assert count(url, "runs") == 1


def test_missing_extra_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    assert cli.main(["history", "runs", "--db", str(tmp_path / "h.db")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "pytest-perfmon[history]"' in err


# --------------------------------------------------------------------------- the collectors


def _session(srv, finish: dict):
    from helpers import hello, record

    assert srv.send(b"a", P.HELLO, hello())[0] == P.READY
    srv.send(b"a", P.BATCH, [0, [record(b"t.py::test_a"), record(b"t.py::test_b", 1001)]])
    assert srv.send(b"a", P.BYE, {"sent": 1}) == (P.ACK, {"missing": []})
    body = {"start": 999.0, "stop": 1002.0, "exit_status": 0, **finish}
    return srv.send(b"a", P.FINISH, body)


@pytest.mark.parametrize("collector", ["monitor", "daemon"])
def test_collector_records_the_run(collector, request, tmp_path, db):
    srv = request.getfixturevalue(collector)
    out = str(tmp_path / "perf.json")
    finish = {"output": out, "history": db, "labels": {"job": "unit"}, "rootdir": str(tmp_path)}
    kind, done = _session(srv, finish)
    assert kind == P.DONE and done["ok"] and done["history_warning"] is None, done
    assert os.path.exists(out)
    eng = store.open_store(db)
    try:
        (run,) = store.list_runs(eng, 5)
    finally:
        eng.dispose()
    assert run["labels"] == {"job": "unit"} and run["total_tests"] == 2
    assert run["source"] == collector
    # the same report, imported from its JSON file, is the same run
    assert cli.main(["history", "import", out, "--db", db]) == 0
    assert count(db, "runs") == 1


@pytest.mark.parametrize("collector", ["monitor", "daemon"])
def test_collector_with_unusable_store_still_writes_the_report(collector, request, tmp_path):
    srv = request.getfixturevalue(collector)
    out = str(tmp_path / "perf.json")
    bad = f"postgresql://u@/db?host={tmp_path}"  # no server there
    kind, done = _session(srv, {"output": out, "history": bad})
    assert kind == P.DONE and done["ok"], done
    assert done["history_warning"].startswith("history not recorded:")
    assert "\n" not in done["history_warning"]
    with open(out, encoding="utf-8") as f:
        assert json.load(f)["tests"]


def test_finish_history_fields_are_checked():
    ok = P.parse_finish({"history": "h.db", "labels": {"a": "b"}, "rootdir": "/x"})
    assert (ok.history, ok.labels, ok.rootdir) == ("h.db", {"a": "b"}, "/x")
    assert "history" not in ok.as_session() and "labels" not in ok.as_session()
    assert P.parse_finish({}).history is None
    for bad in (
        {"history": 3},
        {"labels": ["a"]},
        {"labels": {"a": 1}},
        {"labels": {"": "x"}},
        {"rootdir": "a\0b"},
        {"history": ""},
        {"labels": {str(i): "v" for i in range(101)}},
    ):
        with pytest.raises(P.ProtocolError):
            P.parse_finish(bad)


@pytest.fixture
def monitor(tmp_path):
    from helpers import InProcess
    from pytest_perfmon.monitor.monitor import Monitor

    m = InProcess(Monitor("ipc://unused", str(tmp_path / "perf.json"), 0.1, None, False))
    yield m
    m.close()


@pytest.fixture
def daemon(tmp_path, monkeypatch):
    from helpers import InProcess
    from pytest_perfmon.monitor.daemon.core import Daemon

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where save_elsewhere writes
    out = tmp_path / "combined.json"
    d = InProcess(Daemon("ipc://unused", str(out), str(out) + ".journal", 0.1, False))
    yield d
    d.close()


# --------------------------------------------------------------------------- commands


def _fill(url: str, n: int, slow_from: int | None = None, factor: float = 1.3) -> None:
    """``n`` runs of three tests with run-to-run noise; test_b slower from run ``slow_from``."""
    rng = np.random.default_rng(7)
    for i in range(n):
        slow = slow_from is not None and i >= slow_from
        durations = {
            "t.py::test_a": 0.050 * (1 + 0.02 * rng.standard_normal()),
            "t.py::test_b": 0.100 * (factor if slow else 1.0) * (1 + 0.02 * rng.standard_normal()),
            "t.py::test_c": 0.001 * (1 + 0.3 * rng.standard_normal()),
        }
        env = {"GITHUB_SHA": f"c{i:02d}".ljust(40, "0"), "GITHUB_REF_NAME": "main"}
        assert H.record_run(url, make_report(i, durations), {}, None, env=env) is None


def test_cli_commands(db, capsys, monkeypatch, tmp_path):
    _fill(db, 20, slow_from=17)
    capsys.readouterr()
    assert cli.main(["history", "runs", "--db", db, "--limit", "3", "--format", "json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["commit_sha"] for r in runs] == [f"c{i:02d}".ljust(40, "0") for i in (19, 18, 17)]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(1_700_000_000 + 3600 * 19))
    assert runs[0]["started_at"] == stamp  # UTC on both back ends
    assert cli.main(["history", "runs", "--db", db]) == 0
    assert "main" in capsys.readouterr().out

    assert cli.main(["history", "show", "t.py::test_b", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "▁" in out and "█" in out and out.count("  passed  ") == 20
    assert (
        cli.main(
            [
                "history",
                "show",
                "t.py::test_b",
                "--db",
                db,
                "--format",
                "json",
                "--metric",
                "peak_mb",
                "--limit",
                "5",
            ]
        )
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    assert [p["value"] for p in shown["points"]] == [50.0] * 5
    assert cli.main(["history", "show", "t.py::nope", "--db", db]) == 2

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert cli.main(["history", "check", "--db", db, "--format", "json"]) == 1
    out = capsys.readouterr().out
    result = json.loads(out[: out.index("::warning")])
    assert result["series"] == 3 * 3  # duration, cpu_time, peak_mb by default
    # test_b does 30 % more work: its wall time and its CPU time (90 % of it) both change
    assert [c["metric"] for c in result["changes"]] == ["duration", "cpu_time"]
    for change in result["changes"]:
        assert change["test"] == "t.py::test_b" and change["kind"] == "regression"
        assert change["commit"] == "c17".ljust(40, "0") and change["runs_after"] == 3
        assert 25 < change["change_percent"] < 35 and change["p_value"] <= 0.01
    assert abs(result["changes"][0]["before"] - 0.1) < 0.01
    assert abs(result["changes"][1]["before"] - 0.09) < 0.01
    assert "::warning file=t.py,title=perfmon%3A duration regression::t.py::test_b" in out
    assert "::warning file=t.py,title=perfmon%3A cpu_time regression::t.py::test_b" in out
    assert "| 🔴 | `t.py::test_b` | duration |" in summary.read_text()
    monkeypatch.delenv("GITHUB_ACTIONS")
    # thresholds: a 30 % change passes 0.25, not 0.5; a floor of 1 s hides it
    assert cli.main(["history", "check", "--db", db, "--rel", "0.25"]) == 1
    assert cli.main(["history", "check", "--db", db, "--rel", "0.5"]) == 0
    assert cli.main(["history", "check", "--db", db, "--abs", "duration=1"]) == 1  # cpu_time
    floors = ["--abs", "duration=1", "--abs", "cpu_time=1"]
    assert cli.main(["history", "check", "--db", db, *floors]) == 0
    assert cli.main(["history", "check", "--db", db, "--recent", "2"]) == 0  # older than that
    assert cli.main(["history", "check", "--db", db, "--metric", "peak_mb"]) == 0
    assert cli.main(["history", "check", "--db", db, "--abs", "cpu_percent=3"]) == 2
    assert cli.main(["history", "check", "--db", db, "--format", "markdown"]) == 1
    assert capsys.readouterr().out.count("🔴") == 2

    assert cli.main(["history", "prune", "--db", db, "--keep", "5"]) == 0
    assert count(db, "runs") == 5 and count(db, "results") == 15
    # 2 runs before, 3 after: 10 ways to split 5 runs, so no p-value can reach 0.01
    assert cli.main(["history", "check", "--db", db]) == 0


def _executed(t: dict, outcomes: list) -> None:
    """Make the report entry ``t`` one that pytest executed len(outcomes) times, each as long
    as ``t`` was: its times become the sums, as report.build makes them."""
    one = {k: t[k] for k in ("duration", "setup_time", "call_time", "teardown_time")}
    t["executions"] = [
        {"attempt": i + 1, "outcome": o, "start": None, "worker": "main", **one}
        for i, o in enumerate(outcomes)
    ]
    for k in one:
        t[k] = one[k] * len(outcomes)
    t["outcome"] = outcomes[-1]


def test_tests_executed_more_than_once_stay_out_of_the_medians(db, capsys):
    """Issue 20: a test that needed reruns (or ran on every worker, --dist each) is one row
    with its report entry's figures (the sums over its executions) and an outcome that says
    how many: "passed x3". Readers of passed results (check, limits' medians, trends) and the
    predictions' per-test series leave it out, so reruns never read as a slowdown."""
    rng = np.random.default_rng(3)
    flaky, each, cut = "t.py::test_flaky", "t.py::test_each", "t.py::test_cut"
    for i in range(12):
        noise = {k: 1 + 0.02 * rng.standard_normal() for k in (flaky, each, cut)}
        rep = make_report(i, {flaky: 0.1 * noise[flaky], each: 0.2 * noise[each], cut: 0.3})
        if i >= 8:  # the last 4 runs: two failed attempts before it passed
            _executed(rep["tests"][flaky], ["rerun", "rerun", "passed"])
        if i == 11:
            _executed(rep["tests"][each], ["passed", "passed"])
            rep["tests"][cut]["outcome"] = "interrupted"
            rep["tests"][cut]["duration"] = 0.01
        env = {"GITHUB_SHA": f"c{i:02d}".ljust(40, "0"), "GITHUB_REF_NAME": "main"}
        assert H.record_run(db, rep, {}, None, env=env) is None
    eng = store.open_store(db)
    try:
        tid = store.test_id(eng, flaky)
        with eng.connect() as c:
            q = sa.select(store.results.c.duration, store.results.c.outcome).where(
                store.results.c.test_id == tid
            )
            rows = sorted(c.execute(q).all(), key=lambda r: r.duration)
        assert [r.outcome for r in rows[-4:]] == ["passed x3"] * 4  # the totals, marked
        assert all(0.25 < r.duration < 0.35 for r in rows[-4:])
        assert [r.outcome for r in rows[:8]] == ["passed"] * 8
        run_rows, data = store.window(eng, None, 30, ["duration"])
        assert len(run_rows) == 12
        assert [i for i, _ in data[flaky]["duration"]] == list(range(8))
        assert len(data[each]["duration"]) == 11
        _, series, stats = predict_io.load(eng, store, None, 30, None)
        assert len(series[flaky]["duration"]) == 8
        assert max(series[flaky]["duration"]) < 0.15
        assert len(series[each]["duration"]) == 11 and len(series[cut]["duration"]) == 11
        assert len(stats) == 12  # every run's figures keep every result: that time was spent
    finally:
        eng.dispose()
    capsys.readouterr()
    assert cli.main(["history", "check", "--db", db, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["changes"] == []
    assert cli.main(["history", "show", flaky, "--db", db]) == 0
    out = capsys.readouterr().out
    assert out.count("  passed x3  ") == 4 and out.count("  passed  ") == 8
    assert store.stored_outcome({"outcome": "passed"}) == "passed"
    assert store.stored_outcome({"outcome": "failed", "executions": [{}] * 12}) == "failed x12"
    assert store.one_execution("passed") and store.one_execution("failed")
    assert not store.one_execution("passed x2") and not store.one_execution("interrupted")


def test_cpu_time_finds_a_cpu_bound_slowdown_that_wall_time_noise_hides(tmp_path, capsys):
    """A CPU-bound test whose wall time is stretched by up to +60 % when other processes take
    the CPU (CPU time barely moves); from run 16 it does 25 % more work."""
    url = str(tmp_path / "h.db")
    rng = np.random.default_rng(11)
    for i in range(20):
        cpu = 0.030 * (1.25 if i >= 16 else 1.0) * (1 + 0.01 * rng.standard_normal())
        wall = cpu * (1 + abs(0.3 * rng.standard_normal()))
        rep = make_report(i, {"t.py::test_work": wall})
        rep["tests"]["t.py::test_work"]["cpu_percent"] = 100 * cpu / wall
        assert H.record_run(url, rep, {}, None, env=ENV) is None
    capsys.readouterr()
    args = ["history", "check", "--db", url, "--format", "json", "--metric"]
    assert cli.main(args + ["duration"]) == 0  # lost in the noise of wall time
    assert json.loads(capsys.readouterr().out)["changes"] == []
    assert cli.main(args + ["cpu_time"]) == 1
    (change,) = json.loads(capsys.readouterr().out)["changes"]
    assert change["metric"] == "cpu_time" and change["kind"] == "regression"
    assert change["runs_after"] == 4 and 20 < change["change_percent"] < 30


def test_cli_usage_and_input_errors(tmp_path, capsys):
    db = str(tmp_path / "h.db")
    assert cli.main(["history", "runs", "--db", db]) == 2  # no such store: not created
    assert not os.path.exists(db)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert cli.main(["history", "import", str(bad), "--db", db]) == 2
    merged = tmp_path / "merged.json"
    assert cli.main(["merge", os.path.join(GOLDEN, "current.json"), "-o", str(merged)]) == 0
    assert cli.main(["history", "import", str(merged), "--db", db]) == 2
    assert "merged" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["history", "check", "--db", db, "--p-value", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["history", "import", "x.json", "--db", db, "--label", "novalue"])
    assert cli.main(["history", "check", "--db", "mysql://x/y"]) == 2


def test_import_is_idempotent_and_uses_labels(db, capsys):
    cur, base = os.path.join(GOLDEN, "current.json"), os.path.join(GOLDEN, "baseline.json")
    args = [
        "history",
        "import",
        cur,
        base,
        "--db",
        db,
        "--label",
        "commit=abc",
        "--label",
        "branch=b1",
    ]
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    assert "already stored as run" in capsys.readouterr().out
    eng = store.open_store(db)
    try:
        runs = store.list_runs(eng, 10)
    finally:
        eng.dispose()
    assert len(runs) == 2 and {r["commit_sha"] for r in runs} == {"abc"}
    # ordered by start time: baseline ran first although imported second
    assert [r["started_at"].day for r in runs] == [2, 1]


# --------------------------------------------------------------------------- detection


def _series(seed: int, parts: list) -> np.ndarray:
    """Concatenated segments (n, mean) with 2 % gaussian noise."""
    rng = np.random.default_rng(seed)
    return np.concatenate([m * (1 + 0.02 * rng.standard_normal(n)) for n, m in parts])


def test_energy_statistic_matches_its_definition():
    x = np.random.default_rng(3).standard_normal(13)

    def q(t):
        a, b = x[:t], x[t:]
        m, k = len(a), len(b)
        between = 2 * np.abs(a[:, None] - b[None, :]).mean()
        wa = np.abs(a[:, None] - a[None, :]).sum() / (m * (m - 1))
        wb = np.abs(b[:, None] - b[None, :]).sum() / (k * (k - 1))
        return m * k / len(x) * (between - wa - wb)

    got = detect._q_all(x[None, :], 2)[0]
    assert np.allclose(got, [q(t) for t in range(2, 12)])


def test_single_step_found_where_it_is():
    for seed in range(5):
        x = _series(seed, [(27, 1.0), (3, 1.25)])
        (c,) = detect.changes(x, "s", min_rel=0.1, min_abs=0.005)
        assert c.index == 27 and c.p <= 0.01 and 0.2 < c.rel < 0.3


def test_two_steps_and_their_medians():
    x = _series(1, [(15, 1.0), (15, 1.5), (10, 1.0)])
    got = detect.changes(x, "two", min_rel=0.1)
    assert [c.index for c in got] == [15, 30]
    assert abs(got[0].before - 1.0) < 0.02 and abs(got[0].after - 1.5) < 0.03
    assert abs(got[1].after - 1.0) < 0.02


def test_no_change_no_alarm_and_a_spike_is_not_a_change():
    alarms = sum(
        bool(detect.changes(_series(s, [(30, 1.0)]), str(s), min_rel=0.05)) for s in range(200)
    )
    assert alarms == 0
    x = _series(9, [(30, 1.0)])
    x[-1] = 3.0  # one slow run at the end: not a change (a change needs 2 runs)
    assert detect.changes(x, "spike", min_rel=0.1) == []


def test_gate_each_part_can_veto():
    x = _series(2, [(20, 1.0), (10, 1.08)])  # clearly significant, 8 %
    assert [c.index for c in detect.changes(x, "g")] == [20]
    assert detect.changes(x, "g", min_rel=0.1) == []  # below the relative threshold
    assert detect.changes(x, "g", min_abs=0.1) == []  # below the absolute floor
    assert detect.changes(x, "g", p_max=0.001, permutations=99) == []  # p cannot get there


def test_detection_is_deterministic():
    x = _series(4, [(10, 1.0), (4, 1.04)])
    a = detect.changes(x, "same name", permutations=199)
    b = detect.changes(x, "same name", permutations=199)
    assert a == b


def test_cli_defaults_match_the_detector():
    from pytest_perfmon.monitor.history import cli as hcli

    assert hcli.PERMUTATIONS == detect.DEFAULT_PERMUTATIONS
    assert hcli.METRICS == store.METRICS


def test_too_short_and_constant_series():
    assert detect.changes([1.0, 2.0, 3.0], "short") == []
    assert detect.changes([1.0] * 20, "flat") == []
    assert detect.best_split([1.0], 2) == (None, 0.0)


# --------------------------------------------------------------------------- concurrency


def _writer(url: str, go, i: int, path: str, results) -> None:
    with open(path, encoding="utf-8") as f:
        rep = json.load(f)
    go.wait(30)
    w = H.record_run(url, rep, {"writer": str(i)}, None, source="test", timeout=30)
    results.put((i, w or "ok"))


def test_eight_concurrent_writers_lose_no_run(db, tmp_path):
    """8 processes create the schema and write their runs at the same moment."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    procs = []
    try:
        for i in range(8):
            durations = {f"t{j}.py::test_{k}": 0.01 for j in range(20) for k in range(25)}
            durations[f"w{i}.py::test_own"] = 0.02
            path = tmp_path / f"r{i}.json"
            path.write_text(json.dumps(make_report(i, durations)))
            p = ctx.Process(target=_writer, args=(db, go, i, str(path), results))
            p.start()
            procs.append(p)
        go.set()
        outs = sorted(results.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    assert outs == [(i, "ok") for i in range(8)], outs
    assert [p.exitcode for p in procs] == [0] * 8
    assert count(db, "runs") == 8
    assert count(db, "results") == 8 * 501
    assert count(db, "tests") == 500 + 8
    assert count(db, "machines") == 1


def test_eight_concurrent_pytest_sessions_lose_no_run(db, tmp_path):
    """8 real `pytest --perf-monitor --perf-history` sessions, started together, each with its
    own monitor writing to one store: 8 runs, every test of each."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_s.py").write_text(
        "import pytest\n@pytest.mark.parametrize('i', range(10))\ndef test_s(i):\n    pass\n"
    )
    env = dict(os.environ)
    for k in ("PERFMON_HISTORY", "PERFMON_DAEMON", "PYTEST_ADDOPTS"):
        env.pop(k, None)
    procs = []
    try:
        for i in range(8):
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            cmd += ["--perf-monitor", f"--perf-output=r{i}.json", f"--perf-history={db}"]
            cmd += [f"--perf-label=session={i}"]
            procs.append(
                subprocess.Popen(
                    cmd, cwd=suite, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
            )
        outs = [p.communicate(timeout=120)[0].decode("utf-8", "replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=10)
    for p, out in zip(procs, outs):
        assert p.returncode == 0 and "perfmon: warning" not in out, out
    assert count(db, "runs") == 8
    assert count(db, "results") == 8 * 10
    assert count(db, "run_labels") >= 8


# --------------------------------------------------------------------------- Grafana

GRAFANA = os.path.join(HERE, "..", "docs", "grafana")


def _grafana(name: str) -> dict:
    with open(os.path.join(GRAFANA, name), encoding="utf-8") as f:
        return json.load(f)


def _sql_literal(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def _expand(sql: str, variables: dict) -> str:
    """Grafana's macros and variables as the PostgreSQL data source expands them."""
    import re

    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        r"\1 BETWEEN '1970-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z'",
        sql,
    )
    for name, values in variables.items():
        sql = sql.replace(f"${{{name}:sqlstring}}", ",".join(_sql_literal(v) for v in values))
    assert "$" not in sql, sql
    return sql


def test_grafana_history_panels_run_on_the_real_schema(pg):
    """Every panel's SQL and every variable's query, against a filled PostgreSQL store."""
    url = pg.new_db()
    _fill(url, 6)
    dash = _grafana("perfmon-history-postgresql.json")
    eng = store.engine(url)
    try:
        with eng.connect() as c:
            var_values = {}
            for var in dash["templating"]["list"]:
                rows = c.exec_driver_sql(var["query"]).all()
                assert rows, var["name"]
                var_values[var["name"]] = [r[0] for r in rows]
            variables = {"machine": var_values["machine"], "test": ["t.py::test_b"]}
            targets = [t for p in dash["panels"] for t in p["targets"]]
            assert len(targets) >= 6
            for t in targets:
                result = c.exec_driver_sql(_expand(t["rawSql"], variables))
                cols, rows = list(result.keys()), result.all()
                assert rows, t["rawSql"]
                if t["format"] == "time_series":
                    assert cols[0] == "time" and len(cols) >= 2
    finally:
        eng.dispose()
    titles = " ".join(p["title"] for p in dash["panels"])
    for what in ("Per-test trend", "Slowest tests over time", "Suite duration per commit"):
        assert what in titles


def test_grafana_daemon_panels_use_metrics_the_daemon_exports(daemon, tmp_path):
    import re

    from helpers import hello, record
    from prometheus_client import CollectorRegistry, generate_latest
    from pytest_perfmon.monitor.daemon.metrics import Metrics

    srv = daemon
    srv.send(b"w", P.HELLO, hello(role="worker", worker="gw0"))
    srv.send(b"w", P.BATCH, [0, [record(b"t.py::test_x")]])
    srv.send(b"w", P.BYE, "not a map")  # one protocol error, so that its counter has a sample
    srv.srv.book.sample()
    srv.srv.housekeeping()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Metrics(lambda: srv.srv.snapshot))
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in generate_latest(registry).decode().splitlines()
        if line and not line.startswith("#")
    }
    dash = _grafana("perfmon-daemon-prometheus.json")
    used = set()
    for p in dash["panels"]:
        for t in p["targets"]:
            used.update(re.findall(r"perfmon_[a-z_]+", t["expr"]))
    for var in dash["templating"]["list"]:
        used.update(re.findall(r"perfmon_[a-z_]+", var["query"]))
    assert len(used) >= 8
    assert used <= exported, used - exported


# --------------------------------------------------------------------------- noise (issue 21)


def _noisy(rep: dict, nodeid: str, cpu: float, wait: float) -> None:
    """Make ``nodeid`` of ``rep`` a single-threaded test of ``cpu`` seconds of work that waited
    ``wait`` seconds for a CPU: its times and noise certificate (as compare's tests do)."""
    from helpers import waited_entry

    waited_entry(rep["tests"][nodeid], cpu, wait)
    rep["tests"][nodeid]["noise"]["pressure"] = 0.9 if wait > 0.1 * (cpu + wait) else 0.05
    rep["tests"][nodeid]["noise"]["involuntary_switches"] = int(wait * 1000)


def test_the_store_keeps_the_noise_certificate(db):
    """Schema version 3: each result's noise fields and its children's CPU time, from the
    vocabulary's rows (an old report without them stores nulls)."""
    rep = make_report(1, {"t.py::a": 0.3, "t.py::b": 0.1})
    _noisy(rep, "t.py::a", 0.2, 0.1)
    rep["tests"]["t.py::a"]["noise"]["throttled_time"] = 0.02
    rep["tests"]["t.py::a"]["children"] = {"processes": 1, "cpu_time": 0.05}
    assert H.record_run(db, rep, {}, None, env=ENV) is None
    eng = store.engine(db)
    try:
        with eng.connect() as c:
            assert store._read_version(c) == store.SCHEMA_VERSION == 3
            cols = ["wait_time", "throttled_time", "steal_time", "pressure"]
            cols += ["involuntary_switches", "children_cpu_time"]
            q = (
                sa.select(store.tests.c.nodeid, *(store.results.c[k] for k in cols))
                .join(store.tests)
                .order_by(store.tests.c.nodeid)
            )
            got = [tuple(r) for r in c.execute(q)]
    finally:
        eng.dispose()
    assert got == [
        ("t.py::a", 0.1, 0.02, 0.0, 0.9, 100.0, 0.05),
        ("t.py::b", None, None, None, None, None, None),
    ]


def test_upgrade_from_version_2_adds_the_noise_columns(db):
    """A version 2 store (cpu_time) gets the noise columns, empty in its rows, by the
    vocabulary's step: no step of its own in store.MIGRATIONS but the generic one."""
    eng = store.engine(db)
    try:
        assert store.upgrade(eng, db, target=2) == 0  # what the previous release made
    finally:
        eng.dispose()
    assert H.record_run(db, make_report(1, {"t.py::a": 0.3}), {}, None, env=ENV) is None
    rep = make_report(2, {"t.py::a": 0.3})
    _noisy(rep, "t.py::a", 0.2, 0.1)
    assert H.record_run(db, rep, {}, None, env=ENV) is None
    eng = store.engine(db)
    try:
        with eng.connect() as c:
            assert store._read_version(c) == 3
            q = sa.select(store.results.c.wait_time).order_by(store.results.c.run_id)
            assert [r[0] for r in c.execute(q)] == [None, 0.1]
    finally:
        eng.dispose()


def _contended_history(db: str) -> None:
    """20 quiet runs of three CPU-bound tests (0.2 s of work), then 4 runs beside a busy
    neighbour: test_busy the same work waiting 0.3 s a run, test_more 30 % more work waiting as
    long, test_calm untouched."""
    rng = np.random.default_rng(21)
    names = ("t.py::test_busy", "t.py::test_more", "t.py::test_calm")
    for i in range(24):
        rep = make_report(i, dict.fromkeys(names, 0.2))
        for n in names:
            cpu = 0.2 * (1 + rng.normal(0, 0.01))
            wait = 0.002
            if i >= 20 and n != "t.py::test_calm":
                wait = 0.3 * (1 + rng.normal(0, 0.05))
                cpu *= 1.3 if n == "t.py::test_more" else 1.0
            _noisy(rep, n, cpu, wait)
        assert H.record_run(db, rep, {}, None, env=dict(ENV, GITHUB_SHA=f"c{i:02d}")) is None


def test_history_check_judges_times_without_the_wait(db, capsys):
    """The contended runs of the same work: "contended, not judged", not a regression; 30 %
    more work in the same contended runs: still a regression. --noise off: as measured."""
    _contended_history(db)
    capsys.readouterr()
    assert cli.main(["history", "check", "--db", db, "--format", "json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["noise"] == "on"
    regs = {(c["test"], c["metric"]) for c in result["changes"] if c["kind"] == "regression"}
    assert regs == {("t.py::test_more", "duration"), ("t.py::test_more", "cpu_time")}
    judged = [c for c in result["changes"] if c["metric"] == "duration"]
    assert judged[0]["judged"] == "without_wait" and 25 < judged[0]["change_percent"] < 35
    nj = result["contended_not_judged"]
    assert [(c["test"], c["metric"], c["kind"]) for c in nj] == [
        ("t.py::test_busy", "duration", "regression")
    ]
    assert nj[0]["contended_after"] == 4 and nj[0]["runs_after"] == 4
    assert cli.main(["history", "check", "--db", db]) == 1
    text = capsys.readouterr().out
    assert "Contended, not judged: 1" in text and "t.py::test_busy" in text
    assert "4 of 4 run(s) after it contended" in text
    assert cli.main(["history", "check", "--db", db, "--format", "markdown"]) == 1
    assert "Contended, not judged" in capsys.readouterr().out

    # today's behaviour: the waiting is a regression
    assert cli.main(["history", "check", "--db", db, "--noise", "off", "--format", "json"]) == 1
    off = json.loads(capsys.readouterr().out)
    regs = {(c["test"], c["metric"]) for c in off["changes"] if c["kind"] == "regression"}
    assert ("t.py::test_busy", "duration") in regs and off["contended_not_judged"] == []
    assert all("judged" not in c for c in off["changes"])


def test_limits_medians_without_the_wait(db):
    """--perf-limit-history's medians: of the times less the wait (PERFMON_NOISE=off: as
    measured), so that contended runs do not raise a test's limit."""
    from pytest_perfmon.monitor.history import medians

    rng = np.random.default_rng(5)
    for i in range(9):
        rep = make_report(i, {"t.py::a": 0.2})
        rep.pop("system")  # recorded as this machine's, whose runs the medians read
        wait = 0.5 if i % 3 else 0.001  # two runs in three beside a busy neighbour
        _noisy(rep, "t.py::a", 0.2 * (1 + rng.normal(0, 0.01)), wait)
        assert H.record_run(db, rep, {}, None, env=ENV) is None
    on = medians.medians(db, 10)["tests"]["t.py::a"]
    off = medians.medians(db, 10, noise=False)["tests"]["t.py::a"]
    assert on["duration"][1] == off["duration"][1] == 9
    assert on["duration"][0] == pytest.approx(0.2, rel=0.05)
    assert on["call"][0] == pytest.approx(0.2, rel=0.05)
    assert off["duration"][0] == pytest.approx(0.7, rel=0.05)
