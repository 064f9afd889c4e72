"""The changes in a test's series of runs: the one loop behind ``perfmon history check`` and the
HTML page's trends (``perfmon html --db``), so that the page marks what ``check`` reports.

A series is ``[(run index, value), ...]`` oldest first, as :func:`store.window` gives it (passed
results only). Each is searched by :func:`detect.changes` with its metric's gate (relative
threshold, absolute floor: :data:`..vocabulary.DEFAULT_GATE`) and a seed made of the test and
the metric, so that the same series gives the same answer everywhere. numpy (``detect``) is
imported when a series is searched: ``perfmon``'s parser is built without it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..vocabulary import DEFAULT_GATE

#: Shuffles of the permutation test (``detect.DEFAULT_PERMUTATIONS``, without numpy here).
PERMUTATIONS = 999
#: The significance level of a change point.
P_MAX = 0.01


def default_gates(metrics: Any) -> dict[str, tuple[float, float]]:
    """metric -> (relative threshold, absolute floor) of each of ``metrics``, by default."""
    return {m: DEFAULT_GATE[m] for m in metrics}


def series_changes(
    nodeid: str,
    metric: str,
    points: list,
    gate: tuple[float, float],
    p_max: float = P_MAX,
    permutations: int = PERMUTATIONS,
) -> Iterator[dict]:
    """The change points of one series: for each, the index of its first point after the
    change in ``points`` (``at``), that point's run index (``run``), the medians before and
    after, the change in percent (None from 0), the p-value and the direction (``kind``)."""
    from . import detect

    if len(points) < 2 * detect.MIN_SIZE:
        return
    rel, floor = gate
    for c in detect.changes(
        [v for _, v in points],
        f"{nodeid}\0{metric}",
        p_max=p_max,
        min_rel=rel,
        min_abs=floor,
        permutations=permutations,
    ):
        yield {
            "at": c.index,
            "run": points[c.index][0],
            "before": c.before,
            "after": c.after,
            "change_percent": None if c.rel is None else round(100 * c.rel, 2),
            "p_value": round(c.p, 4),
            "kind": "regression" if c.after > c.before else "improvement",
        }


def find_changes(
    run_rows: list,
    data: Mapping,
    metrics: list,
    gates: Mapping,
    p_max: float,
    recent: int,
    permutations: int,
) -> list[dict]:
    """``history check``: the changes in the newest ``recent`` runs of each test's series, with
    the run, commit and branch they start at."""
    n_runs = len(run_rows)
    out = []
    for nodeid in sorted(data):
        for metric in metrics:
            pts = data[nodeid][metric]
            for c in series_changes(nodeid, metric, pts, gates[metric], p_max, permutations):
                if c["run"] < n_runs - recent:
                    continue
                run = run_rows[c["run"]]
                out.append(
                    {
                        "test": nodeid,
                        "metric": metric,
                        "kind": c["kind"],
                        "run": run["id"],
                        "commit": run["commit_sha"],
                        "branch": run["branch"],
                        "before": c["before"],
                        "after": c["after"],
                        "change_percent": c["change_percent"],
                        "p_value": c["p_value"],
                        "runs_after": len(pts) - c["at"],
                    }
                )
    return out
