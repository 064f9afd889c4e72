"""How even ``pytest --perf-shard K/N`` splits a CI matrix, and how well it predicts each shard.

    python scripts/bench_shards.py                       # ~2 minutes on 2 cores
    PYTHONPATH=/tmp/psplit python scripts/bench_shards.py   # with pytest-split importable

A skewed generated suite of sleeping tests (sleep: a loaded machine slows them little): 150
short tests of 20-80 ms and 5 long ones of 1.0-2.5 s, in seven files whose names do not sort by
length (the long tests sit in the middle files). One full run records the history store
(``--perf-history``); then, for N = 3 and 4, the N jobs of a matrix run one after the other,
each ``pytest --perf-shard K/N --perf-history STORE --perf-monitor`` at a commit of its own
(``GITHUB_SHA``, ``GITHUB_RUN_ID``: every job records into the store, and the later jobs leave
the earlier ones of their matrix out), and ``perfmon merge`` checks the matrix.

Figures per N:

- the slowest shard's test time (the sum of its tests' measured durations) over the mean, for
  our split, for a split by count (pytest-split without durations, pytest-test-groups) and for
  pytest-split's ``least_duration`` given the same durations as ours (the full run's, as its
  ``.test_durations``), both evaluated on the durations measured in the same shard runs;
- each shard's predicted wall (``session.shard.predicted_wall_s``) against its measured wall
  (``session.duration``).

Targets (issue 22): slowest shard <= 1.10 x the mean; predicted shard wall within +-15 %.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from pytest_perfmon.monitor import split as splitting  # noqa: E402

QUIET_PLUGINS = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:cov"]
QUIET_PLUGINS += ["-p", "no:randomly", "-p", "no:asyncio", "-p", "no:benchmark"]

#: file -> (short tests, long tests' seconds): names that do not sort by length
FILES = {
    "test_zeta.py": (30, ()),
    "test_alpha.py": (25, (2.5,)),
    "test_kappa.py": (20, (1.0, 1.5)),
    "test_beta.py": (25, ()),
    "test_mu.py": (20, (2.0,)),
    "test_omega.py": (15, (1.2,)),
    "test_eta.py": (15, ()),
}


def write_suite(where: str) -> None:
    rng = random.Random(22)
    with open(os.path.join(where, "pytest.ini"), "w") as f:
        f.write("[pytest]\n")
    for name, (short, longs) in FILES.items():
        times = [round(rng.uniform(0.02, 0.08), 4) for _ in range(short)]
        lines = ["import time", "import pytest", ""]
        lines += [f"TIMES = {times}", "", "@pytest.mark.parametrize('t', TIMES)"]
        lines += ["def test_short(t):", "    time.sleep(t)", ""]
        for i, t in enumerate(longs):
            lines += [f"def test_long_{i}():", f"    time.sleep({t})", ""]
        with open(os.path.join(where, name), "w") as f:
            f.write("\n".join(lines))


def pytest(where: str, *args: str, env: dict) -> tuple:
    full = {k: v for k, v in os.environ.items() if k not in splitting.CI_RUN_VARIABLES}
    full.pop("GITHUB_STEP_SUMMARY", None)
    full.update(env)
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "pytest", *QUIET_PLUGINS, "-q", *args],
        cwd=where,
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if res.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res, time.monotonic() - t0


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def worst(parts: list, measured: dict) -> float:
    """The slowest part's measured test time over the mean."""
    loads = [sum(measured.get(t, 0.0) for t in part) for part in parts]
    mean = sum(loads) / len(loads)
    return max(loads) / mean


def pytest_split_parts(ids: list, durations: dict, n: int):
    try:
        from pytest_split.algorithms import Algorithms
    except ImportError:
        return None
    items = [SimpleNamespace(nodeid=t) for t in ids]
    groups = Algorithms["least_duration"].value(n, items, durations)
    return [[i.nodeid for i in g.selected] for g in groups]


def matrix(where: str, n: int, seed_durations: dict) -> dict:
    env = {"GITHUB_SHA": f"{n}" * 40, "GITHUB_RUN_ID": f"bench-{n}"}
    commands = []
    for k in range(1, n + 1):
        out = f"shard{n}_{k}.json"
        args = (f"--perf-shard={k}/{n}", "--perf-history=h.db", "--perf-monitor")
        _, secs = pytest(where, *args, f"--perf-output={out}", env=env)
        commands.append(secs)
    reports = [load(os.path.join(where, f"shard{n}_{k}.json")) for k in range(1, n + 1)]
    merged = os.path.join(where, f"merged{n}.json")
    files = [os.path.join(where, f"shard{n}_{k}.json") for k in range(1, n + 1)]
    subprocess.run(
        [sys.executable, "-m", "pytest_perfmon.monitor.cli", "merge", *files, "-o", merged],
        check=True,
        capture_output=True,
    )
    check = load(merged)["matrix"]
    measured = {t: e["duration"] for r in reports for t, e in r["tests"].items()}
    ours = [list(r["tests"]) for r in reports]
    ids = sorted(measured)
    rows = []
    for k, r in enumerate(reports, 1):
        shard = r["session"]["shard"]
        wall = r["session"]["duration"]
        rows.append(
            {
                "k": k,
                "tests": shard["tests"],
                "test_time_s": round(sum(e["duration"] for e in r["tests"].values()), 3),
                "predicted_s": shard["predicted_s"],
                "wall_s": round(wall, 3),
                "predicted_wall_s": shard["predicted_wall_s"],
                "wall_error": round(wall / shard["predicted_wall_s"] - 1, 4),
                "command_s": round(commands[k - 1], 3),
            }
        )
    ps = pytest_split_parts(ids, seed_durations, n)
    return {
        "n": n,
        "shards": rows,
        "ours": round(worst(ours, measured), 4),
        "predicted_imbalance": reports[0]["session"]["shard"]["imbalance"],
        "by_count": round(worst(splitting.by_count(ids, n), measured), 4),
        "pytest_split_least_duration": None if ps is None else round(worst(ps, measured), 4),
        "missing": check["missing_count"],
        "duplicated": len(check["duplicated"]),
        "plans": len(check["plans"]),
        "problems": check["problems"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", help="keep the suite, store and reports here")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    where = args.work or tempfile.mkdtemp(prefix="perfmon-bench-shards-")
    os.makedirs(where, exist_ok=True)
    write_suite(where)
    t0 = time.monotonic()
    pytest(
        where,
        "--perf-monitor",
        "--perf-output=full.json",
        "--perf-history=h.db",
        env={"GITHUB_SHA": "0" * 40},
    )
    full = load(os.path.join(where, "full.json"))
    seed = {t: e["duration"] for t, e in full["tests"].items()}
    print(f"full run: {len(seed)} tests, {sum(seed.values()):.2f} s of tests", flush=True)
    results = [matrix(where, n, seed) for n in (3, 4)]
    for res in results:
        print(f"\nN={res['n']}: slowest shard / mean (measured test time):")
        print(f"  --perf-shard        {res['ours']:.3f} (predicted {res['predicted_imbalance']})")
        print(f"  by count            {res['by_count']:.3f}")
        ps = res["pytest_split_least_duration"]
        print(f"  pytest-split least_duration  {'not installed' if ps is None else f'{ps:.3f}'}")
        print(
            f"  matrix check: {res['missing']} missing, {res['duplicated']} run twice, "
            f"{res['plans']} plan(s); problems: {res['problems'] or 'none'}"
        )
        print("  shard  tests  test time  predicted   wall  predicted wall  error")
        for r in res["shards"]:
            print(
                f"  {r['k']:>5}  {r['tests']:>5}  {r['test_time_s']:>8.2f}s  "
                f"{r['predicted_s']:>8.2f}s  {r['wall_s']:>5.2f}s  {r['predicted_wall_s']:>13.2f}s"
                f"  {r['wall_error'] * 100:+5.1f} %"
            )
    print(f"\n{time.monotonic() - t0:.0f} s in all; files in {where}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"full_tests": len(seed), "matrices": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
