"""The run history's store (SQLite and a real PostgreSQL): URLs, the machine and commit
context, what a run stores and the schema's upgrades, one transaction per run, a fault as one
line, and the recording of a run by the monitor and the daemon."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers import need_history

need_history(allow_module_level=True)  # the test extra installs the history extra

import sqlalchemy as sa  # noqa: E402
from helpers import (  # noqa: E402
    HISTORY_ENV,
    count_rows,
    golden,
    hello,
    make_report,
    noisy_entry,
    record,
)
from pytest_perfmon.monitor import cli, history, protocol  # noqa: E402
from pytest_perfmon.monitor.history import context, store  # noqa: E402

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
    got = history.check_url(url)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got and "\n" not in got
        assert got.startswith("--perf-history: ")


def test_check_url_names_the_missing_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(history.url, "_missing", lambda m: m == "psycopg")
    assert history.check_url(str(tmp_path / "h.db")) is None
    assert "pytest-perfmon[history]" in history.check_url("postgresql://u@h/db")
    monkeypatch.setattr(history.url, "_missing", lambda m: True)
    assert "needs SQLAlchemy" in history.check_url(str(tmp_path / "h.db"))


def test_light_imports_do_not_load_the_database_layer():
    """The pytest process may call check_url; `perfmon` starts without SQLAlchemy."""
    code = (
        "import sys; from pytest_perfmon.monitor.history import check_url; "
        "import pytest_perfmon.monitor.cli, pytest_perfmon.monitor.collector; "
        "import pytest_perfmon.monitor.daemon.core; check_url('x.db'); "
        "bad = [m for m in ('sqlalchemy', 'numpy', 'psycopg') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_redact():
    assert history.redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert history.redact("h.db") == "h.db"


# --------------------------------------------------------------------------- context


def test_commit_branch_sources(tmp_path):
    assert context.commit_branch(None, HISTORY_ENV) == ("a" * 40, "main")
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
    assert history.record_run(db, rep, labels, None, env=HISTORY_ENV) is None
    assert (
        history.record_run(db, rep, labels, None, env=HISTORY_ENV) is None
    )  # the same report: stored once
    assert count_rows(db, "runs") == 1
    assert count_rows(db, "results") == len(rep["tests"])
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
    assert history.record_run(db, golden(), {}, None, env=HISTORY_ENV) is None
    eng = store.engine(db)
    with eng.begin() as c:
        c.execute(sa.update(store.perfmon_meta).values(value="99"))
    eng.dispose()
    warning = history.record_run(db, golden("baseline.json"), {}, None, env=HISTORY_ENV)
    assert "schema version 99" in warning and "newer pytest-perfmon" in warning
    assert cli.main(["history", "runs", "--db", db]) == 2
    assert count_rows(db, "runs") == 1


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
    assert history.record_run(db, rep, {}, None, env=HISTORY_ENV) is None
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
    assert history.record_run(url, golden(), {}, None, env=HISTORY_ENV) is None
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
    warning = history.record_run(db, golden(), {}, None, env=HISTORY_ENV)
    assert "disk I/O error" in warning and "\n" not in warning
    assert (
        count_rows(db, "runs") == 0
        and count_rows(db, "tests") == 0
        and count_rows(db, "machines") == 0
    )


def test_unreachable_postgresql_is_one_warning(tmp_path):
    t = time.monotonic()
    warning = history.record_run(
        f"postgresql://u@/db?host={tmp_path}", golden(), {}, None, env=HISTORY_ENV
    )
    assert warning.startswith("history not recorded: history store postgresql://")
    assert "\n" not in warning and time.monotonic() - t < 10


def test_locked_sqlite_is_one_warning(tmp_path):
    url = str(tmp_path / "h.db")
    assert history.record_run(url, golden(), {}, None, env=HISTORY_ENV) is None
    holder = sqlite3.connect(url, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        warning = history.record_run(
            url, golden("baseline.json"), {}, None, env=HISTORY_ENV, timeout=0.2
        )
    finally:
        holder.rollback()
        holder.close()
    assert "database is locked" in warning and "\n" not in warning
    assert history.record_run(url, golden("baseline.json"), {}, None, env=HISTORY_ENV) is None
    assert count_rows(url, "runs") == 2


def test_locked_postgresql_is_one_warning(pg):
    url = pg.new_db()
    assert history.record_run(url, golden(), {}, None, env=HISTORY_ENV) is None
    holder = store.engine(url)
    with holder.connect() as c:
        c.exec_driver_sql("BEGIN")
        c.exec_driver_sql("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        warning = history.record_run(
            url, golden("baseline.json"), {}, None, env=HISTORY_ENV, timeout=0.3
        )
        c.exec_driver_sql("ROLLBACK")
    holder.dispose()
    assert "lock timeout" in warning and "\n" not in warning
    assert count_rows(url, "runs") == 1


# --------------------------------------------------------------------------- the collectors


def _session(srv, finish: dict):
    assert srv.send(b"a", protocol.HELLO, hello())[0] == protocol.READY
    srv.send(b"a", protocol.BATCH, [0, [record(b"t.py::test_a"), record(b"t.py::test_b", 1001)]])
    assert srv.send(b"a", protocol.BYE, {"sent": 1}) == (protocol.ACK, {"missing": []})
    body = {"start": 999.0, "stop": 1002.0, "exit_status": 0, **finish}
    return srv.send(b"a", protocol.FINISH, body)


@pytest.mark.parametrize("collector", ["monitor", "daemon"])
def test_collector_records_the_run(collector, request, tmp_path, db):
    srv = request.getfixturevalue(f"inprocess_{collector}")
    out = str(tmp_path / "perf.json")
    finish = {"output": out, "history": db, "labels": {"job": "unit"}, "rootdir": str(tmp_path)}
    kind, done = _session(srv, finish)
    assert kind == protocol.DONE and done["ok"] and done["history_warning"] is None, done
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
    assert count_rows(db, "runs") == 1


@pytest.mark.parametrize("collector", ["monitor", "daemon"])
def test_collector_with_unusable_store_still_writes_the_report(collector, request, tmp_path):
    srv = request.getfixturevalue(f"inprocess_{collector}")
    out = str(tmp_path / "perf.json")
    bad = f"postgresql://u@/db?host={tmp_path}"  # no server there
    kind, done = _session(srv, {"output": out, "history": bad})
    assert kind == protocol.DONE and done["ok"], done
    assert done["history_warning"].startswith("history not recorded:")
    assert "\n" not in done["history_warning"]
    with open(out, encoding="utf-8") as f:
        assert json.load(f)["tests"]


def test_finish_history_fields_are_checked():
    ok = protocol.parse_finish({"history": "h.db", "labels": {"a": "b"}, "rootdir": "/x"})
    assert (ok.history, ok.labels, ok.rootdir) == ("h.db", {"a": "b"}, "/x")
    assert "history" not in ok.as_session() and "labels" not in ok.as_session()
    assert protocol.parse_finish({}).history is None
    for bad in (
        {"history": 3},
        {"labels": ["a"]},
        {"labels": {"a": 1}},
        {"labels": {"": "x"}},
        {"rootdir": "a\0b"},
        {"history": ""},
        {"labels": {str(i): "v" for i in range(101)}},
    ):
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_finish(bad)


# --------------------------------------------------------------------------- noise (issue 21)


def test_the_store_keeps_the_noise_certificate(db):
    """Schema version 3: each result's noise fields and its children's CPU time, from the
    vocabulary's rows (an old report without them stores nulls)."""
    rep = make_report(1, {"t.py::a": 0.3, "t.py::b": 0.1})
    noisy_entry(rep, "t.py::a", 0.2, 0.1)
    rep["tests"]["t.py::a"]["noise"]["throttled_time"] = 0.02
    rep["tests"]["t.py::a"]["children"] = {"processes": 1, "cpu_time": 0.05}
    assert history.record_run(db, rep, {}, None, env=HISTORY_ENV) is None
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
    assert (
        history.record_run(db, make_report(1, {"t.py::a": 0.3}), {}, None, env=HISTORY_ENV) is None
    )
    rep = make_report(2, {"t.py::a": 0.3})
    noisy_entry(rep, "t.py::a", 0.2, 0.1)
    assert history.record_run(db, rep, {}, None, env=HISTORY_ENV) is None
    eng = store.engine(db)
    try:
        with eng.connect() as c:
            assert store._read_version(c) == 3
            q = sa.select(store.results.c.wait_time).order_by(store.results.c.run_id)
            assert [r[0] for r in c.execute(q)] == [None, 0.1]
    finally:
        eng.dispose()
