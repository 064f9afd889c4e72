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
from typing import Any, Optional

from ..vocabulary import BY_NAME, DEFAULT_GATE

#: With ``store.window(noise=True)``, per test: ``[(run index, seconds lost waiting for a CPU,
#: contended)]``, and under ``(MEASURED, metric)`` the metric's points as measured (its own key
#: holds them judged without the wait).
WAITS = "waits"
MEASURED = "measured"

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


def _entry(nodeid: str, metric: str, c: dict, run: Mapping, pts: list) -> dict:
    return {
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


def find_changes(
    run_rows: list,
    data: Mapping,
    metrics: list,
    gates: Mapping,
    p_max: float,
    recent: int,
    permutations: int,
    not_judged: Optional[list] = None,
) -> list[dict]:
    """``history check``: the changes in the newest ``recent`` runs of each test's series, with
    the run, commit and branch they start at.

    ``data`` from ``store.window(noise=True)``: the series are judged without the wait, and
    each change of a metric the wait lengthens that the series as measured shows and the
    judged one does not (the waiting explains it) goes to ``not_judged``, with
    ``contended_after``: how many of the runs after it ran contended."""
    n_runs = len(run_rows)
    out = []
    for nodeid in sorted(data):
        per = data[nodeid]
        for metric in metrics:
            pts = per[metric]
            found = []
            for c in series_changes(nodeid, metric, pts, gates[metric], p_max, permutations):
                if c["run"] < n_runs - recent:
                    continue
                found.append(c)
                entry = _entry(nodeid, metric, c, run_rows[c["run"]], pts)
                if WAITS in per:
                    entry["judged"] = "without_wait"
                out.append(entry)
            if not_judged is None or WAITS not in per or not BY_NAME[metric].discount:
                continue
            waits = [w for w in per[WAITS] if w[0] >= n_runs - recent]
            if not any(lost for _, lost, _ in waits):
                continue  # no wait in the recent runs: as measured is as judged
            raw = per[(MEASURED, metric)]
            for c in series_changes(nodeid, metric, raw, gates[metric], p_max, permutations):
                if c["run"] < n_runs - recent or any(f["kind"] == c["kind"] for f in found):
                    continue
                entry = _entry(nodeid, metric, c, run_rows[c["run"]], raw)
                after = [w for w in per[WAITS] if w[0] >= c["run"]]
                entry["contended_after"] = sum(1 for w in after if w[2])
                not_judged.append(entry)
    return out
