"""The ``children`` block of one test: its descendants' CPU and memory.

CPU comes from two sources: the RUSAGE_CHILDREN delta the plugin read in the test's process at
the test's boundaries, and the collector's psutil samples of the test process's descendants.
Kept apart from the report builder so that how children are counted reads in one place.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from .record import amount as _amount


def _mb(v: Any) -> Any:
    return None if v is None else round(v / (1024.0 * 1024.0), 3)


def children(w: Any, start: float, stop: float, lo: float, extra: Any) -> Any:
    """The ``children`` of one test: None when it used no child CPU and no descendant was seen.

    CPU: the RUSAGE_CHILDREN delta the plugin read at the test's boundaries (children reaped
    during the test, with what they reaped), plus the growth of the CPU time of descendants
    still running after it (seen by sampling inside the test and alive at the next sample),
    from the last sample before the test (0 for those started since) to the last inside it.
    A descendant that ran before the test and was reaped during it is in the RUSAGE delta
    with its whole life: its CPU at the sample before the test (counted by earlier tests) is
    taken off. Memory: the largest sum of the descendants' RSS over the samples inside the
    test; processes: the descendants those samples saw.
    """
    used = extra.get("children_cpu") if isinstance(extra, dict) else None
    rus = used if _amount(used) and used > 0 else 0.0
    ts, ss = w.child_t, w.child_s
    a = bisect_left(ts, max(lo, start))
    c = bisect_left(ts, stop)
    peak, last = None, {}
    for sample in ss[a:c]:
        if sample is not None:
            total, cpu = sample
            peak = total if peak is None or total > peak else peak
            last.update(cpu)
    seen = set(last)
    if not seen and not rus:
        return None
    base = (ss[a - 1] or (0, {}))[1] if a > 0 else {}
    # Alive after the test: in the next sample. Without one (the worker's last test), taken
    # as reaped: RUSAGE counted them if they were (a child left running past the end of the
    # run is undercounted, never counted twice).
    alive = set((ss[c] or (0, {}))[1]) if c < len(ts) else set()
    sampled = sum(max(0.0, last[k] - base.get(k, 0.0)) for k in seen & alive)
    reaped_before = sum(base[k] for k in seen - alive if k in base)
    cpu_time = max(0.0, rus - reaped_before) + sampled
    return {"cpu_time": round(cpu_time, 6), "peak_rss_mb": _mb(peak), "processes": len(seen)}
