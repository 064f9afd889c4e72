"""How close each test's ``noise.wait_time`` comes to the wait its process really had, on a CPU
shared with a busy process (Linux only).

    python scripts/bench_wait_attribution.py --runs 5            # about a minute
    python scripts/bench_wait_attribution.py --runs 5 --python B # another tree's venv

A generated suite of 60 tests in a fixed shuffled order: CPU-bound loops of about 30 ms, sleeps
of 10 ms, and mixed tests (a 10 ms loop, then a 20 ms sleep). pytest runs pinned to one CPU
beside a busy loop pinned to the same CPU, under ``--perf-monitor``. The truth is read inside
the pytest process by the suite's own conftest.py (not the product): the ``run_delay`` of every
thread of the process (``/proc/self/task/*/schedstat``) at the start and end of each test's
protocol. Printed per kind of test, over every test of every run: the mean true wait, the mean
reported wait, and the mean absolute error of the reported one.
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

CONFTEST = """
import json, os

def _waits():
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[1])
        except OSError:
            pass
    return total * 1e-9

TRUTH = {}

import pytest

@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    w0 = _waits()
    yield
    TRUTH[item.nodeid] = _waits() - w0

def pytest_sessionfinish(session):
    with open(os.environ["TRUTH_OUT"], "w") as f:
        json.dump(TRUTH, f)
"""

SUITE = """
import random, time
import pytest

def loop(ms):
    end = time.process_time() + ms / 1000
    s = 0
    while time.process_time() < end:
        for i in range(2000):
            s += i
    return s

KINDS = ["cpu"] * 20 + ["sleep"] * 20 + ["mixed"] * 20
random.Random(7).shuffle(KINDS)

@pytest.mark.parametrize("i", range(len(KINDS)))
def test_kind(i):
    kind = KINDS[i]
    if kind == "cpu":
        loop(30)
    elif kind == "sleep":
        time.sleep(0.010)
    else:
        loop(10)
        time.sleep(0.020)
"""


def kinds() -> list:
    """The suite's own order of kinds (SUITE makes the same list)."""
    order = ["cpu"] * 20 + ["sleep"] * 20 + ["mixed"] * 20
    random.Random(7).shuffle(order)
    return order


def one_run(python: str, where: str, cpu: int) -> list:
    truth_path = os.path.join(where, "truth.json")
    report_path = os.path.join(where, "report.json")
    hog = subprocess.Popen(
        [sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"]
    )
    try:
        time.sleep(0.2)
        env = dict(os.environ, TRUTH_OUT=truth_path, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTEST_ADDOPTS", None)
        cmd = ["taskset", "-c", str(cpu), python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        cmd += ["-p", "no:randomly", "--perf-monitor", f"--perf-output={report_path}"]
        proc = subprocess.run(
            [*cmd, "test_kinds.py"], cwd=where, env=env, capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise SystemExit(f"the run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    finally:
        hog.kill()
        hog.wait(30)
    with open(truth_path) as f:
        truth = json.load(f)
    with open(report_path) as f:
        report = json.load(f)
    order = kinds()
    rows = []
    for nodeid, real in truth.items():
        i = int(nodeid.rsplit("[", 1)[1].rstrip("]"))
        noise = report["tests"][nodeid].get("noise") or {}
        rows.append((order[i], real, noise.get("wait_time")))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--python", default=sys.executable, help="the Python whose pytest-perfmon runs")
    ap.add_argument("--cpu", type=int, default=None, help="the CPU to share (default: the last)")
    args = ap.parse_args()
    if not sys.platform.startswith("linux"):
        raise SystemExit("Linux only (schedstat)")
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    rows: list = []
    with tempfile.TemporaryDirectory() as where:
        with open(os.path.join(where, "conftest.py"), "w") as f:
            f.write(CONFTEST)
        with open(os.path.join(where, "test_kinds.py"), "w") as f:
            f.write(SUITE)
        for _ in range(args.runs):
            rows += one_run(args.python, where, cpu)
    print(f"{args.python}: {args.runs} runs, pinned to CPU {cpu} beside a busy loop")
    print("kind    tests  true wait ms  reported ms  mean |error| ms")
    for kind in ("cpu", "sleep", "mixed"):
        mine = [(r, w) for k, r, w in rows if k == kind and w is not None]
        missing = sum(1 for k, _, w in rows if k == kind and w is None)
        real = statistics.mean(r for r, _ in mine) * 1e3
        said = statistics.mean(w for _, w in mine) * 1e3
        err = statistics.mean(abs(w - r) for r, w in mine) * 1e3
        extra = f" ({missing} without a wait)" if missing else ""
        print(f"{kind:<7} {len(mine):>5}  {real:>12.2f}  {said:>11.2f}  {err:>15.2f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
