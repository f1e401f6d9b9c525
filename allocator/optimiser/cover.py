"""Exact covering by enumeration: a shard's cheapest blocks for its demand and minimum.

With the pool row left out, the optimiser's problem separates by shard, and each shard's
problem is a covering problem in as many integer variables as the block types it may use:
:func:`cheapest_cover` solves it exactly, :func:`per_shard` uses it for the whole problem
when the pool does not bind (no MILP then), and the greedy fill
(:mod:`~shardshape.allocator.optimiser.fill`) to re-choose a shard's blocks at given prices.
"""

from __future__ import annotations

import math

import numpy as np

from shardshape.allocator.optimiser.model import TOL
from shardshape.allocator.optimiser.problem import Problem

EPS = 1e-9
MAX_ENUMERATION = 200_000


def per_shard(problem: Problem) -> np.ndarray | None:
    """The exact optimum when the pool does not bind, else ``None`` (take the MILP path).

    Without the pool row the problem separates by shard, and so does every lexicographic
    stage: each shard's least shortfall of its minimum, then of its demand, is reached by
    taking every block its bounds allow, and its cheapest allocation at those shortfalls is
    a covering problem in at most a few integer variables, solved exactly by enumeration
    (:func:`cheapest_cover`). If the shards' optima fit the pool together they are the
    MILP's optimum; if not, or if a shard's enumeration would be too large, ``None``.
    """
    p = problem
    x = np.zeros(p.n_pairs)
    for s in range(p.n_shards):
        mine = np.flatnonzero(p.s_of == s)
        hi = p.hi[mine]
        # Below its hold a block costs w - penalty < 0: every optimum keeps the holds.
        low = np.minimum(p.hold_lo[mine], hi)
        need_blocks = max(0.0, p.m[s] - max(0.0, p.m[s] - hi.sum()) - low.sum())
        need = 0.0
        if p.q[s] > 0 and not p.no_capacity[s]:
            a = p.coef[mine]
            need = min(1.0, float(a @ hi)) - float(a @ low)
        else:
            a = np.zeros(len(mine))
        extra = cheapest_cover(p.cost_vec[mine], a, hi - low, max(need, 0.0), round(need_blocks))
        if extra is None:
            return None
        x[mine] = low + extra
    used = np.bincount(p.t_of, x, minlength=len(p.types))
    if np.any(used > np.array([p.pool[t] for t in p.types]) + TOL):
        return None
    return x


def cheapest_cover(
    w: np.ndarray, a: np.ndarray, top: np.ndarray, need: float, blocks: int
) -> np.ndarray | None:
    """Least-cost integers ``0 <= e <= top`` with ``a @ e >= need`` and ``sum(e) >= blocks``.

    Exact by enumeration in a box that provably holds an optimum: a type beyond
    ``max(ceil(need / a_t), blocks)`` blocks can drop one and still cover both rows alone, and,
    with ``(lam, mu)`` the best dual point of the LP relaxation and ``d = w - lam a - mu >= 0``
    its reduced costs, any allocation no dearer than a known one ``ub`` has
    ``d @ e <= ub - lam need - mu blocks``. The type with the widest box is not enumerated: its
    least count is closed-form. ``None`` when the box exceeds ``MAX_ENUMERATION`` points.
    ``top`` must be feasible (the caller lowered ``need`` and ``blocks`` to what it reaches).

    >>> cheapest_cover(np.array([1.0, 2.0]), np.array([0.3, 0.8]), np.array([9, 9]), 1.0, 0)
    array([1., 1.])
    """
    n = len(w)
    if n == 0 or (need <= EPS and blocks <= 0):
        return np.zeros(n)
    top = top.astype(float)
    alone = [_alone(float(a[t]), need, blocks) for t in range(n)]
    box = _search_box(w, a, top, need, blocks, alone)
    return _enumerate(w, a, top, need, blocks, box)


def _alone(a_t: float, need: float, blocks: int) -> float:
    """Fewest blocks of one type, of coverage ``a_t`` each, that cover both rows alone."""
    by_demand = 0.0
    if need > EPS:
        by_demand = math.ceil((need - EPS) / a_t) if a_t > 0 else math.inf
    return max(0.0, by_demand, blocks - 0.0)


def _search_box(
    w: np.ndarray, a: np.ndarray, top: np.ndarray, need: float, blocks: int, alone: list[float]
) -> np.ndarray:
    """Per type, the most blocks an optimum needs: at most what covers both rows alone, and
    within the reduced-cost gap to a known allocation (the docstring of
    :func:`cheapest_cover`)."""
    # A known allocation: all of ``top``, or one type alone.
    best = float(w @ top)
    for t in range(len(w)):
        if alone[t] <= top[t]:
            best = min(best, w[t] * alone[t])
    bound, lam, mu = _best_dual(w, a, need, blocks)
    gap = max(0.0, best - bound) * (1 + 1e-9) + 1e-9
    reduced = np.maximum(w - lam * a - mu, 0.0)
    box = top.copy()
    for t in range(len(w)):
        if alone[t] < box[t]:
            box[t] = alone[t]
        if reduced[t] > 0:
            box[t] = min(box[t], math.floor(gap / reduced[t]))
    return box


def _best_dual(
    w: np.ndarray, a: np.ndarray, need: float, blocks: int
) -> tuple[float, float, float]:
    """The LP relaxation's best dual point ``(bound, lam, mu)``, over the vertices of
    ``{lam, mu >= 0, lam a + mu <= w}``."""
    n = len(w)
    cands = [(0.0, 0.0), (0.0, float(w.min()))]
    cands += [(w[t] / a[t], 0.0) for t in range(n) if a[t] > 0]
    for i in range(n):
        for j in range(i + 1, n):
            if abs(a[i] - a[j]) > 1e-15:
                lam = (w[i] - w[j]) / (a[i] - a[j])
                cands.append((lam, w[i] - lam * a[i]))
    bound, lam, mu = 0.0, 0.0, 0.0
    for cl, cm in cands:
        if cl >= 0 and cm >= 0 and np.all(w - cl * a - cm >= -1e-12):
            value = cl * need + cm * blocks
            if value > bound:
                bound, lam, mu = value, cl, cm
    return bound, lam, mu


def _enumerate(
    w: np.ndarray, a: np.ndarray, top: np.ndarray, need: float, blocks: int, box: np.ndarray
) -> np.ndarray | None:
    """Every point of ``box`` but along its widest type, whose least count is closed-form:
    the cheapest (then the fewest blocks); ``None`` when the box is too large."""
    n = len(w)
    free = int(np.argmax(box))
    others = [t for t in range(n) if t != free]
    sizes = [int(box[t]) + 1 for t in others]
    if math.prod(sizes) > MAX_ENUMERATION:
        return None
    grid = np.indices(sizes).reshape(len(others), -1).astype(float) if others else np.zeros((0, 1))
    cover = a[others] @ grid
    count = grid.sum(axis=0)
    short = need - cover
    if a[free] > 0:
        by_demand = np.where(short > EPS, np.ceil((short - EPS) / a[free]), 0.0)
    else:
        by_demand = np.where(short > EPS, np.inf, 0.0)
    k = np.maximum(np.maximum(by_demand, blocks - count), 0.0)
    total = w[others] @ grid + w[free] * np.where(k <= top[free], k, np.inf)
    pick = int(np.lexsort((count + k, total))[0])
    if not np.isfinite(total[pick]):  # cannot happen for a feasible ``top``
        return None
    e = np.zeros(n)
    e[others] = grid[:, pick]
    e[free] = k[pick]
    return e
