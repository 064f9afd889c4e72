"""The ``children`` block of one test: its descendants' CPU and memory.

CPU comes from two sources: the RUSAGE_CHILDREN delta the plugin read in the test's process at
the test's boundaries, and the collector's psutil samples of the test process's descendants.
Kept apart from the report builder so that how children are counted reads in one place.

Each sampled descendant carries its CPU time with the CPU of the children it reaped (Linux:
``cutime``/``cstime``), and its parent. At every moment, the CPU the test process's tree has
used is the RUSAGE_CHILDREN of the test process plus that sum over its live descendants: a
process that ends moves, when it is reaped, from the sum into its reaper's count, whoever the
reaper is (the test process, a child that waits for its own children, a ``multiprocessing``
forkserver that lives across tests). The samples say who the reaper was, so each CPU second is
counted once: through the test process's RUSAGE_CHILDREN or through a sampled reaper.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Optional

from .record import amount as _amount


def _mb(v: Any) -> Any:
    return None if v is None else round(v / (1024.0 * 1024.0), 3)


def _parts(sample: Any) -> tuple[dict, dict]:
    """A descendant sample's ({(pid, create time): CPU s}, {pid: parent pid}); the parents are
    empty in samples from before they were kept (a journal of an older collector)."""
    if sample is None:
        return {}, {}
    return sample[1], (sample[2] if len(sample) > 2 else {})


def _reaper(key: tuple, parents: dict, key_of: dict, alive: Any, root: int) -> Optional[tuple]:
    """Who reaped ``key``, which was in one sample and is not in the next: its nearest ancestor
    still there (a descendant that waits for its children), or None for the test process (its
    RUSAGE_CHILDREN has the CPU), which is also the answer when the parent is not known."""
    pid = key[0]
    for _ in range(len(key_of) + 1):  # bounded: a parent map can never loop, but be sure
        ppid = parents.get(pid)
        if ppid is None or ppid == root:
            return None
        pk = key_of.get(ppid)
        if pk is None:
            return None
        if pk in alive:
            return pk
        pid = ppid
    return None


def _step(x: Any, y: dict, root: int) -> tuple[float, float, float]:
    """The CPU that appeared between two samples, ``(early, late, reaped)``.

    ``late``: the growth of the descendants in the second sample (0 before for those started
    since), billed to the test the second sample is in. ``early``: the growth of a descendant
    that reaped, between the two, children the first sample saw: those children ended in
    the test the first sample is in (a test waits for its pool), so the CPU they used after
    that sample, which their reaper's count shows only now, is that test's. What they used up
    to the first sample was counted by then: it is taken off their reaper's growth, and, for
    those the test process reaped (``reaped``, to add to that test's RUSAGE delta), off it.

    ``y``: the second sample's CPU map.
    """
    xc, xp = _parts(x)
    owed: dict = {}
    reaped = 0.0
    dead = [k for k in xc if k not in y]
    if dead:
        key_of = {k[0]: k for k in xc}
        for k in dead:
            r = _reaper(k, xp, key_of, y, root)
            if r is None:
                reaped -= xc[k]
            else:
                owed[r] = owed.get(r, 0.0) + xc[k]
    early = late = 0.0
    for k, v in y.items():
        grew = v - xc.get(k, 0.0)
        if k in owed:
            early += max(0.0, grew - owed[k])
        elif grew > 0:
            late += grew
    return early, late, reaped


def children(w: Any, start: float, stop: float, lo: float, extra: Any) -> Any:
    """The ``children`` of one test: None when it used no child CPU and no descendant was seen.

    CPU: the RUSAGE_CHILDREN delta the plugin read at the test's boundaries (children the
    test process reaped during the test, with what they reaped), plus what the samples saw
    appear in the test process's descendants between consecutive samples (see ``_step``):
    from the last sample before the test to the last inside it, and what a descendant's
    reaper shows next for children that ended in the test. A descendant the test process
    reaped is in the RUSAGE delta with its whole life: what the samples counted of it is
    taken off. Memory: the largest sum of the descendants' RSS over the samples inside the
    test; processes: the descendants those samples saw.
    """
    used = extra.get("children_cpu") if isinstance(extra, dict) else None
    rus = used if _amount(used) and used > 0 else 0.0
    ts, ss = w.child_t, w.child_s
    n = len(ts)
    a = bisect_left(ts, max(lo, start))
    c = bisect_left(ts, stop)
    peak, seen = None, set()
    for sample in ss[a:c]:
        if sample is not None:
            total, cpu = sample[0], sample[1]
            peak = total if peak is None or total > peak else peak
            seen.update(cpu)
    if not seen and not rus:
        return None
    root = w.pid
    sampled = 0.0
    for j in range(a - 1, c):  # the steps j -> j + 1 that touch the test's samples
        x = ss[j] if j >= 0 else None
        if j + 1 < n:
            y = _parts(ss[j + 1])[0]
        elif j >= a:
            # The timeline ends inside the test: the descendants that were there before it
            # are taken as still running, the others as ended and reaped (never counted
            # twice: a child left running past the last sample is undercounted).
            before = _parts(ss[a - 1])[0] if a > 0 else {}
            y = {k: v for k, v in _parts(x)[0].items() if k in before}
        else:
            continue
        early, late, reaped = _step(x, y, root)
        if j >= a:
            sampled += early + reaped
        if j + 1 < c:
            sampled += late
    cpu_time = max(0.0, rus + sampled)
    return {"cpu_time": round(cpu_time, 6), "peak_rss_mb": _mb(peak), "processes": len(seen)}
