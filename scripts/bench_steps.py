#!/usr/bin/env python3
"""Where the fixed cost of ``--perf-monitor`` goes: timestamps of each step of a pytest run.

A small hook plugin (written into a temporary directory, loaded with ``-p``) notes the time of
each step in the process that owns the session (plain pytest or the xdist controller; workers
note nothing): process start (from /proc), configure, session start, collection, the first and
last test, session finish, terminal summary, unconfigure, and the interpreter's exit handlers.
Each side runs alternately (plain, perfmon, and with ``--python-b`` perfmon under a second
interpreter, e.g. another checkout's venv); the whole process is also timed from outside. The
table gives the median time of each step (from the previous mark) per side.

    python scripts/bench_steps.py [--runs 9] [--tests 1] [-n 4] [--exec-side]
                                  [--python-b OTHER/bin/python]

Linux only (the process start time is read from /proc/self/stat). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PLUGIN = r"""
import atexit, json, os, time
_p = time.perf_counter
def _start():
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    return _p() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
M = {"exec": _start(), "plugins imported": _p()}
def mark(k):
    M.setdefault(k, _p())
import pytest
class First:
    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config): mark("configure begins")
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session): mark("configure ends")
    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session): mark("session start")
    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session): mark("collected")
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session): mark("test loop begins")
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid, location): mark("first test starts")
    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logfinish(self, nodeid, location): M["last test ends"] = _p()
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session): mark("session finish")
    @pytest.hookimpl(tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter): mark("terminal summary")
    @pytest.hookimpl(tryfirst=True)
    def pytest_unconfigure(self, config): mark("unconfigure begins")
class Last:
    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config): mark("unconfigure ends")
def pytest_addoption(parser, pluginmanager):
    pluginmanager.register(First(), "perfmon-steps-first")
    pluginmanager.register(Last(), "perfmon-steps-last")
def _dump():
    M["exit handlers"] = _p()
    path = os.environ.get("PERFMON_STEPS_OUT")
    if path and not os.environ.get("PYTEST_XDIST_WORKER"):
        base = M["exec"]
        with open(path, "a") as f:
            f.write(json.dumps({k: (v - base) * 1000 for k, v in M.items()}) + "\n")
atexit.register(_dump)
"""

#: The steps, in order; each row of the table is the time from the previous one.
STEPS = [
    "plugins imported",
    "configure begins",
    "configure ends",
    "session start",
    "collected",
    "test loop begins",
    "first test starts",
    "last test ends",
    "session finish",
    "terminal summary",
    "unconfigure begins",
    "unconfigure ends",
    "exit handlers",
]
WHAT = {
    "plugins imported": "interpreter start, pytest and plugins imported",
    "configure begins": "command line, ini, conftests",
    "configure ends": "pytest_configure (perfmon: spawn, imports, hello)",
    "session start": "session start (xdist: workers started)",
    "collected": "collection",
    "test loop begins": "perfmon: wait for the monitor's ready",
    "first test starts": "(xdist: workers collect and start)",
    "last test ends": "the tests",
    "session finish": "perfmon: last batch, goodbye (acknowledged)",
    "terminal summary": "other plugins' session finish",
    "unconfigure begins": "terminal summary (perfmon: waits for the report's done)",
    "unconfigure ends": "unconfigure (perfmon: the monitor's exit, its directory)",
    "exit handlers": "to the exit handlers",
}


def make_suite(root: str, tests: int, files: int) -> str:
    suite = os.path.join(root, "suite")
    os.makedirs(suite)
    with open(os.path.join(suite, "pytest.ini"), "w") as f:
        f.write("[pytest]\n")
    per = -(-tests // files)
    left = tests
    for i in range(files):
        n = min(per, left)
        if n <= 0:
            break
        with open(os.path.join(suite, f"test_f{i}.py"), "w") as f:
            f.write("".join(f"def test_{j}():\n    pass\n" for j in range(n)))
        left -= n
    return suite


def side_env(name: str) -> dict:
    """The environment a side adds: the exec side forces the launcher (issue 25)."""
    return {"PERFMON_MONITOR_START": "exec"} if name == "perf exec" else {}


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=9, help="alternated runs per side (default 9)")
    ap.add_argument("--tests", type=int, default=1, help="no-op tests in the suite (default 1)")
    ap.add_argument("--files", type=int, default=1, help="files they are spread over")
    ap.add_argument("-n", dest="workers", type=int, default=0, help="xdist workers (0: none)")
    ap.add_argument("--python-b", help="a second interpreter to run perfmon under (side B)")
    ap.add_argument(
        "--exec-side",
        action="store_true",
        help="one more side: perfmon with PERFMON_MONITOR_START=exec (the launcher, no fork)",
    )
    ap.add_argument("--timeout", type=float, default=300.0, help="per pytest run, seconds")
    ap.add_argument("--json", help="also write every run's marks here")
    args = ap.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("bench_steps: Linux only (/proc/self/stat)", file=sys.stderr)
        return 2
    sides = [("plain", sys.executable, False), ("perfmon", sys.executable, True)]
    if args.exec_side:
        sides.append(("perf exec", sys.executable, True))
    if args.python_b:
        sides.append(("perfmon B", args.python_b, True))
    with tempfile.TemporaryDirectory(prefix="perfmon-steps-") as tmp:
        suite = make_suite(tmp, args.tests, args.files)
        plugdir = os.path.join(tmp, "plugin")
        os.makedirs(plugdir)
        with open(os.path.join(plugdir, "perfmon_steps.py"), "w") as f:
            f.write(PLUGIN)
        out = os.path.join(tmp, "marks.jsonl")
        env = dict(os.environ, PYTHONPATH=plugdir, PYTHONPYCACHEPREFIX=os.path.join(tmp, "pyc"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("PYTEST_ADDOPTS", None)
        rows: dict = {name: [] for name, _, _ in sides}
        walls: dict = {name: [] for name, _, _ in sides}
        print(
            f"bench_steps: {args.tests} test(s), -n {args.workers}, {args.runs} runs per side "
            f"after a warm-up, load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        for i in range(args.runs + 1):
            order = sides if i % 2 == 0 else sides[::-1]
            for name, python, perf in order:
                cmd = [
                    python,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-p",
                    "perfmon_steps",
                ]
                if args.workers:
                    cmd += ["-n", str(args.workers)]
                if perf:
                    cmd += ["--perf-monitor", f"--perf-output={tmp}/report.json"]
                try:
                    os.unlink(out)
                except OSError:
                    pass
                t0 = time.perf_counter()
                proc = subprocess.run(
                    cmd,
                    cwd=suite,
                    env=dict(env, PERFMON_STEPS_OUT=out, **side_env(name)),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    timeout=args.timeout,
                )
                wall = (time.perf_counter() - t0) * 1000
                if proc.returncode != 0:
                    print(f"{name}: exit {proc.returncode}\n{proc.stderr.decode()[-2000:]}")
                    return 1
                if i == 0:
                    continue  # the warm-up fills the .pyc cache
                with open(out) as f:
                    rows[name].append(json.loads(f.readline()))
                walls[name].append(wall)
        print(f"load average at the end {os.getloadavg()[0]:.2f}\n")
        names = [name for name, _, _ in sides]
        print(
            f"{'step (median ms since the previous mark)':58}" + "".join(f"{n:>12}" for n in names)
        )
        for k, step in enumerate(STEPS):
            meds = []
            for n in names:
                # from the latest earlier mark the run has (an xdist controller collects
                # nothing: its collection marks are missing)
                got = [
                    r[step] - max(r[p] for p in ["exec", *STEPS[:k]] if p in r)
                    for r in rows[n]
                    if step in r
                ]
                meds.append(f"{statistics.median(got):12.1f}" if got else f"{'-':>12}")
            print(f"{WHAT[step][:58]:58}" + "".join(meds))
        print(
            f"{'to the exit handlers (sum)':58}"
            + "".join(
                f"{statistics.median(r['exit handlers'] for r in rows[n]):12.1f}" for n in names
            )
        )
        print(
            f"{'whole process, timed from outside':58}"
            + "".join(f"{statistics.median(walls[n]):12.1f}" for n in names)
        )
        base = walls["plain"]
        print(
            f"{'  paired difference to plain (median)':58}"
            + "".join(
                f"{statistics.median(a - b for a, b in zip(walls[n], base)):+12.1f}" for n in names
            )
        )
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"marks": rows, "walls": walls}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
