"""Change-point detection over a test's series of runs: E-divisive means with a permutation test.

The method (Matteson & James 2014; as Daly et al., ICPE 2020, use it at MongoDB, and Apache
Otava after them), in plain words:

1. For every split of a series into "before" and "after" (each at least ``min_size`` points),
   the energy statistic compares how far apart points of different sides are with how far
   apart points of the same side are: ``Q = m*k/n * (2*mean|b - a| - mean|a - a'| - mean|b -
   b'|)`` (a, a' before; b, b' after; m, k their sizes). The split with the largest Q is the
   candidate. Distances, not squares: one outlier moves Q little.
2. Significance: shuffle the series (``permutations`` times, from a seed derived from the
   series' name, so the answer is the same every time), take the largest Q of each shuffle.
   p = (1 + shuffles at least as large as the real Q) / (1 + shuffles). No assumption about
   the distribution of the noise.
3. A significant split divides the series; each part is searched again (binary segmentation),
   until no part has a significant split.
4. Three-way gate: a change point is reported only when p <= ``p_max`` AND the median after
   differs from the median before by at least ``min_rel`` (fraction of before) AND by at least
   ``min_abs`` (the metric's unit). Before/after are the stretches between the neighbouring
   change points. A part whose strongest split is below the size thresholds is not tested
   (no permutations) and not divided further: this keeps ``check`` fast on stable series.

Everything here is a pure function of its inputs.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import NamedTuple, Optional, Union

import numpy as np

DEFAULT_P = 0.01
DEFAULT_PERMUTATIONS = 999
MIN_SIZE = 2
#: largest permutation block held at once, in distance-matrix cells
_BLOCK_CELLS = 2_000_000


class Change(NamedTuple):
    # the first point after the change (named like tuple's index method: NamedTuple allows
    # it, mypy does not)
    index: int  # type: ignore[assignment]
    before: float  # median of the stretch before
    after: float  # median of the stretch after
    p: float

    @property
    def rel(self) -> Optional[float]:
        return (self.after - self.before) / self.before if self.before else None


def seed_for(name: str) -> int:
    return zlib.crc32(name.encode("utf-8", "surrogatepass"))


def _q_all(x: np.ndarray, min_size: int) -> np.ndarray:
    """Q for every split of every row of ``x`` (shape (P, n)): shape (P, splits); split s puts
    the change before point ``min_size + s``."""
    _, n = x.shape
    d = np.abs(x[:, :, None] - x[:, None, :])
    c = np.zeros((x.shape[0], n + 1, n + 1))
    c[:, 1:, 1:] = d.cumsum(1).cumsum(2)
    tau = np.arange(min_size, n - min_size + 1)
    m = tau.astype(float)
    k = (n - tau).astype(float)
    c_tt = c[:, tau, tau]
    c_tn = c[:, tau, n]
    c_nn = c[:, n, n][:, None]
    within_l = c_tt / 2
    within_r = (c_nn - 2 * c_tn + c_tt) / 2  # the matrix is symmetric: C[t,n] == C[n,t]
    between = c_tn - c_tt
    e = 2 * between / (m * k)
    e = e - np.where(m > 1, within_l / np.maximum(m * (m - 1) / 2, 1), 0)
    e = e - np.where(k > 1, within_r / np.maximum(k * (k - 1) / 2, 1), 0)
    return m * k / n * e


def best_split(
    x: Union[Sequence[float], np.ndarray], min_size: int = MIN_SIZE
) -> tuple[Optional[int], float]:
    """(index of the first point after the best split, its Q); (None, 0) if too short."""
    a = np.asarray(x, dtype=float)
    if a.size < 2 * min_size:
        return None, 0.0
    q = _q_all(a[None, :], min_size)[0]
    i = int(np.argmax(q))
    return min_size + i, float(q[i])


def p_value(
    x: Union[Sequence[float], np.ndarray],
    q_obs: float,
    rng: np.random.Generator,
    permutations: int = DEFAULT_PERMUTATIONS,
    min_size: int = MIN_SIZE,
    give_up_above: float = 1.0,
) -> float:
    """Permutation p-value of the largest Q. Stops early (returning a value above
    ``give_up_above``) once the count of shuffles at least as large makes significance
    impossible."""
    a = np.asarray(x, dtype=float)
    n = a.size
    block = max(1, min(permutations, _BLOCK_CELLS // max(1, n * n)))
    limit = give_up_above * (permutations + 1) - 1  # more hits than this: p > give_up_above
    hits = 0
    done = 0
    tol = 1e-12 * max(1.0, abs(q_obs))
    while done < permutations:
        b = min(block, permutations - done)
        perms = rng.permuted(np.broadcast_to(a, (b, n)), axis=1)
        qmax = _q_all(perms, min_size).max(axis=1)
        hits += int(np.count_nonzero(qmax >= q_obs - tol))
        done += b
        if hits > limit:
            return (1 + hits) / (1 + done)
    return (1 + hits) / (1 + permutations)


def _passes(before: float, after: float, min_rel: float, min_abs: float) -> bool:
    diff = abs(after - before)
    if diff < min_abs or diff == 0:
        return False
    if before == 0:
        return True
    return diff / abs(before) >= min_rel


def changes(
    x: Sequence[float],
    name: str = "",
    *,
    p_max: float = DEFAULT_P,
    min_rel: float = 0.0,
    min_abs: float = 0.0,
    permutations: int = DEFAULT_PERMUTATIONS,
    min_size: int = MIN_SIZE,
    seed: Optional[int] = None,
) -> list[Change]:
    """The change points of series ``x`` that pass the three-way gate, in order."""
    a = np.asarray(x, dtype=float)
    rng = np.random.default_rng(seed_for(name) if seed is None else seed)
    found: dict[int, float] = {}
    todo = [(0, a.size)]
    while todo:
        lo, hi = todo.pop()
        seg = a[lo:hi]
        tau, q = best_split(seg, min_size)
        if tau is None or q <= 0:
            continue
        if not _passes(float(np.median(seg[:tau])), float(np.median(seg[tau:])), min_rel, min_abs):
            continue
        p = p_value(seg, q, rng, permutations, min_size, give_up_above=p_max)
        if p > p_max:
            continue
        found[lo + tau] = p
        todo.append((lo, lo + tau))
        todo.append((lo + tau, hi))
    out = []
    cuts = sorted(found)
    for j, c in enumerate(cuts):
        start = cuts[j - 1] if j else 0
        end = cuts[j + 1] if j + 1 < len(cuts) else a.size
        before = float(np.median(a[start:c]))
        after = float(np.median(a[c:end]))
        if _passes(before, after, min_rel, min_abs):
            out.append(Change(c, before, after, found[c]))
    return out
