"""The history store: SQLAlchemy 2 Core tables on SQLite or PostgreSQL (psycopg 3).

Schema (version :data:`SCHEMA_VERSION`; docs/history.md explains it):

``perfmon_meta``  key/value; ``schema_version`` is the store's version.
``machines``      id, fingerprint (unique), description (JSON: what the fingerprint is made of).
``tests``         id, nodeid (unique): node ids are stored once, results point at them.
``runs``          id, run_key (unique: sha256 of the report, so an import is idempotent),
                  started_at (UTC), duration, commit_sha, branch, machine_id, pytest_version,
                  perfmon_version, python_version, workers, exit_status, total_tests, aborted,
                  possibly_incomplete, source (monitor|daemon|import), recorded_at.
``run_labels``    run_id, key, value: ``--perf-label`` / ``--label`` pairs.
``results``       run_id, test_id, every number of the report's test entry (the columns of
                  :data:`..vocabulary.STORED`): duration,
                  setup_time, call_time, teardown_time, start_mb, peak_mb, end_mb, delta_mb,
                  cpu_percent; cpu_time (since version 2: cpu_percent x duration / 100, the
                  test's CPU seconds); outcome, worker. One row per node id, from the
                  report's entry; a test pytest executed more than once (the entry's
                  ``executions``) stores its sums and an outcome marked ``"passed x3"``
                  (:func:`stored_outcome`), which every passed-only reader leaves out.

Migrations are a versioned upgrade of our own (no Alembic dependency): :data:`MIGRATIONS` maps
each version to the function that upgrades a store from the version before; they run in one
transaction under a lock (SQLite ``BEGIN IMMEDIATE``, PostgreSQL an advisory lock), so that
concurrent first writers create the schema once; a new store runs every step from 1. A
store whose version is newer than this code's is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.pool import NullPool

from ..noise import is_contended
from ..units import number
from ..vocabulary import (
    BY_NAME,
    COLUMNS,
    HISTORY_METRICS,
    NOISE_COLUMNS,
    STORED,
    lost_to_waiting,
    without_wait,
)
from . import url as store_url
from .changes import MEASURED, WAITS

#: The store's version: its last migration of its own (2), or the newest ``since`` of the
#: vocabulary's columns when that is newer (a version that only adds a metric's column needs
#: no step here: :func:`_add_columns`).
SCHEMA_VERSION = max(2, *COLUMNS.values())
#: How long a writer waits for another one (SQLite busy timeout, PostgreSQL connect timeout).
DEFAULT_TIMEOUT = 10.0
PG_LOCK_ID = 0x7065_7266_6D6F_6E  # "perfmon": the advisory lock of migrations

#: What ``history show/check`` read (:data:`..vocabulary.HISTORY_METRICS`).
METRICS = HISTORY_METRICS
#: the numbers of a result, each with the schema version that added its column
NUMBERS = COLUMNS


def _define(metadata: sa.MetaData, version: int) -> sa.MetaData:
    """The tables of schema ``version`` in ``metadata``. Columns carry the version that added
    them, so that a migration step creates exactly its own version's schema."""
    sa.Table(
        "perfmon_meta",
        metadata,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    sa.Table(
        "machines",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
    )
    sa.Table(
        "tests",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("nodeid", sa.Text, nullable=False, unique=True),
    )
    sa.Table(
        "runs",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_key", sa.String(64), nullable=False, unique=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration", sa.Float),
        sa.Column("commit_sha", sa.String(128)),
        sa.Column("branch", sa.Text),
        sa.Column("machine_id", sa.Integer, sa.ForeignKey("machines.id"), nullable=False),
        sa.Column("pytest_version", sa.String(64)),
        sa.Column("perfmon_version", sa.String(64)),
        sa.Column("python_version", sa.String(64)),
        sa.Column("workers", sa.Integer),
        sa.Column("exit_status", sa.Integer),
        sa.Column("total_tests", sa.Integer, nullable=False),
        sa.Column("aborted", sa.Boolean, nullable=False),
        sa.Column("possibly_incomplete", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Index("ix_runs_started", "started_at"),
        sa.Index("ix_runs_machine", "machine_id", "started_at"),
    )
    sa.Table(
        "run_labels",
        metadata,
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    sa.Table(
        "results",
        metadata,
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("test_id", sa.Integer, sa.ForeignKey("tests.id"), primary_key=True),
        *(sa.Column(n, sa.Float) for n, since in NUMBERS.items() if since <= version),
        sa.Column("outcome", sa.String(32)),
        sa.Column("worker", sa.String(128)),
        sa.Index("ix_results_test_run", "test_id", "run_id"),
    )
    return metadata


meta = _define(sa.MetaData(), SCHEMA_VERSION)
perfmon_meta = meta.tables["perfmon_meta"]
machines = meta.tables["machines"]
tests = meta.tables["tests"]
runs = meta.tables["runs"]
run_labels = meta.tables["run_labels"]
results = meta.tables["results"]


#: the order of runs: by start time (imports of old artifacts fall into place), then by id
NEWEST_FIRST = (runs.c.started_at.desc(), runs.c.id.desc())


class HistoryError(Exception):
    """A store that cannot be used (one line, names the problem)."""


# --------------------------------------------------------------------------- engine


def engine(url: str, timeout: float = DEFAULT_TIMEOUT) -> sa.Engine:
    """An engine for a history URL (plain path, sqlite:///, postgresql://). One connection
    at a time, not pooled: the collector opens the store once per run."""
    sa_url = store_url.normalize(url)
    if sa_url.startswith("sqlite"):
        eng = sa.create_engine(sa_url, poolclass=NullPool, connect_args={"timeout": timeout})

        @sa.event.listens_for(eng, "connect")
        def _connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we say BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            try:
                # persistent; switching needs the file to ourselves, so it may be busy while
                # other writers hold it: then one of them (or the next run) switches it
                cur.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError:
                pass
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.close()

        @sa.event.listens_for(eng, "begin")
        def _begin(conn: sa.Connection) -> None:
            # writers take the write lock at BEGIN: no deadlock between two readers upgrading
            write = conn.get_execution_options().get("perfmon_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return eng
    return sa.create_engine(
        sa_url,
        poolclass=NullPool,
        connect_args={
            "connect_timeout": max(1, int(timeout)),
            "application_name": "perfmon",
            # a table or advisory lock held by someone else: give up after ``timeout``
            "options": "-c TimeZone=UTC "
            f"-c lock_timeout={int(timeout * 1000)} "
            f"-c statement_timeout={int(max(60.0, 3 * timeout) * 1000)}",
        },
    )


def is_sqlite(eng: sa.Engine) -> bool:
    return eng.dialect.name == "sqlite"


def unreadable(exc: BaseException, url: str) -> str:
    """One line for what went wrong while a command read the store (most often a column
    edited by hand: text where a number or a time goes, a value out of range)."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"reading history store {store_url.redact(url)}: {type(exc).__name__}: {text}"


def describe_error(exc: BaseException, url: str) -> str:
    """One line for a database error."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return f"history store {store_url.redact(url)}: {type(orig).__name__}: {text}"


# --------------------------------------------------------------------------- migrations


def _v1(conn: sa.Connection) -> None:
    _define(sa.MetaData(), 1).create_all(conn, checkfirst=True)


def _v2(conn: sa.Connection) -> None:
    """results.cpu_time: the CPU seconds of the test's process, filled for the rows already
    there from what they hold (cpu_percent is CPU time over wall time, in %)."""
    col = sa.Float().compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE results ADD COLUMN cpu_time {col}"))
    conn.execute(
        sa.text(
            "UPDATE results SET cpu_time = cpu_percent * duration / 100.0 "
            "WHERE cpu_percent IS NOT NULL AND duration IS NOT NULL"
        )
    )


def _add_columns(version: int) -> Callable[[sa.Connection], None]:
    """The upgrade to ``version`` that adds the results columns of the metrics whose column
    came with it (:data:`..vocabulary.METRICS`: ``since``), empty in the rows already there."""

    def step(conn: sa.Connection) -> None:
        col = sa.Float().compile(dialect=conn.dialect)
        for name, since in COLUMNS.items():
            if since == version:
                conn.execute(sa.text(f"ALTER TABLE results ADD COLUMN {name} {col}"))

    return step


#: version -> the upgrade from version - 1. Append, never edit a shipped step. A version only
#: a metric's new column brings is :func:`_add_columns`.
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {
    1: _v1,
    2: _v2,
    **{v: _add_columns(v) for v in range(3, SCHEMA_VERSION + 1)},
}


def _read_version(conn: sa.Connection) -> int:
    inspector = sa.inspect(conn)
    if not inspector.has_table("perfmon_meta"):
        # (no more: a writer creating the store commits its tables and the row together, so
        # a look at the runs table now could see them appear since the look above)
        return 0
    v = conn.execute(
        sa.select(perfmon_meta.c.value).where(perfmon_meta.c.key == "schema_version")
    ).scalar()
    if v is None:
        if inspector.has_table("runs"):  # upgrading it from 0 would add its columns again
            raise HistoryError(
                "the store has runs but no schema_version (its perfmon_meta row was removed): "
                "put the row back, or record into a new store"
            )
        return 0
    try:
        return int(v) if v is not None else 0
    except ValueError:
        raise HistoryError(f"the store's schema_version is not a number: {v!r}") from None


def _check_version(v: int, url: str) -> None:
    if v > SCHEMA_VERSION:
        raise HistoryError(
            f"history store {store_url.redact(url)} has schema version {v}, written by a newer "
            f"pytest-perfmon (this one knows up to {SCHEMA_VERSION}): upgrade pytest-perfmon"
        )


def write_conn(eng: sa.Engine) -> sa.Connection:
    return eng.connect().execution_options(perfmon_write=True)


def upgrade(eng: sa.Engine, url: str = "", target: int = SCHEMA_VERSION) -> int:
    """Bring the store to version ``target`` (default and in use: :data:`SCHEMA_VERSION`;
    creating it if empty). Returns the version it had. Raises :class:`HistoryError` for a store
    of a newer version than this code knows."""
    url = url or str(eng.url)
    with eng.connect() as conn:
        v = _read_version(conn)
    _check_version(v, url)
    if v >= target:
        return v
    with write_conn(eng) as conn, conn.begin():
        if not is_sqlite(eng):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_ID})
        v = _read_version(conn)  # again, under the lock: another writer may have done it
        _check_version(v, url)
        for step in range(v + 1, target + 1):
            MIGRATIONS[step](conn)
        if v < target:
            if v == 0:
                conn.execute(
                    sa.insert(perfmon_meta).values(key="schema_version", value=str(target))
                )
            else:
                conn.execute(
                    sa.update(perfmon_meta)
                    .where(perfmon_meta.c.key == "schema_version")
                    .values(value=str(target))
                )
    return v


def _sqlite_foreign(path: str, timeout: float) -> bool:
    """Whether the SQLite file at ``path`` holds tables and none of ours (another program's
    database), read without writing; False where it cannot tell (an empty file, not a
    database, locked...): the engine then goes on as before."""
    from urllib.parse import quote

    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=timeout)
        try:
            names = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return bool(names) and "perfmon_meta" not in names


def check_readable(url: str, timeout: float = DEFAULT_TIMEOUT, others_ok: bool = True) -> None:
    """Raise HistoryError when ``url`` is a SQLite file that does not exist (a read command's
    typo, never an empty history), or, ``others_ok`` False, another program's database."""
    if store_url.kind(url) != "sqlite":
        return
    import os

    path = store_url.normalize(url)[len("sqlite:///") :]
    if not os.path.exists(path):
        raise HistoryError(f"history store {path} does not exist")
    if not others_ok and _sqlite_foreign(path, timeout):  # before an engine makes it WAL
        raise HistoryError(
            f"history store {path} holds no perfmon history (its tables are another "
            "program's): nothing written into it"
        )


def open_store(
    url: str, timeout: float = DEFAULT_TIMEOUT, create: bool = True, others_ok: bool = True
) -> sa.Engine:
    """An engine on an up-to-date store. ``create`` False: a SQLite file that does not exist
    is an error (for the read commands) rather than a new empty store. ``others_ok`` False
    (the ``perfmon`` read commands): a SQLite database of another program's tables, none of
    ours, is an error before anything is written into it (an empty file is a new store, as
    for the plugin's readers, whose first run of a matrix meets one)."""
    if not create:
        check_readable(url, timeout, others_ok)
    eng = engine(url, timeout)
    try:
        upgrade(eng, url)
    except HistoryError:
        eng.dispose()
        raise
    except sa.exc.SQLAlchemyError as exc:
        eng.dispose()
        raise HistoryError(describe_error(exc, url)) from None
    return eng


# --------------------------------------------------------------------------- writing


def run_key(report: Mapping) -> str:
    """The report's identity: sha256 of its canonical JSON (sorted keys). The same report
    recorded by the collector and imported later from its JSON file has the same key."""
    text = json.dumps(report, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _parse_time(text: Any) -> Optional[dt.datetime]:
    if not isinstance(text, str):
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    # in UTC: SQLite keeps the text as given (an offset read back as if it were UTC), where
    # PostgreSQL converts; runs sort by it on both
    return t.astimezone(dt.timezone.utc) if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _num(v: Any) -> Optional[float]:
    f = number(v)
    return None if f is None else float(f)


def _str(v: Any, n: int) -> Optional[str]:
    return None if v is None else str(v)[:n]


def cpu_time(entry: Mapping) -> Optional[float]:
    """The CPU seconds of a report's test entry: its ``cpu_percent`` (the process's CPU time
    over the test's wall time, which the plugin reads with time.process_time at the test's
    boundaries) times its duration; None when either is missing. Migration 2 fills older rows
    with the same expression."""
    return BY_NAME["cpu_time"].get(entry)


#: Between a stored outcome and how many times pytest executed the test: ``"passed x3"``.
EXECUTIONS_MARK = " x"
#: Outcomes whose figures are not one whole execution of the test (it stopped early).
PARTIAL = ("crashed", "interrupted")


def stored_outcome(entry: Mapping) -> Optional[str]:
    """The ``outcome`` column of a report's test entry. A test pytest executed more than once
    (pytest-rerunfailures attempts, ``--dist each``, ``--keep-duplicates``, a crashed worker's
    test run again) has figures that are the sums over its executions, not one run's: its
    outcome is stored with the count, ``"passed x3"``, so that the readers of passed results
    (``history check``, the limits' medians, the HTML trends, the Grafana dashboards) leave it
    out and ``history show`` says what it was. No schema change: the column is text."""
    outcome = entry.get("outcome")
    if outcome is None:
        return None
    ex = entry.get("executions")
    n = len(ex) if isinstance(ex, list) else 0
    text = str(outcome)
    return (f"{text[:20]}{EXECUTIONS_MARK}{n}" if n > 1 else text)[:32]


def one_execution(outcome: Optional[str]) -> bool:
    """Whether a stored result's figures measure one whole execution of its test: not marked
    as executed more than once, not crashed or interrupted."""
    return outcome is None or (EXECUTIONS_MARK not in outcome and outcome not in PARTIAL)


def _insert_ignore(eng_or_conn: Any, table: sa.Table) -> Any:
    d = pg_dialect if eng_or_conn.dialect.name == "postgresql" else sqlite_dialect
    return d.insert(table).on_conflict_do_nothing()


def _machine_id(conn: sa.Connection, fp: str, desc: Mapping) -> int:
    conn.execute(
        _insert_ignore(conn, machines),
        {"fingerprint": fp, "description": json.dumps(dict(desc), sort_keys=True)},
    )
    return conn.execute(sa.select(machines.c.id).where(machines.c.fingerprint == fp)).scalar_one()


def _test_ids(conn: sa.Connection, nodeids: list) -> dict:
    ids: dict[str, int] = {}
    chunk = 500
    for i in range(0, len(nodeids), chunk):
        part = nodeids[i : i + chunk]
        q = sa.select(tests.c.nodeid, tests.c.id).where(tests.c.nodeid.in_(part))
        ids.update(conn.execute(q).all())
    new = [n for n in nodeids if n not in ids]
    if new:
        conn.execute(_insert_ignore(conn, tests), [{"nodeid": n} for n in new])
        for i in range(0, len(new), chunk):
            part = new[i : i + chunk]
            q = sa.select(tests.c.nodeid, tests.c.id).where(tests.c.nodeid.in_(part))
            ids.update(conn.execute(q).all())
    return ids


def insert_run(
    eng: sa.Engine,
    report: Mapping,
    *,
    commit: Optional[str],
    branch: Optional[str],
    labels: Mapping[str, str],
    machine_fp: str,
    machine_desc: Mapping,
    source: str,
) -> tuple[int, bool]:
    """Store one run in one transaction: (run id, True if new; False if it was stored
    already)."""
    session = report.get("session") or {}
    test_map = report.get("tests") or {}
    if not isinstance(session, Mapping) or not isinstance(test_map, Mapping):
        raise HistoryError("not a perfmon report: session or tests missing")
    key = run_key(report)
    now = dt.datetime.now(dt.timezone.utc)
    started = _parse_time(session.get("timestamp")) or now
    system = report.get("system")
    if not isinstance(system, Mapping):
        system = {}
    workers = report.get("workers")
    with write_conn(eng) as conn, conn.begin():
        old = conn.execute(sa.select(runs.c.id).where(runs.c.run_key == key)).scalar()
        if old is not None:
            return old, False
        mid = _machine_id(conn, machine_fp, machine_desc)
        exit_status = session.get("exit_status")
        row = {
            "run_key": key,
            "started_at": started,
            "recorded_at": now,
            "duration": _num(session.get("duration")),
            "commit_sha": _str(commit, 128),
            "branch": _str(branch, 1000),
            "machine_id": mid,
            "pytest_version": _str(session.get("pytest_version"), 64),
            "perfmon_version": _str(session.get("perfmon_version"), 64),
            "python_version": _str(
                system.get("python_version") or machine_desc.get("python_version"), 64
            ),
            "workers": len(workers) if isinstance(workers, Mapping) else None,
            "exit_status": exit_status if isinstance(exit_status, int) else None,
            "total_tests": len(test_map),
            "aborted": bool(session.get("aborted")),
            "possibly_incomplete": bool(session.get("possibly_incomplete")),
            "source": source[:16],
        }
        ins = _insert_ignore(conn, runs).values(**row).returning(runs.c.id)
        rid = conn.execute(ins).scalar()
        if rid is None:  # a concurrent writer stored the same report first
            rid = conn.execute(sa.select(runs.c.id).where(runs.c.run_key == key)).scalar_one()
            return rid, False
        if labels:
            conn.execute(
                sa.insert(run_labels),
                [{"run_id": rid, "key": str(k)[:128], "value": str(v)} for k, v in labels.items()],
            )
        nodeids = [str(n) for n in test_map]
        ids = _test_ids(conn, nodeids)
        rows = []
        for nodeid, t in test_map.items():
            if not isinstance(t, Mapping):
                continue
            result = {"run_id": rid, "test_id": ids[str(nodeid)]}
            result.update((m.column, _num(m.get(t))) for m in STORED if m.column)
            result["outcome"] = stored_outcome(t)
            result["worker"] = _str(t.get("worker"), 128)
            rows.append(result)
        if rows:
            conn.execute(sa.insert(results), rows)
    return rid, True


# --------------------------------------------------------------------------- reading


def list_runs(eng: sa.Engine, limit: int) -> list[dict]:
    """The newest ``limit`` runs, newest first, with their labels and machine fingerprint."""
    q = (
        sa.select(runs, machines.c.fingerprint)
        .join(machines, machines.c.id == runs.c.machine_id)
        .order_by(*NEWEST_FIRST)
        .limit(limit)
    )
    with eng.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
        ids = [r["id"] for r in rows]
        labels: dict[int, dict] = {}
        if ids:
            lq = sa.select(run_labels).where(run_labels.c.run_id.in_(ids))
            for label in conn.execute(lq):
                labels.setdefault(label.run_id, {})[label.key] = label.value
    for r in rows:
        r["labels"] = labels.get(r["id"], {})
        r.pop("run_key", None)
    return rows


def newest_machine(eng: sa.Engine, test_id: Optional[int] = None) -> Optional[int]:
    """The machine of the newest run (holding ``test_id`` when given)."""
    q = sa.select(runs.c.machine_id).order_by(*NEWEST_FIRST).limit(1)
    if test_id is not None:
        q = q.join(results, results.c.run_id == runs.c.id).where(results.c.test_id == test_id)
    with eng.connect() as conn:
        return conn.execute(q).scalar()


def test_id(eng: sa.Engine, nodeid: str) -> Optional[int]:
    with eng.connect() as conn:
        return conn.execute(sa.select(tests.c.id).where(tests.c.nodeid == nodeid)).scalar()


def series(
    eng: sa.Engine, tid: int, metric: str, machine_id: Optional[int], limit: int
) -> list[dict]:
    """One test's newest ``limit`` results, oldest first: run, time, commit, outcome, value."""
    col = results.c[metric]
    q = (
        sa.select(
            runs.c.id.label("run"),
            runs.c.started_at,
            runs.c.commit_sha,
            runs.c.branch,
            results.c.outcome,
            col.label("value"),
        )
        .join(runs, runs.c.id == results.c.run_id)
        .where(results.c.test_id == tid)
        .order_by(*NEWEST_FIRST)
        .limit(limit)
    )
    if machine_id is not None:
        q = q.where(runs.c.machine_id == machine_id)
    with eng.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    rows.reverse()
    for r in rows:  # a value edited into the store by hand (text, infinity): none
        r["value"] = number(r["value"])
    return rows


def window(
    eng: sa.Engine,
    machine_id: Optional[int],
    size: int,
    metrics: Iterable[str],
    noise: bool = False,
) -> tuple[list[dict], dict]:
    """The newest ``size`` runs (of one machine, or all), oldest first, and per test node id
    its passed results as {metric: [(run index, value), ...]}.

    ``noise``: each value is judged without the time the test waited for a CPU
    (:func:`..vocabulary.without_wait`, by the stored noise certificate; as measured where a
    result has none), and each test also has ``WAITS`` (per run: the seconds lost, whether it
    ran contended) and ``(MEASURED, metric)`` (the points as measured)."""
    metrics = list(metrics)
    cols = metrics + ([c for c in NOISE_COLUMNS if c not in metrics] if noise else [])
    rq = sa.select(runs.c.id, runs.c.commit_sha, runs.c.branch, runs.c.started_at)
    if machine_id is not None:
        rq = rq.where(runs.c.machine_id == machine_id)
    rq = rq.order_by(*NEWEST_FIRST).limit(size)
    out: dict[str, dict] = {}
    with eng.connect() as conn:
        run_rows = [dict(r._mapping) for r in conn.execute(rq)]
        run_rows.reverse()
        if not run_rows:
            return [], {}
        index = {r["id"]: i for i, r in enumerate(run_rows)}
        q = (
            sa.select(tests.c.nodeid, results.c.run_id, *(results.c[c] for c in cols))
            .join(tests, tests.c.id == results.c.test_id)
            .where(results.c.run_id.in_(list(index)))
            .where(results.c.outcome == "passed")
        )
        for row in conn.execute(q):
            i = index.get(row[1])
            if i is None:
                continue
            per = out.get(row[0])
            if per is None:
                per = out[row[0]] = {m: [] for m in metrics}
                if noise:
                    per[WAITS] = []
                    per.update(((MEASURED, m), []) for m in metrics)
            # number(): a value edited into the store by hand (text, infinity) is no point
            if not noise:
                for m, v in zip(metrics, row[2:]):
                    v = number(v)
                    if v is not None:
                        per[m].append((i, v))
                continue
            vals = dict(zip(cols, row[2:]))
            d = number(vals["duration"])
            lost = lost_to_waiting(
                d, number(vals["wait_time"]), number(vals["cpu_time"]),
                number(vals["children_cpu_time"]),
            )  # fmt: skip
            per[WAITS].append((i, lost, is_contended(vals, d)))
            for m in metrics:
                v = number(vals[m])
                if v is not None:
                    per[(MEASURED, m)].append((i, v))
                    per[m].append((i, without_wait(BY_NAME[m], v, d, lost)))
    for per in out.values():
        for points in per.values():
            points.sort()
    return run_rows, out


def prune(eng: sa.Engine, keep: int) -> int:
    """Delete all but the newest ``keep`` runs (one transaction). Returns how many went."""
    with write_conn(eng) as conn, conn.begin():
        q = sa.select(runs.c.id).order_by(*NEWEST_FIRST).offset(keep)
        gone = [r[0] for r in conn.execute(q)]
        for i in range(0, len(gone), 500):
            part = gone[i : i + 500]
            conn.execute(sa.delete(results).where(results.c.run_id.in_(part)))
            conn.execute(sa.delete(run_labels).where(run_labels.c.run_id.in_(part)))
            conn.execute(sa.delete(runs).where(runs.c.id.in_(part)))
        if gone:
            used = sa.select(results.c.test_id).distinct()
            conn.execute(sa.delete(tests).where(tests.c.id.not_in(used)))
    return len(gone)
