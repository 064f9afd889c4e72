#!/usr/bin/env python
"""Costs of measuring child processes and shared fixtures (issue 12).

1. One sampling pass of the collector over a test process with N live children (default 50,
   plus 0 for the baseline): ``Sampler.sample_group`` as the monitor calls it every interval
   (the process's own RSS, one map of every process's parent, RSS and CPU times of each
   descendant). The map reads every process of the machine: its count is printed.
2. The ``pytest_fixture_setup`` wrapper on a function-scoped fixture: pytest's hook called
   through pluggy with and without :class:`SharedFixtures` registered, the difference per call
   (target <= 2 us), and the cost of timing one shared fixture for comparison.

3. With ``--start-methods``: what the report counts of children that burn a known CPU time,
   started every way (multiprocessing pools with fork, spawn and forkserver, a forkserver
   Process, a subprocess, a grandchild), serial and with ``-n 2``: each child's own CPU (as it
   measured it) against the test's ``children.cpu_time``. Nothing else runs then.

The on/off cost on the 2000-test suite comes from scripts/bench_overhead.py, run twice::

    python scripts/bench_overhead.py --no-xdist
    PYTEST_ADDOPTS=--no-perf-children python scripts/bench_overhead.py --no-xdist

    python scripts/bench_children.py [--children 50] [--passes 200] [--calls 200000] [--json F]
    python scripts/bench_children.py --start-methods [--burn 1.0] [--json F]
    python scripts/bench_children.py --audit-hook [--reps 7] [--json F]
    python scripts/bench_children.py --at-rest [--others 1000] [--passes 60] [--json F]

5. With ``--at-rest``: one sampling pass as the monitor makes it between tests, every 0.1 s
   (its caches cold, as they are after the sleep): the CPU time of ``Sampler.sample_group`` over
   a stand-in test process with no children, its descendants found by walking down the
   threads' ``children`` files (Linux) against the scan of every process's parent (the
   fall-back), alternated pass by pass, with no other process started and with ``--others``
   idle processes (``sleep``) elsewhere on the machine.

4. With ``--audit-hook``: counting the processes a test starts (issue 27): the boundary reads
   with children on against off (RUSAGE_CHILDREN and the start counter), and what an audit hook
   would have cost instead: the nanoseconds a minimal one adds to each audited event
   (``sys.audit`` of an event it ignores) times the audited events a no-op test raises in a
   plain pytest run (2000 tests).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

from pytest_perfmon import _fixtures
from pytest_perfmon._counters import Counters
from pytest_perfmon.monitor import report as report_model
from pytest_perfmon.monitor import sampler

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
        s = sampler.Sampler()
        w = report_model.Worker(
            "main", os.getpid(), time.time(), boundary_methods={"children": True}
        )
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


def at_rest(others: int, passes: int, interval: float = 0.1) -> dict:
    """CPU microseconds of one cold pass over a stand-in test process (no children): the walk
    down the ``children`` files against the scan of /proc, alternated; ``others`` idle
    processes of this process's (never the stand-in's) started first."""
    sleep = shutil.which("sleep")
    idle = (
        [subprocess.Popen([sleep, "600"], stdin=subprocess.DEVNULL) for _ in range(others)]
        if sleep
        else []
    )
    stand_in = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        s = sampler.Sampler()
        if not s.task_children:
            return {"others": others, "walk_us": None, "scan_us": None}
        w = report_model.Worker(
            "gw0", stand_in.pid, time.time(), boundary_methods={"children": True}
        )
        cpu: dict = {"walk": [], "scan": []}
        for _ in range(passes):
            for mode in ("walk", "scan"):
                s.task_children = mode == "walk"
                time.sleep(interval)
                c0 = time.process_time()
                s.sample_group([w], time.time())
                cpu[mode].append((time.process_time() - c0) * 1e6)
        s.close()
        return {
            "others": len(idle),
            "machine_processes": sum(1 for n in os.listdir("/proc") if n.isdigit()),
            "walk_us": statistics.median(cpu["walk"]),
            "scan_us": statistics.median(cpu["scan"]),
        }
    finally:
        stand_in.stdin.close()
        stand_in.wait(10)
        for p in idle:
            p.kill()
        for p in idle:
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


_BURNMOD = """
import json, os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
BURN = ("import time\\nt = time.process_time()\\nwhile time.process_time() - t < {}: pass\\n"
        "print(time.process_time())")

def burn(sec):
    t = time.process_time()
    while time.process_time() - t < sec:
        pass
    return os.getpid(), time.process_time()

def burn_into(conn, sec):
    conn.send(burn(sec))
    conn.close()

def note(name, burned, total):
    with open(os.path.join(HERE, f"burned-{name}.json"), "w") as f:
        json.dump([burned, total], f)

def python(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    return float(out.stdout.split()[-1])
"""

_STARTS = """
import multiprocessing as mp
import burnmod

SEC = {sec}

def pool(method):
    ctx = mp.get_context(method)
    p = ctx.Pool(2)
    try:
        got = p.map_async(burnmod.burn, [SEC / 4] * 4, chunksize=1).get(120)
    finally:
        p.close()
        p.join()
    last = {{}}
    for pid, cpu in got:
        last[pid] = max(cpu, last.get(pid, 0.0))
    burnmod.note(method, SEC, sum(last.values()))

def test_fork():
    pool("fork")

def test_spawn():
    pool("spawn")

def test_forkserver():
    pool("forkserver")

def test_forkserver_process():
    ctx = mp.get_context("forkserver")
    mine, theirs = ctx.Pipe(duplex=False)
    p = ctx.Process(target=burnmod.burn_into, args=(theirs, SEC))
    p.start()
    theirs.close()
    try:
        assert mine.poll(120)
        _, total = mine.recv()
    finally:
        p.join(120)
        if p.is_alive():
            p.kill()
            p.join(10)
    burnmod.note("forkserver_process", SEC, total)

def test_subprocess():
    burnmod.note("subprocess", SEC, burnmod.python(burnmod.BURN.format(SEC)))

def test_grandchild():
    code = ("import sys, time; sys.path.insert(0, %r); import burnmod\\n"
            "print(burnmod.python(%r) + time.process_time())"
            % (burnmod.HERE, burnmod.BURN.format(SEC)))
    burnmod.note("grandchild", SEC, burnmod.python(code))

def test_idle():
    pass
"""

_NAMES = ["fork", "spawn", "forkserver", "forkserver_process", "subprocess", "grandchild"]


def start_methods(sec: float, workers: Optional[str]) -> list:
    """One pytest run (``-n workers`` when given): per way of starting, the CPU the children
    burned in their loops, their processes' whole CPU, and the report's children block."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for name, text in (
            ("burnmod.py", _BURNMOD),
            ("test_starts.py", _STARTS.format(sec=sec)),
            ("pytest.ini", "[pytest]\n"),
        ):
            with open(os.path.join(d, name), "w", encoding="utf-8") as f:
                f.write(text)
        out = os.path.join(d, "perf.json")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--perf-monitor"]
        cmd += [f"--perf-output={out}", "--perf-cpu-interval", "0.05"]
        cmd += ["-n", workers] if workers else []
        subprocess.run(cmd, cwd=d, check=True, timeout=600, stdout=subprocess.DEVNULL)
        with open(out, encoding="utf-8") as f:
            tests = json.load(f)["tests"]
        rows = []
        for name in _NAMES:
            with open(os.path.join(d, f"burned-{name}.json"), encoding="utf-8") as f:
                burned, total = json.load(f)
            kids = tests[f"test_starts.py::test_{name}"]["children"] or {}
            rows.append(
                {
                    "start": name,
                    "workers": workers,
                    "burned_s": burned,
                    "children_whole_cpu_s": round(total, 3),
                    "counted_s": kids.get("cpu_time"),
                    "processes": kids.get("processes"),
                    "peak_rss_mb": kids.get("peak_rss_mb"),
                }
            )
        return rows


AUDIT_PROBE = r"""
import json, statistics, sys, time
from pytest_perfmon import _counters
from pytest_perfmon._counters import Counters

def per_event(n, reps):
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            sys.audit("perfmon.bench")
        out.append((time.perf_counter() - t) / n * 1e9)
    return statistics.median(out)

def boundaries(c, n, reps):
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            c.reset()
            c.extra(None)
        out.append((time.perf_counter() - t) / n * 1e9)
    return statistics.median(out)

n, reps = int(sys.argv[1]), int(sys.argv[2])
before = per_event(n, reps)
off = Counters(children=False)
plain = boundaries(off, n // 10, reps)
on = Counters(children=True)  # the start counter's wrappers: nothing per event
kids = boundaries(on, n // 10, reps)
started = on.children_now
on.children_now = None
STARTS = frozenset(("subprocess.Popen", "os.fork", "os.system"))
count = [0]
def hook(event, args):  # the audit hook the start counter is not
    if event in STARTS:
        count[0] += 1
sys.addaudithook(hook)
after = per_event(n, reps)
print(json.dumps({"event_ns_without_hook": before, "event_ns_with_hook": after,
                  "boundaries_ns_children_off": plain, "boundaries_ns_children_on": kids}))
"""

EVENTS_PROBE = r"""
import sys
n = [0]
def count(event, args):
    n[0] += 1
sys.addaudithook(count)
import pytest
t = [0]
class Mark:
    def pytest_runtestloop(self, session):
        t[0] = n[0]
rc = pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:randomly", sys.argv[1]],
                 plugins=[Mark()])
print("EVENTS", (n[0] - t[0]) / int(sys.argv[2]))
"""


def audit_hook(tests: int, reps: int) -> dict:
    """Counting the processes a test starts (issue 27): the boundary reads with children on
    and off, and why it is no audit hook: what a minimal one adds to every audited event of
    the process, and how many audited events a no-op test of a plain pytest run raises."""
    import subprocess
    import tempfile

    out = subprocess.run(
        [sys.executable, "-c", AUDIT_PROBE, "1000000", str(reps)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    figures = json.loads(out.stdout)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "test_noop.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                f"import pytest\n@pytest.mark.parametrize('i', range({tests}))\n"
                "def test_noop(i):\n    pass\n"
            )
        run = subprocess.run(
            [sys.executable, "-c", EVENTS_PROBE, path, str(tests)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=d,
        )
    events = [ln for ln in run.stdout.splitlines() if ln.startswith("EVENTS")]
    figures["events_per_noop_test"] = float(events[-1].split()[1]) if events else None
    added = figures["event_ns_with_hook"] - figures["event_ns_without_hook"]
    per_test = figures["boundaries_ns_children_on"] - figures["boundaries_ns_children_off"]
    per_test += added * (figures["events_per_noop_test"] or 0.0)
    figures["audit_hook_would_add_ns_per_test"] = per_test - (
        figures["boundaries_ns_children_on"] - figures["boundaries_ns_children_off"]
    )
    return figures


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--children", type=int, default=50, help="live children (default 50)")
    ap.add_argument("--passes", type=int, default=200, help="timed sampling passes")
    ap.add_argument("--calls", type=int, default=20000, help="hook calls per repetition")
    ap.add_argument("--reps", type=int, default=7, help="repetitions (median reported)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    ap.add_argument(
        "--start-methods", action="store_true", help="children counted per way of starting"
    )
    ap.add_argument("--burn", type=float, default=1.0, help="CPU s each test's children burn")
    ap.add_argument(
        "--audit-hook", action="store_true", help="the cost of the audit hook (issue 27)"
    )
    ap.add_argument(
        "--at-rest", action="store_true", help="one cold pass: the walk against the scan"
    )
    ap.add_argument("--others", type=int, default=1000, help="idle processes for --at-rest")
    args = ap.parse_args(argv)
    if args.at_rest:
        passes = min(args.passes, 60)
        rows = [at_rest(0, passes), at_rest(args.others, passes)]
        print("one cold sampling pass (every 0.1 s), CPU us, median of", passes)
        for r in rows:
            print(
                f"  {r['others']:5d} idle processes ({r.get('machine_processes')} on the "
                f"machine): walk {r['walk_us']:.0f}, scan {r['scan_us']:.0f}"
                if r["walk_us"] is not None
                else "  no /proc/PID/task/TID/children here: the scan only"
            )
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"at_rest": rows}, f, indent=2)
        return 0
    if args.audit_hook:
        fig = audit_hook(2000, args.reps)
        for k, v in fig.items():
            print(f"  {k:<32} {v if v is None else round(v, 1)}")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"audit_hook": fig}, f, indent=2)
        return 0
    if args.start_methods:
        rows = start_methods(args.burn, None) + start_methods(args.burn, "2")
        print("start               workers  burned  children's whole CPU  counted  processes")
        for r in rows:
            print(
                f"  {r['start']:<18} {r['workers'] or '-':>3}  {r['burned_s']:6.2f}  "
                f"{r['children_whole_cpu_s']:20.2f}  {r['counted_s'] or 0:7.2f}  "
                f"{r['processes'] or 0:9d}"
            )
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"start_methods": rows}, f, indent=2)
        return 0
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
