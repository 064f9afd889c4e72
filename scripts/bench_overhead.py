#!/usr/bin/env python
"""End-to-end overhead of ``pytest --perf-monitor`` against plain pytest.

Generates suites of trivial tests in a temporary directory and runs plain
``python -m pytest -q -p no:cacheprovider`` and the same with ``--perf-monitor`` in
alternation (plain/perf, then perf/plain, ...), timing each subprocess's wall time with
``time.perf_counter``. Reports medians:

* the 2000-test suite: ratio perf/plain (target <= 1.05);
* the same with ``-n 2`` (pytest-xdist) on both sides (target <= 1.05), and
  ``session.records_dropped`` from those reports (must be 0);
* a 1-test suite: the fixed cost, median(perf) - median(plain) in ms (target <= 80 ms);
* the monitor's CPU per test: ``session.collector_cpu_time / total_tests`` of the 2000-test
  reports (target <= 20 us). It includes the monitor's start-up (imports), so the 1-test figure
  and the marginal ``(cpu_2000 - cpu_1) / 1999`` are given too.

Also shown: the CPU (user+sys) of the whole process tree per run, from RUSAGE_CHILDREN.

With ``--peers`` the same rounds also run the peer pytest-timing 0.4.0 in its light mode
(``--timing --timing-capture light``: times only) and its full mode (``--timing-capture full``:
CPU and memory too), so that the ratios to the peer come from the same run. pytest-timing is
installed with pip into the benchmark's temporary directory (``--target``) and put on
PYTHONPATH for those runs only: the plain and perf runs never load it.

    python scripts/bench_overhead.py [--runs 5] [--runs-one 9] [--no-xdist] [--peers] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

_perf = time.perf_counter

TARGET_RATIO = 1.05
TARGET_RATIO_XDIST = 1.05
TARGET_FIXED_MS = 80.0
#: perfmon's wall over pytest-timing's light mode (times only), serial and -n 2 (issue 25)
TARGET_OVER_PEER = 0.95
TARGET_MONITOR_US = 20.0


def make_suite(root: str, n_tests: int, files: int) -> str:
    """``n_tests`` trivial tests spread evenly over ``files`` files (e.g. 20 x 100)."""
    os.makedirs(root)
    # an ini file here makes this the rootdir: nothing from the caller's project leaks in
    with open(os.path.join(root, "pytest.ini"), "w", encoding="utf-8") as f:
        f.write("[pytest]\n")
    files = max(1, min(files, n_tests))
    for i in range(files):
        count = n_tests // files + (1 if i < n_tests % files else 0)
        with open(os.path.join(root, f"test_gen_{i:03d}.py"), "w", encoding="utf-8") as f:
            for j in range(count):
                f.write(f"def test_{j}():\n    pass\n\n\n")
    return root


PEER = "pytest-timing==0.4.0"
#: side name -> extra pytest arguments; "perf" adds --perf-monitor and an output path.
SIDES = {
    "plain": [],
    "perf": [],
    "timing-light": ["--timing", "--timing-capture", "light"],
    "timing-full": ["--timing", "--timing-capture", "full"],
}


def install_peer(workdir: str) -> str:
    """pip-install pytest-timing into a private directory; return that directory."""
    target = os.path.join(workdir, "peer")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, PEER]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"cannot install {PEER}: {proc.stdout.decode(errors='replace')[-500:]}")
    return target


class Runner:
    def __init__(self, workdir: str, timeout: float, verbose: bool, bytecode_cache: bool) -> None:
        self.peer_path: Optional[str] = None
        self.workdir = workdir
        self.timeout = timeout
        self.verbose = verbose
        self.count = 0
        self.env = dict(os.environ)
        for k in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
            self.env.pop(k, None)
        if bytecode_cache:
            # Users run with .pyc files; without them every run compiles pytest, the plugin and
            # the monitor again (PYTHONDONTWRITEBYTECODE=1 costs ~0.7 s per run here). A private
            # cache prefix keeps the caller's tree clean; the warm-up runs fill it.
            self.env.pop("PYTHONDONTWRITEBYTECODE", None)
            self.env["PYTHONPYCACHEPREFIX"] = os.path.join(workdir, "pycache")

    def run(self, suite: str, side: str, extra: list, expect: int) -> dict:
        """One pytest run: wall seconds, tree CPU seconds and (with perf) the report's session."""
        self.count += 1
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
        cmd += SIDES[side]
        env = self.env
        if side.startswith("timing"):
            env = dict(env, PYTHONPATH=str(self.peer_path))
        perf = side == "perf"
        out_path = None
        if perf:
            out_path = os.path.join(self.workdir, f"report-{self.count}.json")
            cmd += ["--perf-monitor", f"--perf-output={out_path}"]
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = _perf()
        try:
            proc = subprocess.run(
                cmd,
                cwd=suite,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise SystemExit(f"timed out after {self.timeout} s: {' '.join(cmd)}") from exc
        wall = _perf() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        text = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0 or f"{expect} passed" not in text:
            tail = "\n".join(text.strip().splitlines()[-15:])
            raise SystemExit(f"run failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        if "perfmon: warning" in text:
            print("  ! " + "\n  ! ".join(ln for ln in text.splitlines() if "perfmon:" in ln))
        session = None
        if out_path is not None:
            with open(out_path, encoding="utf-8") as f:
                session = json.load(f)["session"]
            os.unlink(out_path)
            if session.get("total_tests") != expect:
                raise SystemExit(f"report has {session.get('total_tests')} tests, want {expect}")
        if self.verbose:
            print(f"    {side:<12} {' '.join(extra):<6} {wall:7.3f} s")
        return {"wall": wall, "cpu": cpu, "session": session}


def compare(
    runner: Runner, suite: str, extra: list, runs: int, expect: int, label: str, sides: list
) -> dict:
    """Alternate the sides' runs after one unmeasured warm-up of each.

    The order turns every round (two sides: ABBA; four: ABCD, DCBA, BCDA, ADCB, ...), so that
    no side always runs first after a busy moment.
    """
    print(f"  {label}: warm-up + {runs} runs per side ({', '.join(sides)}) ...", flush=True)
    for side in sides:
        runner.run(suite, side, extra, expect)
    out: dict = {side: [] for side in sides}
    for i in range(runs):
        order = sides[i // 2 % len(sides) :] + sides[: i // 2 % len(sides)]
        if i % 2:
            order = order[::-1]
        for side in order:
            out[side].append(runner.run(suite, side, extra, expect))
    return out


def loadavg() -> Optional[list]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def med(xs: list) -> float:
    return statistics.median(xs)


def summarize(res: dict) -> dict:
    pw = [r["wall"] for r in res["plain"]]
    fw = [r["wall"] for r in res["perf"]]
    sessions = [r["session"] for r in res["perf"]]
    return {
        "plain_wall": pw,
        "perf_wall": fw,
        "plain_median": med(pw),
        "perf_median": med(fw),
        "ratio": med(fw) / med(pw),
        # Runs were made in pairs under the same load: the median of the per-pair ratios and the
        # ratio of the minima are less sensitive to a machine that is busy with other work.
        "ratio_paired": med([f / p for p, f in zip(pw, fw)]),
        "ratio_min": min(fw) / min(pw),
        "spread": [min(pw), max(pw), min(fw), max(fw)],
        "diff_ms": (med(fw) - med(pw)) * 1e3,
        "plain_cpu_median": med([r["cpu"] for r in res["plain"]]),
        "perf_cpu_median": med([r["cpu"] for r in res["perf"]]),
        "collector_cpu": [s.get("collector_cpu_time") for s in sessions],
        "records_dropped": [s.get("records_dropped") for s in sessions],
        "collector": sorted({str(s.get("collector")) for s in sessions}),
        "peers": {
            side: {
                "wall": [r["wall"] for r in runs],
                "median": med([r["wall"] for r in runs]),
                "ratio": med([r["wall"] for r in runs]) / med(pw),
                "perf_over_peer": med(fw) / med([r["wall"] for r in runs]),
            }
            for side, runs in res.items()
            if side not in ("plain", "perf")
        },
    }


def ratios(r: dict) -> str:
    return f"x{r['ratio_paired']:.3f} / x{r['ratio_min']:.3f}"


def spread(r: dict, scale: float = 1.0, unit: str = "s") -> str:
    a, b, c, d = (v * scale for v in r["spread"])
    fmt = ".0f" if scale != 1.0 else ".2f"
    return f"{a:{fmt}}-{b:{fmt}} | {c:{fmt}}-{d:{fmt}} {unit}"


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="measured runs per side (default 5)")
    ap.add_argument(
        "--runs-one", type=int, default=9, help="runs per side for the 1-test suite (default 9)"
    )
    ap.add_argument("--tests", type=int, default=2000, help="tests in the big suite")
    ap.add_argument("--files", type=int, default=20, help="files the big suite is spread over")
    ap.add_argument("--no-xdist", dest="xdist", action="store_false", help="skip the -n 2 runs")
    ap.add_argument("--workers", type=int, default=2, help="xdist workers (default 2)")
    ap.add_argument("--timeout", type=float, default=300.0, help="per pytest run, seconds")
    ap.add_argument("--json", metavar="FILE", help="also write all figures as JSON here")
    ap.add_argument(
        "--no-bytecode-cache",
        dest="bytecode_cache",
        action="store_false",
        help="run pytest with the caller's environment as is (default: drop "
        "PYTHONDONTWRITEBYTECODE and use a private PYTHONPYCACHEPREFIX)",
    )
    ap.add_argument(
        "--peers",
        action="store_true",
        help=f"also run {PEER} (light and full) in the same rounds, for ratios to the peer",
    )
    ap.add_argument("--keep", action="store_true", help="keep the generated suites")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.runs_one < 1 or args.tests < 2 or args.files < 1:
        ap.error("--runs, --runs-one, --files must be >= 1 and --tests >= 2")
    if args.xdist:
        try:
            import xdist  # noqa: F401
        except ImportError:
            ap.error("pytest-xdist is not installed: use --no-xdist")

    n_tests = args.tests
    tmp = tempfile.mkdtemp(prefix="perfmon-bench-")
    facts = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "runs": args.runs,
        "runs_one": args.runs_one,
        "loadavg_before": loadavg(),
    }
    print(
        f"pytest-perfmon overhead: python {facts['python']}, nproc={facts['nproc']}, "
        f"{facts['date']}"
    )
    t_start = _perf()
    try:
        big_suite = make_suite(os.path.join(tmp, "big"), n_tests, args.files)
        one = make_suite(os.path.join(tmp, "one"), 1, 1)
        runner = Runner(tmp, args.timeout, args.verbose, args.bytecode_cache)
        sides = ["plain", "perf"]
        if args.peers:
            runner.peer_path = install_peer(tmp)
            sides += ["timing-light", "timing-full"]

        results: dict = {}
        results["serial"] = summarize(
            compare(runner, big_suite, [], args.runs, n_tests, f"{n_tests} tests", sides)
        )
        if args.xdist:
            xd = ["-n", str(args.workers)]
            label = f"{n_tests} tests -n {args.workers}"
            results["xdist"] = summarize(
                compare(runner, big_suite, xd, args.runs, n_tests, label, sides)
            )
        one_sides = ["plain", "perf"]
        results["one"] = summarize(compare(runner, one, [], args.runs_one, 1, "1 test", one_sides))
    finally:
        if args.keep:
            print(f"suites kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = _perf() - t_start
    facts["loadavg_after"] = loadavg()

    s, o = results["serial"], results["one"]
    cpu_big = med(s["collector_cpu"])
    cpu_one = med(o["collector_cpu"])
    per_test_us = med([c / n_tests for c in s["collector_cpu"]]) * 1e6
    marginal_us = (cpu_big - cpu_one) / (n_tests - 1) * 1e6
    figures: list = []

    def fig(name: str, value: str, target: str, ok: Optional[bool]) -> None:
        figures.append(
            {"figure": name, "value": value, "target": target, "ok": ok},
        )

    fig(
        f"{n_tests} tests: wall plain / perf (median)",
        f"{s['plain_median']:.3f} s / {s['perf_median']:.3f} s",
        "",
        None,
    )
    fig(
        f"{n_tests} tests: ratio of medians",
        f"x{s['ratio']:.3f}",
        f"<= {TARGET_RATIO}",
        s["ratio"] <= TARGET_RATIO,
    )
    fig(f"{n_tests} tests: (paired / of minima)", ratios(s), "", None)
    fig(f"{n_tests} tests: wall min-max plain | perf", spread(s), "", None)
    fig(
        f"{n_tests} tests: added wall per test (incl. fixed)",
        f"{(s['perf_median'] - s['plain_median']) / n_tests * 1e6:.0f} us",
        "",
        None,
    )
    fig(
        f"{n_tests} tests: tree CPU plain / perf",
        f"{s['plain_cpu_median']:.2f} s / {s['perf_cpu_median']:.2f} s",
        "",
        None,
    )
    if "xdist" in results:
        x = results["xdist"]
        fig(
            f"{n_tests} tests -n {args.workers}: wall plain / perf",
            f"{x['plain_median']:.3f} s / {x['perf_median']:.3f} s",
            "",
            None,
        )
        fig(
            f"{n_tests} tests -n {args.workers}: ratio of medians",
            f"x{x['ratio']:.3f}",
            f"<= {TARGET_RATIO_XDIST}",
            x["ratio"] <= TARGET_RATIO_XDIST,
        )
        fig(f"{n_tests} tests -n {args.workers}: (paired / of minima)", ratios(x), "", None)
        fig(f"{n_tests} tests -n {args.workers}: wall min-max plain | perf", spread(x), "", None)
        fig(
            f"{n_tests} tests -n {args.workers}: tree CPU plain / perf",
            f"{x['plain_cpu_median']:.2f} s / {x['perf_cpu_median']:.2f} s",
            "",
            None,
        )
        dropped = x["records_dropped"]
        fig(
            f"-n {args.workers}: records_dropped (all runs)",
            ", ".join(map(str, dropped)),
            "== 0",
            all(d == 0 for d in dropped),
        )
    for key, label in (
        ("serial", f"{n_tests} tests"),
        ("xdist", f"{n_tests} tests -n {args.workers}"),
    ):
        for side, peer in results.get(key, {}).get("peers", {}).items():
            fig(
                f"{label}: {side} ratio to plain / perfmon to it",
                f"x{peer['ratio']:.3f} / x{peer['perf_over_peer']:.3f}",
                f"<= x{TARGET_OVER_PEER}" if side == "timing-light" else "< x1 ahead",
                peer["perf_over_peer"] <= TARGET_OVER_PEER if side == "timing-light" else None,
            )
    fig(
        "1 test: wall plain / perf (median)",
        f"{o['plain_median'] * 1e3:.0f} ms / {o['perf_median'] * 1e3:.0f} ms",
        "",
        None,
    )
    fig("1 test: wall min-max plain | perf", spread(o, 1e3, "ms"), "", None)
    fig(
        "1 test: fixed cost (difference of medians)",
        f"{o['diff_ms']:.0f} ms",
        f"<= {TARGET_FIXED_MS:.0f} ms",
        o["diff_ms"] <= TARGET_FIXED_MS,
    )
    fig(
        f"monitor CPU / test ({n_tests} tests, incl. start-up)",
        f"{per_test_us:.1f} us ({cpu_big * 1e3:.0f} ms)",
        f"<= {TARGET_MONITOR_US:.0f} us",
        per_test_us <= TARGET_MONITOR_US,
    )
    fig("monitor CPU, 1-test run (start-up)", f"{cpu_one * 1e3:.0f} ms", "", None)
    fig(
        "monitor CPU marginal / test",
        f"{marginal_us:.1f} us",
        f"<= {TARGET_MONITOR_US:.0f} us",
        marginal_us <= TARGET_MONITOR_US,
    )

    print()
    w = max(len(f["figure"]) for f in figures)
    vw = max(len(f["value"]) for f in figures)
    print(f"{'figure':<{w}}  {'value':<{vw}}  {'target':<10}  ")
    print("-" * (w + vw + 22))
    for f in figures:
        v = "" if f["ok"] is None else verdict(f["ok"])
        print(f"{f['figure']:<{w}}  {f['value']:<{vw}}  {f['target']:<10}  {v}")
    print()
    print(
        f"medians of {args.runs} alternated runs per side ({args.runs_one} for the 1-test suite); "
        f"benchmark took {elapsed:.0f} s; load average before {facts['loadavg_before']}, "
        f"after {facts['loadavg_after']}"
    )
    if args.json:
        out = {"facts": facts, "tests": n_tests, "results": results, "figures": figures}
        out["monitor_cpu_us_per_test"] = per_test_us
        out["monitor_cpu_marginal_us_per_test"] = marginal_us
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
        print(f"JSON written to {args.json}")
    missed = [f for f in figures if f["ok"] is False]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
