"""What the history judges a change: the change-point detector (its statistic, steps found
where they are, no alarm without one, each gate's veto), and what ``history check`` and the
limits' medians read from the store: CPU time, tests executed more than once, the wait for a
CPU (issue 21) discounted."""

from __future__ import annotations

import json

import pytest
from helpers import need_history

need_history(allow_module_level=True)  # the test extra installs the history extra

import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from helpers import HISTORY_ENV, make_report, noisy_entry  # noqa: E402
from pytest_perfmon.monitor import cli, history  # noqa: E402
from pytest_perfmon.monitor.history import detect, predict_command, store  # noqa: E402

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
        assert history.record_run(db, rep, {}, None, env=env) is None
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
        _, series, stats = predict_command.load(eng, store, None, 30, None)
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
        assert history.record_run(url, rep, {}, None, env=HISTORY_ENV) is None
    capsys.readouterr()
    args = ["history", "check", "--db", url, "--format", "json", "--metric"]
    assert cli.main(args + ["duration"]) == 0  # lost in the noise of wall time
    assert json.loads(capsys.readouterr().out)["changes"] == []
    assert cli.main(args + ["cpu_time"]) == 1
    (change,) = json.loads(capsys.readouterr().out)["changes"]
    assert change["metric"] == "cpu_time" and change["kind"] == "regression"
    assert change["runs_after"] == 4 and 20 < change["change_percent"] < 30


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
            noisy_entry(rep, n, cpu, wait)
        assert (
            history.record_run(db, rep, {}, None, env=dict(HISTORY_ENV, GITHUB_SHA=f"c{i:02d}"))
            is None
        )


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
        noisy_entry(rep, "t.py::a", 0.2 * (1 + rng.normal(0, 0.01)), wait)
        assert history.record_run(db, rep, {}, None, env=HISTORY_ENV) is None
    on = medians.medians(db, 10)["tests"]["t.py::a"]
    off = medians.medians(db, 10, noise=False)["tests"]["t.py::a"]
    assert on["duration"][1] == off["duration"][1] == 9
    assert on["duration"][0] == pytest.approx(0.2, rel=0.05)
    assert on["call"][0] == pytest.approx(0.2, rel=0.05)
    assert off["duration"][0] == pytest.approx(0.7, rel=0.05)
