#!/usr/bin/env python
"""Costs of measuring child processes and shared fixtures (issue 12).

1. One sampling pass of the collector over a test process with N live children (default 50,
   plus 0 for the baseline): ``Sampler.sample_group`` as the monitor calls it every interval
   (the process's own RSS, one map of every process's parent, RSS and CPU times of each
   descendant). The map reads every process of the machine: its count is printed.
2. The ``pytest_fixture_setup`` wrapper on a function-scoped fixture: pytest's hook called
   through pluggy with and without :class:`SharedFixtures` registered, the difference per call
   (target <= 2 us), and the cost of timing one shared fixture for comparison.

The on/off cost on the 2000-test suite comes from scripts/bench_overhead.py, run twice::

    python scripts/bench_overhead.py --no-xdist
    PYTEST_ADDOPTS=--no-perf-children python scripts/bench_overhead.py --no-xdist

    python scripts/bench_children.py [--children 50] [--passes 200] [--calls 200000] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

from pytest_perfmon import _fixtures
from pytest_perfmon._counters import Counters
from pytest_perfmon.monitor import report as R
from pytest_perfmon.monitor import sampler as S

_perf = time.perf_counter
TARGET_FIXTURE_US = 2.0


def sampling_pass(children: int, passes: int) -> dict:
    """Median and max ms of one pass with ``children`` live children of this process."""
    import psutil

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        for _ in range(children)
    ]
    try:
        s = S.Sampler()
        w = R.Worker("main", os.getpid(), time.time(), boundary_methods={"children": True})
        deadline = time.monotonic() + 60
        while True:  # until every child runs (psutil sees it as our child)
            seen = len(s.descendants(os.getpid(), time.time()))
            if seen >= children or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        s.sample_group([w], time.time())  # warm: Process objects cached as in a long run
        times = []
        for _ in range(passes):
            now = time.time()
            t0 = _perf()
            s.sample_group([w], now)
            times.append((_perf() - t0) * 1000)
            w.samples_t.clear()
            w.samples_rss.clear()
            w.child_t.clear()
            w.child_s.clear()
        return {
            "children": children,
            "seen": seen,
            "machine_processes": len(psutil.pids()),
            "median_ms": statistics.median(times),
            "max_ms": max(times),
        }
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            p.wait(10)


class _Measurer:
    def __init__(self) -> None:
        self.counters = Counters()
        self.phase: dict = {}


class _FixtureDef:
    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.argname = "fx"
        self.func = sampling_pass
        self.fins: list = []

    def addfinalizer(self, fin: Any) -> None:
        self.fins.append(fin)


class _Impl:
    """Stands for pytest's own pytest_fixture_setup (firstresult): returns at once."""

    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Any:
        return 1


def fixture_wrapper(calls: int, reps: int) -> dict:
    import pluggy
    from _pytest import hookspec

    def hook(with_wrapper: bool) -> Any:
        pm = pluggy.PluginManager("pytest")
        pm.add_hookspecs(hookspec)
        pm.register(_Impl())
        if with_wrapper:
            pm.register(_fixtures.SharedFixtures(_Measurer(), os.getcwd()))
        return pm.hook.pytest_fixture_setup

    def per_call(h: Any, fd: Any) -> float:
        t0 = _perf()
        for _ in range(calls):
            h(fixturedef=fd, request=None)
        return (_perf() - t0) / calls * 1e6

    plain, wrapped = hook(False), hook(True)
    fn = _FixtureDef("function")
    rows: dict = {"plain": [], "wrapped": [], "shared": []}
    for _ in range(reps):  # taking turns
        rows["plain"].append(per_call(plain, fn))
        rows["wrapped"].append(per_call(wrapped, fn))
        shared = _FixtureDef("module")
        rows["shared"].append(per_call(wrapped, shared) if calls <= 20000 else 0.0)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "hook_us": med["plain"],
        "hook_with_wrapper_us": med["wrapped"],
        "wrapper_function_scope_us": med["wrapped"] - med["plain"],
        "wrapper_shared_scope_us": med["shared"] - med["plain"] if med["shared"] else None,
    }


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--children", type=int, default=50, help="live children (default 50)")
    ap.add_argument("--passes", type=int, default=200, help="timed sampling passes")
    ap.add_argument("--calls", type=int, default=20000, help="hook calls per repetition")
    ap.add_argument("--reps", type=int, default=7, help="repetitions (median reported)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    out: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    out["sampling"] = [sampling_pass(0, args.passes), sampling_pass(args.children, args.passes)]
    print("one sampling pass (Sampler.sample_group over this process and its descendants)")
    for r in out["sampling"]:
        print(
            f"  {r['children']:3d} children ({r['seen']} seen; {r['machine_processes']} processes "
            f"on the machine): median {r['median_ms']:.3f} ms, max {r['max_ms']:.3f} ms"
        )
    fw = fixture_wrapper(args.calls, args.reps)
    out["fixture_wrapper"] = fw
    ok = fw["wrapper_function_scope_us"] <= TARGET_FIXTURE_US
    out["fixture_wrapper"]["ok"] = ok
    print("pytest_fixture_setup through pluggy (a stand-in for pytest's own implementation)")
    print(f"  without the wrapper           {fw['hook_us']:.3f} us")
    print(f"  with it, function scope       {fw['hook_with_wrapper_us']:.3f} us")
    print(
        f"  wrapper cost, function scope  {fw['wrapper_function_scope_us']:.3f} us "
        f"(target <= {TARGET_FIXTURE_US:g} us: {'OK' if ok else 'MISSED'})"
    )
    if fw["wrapper_shared_scope_us"] is not None:
        print(f"  wrapper cost, shared scope    {fw['wrapper_shared_scope_us']:.3f} us (timed)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
