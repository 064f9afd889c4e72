#!/usr/bin/env python
"""The cost of ``--perf-profile`` (issue 24): py-spy sampling the measured processes.

Three measurements, every side alternated run by run, medians reported:

1. overhead on the 2000 no-op suite (20 files of 100 ``def test_N(): pass``): plain pytest,
   ``--perf-monitor``, ``--perf-monitor --perf-profile slow``; the ratios to plain (target: the
   profile side within +0.03 of the monitor side), wall time of the whole subprocess;
2. a CPU-bound test of fixed work (about 1 s) under pytest: its duration in the report with
   ``--perf-monitor`` against ``--perf-monitor --perf-profile all`` (what the plugin runs:
   py-spy ``--nonblocking``), target within 5 %;
3. the same fixed work in a plain Python process, timed inside it, with no sampler, py-spy
   ``--nonblocking`` and py-spy in its default blocking mode (which pauses the process at each
   sample), at the plugin's rate: why the plugin samples without blocking.

    python scripts/bench_profile.py [--runs 7] [--cpu-runs 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pytest_perfmon.monitor.profile import RATE, find_sampler  # noqa: E402

TARGET_RATIO_DELTA = 0.03
TARGET_CPU_PCT = 5.0

WORK = """
def work(n):
    x = 0
    for i in range(n):
        x += i * i % 7
    return x
"""


def calibrate() -> int:
    """Loop iterations of ``work`` that take about 1 s of CPU here."""
    ns: dict = {}
    exec(WORK, ns)
    n = 200_000
    while True:
        t = time.process_time()
        ns["work"](n)
        dt = time.process_time() - t
        if dt > 0.2:
            return int(n / dt)
        n *= 2


def env_without_ours(workdir: str) -> dict:
    env = dict(os.environ)
    for k in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        env.pop(k, None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(workdir, "pycache")
    return env


def pytest_run(suite: str, extra: list, env: dict, timeout: float) -> tuple:
    """(wall seconds, the report or None, CPU seconds of the process tree: pytest, the monitor,
    py-spy)."""
    import resource

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = os.path.join(suite, "report.json")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    if extra:
        cmd += ["--perf-monitor", f"--perf-output={out}", *extra]
    t = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=suite, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
    )
    wall = time.perf_counter() - t
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
    text = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0 or "perfmon: warning" in text:
        raise SystemExit(f"run failed (exit {proc.returncode}): {' '.join(cmd)}\n{text[-2000:]}")
    report = None
    if extra:
        with open(out, encoding="utf-8") as f:
            report = json.load(f)
        os.unlink(out)
    return wall, report, cpu


def make_noop_suite(root: str, n: int = 2000, files: int = 20) -> str:
    os.makedirs(root)
    with open(os.path.join(root, "pytest.ini"), "w", encoding="utf-8") as f:
        f.write("[pytest]\n")
    for i in range(files):
        with open(os.path.join(root, f"test_f{i}.py"), "w", encoding="utf-8") as f:
            for j in range(n // files):
                f.write(f"def test_{j}():\n    pass\n\n\n")
    return root


def make_cpu_suite(root: str, n: int) -> str:
    os.makedirs(root)
    with open(os.path.join(root, "pytest.ini"), "w", encoding="utf-8") as f:
        f.write("[pytest]\n")
    with open(os.path.join(root, "test_cpu.py"), "w", encoding="utf-8") as f:
        f.write(WORK + f"\n\ndef test_cpu():\n    work({n})\n")
    return root


def timed_process(n: int, sampler: Optional[list], reps: int, workdir: str) -> tuple:
    """The fixed work ``reps`` times in one Python process, timed inside it ([wall, CPU] each),
    with ``sampler`` (py-spy's arguments, or None) attached from outside; and py-spy's own CPU
    seconds per second while the work ran (None without it)."""
    import psutil

    script = os.path.join(workdir, "work.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(
            WORK
            + f"""
import json, sys, time
sys.stdin.readline()  # the sampler is attached
out = []
for _ in range({reps}):
    t, c = time.perf_counter(), time.process_time()
    work({n})
    out.append([time.perf_counter() - t, time.process_time() - c])
print(json.dumps(out))
"""
        )
    proc = subprocess.Popen(
        [sys.executable, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    spy = None
    try:
        if sampler is not None:
            spy = subprocess.Popen(
                [*sampler, "-p", str(proc.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # py-spy attaches (reads the interpreter's symbols) before sampling
        t = time.perf_counter()
        spy_cpu0 = sum(psutil.Process(spy.pid).cpu_times()[:2]) if spy else 0.0
        out, _ = proc.communicate("go\n", timeout=600)
        spy_rate = None
        if spy is not None:
            spy_cpu = sum(psutil.Process(spy.pid).cpu_times()[:2]) - spy_cpu0
            spy_rate = spy_cpu / (time.perf_counter() - t)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if spy is not None:
            spy.terminate()
            spy.wait(30)
    return list(json.loads(out)), spy_rate


def med(xs: list) -> float:
    return statistics.median(xs)


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per side of the 2000-test suite")
    ap.add_argument("--cpu-runs", type=int, default=7, help="runs per side of the 1 s test")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument(
        "--parts", default="123", help="which measurements (default 123: all three, in order)"
    )
    args = ap.parse_args(argv)
    exe = find_sampler()
    if exe is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[profile]'")
    workdir = tempfile.mkdtemp(prefix="perfmon-bench-profile-")
    env = env_without_ours(workdir)
    results: dict = {"loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None}
    try:
        ok1 = ok2 = True
        if "1" in args.parts:
            ok1 = overhead(workdir, env, args, results)
        n = calibrate()
        if "2" in args.parts:
            ok2 = under_pytest(workdir, env, args, results, n)
        if "3" in args.parts:
            in_process(workdir, args, results, n, exe)
        results["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        print(
            f"\nload average at start {results['loadavg_start']}, at end {results['loadavg_end']}"
        )
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
        return 0 if ok1 and ok2 else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def overhead(workdir: str, env: dict, args: argparse.Namespace, results: dict) -> bool:
    """1. the 2000 no-op suite: plain, --perf-monitor, --perf-monitor --perf-profile slow."""
    suite = make_noop_suite(os.path.join(workdir, "noop"))
    sides = {
        "plain": [],
        "monitor": ["--perf-profile", "off"],
        "profile": ["--perf-profile", "slow"],
    }
    walls: dict = {k: [] for k in sides}
    cpus: dict = {k: [] for k in sides}
    for extra in sides.values():  # warm-up: fills the .pyc cache
        pytest_run(suite, extra, env, args.timeout)
    order = list(sides)
    for i in range(args.runs):
        for k in order if i % 2 == 0 else order[::-1]:
            wall, _, cpu = pytest_run(suite, sides[k], env, args.timeout)
            walls[k].append(wall)
            cpus[k].append(cpu)
    plain = med(walls["plain"])
    r_mon = med(walls["monitor"]) / plain
    r_prof = med(walls["profile"]) / plain
    results["noop"] = {k: sorted(v) for k, v in walls.items()}
    results["noop_ratio_monitor"] = r_mon
    results["noop_ratio_profile"] = r_prof
    results["noop_cpu"] = {k: sorted(v) for k, v in cpus.items()}
    print(f"2000 no-op tests, serial ({args.runs} runs per side, medians):")
    for k in sides:
        print(
            f"  {k:<8} {med(walls[k]):6.3f} s  (min {min(walls[k]):.3f}, max {max(walls[k]):.3f})"
        )
    ok = r_prof - r_mon <= TARGET_RATIO_DELTA
    print(
        f"  ratio to plain: monitor {r_mon:.3f}, monitor + profile {r_prof:.3f}: "
        f"{r_prof - r_mon:+.3f} (target <= +{TARGET_RATIO_DELTA}) {'OK' if ok else 'MISSED'}"
    )
    c_plain = med(cpus["plain"])
    print(
        f"  CPU of the process tree: plain {c_plain:.3f} s, monitor {med(cpus['monitor']):.3f} s "
        f"({med(cpus['monitor']) / c_plain:.3f}), monitor + profile {med(cpus['profile']):.3f} s "
        f"({med(cpus['profile']) / c_plain:.3f})"
    )
    return ok


def under_pytest(workdir: str, env: dict, args: argparse.Namespace, results: dict, n: int) -> bool:
    """2. the CPU-bound test of fixed work under pytest: unsampled and sampled."""
    cpu_suite = make_cpu_suite(os.path.join(workdir, "cpu"), n)
    csides = {"unsampled": ["--perf-profile", "off"], "sampled": ["--perf-profile", "all"]}
    durs: dict = {k: [] for k in csides}
    cpus: dict = {k: [] for k in csides}
    for k in csides:
        pytest_run(cpu_suite, csides[k], env, args.timeout)
    for i in range(args.cpu_runs):
        for k in list(csides) if i % 2 == 0 else list(csides)[::-1]:
            _, rep, _ = pytest_run(cpu_suite, csides[k], env, args.timeout)
            t = rep["tests"]["test_cpu.py::test_cpu"]
            durs[k].append(t["call_time"])
            cpus[k].append(t["duration"] * (t["cpu_percent"] or 0) / 100)
    d_un, d_s = med(durs["unsampled"]), med(durs["sampled"])
    pct = (d_s / d_un - 1) * 100
    ok = pct <= TARGET_CPU_PCT
    results["cpu_test"] = {k: sorted(v) for k, v in durs.items()}
    results["cpu_test_pct"] = pct
    results["cpu_test_cpu"] = {k: sorted(v) for k, v in cpus.items()}
    print(f"\nA CPU-bound test of fixed work under pytest ({args.cpu_runs} runs per side):")
    print(
        f"  call time unsampled {d_un:.3f} s, sampled (py-spy --nonblocking, {RATE}/s) "
        f"{d_s:.3f} s: {pct:+.1f} % (target <= {TARGET_CPU_PCT:.0f} %) {'OK' if ok else 'MISSED'}"
    )
    c_un, c_s = med(cpus["unsampled"]), med(cpus["sampled"])
    print(f"  its CPU time unsampled {c_un:.3f} s, sampled {c_s:.3f} s: {c_s / c_un - 1:+.1%}")
    return ok


def in_process(workdir: str, args: argparse.Namespace, results: dict, n: int, exe: str) -> None:
    """3. the same work in a plain process: no sampler, py-spy non-blocking, blocking."""
    base = [exe, "record", "-f", "raw", "-o", os.devnull, "-r", str(RATE), "--idle"]
    modes = {"none": None, "nonblocking": base + ["--nonblocking"], "blocking": base}
    per: dict = {k: [] for k in modes}
    spy_use: dict = {k: [] for k in modes}
    for i in range(args.cpu_runs):
        for k in list(modes) if i % 2 == 0 else list(modes)[::-1]:
            times, use = timed_process(n, modes[k], 3, workdir)
            per[k].extend(times)
            if use is not None:
                spy_use[k].append(use)
    results["process"] = per
    results["py_spy_cpu_per_s"] = spy_use
    none = med([w for w, _ in per["none"]])
    none_cpu = med([c for _, c in per["none"]])
    print(f"\nThe same work in a plain process, timed inside it ({args.cpu_runs} x 3 per mode):")
    for k in modes:
        m = med([w for w, _ in per[k]])
        c = med([c for _, c in per[k]])
        own = f"; py-spy's own CPU {med(spy_use[k]) * 100:.1f} % of a core" if spy_use[k] else ""
        print(
            f"  {k:<12} wall {m:.3f} s {(m / none - 1) * 100:+5.1f} %, "
            f"CPU {c:.3f} s {(c / none_cpu - 1) * 100:+5.1f} %{own}"
        )


if __name__ == "__main__":
    sys.exit(main())
