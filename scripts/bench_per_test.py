#!/usr/bin/env python
"""What ``--perf-monitor`` adds to each test, measured inside pytest, part by part.

Whole-process timings of a 2000-test run spread by 10-20 % from run to run on a shared
machine, more than the plugin's per-test cost. Here a small timing plugin (``-p``, from a
temporary directory) reads the main thread's CPU time around each test's whole protocol
(``pytest_runtest_protocol``, outermost), and the figure is the median over the suite's tests:
one number per run that the machine's noise moves far less. Variants, alternated in rounds:

* ``plain``: no ``--perf-monitor``;
* ``perf``: ``--perf-monitor`` as shipped;
* ``no-counters``: the boundary counters (statm, VmHWM, clear_refs, RUSAGE_CHILDREN) not read;
* ``no-slot``: the crash slot's per-test write skipped;
* ``no-measure``: the Measurer's protocol hook an empty wrapper (what is left is every other
  hook the plugin registers).

The variants are made by a second plugin in the same directory, switched by an environment
variable; they are for this benchmark only. Reported: per variant the smallest and the median
of the runs' per-test medians, in microseconds of CPU, and the difference to ``plain``.

    python scripts/bench_per_test.py [--rounds 5] [--tests 2000] [--files 20] [--json FILE]

Linux or macOS (``time.thread_time``); other plugins of the environment are switched off with
``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` (pytest-xdist not needed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Optional

TIMING = r"""
import os, statistics, time, pytest
_c = time.thread_time
T = []
@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    c = _c()
    yield
    T.append(_c() - c)
def pytest_unconfigure(config):
    if T:
        with open(os.environ["BENCH_OUT"], "a") as f:
            f.write(f"{os.environ['BENCH_VARIANT']} {statistics.median(T) * 1e6:.2f}\n")
"""

VARIANTS = r"""
import os, pytest
v = os.environ.get("BENCH_VARIANT", "")
if v == "no-counters":
    from pytest_perfmon import _counters
    _counters.Counters._kernel = lambda self: None
    _counters.Counters._children = lambda self: None
elif v == "no-slot":
    from pytest_perfmon.monitor import slots
    slots.Slot.begin = lambda self, nodeid, t0: None
elif v == "no-measure":
    from pytest_perfmon import _measure
    @pytest.hookimpl(hookwrapper=True)
    def _empty(self, item, nextitem):
        yield
    _empty.__name__ = "pytest_runtest_protocol"
    _measure.Measurer.pytest_runtest_protocol = _empty
"""

ORDER = ["plain", "perf", "no-counters", "no-slot", "no-measure"]


def make_suite(root: str, tests: int, files: int) -> None:
    per = max(1, tests // files)
    for f in range(files):
        body = "".join(f"def test_{i}():\n    pass\n" for i in range(per))
        with open(os.path.join(root, f"test_f{f}.py"), "w", encoding="utf-8") as fh:
            fh.write(body)
    with open(os.path.join(root, "pytest.ini"), "w", encoding="utf-8") as fh:
        fh.write("[pytest]\n")


def run(suite: str, plugins: str, out: str, variant: str, timeout: float) -> None:
    env = dict(os.environ, BENCH_OUT=out, BENCH_VARIANT=variant)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (plugins, env.get("PYTHONPATH")) if p)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bench_timing"]
    if variant != "plain":
        cmd += ["-p", "pytest_perfmon.plugin", "-p", "bench_variants", "--perf-monitor"]
        cmd += [f"--perf-output={os.path.join(suite, variant + '.json')}"]
    proc = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"bench_per_test: {variant} failed:\n{proc.stdout[-2000:]}{proc.stderr}")


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of every variant (default 5)")
    ap.add_argument("--tests", type=int, default=2000, help="no-op tests (default 2000)")
    ap.add_argument("--files", type=int, default=20, help="files they are spread over")
    ap.add_argument("--timeout", type=float, default=300.0, help="per pytest run, seconds")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-per-test-") as tmp:
        suite, plugins = os.path.join(tmp, "suite"), os.path.join(tmp, "plugins")
        os.makedirs(suite)
        os.makedirs(plugins)
        make_suite(suite, args.tests, args.files)
        for name, text in (("bench_timing.py", TIMING), ("bench_variants.py", VARIANTS)):
            with open(os.path.join(plugins, name), "w", encoding="utf-8") as fh:
                fh.write(text)
        out = os.path.join(tmp, "out.txt")
        run(suite, plugins, os.path.join(tmp, "warm.txt"), "perf", args.timeout)  # warm-up
        for _ in range(args.rounds):
            for variant in ORDER:
                run(suite, plugins, out, variant, args.timeout)
        per: dict = {v: [] for v in ORDER}
        with open(out, encoding="utf-8") as fh:
            for line in fh:
                variant, us = line.split()
                per[variant].append(float(us))
    base = min(per["plain"])
    print(
        f"CPU of one no-op test's protocol, main thread, us ({args.tests} tests, "
        f"{args.rounds} rounds; per run the median over its tests)"
    )
    print(f"  {'variant':<12} {'min':>7} {'median':>7} {'min - plain':>12}")
    figures = {}
    for v in ORDER:
        lo, mid = min(per[v]), statistics.median(per[v])
        figures[v] = {"min_us": lo, "median_us": mid, "runs_us": per[v]}
        print(f"  {v:<12} {lo:7.1f} {mid:7.1f} {lo - base:+12.1f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {"tests": args.tests, "rounds": args.rounds, "variants": figures}, fh, indent=2
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
