"""Benchmark of the history store: storing a big run, and `history check` / `show` on a big store.

    python scripts/bench_history.py                  # SQLite only
    python scripts/bench_history.py --pg auto        # and a throwaway PostgreSQL (initdb)
    python scripts/bench_history.py --pg postgresql://user@host/db   # an existing, EMPTY db

Measures, per back end:
  store   one run of --store-tests tests (default 10,000): record_run, wall time (median of 3)
  fill    --runs runs x --tests tests (default 500 x 2,000 = 1M results), by insert_run
  check   `perfmon history check` of the whole suite (duration, cpu_time and peak_mb, window 30)
  show    `perfmon history show NODEID` (500 points)
Target (issue 9): store <= 1 s on SQLite; check <= 5 s; show <= 0.3 s.
The data: durations 1-500 ms with 3 % noise; 1 test in 100 gets +30 % for its last 3 runs.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from pytest_perfmon.monitor import cli
from pytest_perfmon.monitor.history import context, record_run, store

BASE = json.load(
    open(os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "current.json"))
)


def report(i: int, n_tests: int, rng: np.random.Generator, base: np.ndarray, n_runs: int) -> dict:
    ts = 1_700_000_000 + 600 * i
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".000000Z"
    d = base * (1 + 0.03 * rng.standard_normal(n_tests))
    if i >= n_runs - 3:
        d[::100] *= 1.3
    tests = {}
    for j in range(n_tests):
        dj = float(d[j])
        tests[f"tests/test_mod{j // 50:03d}.py::test_case_{j:05d}"] = {
            "duration": dj,
            "setup_time": dj * 0.1,
            "call_time": dj * 0.8,
            "teardown_time": dj * 0.1,
            "memory": {"start_mb": 40.0, "peak_mb": 50.0 + j % 7, "end_mb": 40.0, "delta_mb": 0.0},
            "cpu_percent": 90.0,
            "outcome": "passed",
            "worker": "main",
            "pid": 100,
        }
    rep = dict(BASE)
    rep["session"] = dict(BASE["session"], timestamp=stamp, total_tests=n_tests, exit_status=0)
    rep["tests"] = tests
    return rep


class PG:
    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        found = shutil.which("pg_ctl")
        self.bindir = os.path.dirname(found) if found else (bins[-1] if bins else None)
        if not self.bindir:
            sys.exit("PostgreSQL binaries not found")
        self.dir = tempfile.mkdtemp(prefix="perfmon-pgbench-")
        self.user = "nobody" if os.geteuid() == 0 else None
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, "data")

    def run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=60, user=self.user)

    def start(self) -> str:
        self.run(
            f"{self.bindir}/initdb",
            "-D",
            self.data,
            "-A",
            "trust",
            "-U",
            "perfmon",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        opts = f"-c listen_addresses='' -k {self.dir} -c shared_buffers=256MB"
        self.run(
            f"{self.bindir}/pg_ctl",
            "-D",
            self.data,
            "-l",
            f"{self.dir}/log",
            "-w",
            "-t",
            "60",
            "-o",
            opts,
            "start",
        )
        return f"postgresql://perfmon@/postgres?host={self.dir}"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run(
                f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop"
            )
        shutil.rmtree(self.dir, ignore_errors=True)


def timed_cli(argv: list) -> tuple[float, int, str]:
    out = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(out):
        rc = cli.main(argv)
    return time.perf_counter() - t, rc, out.getvalue()


def bench(name: str, url: str, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(1)
    res: dict = {"backend": name}
    # store one big run (3 fresh runs into the same store: the tests table grows once)
    big_base = rng.uniform(0.001, 0.5, args.store_tests)
    times = []
    for k in range(3):
        rep = report(-10_000 - k, args.store_tests, rng, big_base, 0)  # older than the fill
        t = time.perf_counter()
        w = record_run(url, rep, {"bench": "store"}, None, env={})
        times.append(time.perf_counter() - t)
        assert w is None, w
    res["store_s"] = round(statistics.median(times), 3)
    res["store_first_s"] = round(times[0], 3)
    print(
        f"[{name}] store {args.store_tests} tests: median {res['store_s']} s "
        f"(first, creating the tests: {res['store_first_s']} s)",
        flush=True,
    )
    eng = store.open_store(url)
    eng.dispose()
    # fill: --runs x --tests, one machine
    base = rng.uniform(0.001, 0.5, args.tests)
    desc = context.local_machine()
    fp = context.fingerprint(desc)
    eng = store.open_store(url)
    t = time.perf_counter()
    for i in range(args.runs):
        rep = report(i, args.tests, rng, base, args.runs)
        store.insert_run(
            eng,
            rep,
            commit=f"{i:040x}",
            branch="main",
            labels={},
            machine_fp=fp,
            machine_desc=desc,
            source="bench",
        )
    res["fill_s"] = round(time.perf_counter() - t, 1)
    eng.dispose()
    print(f"[{name}] filled {args.runs} x {args.tests} results in {res['fill_s']} s", flush=True)
    # check and show: 3 repeats, median
    ct, st = [], []
    for _ in range(3):
        dt, rc, out = timed_cli(["history", "check", "--db", url, "--format", "json"])
        ct.append(dt)
        found = json.loads(out)["changes"]
        dt2, rc2, _ = timed_cli(
            [
                "history",
                "show",
                "tests/test_mod001.py::test_case_00050",
                "--db",
                url,
                "--limit",
                "500",
            ]
        )
        assert rc2 == 0
        st.append(dt2)
    res["check_s"] = round(statistics.median(ct), 3)
    res["check_found"] = len(found)
    res["check_expected"] = len(range(0, args.tests, 100))
    res["show_s"] = round(statistics.median(st), 3)
    print(
        f"[{name}] check: {res['check_s']} s (exit {rc}; {len(found)} changes found, "
        f"{res['check_expected']} injected slowdowns, each seen in duration and cpu_time); "
        f"show: {res['show_s']} s",
        flush=True,
    )
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pg", help="'auto' (start a throwaway server) or an empty database URL")
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--tests", type=int, default=2000)
    ap.add_argument("--store-tests", type=int, default=10_000)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as d:
        results.append(bench("sqlite", os.path.join(d, "bench.db"), args))
    if args.pg:
        server = None
        try:
            url = args.pg
            if url == "auto":
                server = PG()
                url = server.start()
            results.append(bench("postgresql", url, args))
        finally:
            if server is not None:
                server.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
