"""The noise discount (issue 21, item 3), end to end: real pytest runs with the real monitor, a
real CPU hog (two busy processes in subprocesses), never a mocked /proc.

perfmon compare: a quiet baseline against a run of the same code beside the hog exits 0 with the
contended test named ("contended, not judged"); the same pair with ``--noise off`` is today's
regression; a run beside the hog whose test does 50 % more work (the issue said 30 %: 50 % keeps
the signal clear of the discount's own few percent of error) still exits 1.
--perf-limit-history: a test over its limit only by its wait is not failed (PERFMON_NOISE=off:
it is).

Each run beside the hog costs about a CPU-second (the hog's two processes keep a CPU busy while
the work runs). The run of the same code beside the hog is one run for both tests
(_beside_hog): it is the limit test's run with the noise discount on (--perf-limit-history
against the quiet run's history), and compare's "busy" report. Both only read its report and
output, and the history flags change nothing of the work or of what is measured: the limits
are judged when the session ends, from the same entries compare reads.

The suite's process, and the hog, are pinned to one CPU, so that the hog outweighs whatever else
the machine runs (other jobs only add to the wait, which is what is discounted). The machine's
own CPU speed is not the subject: on a shared machine the CPU time of the same loop moves by
tens of percent now and then (docs/benchmarks.md, bench_noise.py). So the work is a fixed amount
of CPU time (the test computes until its process has used WORK_S seconds of it, or 50 % more),
not a fixed number of loop turns: whatever the machine's speed, the quiet run, the run beside
the hog and the run with more work do the same work, and 50 % more of it, in CPU seconds.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time

import preloaded
import pytest
from helpers import (
    HISTORY_MISSING,
    RUN_TIMEOUT,
    inner_addopts,
    need_history,
    shared_once,
    validate,
)
from pytest_perfmon.monitor import analysis, cli, vocabulary

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the wait is read from Linux's /proc"
)

SUITE = """
import os, time

WORK = float(os.environ["BENCH_WORK"]) * float(os.environ.get("BENCH_SLOW", "1"))
GO = os.environ.get("BENCH_GO")
if GO:  # beside the hog: pytest has started; the hog starts now, the tests when it runs
    open(GO + ".ready", "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(GO) and time.monotonic() < deadline:
        time.sleep(0.01)

def test_work():
    # WORK seconds of CPU time, however fast the machine runs the loop at the moment
    end = time.process_time() + WORK
    x = 0
    while time.process_time() < end:
        for i in range(2000):
            x += i * i
    if GO:  # the work is done: the hog may stop
        open(GO + ".done", "w").close()

def test_nap():  # under compare's and the limits' 50 ms floors, whatever wait it is given
    time.sleep(0.01)
"""

#: It says (one byte) that it is in its loop.
HOG = "import os\nos.write(1, b'.')\nwhile True:\n    pass\n"
NODE = "test_suite.py::test_work"
#: The work's CPU time, in seconds: long enough that +50 % (0.125 s) passes compare's 50 ms floor
#: by more than twice (it was 0.35: each run beside the hog keeps a CPU busy three times as long).
WORK_S = 0.25
ENV = {"BENCH_WORK": str(WORK_S)}


def _pin(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


#: What the limits section says of a test within its history limit only without the wait.
CONTENDED_LINE = "contended, not judged"


def _run(path, out, cpu: int, hog: bool, env_extra: dict, args=(), ok=(0,)) -> dict:
    """One pytest --perf-monitor run of the suite on CPU ``cpu``, with the hog there or not;
    its report, with its output under ``_stdout``. The hog starts once pytest has started
    (when it collects the suite: GO below), the tests once both its processes are in their
    loops, and it is stopped when the work has ended (GO.done): the work runs beside it,
    pytest's start-up and the session's end (the same in every run) do not."""
    env = dict(os.environ, PYTEST_ADDOPTS=inner_addopts(), **env_extra)
    env.pop("GITHUB_STEP_SUMMARY", None)
    go = path / f"{out.stem}.go"
    if hog:
        env["BENCH_GO"] = str(go)
    hogs: list = []
    proc = preloaded.popen(  # forked where it can be (tests/preloaded.py), on CPU cpu
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--perf-monitor"]
        + [f"--perf-output={out}", *args, "test_suite.py"],
        path,
        env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        affinity={cpu},
    )
    try:
        if hog:
            ready = path / f"{out.stem}.go.ready"
            deadline = time.monotonic() + RUN_TIMEOUT
            while not ready.exists() and proc.poll() is None:
                assert time.monotonic() < deadline, "pytest never collected the suite"
                time.sleep(0.01)
            hogs = [
                subprocess.Popen(
                    [sys.executable, "-S", "-c", HOG],
                    stdout=subprocess.PIPE,
                    bufsize=0,
                    preexec_fn=_pin(cpu),
                )
                for _ in range(2)
            ]
            for h in hogs:  # both busy before the tests start
                left = max(0.0, deadline - time.monotonic())
                assert select.select([h.stdout], [], [], left)[0], "a hog never started"
                assert h.stdout.read(1) == b".", "a hog never started"
            go.touch()
            done = path / f"{out.stem}.go.done"
            while not done.exists() and proc.poll() is None:
                assert time.monotonic() < deadline, "the work never ended"
                time.sleep(0.01)
            for h in hogs:  # the work has ended: nothing after it needs the hog
                h.kill()
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        for p in [*hogs, proc]:
            if p.poll() is None:
                p.kill()
        for p in [*hogs, proc]:
            p.wait(30)
        for h in hogs:
            h.stdout.close()
    assert proc.returncode in ok, stdout + stderr
    rep = validate(json.loads(out.read_text(encoding="utf-8")))
    rep["_stdout"] = stdout
    return rep


def _cpu(rep: dict) -> float:
    return vocabulary.BY_NAME["cpu_time"].get(rep["tests"][NODE])


def _quiet(tmp_path_factory, cpu: int) -> dict:
    """The quiet run (no hog), made once per session for both tests; a copy of its report."""

    def make(path) -> None:
        _suite(path)
        _run(path, path / "quiet.json", cpu, False, ENV)

    path = shared_once(tmp_path_factory, f"noise-compare-quiet-{cpu}", make)
    return validate(json.loads((path / "quiet.json").read_text(encoding="utf-8")))


def _suite(path) -> None:
    (path / "pytest.ini").write_text("[pytest]\n")
    (path / "test_suite.py").write_text(SUITE)


def _history_seed(quiet: dict, path) -> float:
    """The history the limit test judges against: one run of the work on a quiet machine,
    which this shared machine seldom is: the quiet run's report with the test's time set to
    its CPU time (what it takes without any wait), imported into ``path``/seed.db. Its time."""
    work = quiet["tests"][NODE]
    c = _cpu(quiet)
    work.update(duration=c, call_time=c, setup_time=0.0, teardown_time=0.0, cpu_percent=100.0)
    work["noise"] = dict(work["noise"], wait_time=0.0, contended=False)
    seed = _write(path, quiet, "seed.json")
    assert cli.main(["history", "import", seed, "--db", str(path / "seed.db")]) == 0
    return c


#: The options of the run beside the hog with the noise discount on (db: its store).
def _limit_args(db) -> list:
    return [f"--perf-history={db}", "--perf-limit-history=2"]


def _beside_hog(tmp_path_factory, cpu: int) -> dict:
    """The same work beside the hog, made once per session for both tests; a copy of its
    report, with its output under ``_stdout``. With the history extra installed (the test
    extra installs it) it is the limit test's run with the noise discount on: its own copy
    of the history seed (_history_seed), ``_limit_args``; compare reads its report as the
    busy run's (without the extra it is a plain run, for compare alone: the limit test then
    skips, or with CI=true fails)."""

    def make(path) -> None:
        _suite(path)
        args: list = []
        if not HISTORY_MISSING:
            _history_seed(_quiet(tmp_path_factory, cpu), path)
            shutil.copy(path / "seed.db", path / "on.db")
            args = _limit_args(path / "on.db")
        rep = _run(path, path / "on.json", cpu, True, ENV, args)
        (path / "on.stdout").write_text(rep["_stdout"], encoding="utf-8")

    path = shared_once(tmp_path_factory, f"noise-compare-beside-hog-{cpu}", make)
    rep = validate(json.loads((path / "on.json").read_text(encoding="utf-8")))
    rep["_stdout"] = (path / "on.stdout").read_text(encoding="utf-8")
    return rep


def _three_runs(path, tmp_path_factory, cpu: int, base: dict) -> tuple:
    """The quiet baseline, the same work beside the hog (the shared run: _beside_hog), 50 %
    more work beside the hog."""
    busy = _beside_hog(tmp_path_factory, cpu)
    slow = _run(path, path / "slow.json", cpu, True, {**ENV, "BENCH_SLOW": "1.5"})
    # the work is CPU time: the same beside the hog, 50 % more with more work (a few ms of the
    # test's own overhead either way)
    ratios = (_cpu(busy) / _cpu(base), _cpu(slow) / _cpu(base))
    assert 0.9 <= ratios[0] <= 1.1 and ratios[1] >= 1.4, ratios
    return base, busy, slow


def _write(path, rep: dict, name: str) -> str:
    p = path / name
    rep.pop("_stdout", None)
    p.write_text(json.dumps(rep), encoding="utf-8")
    return str(p)


def test_compare_discounts_the_wait_and_still_finds_more_work(tmp_path, tmp_path_factory, capsys):
    _suite(tmp_path)
    cpu = max(os.sched_getaffinity(0))
    base, busy, slow = _three_runs(tmp_path, tmp_path_factory, cpu, _quiet(tmp_path_factory, cpu))

    b, t = base["tests"][NODE], busy["tests"][NODE]
    # beside two busy processes on its CPU the work waited most of its time (the baseline may
    # have waited too: other jobs share the machine), and its extra time was mostly waiting
    assert t["noise"]["contended"] and t["noise"]["wait_time"] >= 0.5 * t["duration"], t
    extra = t["duration"] - b["duration"]
    # Only where the hog made a real difference: on a machine busy enough that the quiet run
    # waited nearly as long (seen: 0.96 s of its 1.09 s), a few ms of extra are noise either way.
    if extra > 0.2 * b["duration"]:
        assert t["noise"]["wait_time"] - b["noise"]["wait_time"] >= 0.6 * extra, (b, t)

    paths = {k: _write(tmp_path, r, f"{k}.json") for k, r in (("b", base), ("t", busy))}
    paths["s"] = _write(tmp_path, slow, "s.json")
    capsys.readouterr()

    # the same code beside the hog: no regression, the test named as contended, not judged
    args = ["compare", paths["b"], paths["t"], "--fail-on-regression", "--format", "json"]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["noise"] == "on" and out["regressions"] == []
    named = {c["metric"]: c for c in out["contended_not_judged"] if c["test"] == NODE}
    # and its CPU share fell only because it waited (when that passed the CPU thresholds)
    assert named.keys() <= {"duration", "cpu_percent"}, named
    # Named when its time as measured passed compare's time gate: almost always, but on a
    # machine busy enough that the quiet run waited nearly as long, there is nothing to name.
    if extra > 0 and analysis.DEFAULT_THRESHOLDS["time"].passes(b["duration"], t["duration"]):
        # (on failure: both runs' times and waits, to tell a baseline that was not quiet)
        seen = (named, b["duration"], b["noise"], t["duration"], t["noise"])
        assert named.get("duration", {}).get("would_be") == "regression", seen
        assert named["duration"]["current_contended"], named
        assert cli.main(["compare", paths["b"], paths["t"], "--fail-on-regression"]) == 0
        text = capsys.readouterr().out
        assert "Contended, not judged:" in text and NODE in text, text

        # today's behaviour, for comparison: the waiting read as a regression
        assert cli.main(args[:-2] + ["--noise", "off"]) == 1
        capsys.readouterr()

    # 50 % more work beside the hog: still a regression, judged without the wait
    args = ["compare", paths["b"], paths["s"], "--fail-on-regression", "--format", "json"]
    assert cli.main(args) == 1
    out = json.loads(capsys.readouterr().out)
    regs = [c for c in out["regressions"] if c["test"] == NODE and c["metric"] == "duration"]
    assert regs and regs[0]["judged"] == "without_wait", out
    assert regs[0]["change_ratio"] >= 0.2, regs
    print(
        f"\nquiet {b['duration']:.3f} s (wait {b['noise']['wait_time']:.3f}); beside the hog "
        f"{t['duration']:.3f} s (wait {t['noise']['wait_time']:.3f}); +50 % work beside the hog: "
        f"{regs[0]['current_measured']:.3f} s measured, {regs[0]['current']:.3f} s without the "
        f"wait ({regs[0]['change_ratio']:+.0%})"
    )


def test_history_limit_judges_the_time_without_the_wait(tmp_path, tmp_path_factory, capsys):
    """--perf-limit-history 2: beside the hog the work takes about three times as long, most of
    it waiting; within its limit without the wait, "contended, not judged" and no failure;
    PERFMON_NOISE=off: over it as measured, a failure.

    The history is one run of the work on a quiet machine (_history_seed). Each run beside
    the hog gets its own copy of it; the one with the discount on is the shared run
    (_beside_hog, made with ``_limit_args`` since the history extra is installed)."""
    need_history()
    _suite(tmp_path)
    cpu = max(os.sched_getaffinity(0))
    c = _history_seed(_quiet(tmp_path_factory, cpu), tmp_path)
    capsys.readouterr()
    on = _beside_hog(tmp_path_factory, cpu)
    shutil.copy(tmp_path / "seed.db", tmp_path / "off.db")
    args = _limit_args(tmp_path / "off.db")
    off = _run(
        tmp_path, tmp_path / "off.json", cpu, True, {**ENV, "PERFMON_NOISE": "off"}, args, (1,)
    )
    t = on["tests"][NODE]
    assert t["duration"] > 2 * c, (c, t)  # over the limit as measured ...
    assert not t.get("limits"), t  # ... not failed: within it without the wait
    assert "history limits:" in on["_stdout"] and CONTENDED_LINE in on["_stdout"], on["_stdout"]
    assert "less waiting" in on["_stdout"], on["_stdout"]
    # the call's limit fails the test first; the duration's is then a note
    violations = {v["metric"]: v["action"] for v in off["tests"][NODE]["limits"]}
    assert "fail" in violations.values() and violations.keys() <= {"call", "duration"}, violations
    assert "times as measured (PERFMON_NOISE=off)" in off["_stdout"]
