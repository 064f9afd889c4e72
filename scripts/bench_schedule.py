"""What ``--perf-schedule`` gains over xdist's own scheduling, on real pytest runs.

    python scripts/bench_schedule.py                 # ~3 minutes on 2 cores
    python scripts/bench_schedule.py --runs 3        # quicker

Two suites of sleeping tests (sleep, so that 4 workers on 2 cores are not CPU-bound):

- skewed: 100 tests of 0.1 s, then 2 tests of 5 s collected last (the issue's benchmark);
- even: 200 tests of 20-60 ms (fixed seed), no skew.

For each suite: one ``pytest --perf-monitor`` run writes the report the plan comes from; then
--runs rounds, each running plain ``pytest -n W`` and ``pytest -n W --perf-schedule=REPORT``
(which goes first alternates). Figures, medians over the rounds:

- wall: the whole command, as a user waits for it; the ratio scheduled / plain (the venv's
  hypothesis and coverage plugins, which these suites do not use, are off on both sides:
  hypothesis's alone makes every xdist worker take ~0.6 s more to exit);
- test phase: from the first test's start to the last test's end (a conftest logs each test's
  start and end, ``time.monotonic``), against the LPT bound of the durations measured in that
  very run (longest first over W workers, :func:`pytest_perfmon.monitor.predict.lpt`).

Targets (issue 10): skewed ratio <= 0.8 and test phase within 10 % of the LPT bound; even
ratio <= 1.02.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from pytest_perfmon.monitor.predict import lpt  # noqa: E402

#: Plugins of the development venv that these suites do not use, off on both sides:
#: hypothesis's pytest plugin alone makes each xdist worker take ~0.6 s more to exit.
QUIET_PLUGINS = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:cov"]

CONFTEST = """
import os, time
import pytest

@pytest.fixture(autouse=True)
def _log_run(request):
    start = time.monotonic()
    yield
    with open(os.environ["BENCH_LOG"], "a") as f:
        f.write(f"{start} {time.monotonic()} {request.node.nodeid}\\n")
"""

SKEWED = """
import time
import pytest

@pytest.mark.parametrize("i", range(100))
def test_short(i):
    time.sleep(0.1)

@pytest.mark.parametrize("i", range(2))
def test_long(i):
    time.sleep(5.0)
"""


def even_suite() -> str:
    rng = random.Random(10)
    times = [round(rng.uniform(0.02, 0.06), 4) for _ in range(200)]
    return (
        "import time\nimport pytest\n\n"
        f"TIMES = {times}\n\n"
        "@pytest.mark.parametrize('t', TIMES)\n"
        "def test_even(t):\n    time.sleep(t)\n"
    )


def run(cwd: str, args: list, log: str, timeout: float) -> tuple:
    """(wall s, test phase s, LPT bound s) of one pytest run."""
    if os.path.exists(log):
        os.unlink(log)
    env = dict(os.environ, BENCH_LOG=log)
    cmd = [sys.executable, "-m", "pytest", "-q", *QUIET_PLUGINS, *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(
            f"bench_schedule: {' '.join(args)} exited {proc.returncode}:\n"
            + proc.stdout[-2000:]
            + proc.stderr[-2000:]
        )
    rows = []
    with open(log, encoding="utf-8") as f:
        for line in f:
            start, end, _ = line.split(" ", 2)
            rows.append((float(start), float(end)))
    phase = max(e for _, e in rows) - min(s for s, _ in rows)
    return wall, phase, rows


def bench(name: str, source: str, workers: int, rounds: int, work: str) -> dict:
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "conftest.py"), "w", encoding="utf-8") as f:
        f.write(CONFTEST)
    with open(os.path.join(d, "test_suite.py"), "w", encoding="utf-8") as f:
        f.write(source)
    with open(os.path.join(d, "pytest.ini"), "w", encoding="utf-8") as f:
        f.write("[pytest]\n")
    log = os.path.join(d, "log.txt")
    report = os.path.join(d, "plan.json")
    run(d, ["-n", str(workers), "--perf-monitor", f"--perf-output={report}"], log, 600)
    sides = {
        "plain": ["-n", str(workers)],
        "scheduled": ["-n", str(workers), f"--perf-schedule={report}"],
    }
    out: dict = {k: {"wall": [], "phase": [], "lpt": []} for k in sides}
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for side in order:
            wall, phase, rows = run(d, sides[side], log, 600)
            bound = max(lpt([e - s for s, e in rows], workers))
            out[side]["wall"].append(wall)
            out[side]["phase"].append(phase)
            out[side]["lpt"].append(bound)
            print(
                f"  {name} round {r + 1} {side:9} wall {wall:6.2f} s  test phase "
                f"{phase:6.2f} s  LPT bound {bound:6.2f} s",
                flush=True,
            )
    med = {s: {k: statistics.median(v) for k, v in out[s].items()} for s in sides}
    return {
        "runs": out,
        "median": med,
        "wall_ratio": med["scheduled"]["wall"] / med["plain"]["wall"],
        "phase_over_lpt": statistics.median(
            p / b for p, b in zip(out["scheduled"]["phase"], out["scheduled"]["lpt"])
        ),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="rounds per suite (default 7)")
    ap.add_argument("--workers", type=int, default=4, help="xdist workers (default 4)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    if args.runs < 1 or args.workers < 1:
        ap.error("--runs and --workers must be >= 1")
    with tempfile.TemporaryDirectory(prefix="bench-schedule-") as work:
        skew = bench("skewed", SKEWED, args.workers, args.runs, work)
        even = bench("even", even_suite(), args.workers, args.runs, work)
    ok = {
        "skewed ratio <= 0.8": skew["wall_ratio"] <= 0.8,
        "skewed test phase within 10 % of LPT": skew["phase_over_lpt"] <= 1.10,
        "even ratio <= 1.02": even["wall_ratio"] <= 1.02,
    }
    print()
    print(f"-n {args.workers}, medians of {args.runs} alternated rounds")
    for name, b in (("skewed", skew), ("even", even)):
        p, s = b["median"]["plain"], b["median"]["scheduled"]
        plain_lpt = statistics.median(
            a / c for a, c in zip(b["runs"]["plain"]["phase"], b["runs"]["plain"]["lpt"])
        )
        print(
            f"{name:7} wall plain {p['wall']:.2f} s, scheduled {s['wall']:.2f} s: "
            f"x{b['wall_ratio']:.3f}; test phase plain {p['phase']:.2f} s (x{plain_lpt:.3f} "
            f"of its LPT bound), scheduled {s['phase']:.2f} s (x{b['phase_over_lpt']:.3f})"
        )
    for name, good in ok.items():
        print(f"  {name}: {'OK' if good else 'MISSED'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"workers": args.workers, "skewed": skew, "even": even, "ok": ok}, f, indent=1
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
