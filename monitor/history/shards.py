"""What a shard of a CI matrix plans from (``pytest --perf-shard K/N --perf-history URL``,
``perfmon split --db URL``): the history store's newest runs, of any machine, without the runs
of its own matrix.

``python -m pytest_perfmon.monitor.history.shards URL RUNS N [--commit SHA] [--ci-run ID]
[--rootdir DIR]``: the answer of :func:`.plan.plan_data` as JSON on stdout, with
``"excluded"`` (the runs of this matrix left out) and ``"commit"``. The pytest process never
imports the database layer: the plugin runs this module as a short-lived child process.

Which runs a plan reads: the newest RUNS runs in the store, **whatever machine ran them** (every
job of the matrix must plan the same, and CI runners differ in CPU model), **leaving out the
runs of this matrix**: a run labelled ``perf_shard=K/N`` with the same N and the same commit
(``--commit``, else the CI system's commit variable, else ``git rev-parse HEAD`` in
``--rootdir``; outside git and CI, every shard of N recorded without a commit), and any run
labelled ``ci_run`` with this CI run's id. The plugin labels every
shard run it records so (:func:`..split.shard_labels`). Without them, the first job's run,
recorded while the second job starts, would change the second job's plan: tests would be lost
or run twice.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional

from ..split import LABEL_CI_RUN, LABEL_SHARD
from .schedule_inputs import child_main, plan_data


def matrix_runs(eng: Any, store: Any, n: int, commit: Optional[str], ci_run: Optional[str]) -> list:
    """The ids of the runs of this matrix: shards of N at ``commit`` (without a commit: every
    shard of N recorded without one), or runs of ``ci_run``."""
    sa, rl, runs = store.sa, store.run_labels, store.runs
    out: set = set()
    with eng.connect() as conn:
        same = runs.c.commit_sha == commit if commit else runs.c.commit_sha.is_(None)
        q = (
            sa.select(rl.c.run_id, rl.c.value)
            .join(runs, runs.c.id == rl.c.run_id)
            .where(rl.c.key == LABEL_SHARD, same)
        )
        out.update(r.run_id for r in conn.execute(q) if r.value.endswith(f"/{n}"))
        if ci_run:
            q = sa.select(rl.c.run_id).where(rl.c.key == LABEL_CI_RUN, rl.c.value == ci_run)
            out.update(r.run_id for r in conn.execute(q))
    return sorted(out)


def shard_data(
    url: str,
    runs: int,
    n: int,
    commit: Optional[str] = None,
    ci_run: Optional[str] = None,
    rootdir: Optional[str] = None,
) -> dict:
    """The figures a shard of N plans from (see the module's docstring)."""
    if commit is None:
        from .context import commit_branch

        commit = commit_branch(rootdir or os.getcwd())[0]
    left_out: list = []

    def pick(eng: Any, store: Any) -> tuple:
        left_out.extend(matrix_runs(eng, store, n, commit, ci_run))
        return None, True, left_out

    out = plan_data(url, runs, pick)
    out["excluded"] = len(left_out)
    out["commit"] = commit
    return out


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pytest_perfmon.monitor.history.shards")
    p.add_argument("url")
    p.add_argument("runs")
    p.add_argument("n", type=int)
    p.add_argument("--commit")
    p.add_argument("--ci-run")
    p.add_argument("--rootdir")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    def answer(url: str, runs: int) -> dict:
        return shard_data(url, runs, args.n, args.commit, args.ci_run, args.rootdir)

    return child_main("shards", answer, [args.url, args.runs])


if __name__ == "__main__":
    sys.exit(main())
