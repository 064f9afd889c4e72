#!/usr/bin/env python
"""Does the forked monitor cost the measured tests time? (issue 25, session 4: pytest's own
garbage collection writes into every object it tracks, so each page the forked monitor still
shares is copied on pytest's next full collection; that copy is CPU time of whichever test
triggers it.)

A suite of 60 tests, each allocating and freeing 20 000 small lists, one in ten calling
``gc.collect()``; a conftest holding MB megabytes of small lists (``[i, None]``, tracked by the
gc). Runs alternate the fork start and ``PERFMON_MONITOR_START=exec``; per run, from the
report's per-test durations: the sum and the maximum of the first 10 (one of them pays for
pytest's first full collection after the fork, the 10th calls ``gc.collect()``), the median and
the maximum of the other 50, the median of the later tests that call ``gc.collect()``
(``gc_rest``) and the sum of all 60. Printed per size: the median (min-max) over the runs,
and the median of the paired differences.

    python scripts/bench_fork_gc.py [--runs N] [--python PY] [--settled] MB [MB ...]

``--settled``: the conftest ends with ``gc.collect()``, so that pytest's next full collection
(the one that writes into every object the monitor still shares) is a test's, not one that
pytest's start-up triggers by itself.

The conftest lifts ``FORK_MAX_RSS`` (benchmark only) so that a large process forks too. Linux.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CONFTEST = """
import gc

import pytest_perfmon._handle as handle

handle.FORK_MAX_RSS = 1 << 40  # benchmark only: fork whatever the size
BIG = [[i, None] for i in range({n})]
{settle}"""

TESTS = """
import gc

import pytest


@pytest.mark.parametrize("i", range(60))
def test_churn(i):
    junk = [[j, None] for j in range(20000)]
    del junk
    if i % 10 == 9:
        gc.collect()
"""

PLUGINS_OFF = (
    "hypothesispytest randomly asyncio benchmark pytest_cov timeout rerunfailures repeat "
    "cacheprovider"
)


def one_run(python: str, where: str, mode: str) -> dict:
    out = os.path.join(where, f"perf-{mode}.json")
    env = dict(os.environ, PYTEST_ADDOPTS=" ".join(f"-p no:{p}" for p in PLUGINS_OFF.split()))
    env.pop("PERFMON_MONITOR_START", None)
    if mode == "exec":
        env["PERFMON_MONITOR_START"] = "exec"
    cmd = [python, "-m", "pytest", "-q", "--perf-monitor", f"--perf-output={out}", "."]
    subprocess.run(cmd, cwd=where, env=env, stdout=subprocess.DEVNULL, check=True, timeout=300)
    with open(out) as f:
        report = json.load(f)
    assert report["session"]["monitor_start"] == mode, report["session"]["monitor_start"]
    tests = sorted(report["tests"].values(), key=lambda t: t["start"])
    durations = [t["duration"] * 1000 for t in tests]
    return {
        "first10_sum": sum(durations[:10]),  # whichever test triggers the first full collection
        "first10_max": max(durations[:10]),
        "rest": statistics.median(durations[10:]),
        "rest_max": max(durations[10:]),
        "gc_rest": statistics.median(durations[19::10]),  # the later gc.collect() tests
        "sum": sum(durations),
        "rss_mb": tests[0]["memory"]["start_mb"],  # pytest's, at the first test
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", nargs="+", type=int, help="MB of small objects in the conftest")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--settled",
        action="store_true",
        help="the conftest ends with gc.collect(): the next full collection is a test's",
    )
    args = parser.parse_args()
    print(
        "MB side first10_sum first10_max rest rest_max gc_rest sum60 (ms) rss_mb: median (min-max)"
    )
    for mb in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-fork-gc-") as where:
            n = mb * 2**20 // 120  # ~120 bytes a list: its header, two slots, the int
            with open(os.path.join(where, "conftest.py"), "w") as f:
                f.write(CONFTEST.format(n=n, settle="gc.collect()\n" if args.settled else ""))
            with open(os.path.join(where, "test_churn.py"), "w") as f:
                f.write(TESTS)
            with open(os.path.join(where, "pytest.ini"), "w") as f:
                f.write("[pytest]\n")
            runs: dict = {"fork": [], "exec": []}
            for i in range(args.runs):
                for mode in ("fork", "exec") if i % 2 == 0 else ("exec", "fork"):
                    runs[mode].append(one_run(args.python, where, mode))
            keys = list(runs["fork"][0])
            for mode, rows in runs.items():
                med = {k: statistics.median(r[k] for r in rows) for k in keys}
                low = {k: min(r[k] for r in rows) for k in keys}
                high = {k: max(r[k] for r in rows) for k in keys}
                print(
                    f"{mb:3d} {mode:5} "
                    + " ".join(f"{med[k]:8.2f} ({low[k]:.1f}-{high[k]:.1f})" for k in keys),
                    flush=True,
                )
            diffs = {
                k: statistics.median(f[k] - e[k] for f, e in zip(runs["fork"], runs["exec"]))
                for k in keys
            }
            print(
                f"{mb:3d} fork-exec, paired median: "
                + " ".join(f"{k} {v:+.2f}" for k, v in diffs.items()),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
