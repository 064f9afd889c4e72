"""Concurrent writers of one history store (SQLite and a real PostgreSQL): processes that
create the schema and write at the same moment, and real pytest sessions, each with its own
monitor: no run lost."""

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
    for k in ("PERFMON_HISTORY", "PERFMON_DAEMON"):  # the plugins stay off: quick sessions
        env.pop(k, None)

    def session(i: int):
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        cmd += ["--perf-monitor", f"--perf-output=r{i}.json", f"--perf-history={db}"]
        cmd += [f"--perf-label=session={i}"]
        return preloaded.run(cmd, suite, env, 120)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # all eight at once
        done = list(pool.map(session, range(8)))
    for proc in done:
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "perfmon: warning" not in out, out
    assert count_rows(db, "runs") == 8
    assert count_rows(db, "results") == 8 * 10
    assert count_rows(db, "run_labels") >= 8
