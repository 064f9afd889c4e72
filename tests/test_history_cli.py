"""The ``perfmon history`` commands over a filled store (SQLite and a real PostgreSQL): runs,
show, check, prune, import; usage and input errors; a missing extra as one line."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time

import pytest
from helpers import need_history

need_history(allow_module_level=True)  # the test extra installs the history extra

from helpers import GOLDEN, count_rows, fill_history  # noqa: E402
from pytest_perfmon.monitor import cli  # noqa: E402
from pytest_perfmon.monitor.history import store  # noqa: E402

# --------------------------------------------------------------------------- commands


def test_cli_commands(db, capsys, monkeypatch, tmp_path):
    fill_history(db, 20, slow_from=17)
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
    assert count_rows(db, "runs") == 5 and count_rows(db, "results") == 15
    # 2 runs before, 3 after: 10 ways to split 5 runs, so no p-value can reach 0.01
    assert cli.main(["history", "check", "--db", db]) == 0


def test_cli_usage_and_input_errors(tmp_path, capsys):
    db = str(tmp_path / "h.db")
    assert cli.main(["history", "runs", "--db", db]) == 2  # no such store: not created
    capsys.readouterr()
    # nor split from as an empty history (a typo; the plugin's --perf-shard reads one so)
    assert cli.main(["split", "--shards", "2", "--db", db]) == 2
    assert capsys.readouterr().err == f"perfmon: error: history store {db} does not exist\n"
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


def test_a_value_edited_into_the_store_is_one_line(tmp_path, capsys):
    """A store whose columns someone edited by hand (text where a time or a number goes,
    infinity): one line naming the store, exit 2; a value that is no number is no point."""
    import sqlite3

    db = str(tmp_path / "h.db")
    fill_history(db, 4)
    html = str(tmp_path / "h.html")
    report = os.path.join(GOLDEN, "current.json")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE results SET duration = 'abc' WHERE run_id = 2")
        conn.execute("UPDATE results SET peak_mb = 9e999 WHERE run_id = 3")  # infinity
    capsys.readouterr()
    assert cli.main(["history", "check", "--db", db]) == 0  # those points left out
    capsys.readouterr()
    assert cli.main(["history", "show", "t.py::test_b", "--db", db, "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [p["value"] is None for p in shown["points"]] == [False, True, False, False], shown
    assert cli.main(["html", report, "-o", html, "--db", db]) == 0
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET started_at = 'not a date' WHERE id = 3")
    capsys.readouterr()
    for argv in (["history", "runs"], ["history", "check"], ["html", report, "-o", html]):
        assert cli.main([*argv, "--db", db]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"reading history store {db}: ValueError: Invalid isoformat" in err, err
    with pytest.raises(SystemExit) as e:  # past SQLite's busy timeout (32-bit milliseconds)
        cli.main(["history", "runs", "--db", db, "--timeout", "1e308"])
    assert e.value.code == 2 and "must be from 0 to 86400 seconds" in capsys.readouterr().err


def test_read_commands_write_nothing_into_another_programs_database(tmp_path, capsys):
    """A SQLite database of something else given to a read command: one line, and nothing of
    ours written into it. An empty file is a new store, as before (the plugin's readers meet
    one at a matrix's first run: tests/test_shard.py). A store whose schema_version row was
    removed: one line (upgrading it from nothing again would add its columns twice)."""
    import sqlite3

    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert cli.main(["history", "check", "--db", str(empty)]) == 0  # no runs, no series
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE foo (x INTEGER)")
    capsys.readouterr()
    html = ["html", os.path.join(GOLDEN, "current.json"), "-o", str(tmp_path / "h.html")]
    for argv in (
        ["history", "runs"],
        ["history", "check"],
        ["predict"],
        ["split", "--shards", "2"],
        html,
    ):
        assert cli.main([*argv, "--db", str(other)]) == 2, argv
        assert "holds no perfmon history (its tables are another program's)" in (
            capsys.readouterr().err
        )
    with sqlite3.connect(other) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert names == {"foo"}
    db = str(tmp_path / "h.db")
    fill_history(db, 2)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM perfmon_meta")
    capsys.readouterr()
    assert cli.main(["history", "runs", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "has runs but no schema_version" in err and err.count("\n") == 1, err


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


def test_a_timestamp_with_an_offset_is_stored_in_utc(db, tmp_path, capsys):
    """A report whose timestamp has an offset: stored as the UTC moment it is (SQLite kept the
    text as given and read it back as UTC: runs out of order, and unlike PostgreSQL)."""
    paths = []
    for name, stamp in (("east", "2026-12-08T05:00:00+02:00"), ("utc", "2026-12-08T04:00:00Z")):
        with open(os.path.join(GOLDEN, "current.json"), encoding="utf-8") as f:
            rep = json.load(f)
        rep["session"]["timestamp"] = stamp
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(rep), encoding="utf-8")
        paths.append(str(path))
    assert cli.main(["history", "import", *paths, "--db", db]) == 0
    eng = store.open_store(db)
    try:
        runs = store.list_runs(eng, 10)
    finally:
        eng.dispose()
    # newest first, in UTC (SQLite's come back naive: UTC by the store's convention)
    assert [r["started_at"].utcoffset() in (None, dt.timedelta(0)) for r in runs] == [True] * 2
    assert [r["started_at"].hour for r in runs] == [4, 3], runs


def test_missing_extra_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    assert cli.main(["history", "runs", "--db", str(tmp_path / "h.db")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "pytest-perfmon[history]"' in err
