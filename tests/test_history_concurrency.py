"""Concurrent writers of one history store (SQLite and a real PostgreSQL): processes that
create the schema and write at the same moment, and real pytest sessions, each with its own
monitor, ending at the same moment: no run lost."""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys

from helpers import need_history

need_history(allow_module_level=True)  # the test extra installs the history extra

import preloaded  # noqa: E402
from helpers import count_rows, make_report  # noqa: E402
from pytest_perfmon.monitor import history  # noqa: E402

# The database layer, imported here (record_run imports it when first called): the writers
# forked below have it already, rather than each importing SQLAlchemy (0.4 CPU-s) after their
# go, which spread out the moment they write at.
from pytest_perfmon.monitor.history import store  # noqa: E402, F401

# --------------------------------------------------------------------------- concurrency


def _writer(url: str, go, i: int, path: str, results) -> None:
    with open(path, encoding="utf-8") as f:
        rep = json.load(f)
    go.wait(30)
    w = history.record_run(url, rep, {"writer": str(i)}, None, source="test", timeout=30)
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
    assert count_rows(db, "runs") == 8
    assert count_rows(db, "results") == 8 * 501
    assert count_rows(db, "tests") == 500 + 8
    assert count_rows(db, "machines") == 1


#: Concurrent pytest sessions below: four, held at a barrier so that they write at the same
#: moment. Eight sessions started together and left to run wrote over about 0.5 s on a
#: two-core machine (their starts, CPU-bound, queue for the cores): the first one alone, 0.8 s
#: before the others, on an empty store, then clumps of two to four. Four sessions that wait
#: for each other in their last test wrote within 10-70 ms of each other, every one of them on
#: the empty store (its schema made by whichever gets there first): the same race as eight
#: such writers, harder (it now includes making the schema), for half the sessions (each
#: costs about 0.35 CPU-s: its pytest, its monitor and the store's libraries there).
SESSIONS = 4

#: The inner suite: ten tests, the last of which waits (up to a minute, then fails) until every
#: session has reached it: all end, and their monitors write, together.
SESSION_SUITE = """
import os
import time

import pytest

ARRIVED = {arrived!r}


@pytest.mark.parametrize("i", range(10))
def test_s(i):
    if i == 9:
        open(os.path.join(ARRIVED, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 60
        while len(os.listdir(ARRIVED)) < {sessions}:
            assert time.monotonic() < deadline, os.listdir(ARRIVED)
            time.sleep(0.005)
"""


def test_concurrent_pytest_sessions_lose_no_run(db, tmp_path):
    """SESSIONS real `pytest --perf-monitor --perf-history` sessions, started together and
    ending together (a barrier in their last test), each with its own monitor writing to one
    store: SESSIONS runs, every test of each."""
    suite = tmp_path / "suite"
    suite.mkdir()
    arrived = tmp_path / "arrived"
    arrived.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_s.py").write_text(SESSION_SUITE.format(arrived=str(arrived), sessions=SESSIONS))
    env = dict(os.environ)
    for k in ("PERFMON_HISTORY", "PERFMON_DAEMON"):  # the plugins stay off: quick sessions
        env.pop(k, None)

    def session(i: int):
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        cmd += ["--perf-monitor", f"--perf-output=r{i}.json", f"--perf-history={db}"]
        cmd += [f"--perf-label=session={i}"]
        return preloaded.run(cmd, suite, env, 120)

    with concurrent.futures.ThreadPoolExecutor(SESSIONS) as pool:  # all at once
        done = list(pool.map(session, range(SESSIONS)))
    for proc in done:
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "perfmon: warning" not in out, out
    assert len(os.listdir(arrived)) == SESSIONS  # each reached the barrier
    assert count_rows(db, "runs") == SESSIONS
    assert count_rows(db, "results") == SESSIONS * 10
    assert count_rows(db, "run_labels") >= SESSIONS
