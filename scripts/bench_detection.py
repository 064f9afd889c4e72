"""Detection quality of `perfmon history check`, from real repeated runs on this machine.

    python scripts/bench_detection.py                     # ~9 minutes on 2 cores
    python scripts/bench_detection.py --sweep             # and cpu_time gates: ~15 minutes
    python scripts/bench_detection.py --baseline-runs 20 --window 15   # quicker
    python scripts/bench_detection.py --reuse DIR         # recompute from earlier reports

1. Writes a suite of 26 tests taking 1 ms to 500 ms (13 Python loops of a fixed number of
   turns, calibrated once; 13 sleeps; the CPU ones of 200 ms and more also map and touch
   30 MB) and runs it with ``pytest --perf-monitor``:
   --baseline-runs times unchanged, then --changed-runs times with every test of >= 20 ms 25 %
   slower (PERF_BENCH_SLOW=1.25), then --changed-runs times with those tests holding 20 MB more
   (PERF_BENCH_MB=20). No synthetic noise: every number is a measured run.
2. False alarms: every window of --window consecutive unchanged runs, every test, each metric
   (duration, cpu_time, peak_mb), is one series check (history check's default gates, or
   --gate); an alarm is a change in the last --recent runs of the window (what `history check`
   reports). cpu_time is the store's column: cpu_percent x duration / 100.
3. Detection: for k = 1, 2, 3 changed runs after W - k unchanged ones (every offset into the
   unchanged runs, every k-subset order kept), the share of series of tests >= 20 ms in which
   the change is found at its place. A slowdown counts as found when a checked time metric
   (duration or cpu_time) flags it; +20 MB when peak_mb does.
4. Per metric, and for the metric sets "without_cpu_time" (duration, peak_mb: what
   `history check` checked by default before cpu_time) and "with_cpu_time" (duration,
   cpu_time, peak_mb): false alarms per 1,000 series checks (every checked series of every
   metric) and detection within 1, 2, 3 runs.
   --sweep also tries cpu_time gates (relative 5-20 %, floor 1-5 ms).
5. Next to it, `perfmon compare` with one baseline and its default thresholds: false alarms
   (a test with a duration or memory regression) over consecutive unchanged pairs, detection
   over (last unchanged, each changed) pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from pytest_perfmon.monitor import analysis  # noqa: E402
from pytest_perfmon.monitor.history import cli as hcli  # noqa: E402
from pytest_perfmon.monitor.history import detect, store  # noqa: E402

#: the metrics measured; BEFORE_METRICS: what `history check` checked by default before cpu_time
ALL_METRICS = ("duration", "cpu_time", "peak_mb")
BEFORE_METRICS = ("duration", "peak_mb")

DURATIONS_MS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500)

SUITE = textwrap.dedent(
    """
    import mmap, os, time
    import pytest

    SLOW = float(os.environ.get("PERF_BENCH_SLOW", "1"))
    EXTRA_MB = int(os.environ.get("PERF_BENCH_MB", "0"))
    PER_MS = int(os.environ["PERF_BENCH_PER_MS"])  # loop turns per ms, measured once
    MS = {durations}

    def _work(n):
        x = 0
        for i in range(n):
            x += i * i
        return x

    def _touch(mb):
        # mmap'd, so that closing it gives the memory back (malloc would keep it)
        block = mmap.mmap(-1, mb * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        return block

    def _extra(ms):
        return _touch(EXTRA_MB) if ms >= 20 and EXTRA_MB else None

    def _factor(ms):
        return SLOW if ms >= 20 else 1.0

    @pytest.mark.parametrize("ms", MS)
    def test_cpu(ms):
        keep = _extra(ms)
        data = _touch(30) if ms >= 200 else None
        _work(int(ms * PER_MS * _factor(ms)))
        for block in (keep, data):
            if block is not None:
                block.close()

    @pytest.mark.parametrize("ms", MS)
    def test_sleep(ms):
        keep = _extra(ms)
        time.sleep(ms / 1000 * _factor(ms))
        if keep is not None:
            keep.close()
    """
)


def per_ms() -> int:
    """Turns of the suite's work loop per millisecond on this machine (best of 5)."""
    n = 200_000
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        x = 0
        for i in range(n):
            x += i * i
        best = min(best, time.perf_counter() - t)
    return int(n / (best * 1000))


def run_suite(suite_dir: str, out: str, env_extra: dict) -> None:
    env = dict(os.environ, **env_extra)
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--perf-monitor",
        "--perf-output",
        out,
        suite_dir,
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=suite_dir)
    if r.returncode != 0 or not os.path.exists(out):
        sys.exit(f"suite run failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def collect(args: argparse.Namespace, work: str) -> dict:
    suite_dir = os.path.join(work, "suite")
    os.makedirs(suite_dir, exist_ok=True)
    with open(os.path.join(suite_dir, "test_bench.py"), "w") as f:
        f.write(SUITE.format(durations=repr(DURATIONS_MS)))
    rate_file = os.path.join(work, "per_ms")
    if not os.path.exists(rate_file):
        with open(rate_file, "w") as f:
            f.write(str(per_ms()))
    with open(rate_file) as f:
        rate = {"PERF_BENCH_PER_MS": f.read().strip()}
    plan = [("base", rate)] * args.baseline_runs
    plan += [("slow", {"PERF_BENCH_SLOW": "1.25", **rate})] * args.changed_runs
    plan += [("mem", {"PERF_BENCH_MB": "20", **rate})] * args.changed_runs
    files: dict = {"base": [], "slow": [], "mem": []}
    t0 = time.monotonic()
    for i, (kind, env) in enumerate(plan):
        out = os.path.join(work, f"{kind}-{len(files[kind]):03d}.json")
        if not os.path.exists(out):
            run_suite(suite_dir, out, env)
        files[kind].append(out)
        print(f"\rrun {i + 1}/{len(plan)} ({time.monotonic() - t0:.0f} s)", end="", flush=True)
    print()
    return files


def value_of(t: dict, metric: str) -> Optional[float]:
    if metric == "peak_mb":
        return t["memory"]["peak_mb"]
    if metric == "cpu_time":  # what the store records (and its migration fills in)
        return store.cpu_time(t)
    return t[metric]


def series_of(reports: list, metric: str) -> dict:
    out: dict = {}
    for rep in reports:
        for nodeid, t in rep["tests"].items():
            out.setdefault(nodeid, []).append(value_of(t, metric))
    return out


def ms_of(nodeid: str) -> int:
    return int(nodeid.rsplit("[", 1)[1].rstrip("]"))


def alarms(values: list, name: str, gate: tuple, recent: int, p: float) -> list:
    rel, floor = gate
    n = len(values)
    return [
        c
        for c in detect.changes(values, name, p_max=p, min_rel=rel, min_abs=floor)
        if c.index >= n - recent
    ]


def false_alarms(base: list, metric: str, gate: tuple, args: argparse.Namespace) -> dict:
    """Every window of W consecutive unchanged runs of every test is one series check."""
    W = args.window
    checks = 0
    which = []
    for nodeid, vals in series_of(base, metric).items():
        for end in range(W, len(vals) + 1):
            checks += 1
            name = f"{nodeid}\0{metric}\0{end}"
            found = alarms(vals[end - W : end], name, gate, args.recent, args.p)
            if found:
                which.append((nodeid, end, [round(c.rel or 0, 3) for c in found]))
    return {"checks": checks, "alarms": len(which), "which": which}


def detections(base: list, reps: list, metric: str, gate: tuple, args: argparse.Namespace) -> dict:
    """(k, test, offset into the unchanged runs, offset into the changed runs) -> whether the
    change is found at its place, for the series of tests >= 20 ms with k changed runs last."""
    W = args.window
    bser = series_of(base, metric)
    cser = series_of(reps, metric)
    out = {}
    for k in (1, 2, 3):
        for nodeid, bvals in bser.items():
            if ms_of(nodeid) < 20:
                continue
            for start in range(0, len(bvals) - (W - k) + 1):
                for off in range(0, len(cser[nodeid]) - k + 1):
                    vals = bvals[start : start + W - k] + cser[nodeid][off : off + k]
                    name = f"{nodeid}\0{metric}\0{start}\0{off}"
                    out[(k, nodeid, start, off)] = any(
                        c.index == W - k and c.after > c.before
                        for c in alarms(vals, name, gate, args.recent, args.p)
                    )
    return out


def rates(found: list) -> dict:
    """Detection within 1, 2, 3 runs: a series counts when any of ``found`` (one dict per
    metric, from :func:`detections`) flags it."""
    out = {}
    for k in (1, 2, 3):
        keys = [key for key in found[0] if key[0] == k]
        hit = sum(any(f[key] for f in found) for key in keys)
        out[f"within_{k}"] = {
            "series": len(keys),
            "detected": hit,
            "rate": round(hit / max(len(keys), 1), 4),
        }
    return out


def per_1000(n: int, checks: int) -> float:
    return round(1000 * n / max(checks, 1), 2)


def evaluate(files: dict, args: argparse.Namespace) -> dict:
    def load(path: str) -> dict:  # no schema check: the numbers are all we need
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    base = [load(f) for f in files["base"]]
    changed = {"slow": [load(f) for f in files["slow"]], "mem": [load(f) for f in files["mem"]]}
    gates = dict(hcli.DEFAULT_GATE)
    gates.update(args.gate or [])
    res: dict = {
        "runs": {k: len(v) for k, v in files.items()},
        "window": args.window,
        "recent": args.recent,
        "p": args.p,
        "gates": {m: gates[m] for m in ALL_METRICS},
    }
    fa = {m: false_alarms(base, m, gates[m], args) for m in ALL_METRICS}
    det = {
        "duration": detections(base, changed["slow"], "duration", gates["duration"], args),
        "cpu_time": detections(base, changed["slow"], "cpu_time", gates["cpu_time"], args),
        "peak_mb": detections(base, changed["mem"], "peak_mb", gates["peak_mb"], args),
    }
    res["per_metric"] = {
        m: {
            "checks": fa[m]["checks"],
            "false_alarms": fa[m]["alarms"],
            "per_1000": per_1000(fa[m]["alarms"], fa[m]["checks"]),
            "which": fa[m]["which"][:20],
            ("slow" if m != "peak_mb" else "mem"): rates([det[m]]),
        }
        for m in ALL_METRICS
    }
    # what `history check` gives with a set of metrics: false alarms over every checked series;
    # a slowdown is found when a checked time metric flags it, +20 MB when peak_mb does
    res["default_metrics"] = list(hcli.DEFAULT_CHECK_METRICS)
    for name, metrics in (("without_cpu_time", BEFORE_METRICS), ("with_cpu_time", ALL_METRICS)):
        checks = sum(fa[m]["checks"] for m in metrics)
        n = sum(fa[m]["alarms"] for m in metrics)
        res[name] = {
            "metrics": list(metrics),
            "false_alarms": {"checks": checks, "alarms": n, "per_1000": per_1000(n, checks)},
            "slow": rates([det[m] for m in metrics if m in ("duration", "cpu_time")]),
            "mem": rates([det["peak_mb"]]),
        }
    if args.sweep:
        # the cpu_time gate from measurement: false alarms and what it adds to duration
        sweep = []
        for rel in (0.05, 0.10, 0.15, 0.20):
            for floor in (0.001, 0.002, 0.005):
                g = (rel, floor)
                f = false_alarms(base, "cpu_time", g, args)
                d = detections(base, changed["slow"], "cpu_time", g, args)
                r = rates([det["duration"], d])
                sweep.append(
                    {
                        "rel": rel,
                        "abs": floor,
                        "false_alarms": f["alarms"],
                        "checks": f["checks"],
                        "with_duration": {k: v["rate"] for k, v in r.items()},
                    }
                )
                print(json.dumps(sweep[-1]), file=sys.stderr, flush=True)
        res["cpu_time_sweep"] = sweep
    res["compare"] = compare_baseline(base, changed)
    return res


def compare_baseline(base: list, changed: dict) -> dict:
    """`perfmon compare` with one baseline, default thresholds: false alarms (a test with a
    duration or memory regression) over consecutive unchanged pairs; detection over (last
    unchanged, each changed) pairs."""
    th = analysis.DEFAULT_THRESHOLDS
    cfa = cchecks = 0
    for a, b in zip(base, base[1:]):
        cmp = analysis.compare(a, b, th, analysis.DEFAULT_CPU_MIN_DURATION)
        cchecks += len(b["tests"])
        cfa += len({c.test for c in cmp.regressions if c.metric.group in ("time", "memory")})
    cdet: dict = {}
    for kind, reps in changed.items():
        want = "time" if kind == "slow" else "memory"
        hit = total = 0
        for rep in reps:
            cmp = analysis.compare(base[-1], rep, th, analysis.DEFAULT_CPU_MIN_DURATION)
            flagged = {c.test for c in cmp.regressions if c.metric.group == want}
            for nodeid in rep["tests"]:
                if ms_of(nodeid) >= 20:
                    total += 1
                    hit += nodeid in flagged
        cdet[kind] = {"pairs": total, "detected": hit, "rate": round(hit / max(total, 1), 4)}
    return {
        "false_alarms": {"checks": cchecks, "alarms": cfa, "per_1000": per_1000(cfa, cchecks)},
        "detection": cdet,
    }


def _gate(text: str) -> tuple:
    metric, _, value = text.partition("=")
    rel, _, floor = value.partition(",")
    if metric not in ALL_METRICS or not floor:
        raise argparse.ArgumentTypeError(f"not METRIC=REL,ABS with METRIC in {ALL_METRICS}")
    return metric, (float(rel), float(floor))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline-runs", type=int, default=80)
    ap.add_argument("--changed-runs", type=int, default=4)
    ap.add_argument("--window", type=int, default=hcli.DEFAULT_WINDOW)
    ap.add_argument("--recent", type=int, default=hcli.DEFAULT_RECENT)
    ap.add_argument("--p", type=float, default=0.01)
    ap.add_argument("--reuse", help="a directory of earlier runs (kept; new runs added there)")
    ap.add_argument(
        "--gate",
        type=_gate,
        action="append",
        metavar="METRIC=REL,ABS",
        help="another gate than history check's default for a metric",
    )
    ap.add_argument("--sweep", action="store_true", help="also try cpu_time gates (slow)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    work = args.reuse or tempfile.mkdtemp(prefix="perfmon-detect-")
    os.makedirs(work, exist_ok=True)
    files = collect(args, work)
    res = evaluate(files, args)
    res["reports"] = work
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
