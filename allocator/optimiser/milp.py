"""The MILP stages (HiGHS, through scipy): cover everything at least cost, or relax by priority.

:class:`Stages` solves a :class:`~shardshape.allocator.optimiser.problem.Problem` within one
time budget. :meth:`Stages.cover` is stage 0: every minimum and demand met at least cost. When
the pool cannot, :meth:`Stages.shortfall` relaxes the minima, then the demand, by priority
with feasibility MILPs, and hands the first level that is cut, and those below it, to the
greedy fill (:class:`~shardshape.allocator.optimiser.fill.Fill`); :meth:`Stages.run` is the
path where every stage is a MILP, which the tests and the benchmark compare it with.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import coo_array, csr_array, vstack

from shardshape.allocator.optimiser.fill import Fill
from shardshape.allocator.optimiser.model import TOL, Allocation, OptimiserError
from shardshape.allocator.optimiser.problem import Problem

# The fast path's priced MILP only guides the greedy fill: a loose gap and a short limit.
PRICED_GAP = 0.05
PRICED_LIMIT_S = 0.05

# Priority levels, highest first, and the shards at each.
Levels = tuple[list[int], dict[int, list[int]]]


@dataclass(frozen=True)
class _LevelStage:
    """A level stage's objective and rows over ``[x, y, z, r, tau]``."""

    c: np.ndarray
    a: csr_array
    row_lo: np.ndarray
    row_up: np.ndarray


class Stages:
    """The MILP stages over ``problem``, all of them within ``time_limit_s`` from ``started``
    (by default now), at HiGHS's relative gap ``mip_rel_gap``; counts the solver calls and
    notes what the budget cut short."""

    def __init__(
        self,
        problem: Problem,
        time_limit_s: float,
        mip_rel_gap: float,
        started: float | None = None,
    ) -> None:
        self.p = problem
        self.time_limit_s = time_limit_s
        self.mip_rel_gap = mip_rel_gap
        self.deadline = (time.perf_counter() if started is None else started) + time_limit_s
        self.solves = 0
        self.last_x: np.ndarray | None = None
        self.notes: list[str] = []

    def allocation(self, x: np.ndarray, solve_ms: float) -> Allocation:
        """The answer for the point ``x``, with the solver calls and the notes."""
        return self.p.allocation(x, solve_ms, self.solves, self.notes)

    def run(self) -> np.ndarray:
        """The MILP path: stage 0, then every shortfall stage as a MILP (what ``solve`` did
        before :meth:`shortfall`; the tests and the benchmark compare the two)."""
        x = self.cover()
        return x if x is not None else self._stages()

    def cover(self) -> np.ndarray | None:
        """Stage 0, a MILP: every minimum and demand met at least cost; ``None`` if the pool
        cannot (or HiGHS found no allocation within the budget)."""
        p = self.p
        ub = p.ub.copy()
        ub[p.y0 : p.z0] = p.y_fixed
        ub[p.z0 : p.r0] = 0.0
        return self._solve(p.cost_vec, p.lb, ub)

    def shortfall(self) -> np.ndarray:
        """The pool is too small: MILPs where they are cheap, a greedy fill where they are not.

        1. Minima by priority and the bisection for the levels whose demand fits in full, as
           in :meth:`run` (feasibility MILPs of a few ms each): exact.
        2. The first level that is cut: its level stage's LP relaxation, for the dual prices
           of the pool rows (what one more block of each type is worth to that level).
        3. A MILP at a loose gap and a short limit (:data:`PRICED_GAP`): the minima and the
           full levels met at the least price, so they leave the blocks the cut level
           values. Without an answer in time, step 1's point is used.
        4. :class:`~shardshape.allocator.optimiser.fill.Fill` hands out the rest by priority.

        The cut level's minimax MILP, the one that took seconds, is never solved: that level
        and those below it are cut evenly by water-filling, not to the MILP's optimum.
        """
        p = self.p
        ub = self._shortfall_bounds()
        levels = self._levels()
        ub = self._minimise_shortfall(p.z0, ub, levels, cut_evenly=False)
        ub = self._minimise_shortfall(p.y0, ub, levels, cut_evenly=True, whole_only=True)
        if self.last_x is None:
            return self._greedy(levels)
        met = ub[p.y0 : p.z0] <= p.y_fixed + TOL
        price = self._fill_prices(ub, met)
        c = np.zeros(p.n_vars)
        c[: p.n_pairs] = price
        self._solve(c, p.lb, ub, gap=PRICED_GAP, limit_s=PRICED_LIMIT_S)
        x = np.rint(self.last_x[: p.n_pairs])
        return Fill(p, x, price, self.notes).run(met, *levels)

    def _fill_prices(self, ub: np.ndarray, met: np.ndarray) -> np.ndarray:
        """Per pair, what its block type is worth to the first level that is cut (``met``
        says which shards are met in full), plus a little of its cost."""
        p = self.p
        cut = [s for s in range(p.n_shards) if not met[s]]
        prices, direct = np.zeros(len(p.types)), np.zeros(len(p.types))
        if cut:
            top = max(p.priority[s] for s in cut)
            members = [s for s in cut if p.priority[s] == top]
            prices = self._pool_prices(ub, [p.y0 + s for s in members])
            mine = np.concatenate([p.pairs_of[s] for s in members])
            direct = np.bincount(p.t_of[mine], p.coef[mine], minlength=len(p.types))
        # The LP's dual prices first. They value a type the cut level cannot use as much as
        # one it can when the first frees the second (say, for a minimum elsewhere): the
        # direct use breaks such ties, then the cost.
        value = _unit(prices) + 1e-2 * _unit(direct)
        w = p.cost_vec[: p.n_pairs]
        return value[p.t_of] + 1e-4 * _unit(w) + 1e-12

    def _greedy(self, levels: Levels) -> np.ndarray:
        """No MILP found an allocation within the time budget: degrade, never fail. From no
        blocks at all (always feasible: every shortfall at its bound), the minima by priority
        level, then :class:`~shardshape.allocator.optimiser.fill.Fill` hands out the rest by
        priority, block types at their cost."""
        self.notes.append(
            "time budget: HiGHS found no allocation in time, the pool was filled greedily "
            "by priority"
        )
        p = self.p
        price = _unit(p.cost_vec[: p.n_pairs]) + 1e-12
        fill = Fill(p, np.zeros(p.n_pairs), price, self.notes)
        met = fill.minima(*levels)
        return fill.run(met, *levels)

    def _pool_prices(self, ub: np.ndarray, members: list[int]) -> np.ndarray:
        """Dual prices of the pool rows in the LP relaxation of ``members``' level stage: what
        one more block of each type is worth to the first level that is cut (0 if unknown)."""
        p = self.p
        stage = self._level_rows(members)
        finite_up, finite_lo = np.isfinite(stage.row_up), np.isfinite(stage.row_lo)
        a_ub = vstack([stage.a[finite_up], -stage.a[finite_lo]], format="csr")
        b_ub = np.concatenate([stage.row_up[finite_up], -stage.row_lo[finite_lo]])
        lb, ub = np.append(p.lb, 0.0), np.append(np.maximum(ub, p.lb), 1.0)
        # A block count bounded only by its pool would take the pool row's dual price.
        ub[: p.n_pairs][~p.ramped] = np.inf
        res = linprog(stage.c, A_ub=a_ub, b_ub=b_ub, bounds=np.column_stack([lb, ub]))
        self.solves += 1
        prices = np.zeros(len(p.types))
        if res.status == 0:
            position = np.cumsum(finite_up) - 1  # row i of A -> its row in a_ub
            for t, row in enumerate(p.pool_rows):
                if row >= 0:
                    prices[t] = max(0.0, -float(res.ineqlin.marginals[position[row]]))
        return prices

    def _shortfall_bounds(self) -> np.ndarray:
        p = self.p
        ub = p.ub.copy()
        ub[p.y0 : p.z0] = (p.q > 0).astype(float)  # any demand shortfall in [0, 1]
        return ub

    def _levels(self) -> Levels:
        """Priority levels, highest first, and the shards at each."""
        demands = self.p.demands
        levels = sorted({d.priority for d in demands}, reverse=True)
        shards_at = {p: [s for s, d in enumerate(demands) if d.priority == p] for p in levels}
        return levels, shards_at

    def _stages(self) -> np.ndarray:
        """Minima, then demand, by priority level, then cost: every stage a MILP."""
        p = self.p
        ub = self._shortfall_bounds()
        levels = self._levels()
        # Minima, highest priority first (skipped at once when all minima fit).
        ub = self._minimise_shortfall(p.z0, ub, levels, cut_evenly=False)
        # Demand: the highest levels that fit whole are found by bisection, then level by level.
        ub = self._minimise_shortfall(p.y0, ub, levels, cut_evenly=True)
        x = self._solve(p.cost_vec, p.lb, ub)
        if x is None:  # out of time: the last stage's point is feasible, keep it
            x = self.last_x
            self.notes.append("time budget: cost not minimised, the last feasible point kept")
        if x is None:
            raise OptimiserError("HiGHS found no allocation in time; raise time_limit_s")
        return x

    def _minimise_shortfall(
        self,
        offset: int,
        ub: np.ndarray,
        levels: Levels,
        *,
        cut_evenly: bool,
        whole_only: bool = False,
    ) -> np.ndarray:
        """The shortfalls at ``offset`` (``y``: demand, ``z``: minima) by priority level: the
        highest levels met in full, then (unless ``whole_only``) each level's least
        shortfall, held as a bound for the levels below it."""
        ub = ub.copy()
        order, shards_at = levels
        whole = self._whole_levels(offset, ub, levels)
        for p in order[:whole]:
            for s in shards_at[p]:
                ub[offset + s] = self._floor(offset, s)
        if whole_only:
            return ub
        for p in order[whole:]:
            members = [offset + s for s in shards_at[p] if ub[offset + s] > self._floor(offset, s)]
            if not members:
                continue
            x = self._level_stage(members, ub, cut_evenly)
            if x is None:  # out of time: hold the level where the last feasible point left it
                x = self.last_x
                if x is None:  # no point yet: the greedy fill (:meth:`_greedy`) takes over
                    continue
                self.notes.append(
                    f"time budget: priority {p} {'demand' if cut_evenly else 'minimum'} "
                    "shortfall not minimised, held at a feasible point"
                )
            for v in members:
                ub[v] = min(ub[v], x[v] + TOL)
        return ub

    def _whole_levels(self, offset: int, ub: np.ndarray, levels: Levels) -> int:
        """How many of the highest levels can have no shortfall at ``offset`` at once: all of
        them (one solve), else found by bisection."""
        order, shards_at = levels
        lo_k, hi_k = 0, len(order)
        mid = hi_k
        while lo_k < hi_k:
            trial = ub.copy()
            for p in order[:mid]:
                for s in shards_at[p]:
                    trial[offset + s] = self._floor(offset, s)
            if self._solve(np.zeros(self.p.n_vars), self.p.lb, trial) is not None:
                lo_k = mid
            else:
                hi_k = mid - 1
            mid = (lo_k + hi_k + 1) // 2
        return lo_k

    def _floor(self, offset: int, s: int) -> float:
        return float(self.p.y_fixed[s]) if offset == self.p.y0 else 0.0

    def _level_stage(
        self, members: list[int], ub: np.ndarray, cut_evenly: bool
    ) -> np.ndarray | None:
        """Minimise the shortfall of one priority level (evenly: the worst one first)."""
        p = self.p
        if not cut_evenly:
            c = np.zeros(p.n_vars)
            c[members] = 1.0
            return self._solve(c, p.lb, ub)
        stage = self._level_rows(members)
        x = self._solve(
            stage.c,
            np.append(p.lb, 0.0),
            np.append(ub, 1.0),
            a=stage.a,
            row_lo=stage.row_lo,
            row_up=stage.row_up,
            integrality=np.append(p.integrality, 0),
        )
        return None if x is None else x[:-1]

    def _level_rows(self, members: list[int]) -> _LevelStage:
        """One extra variable, the level's worst shortfall fraction ``tau`` (``y <= tau`` for
        each member), minimised with a small sum term so the others go as low as they can."""
        p, n = self.p, len(members)
        c = np.zeros(p.n_vars + 1)
        c[-1] = 1.0
        c[members] = 0.1 / n
        extra = coo_array(
            ([1.0] * n + [-1.0] * n, (list(range(n)) * 2, members + [p.n_vars] * n)),
            shape=(n, p.n_vars + 1),
        )
        return _LevelStage(
            c,
            vstack([_pad_column(p.A), extra], format="csr"),
            np.concatenate([p.row_lo, np.full(n, -np.inf)]),
            np.concatenate([p.row_up, np.zeros(n)]),
        )

    def _solve(
        self,
        c: np.ndarray,
        lb: np.ndarray,
        ub: np.ndarray,
        *,
        a: Any = None,
        row_lo: np.ndarray | None = None,
        row_up: np.ndarray | None = None,
        integrality: np.ndarray | None = None,
        gap: float | None = None,
        limit_s: float = math.inf,
    ) -> np.ndarray | None:
        """One HiGHS MILP over the problem's rows (or ``a``), within what is left of the
        budget; ``None`` if infeasible or out of time without an allocation."""
        p = self.p
        remaining = min(self.deadline - time.perf_counter(), limit_s)
        if self.last_x is None:  # nothing to fall back on yet: always give HiGHS a chance
            remaining = max(remaining, 0.1 * self.time_limit_s)
        elif remaining <= 0:
            return None
        self.solves += 1
        a = p.A if a is None else a
        rows = (p.row_lo if row_lo is None else row_lo, p.row_up if row_up is None else row_up)
        res = milp(
            c,
            integrality=p.integrality if integrality is None else integrality,
            bounds=Bounds(lb, np.maximum(ub, lb)),
            constraints=[LinearConstraint(a, *rows)] if a.shape[0] else [],
            options={
                "time_limit": remaining,
                "mip_rel_gap": self.mip_rel_gap if gap is None else max(gap, self.mip_rel_gap),
            },
        )
        if res.x is not None and res.status in (0, 1):
            self.last_x = res.x[: p.n_vars]
            return res.x
        if res.status in (1, 2):  # infeasible, or out of time before any allocation was found
            return None
        raise OptimiserError(f"HiGHS stopped without an allocation: {res.message}")


def _unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to a maximum of 1 (unchanged when it has no positive entry).

    >>> _unit(np.array([1.0, 4.0])), _unit(np.zeros(2))
    (array([0.25, 1.  ]), array([0., 0.]))
    """
    top = float(v.max(initial=0.0))
    return v / top if top > 0 else v


def _pad_column(a: csr_array) -> csr_array:
    """``a`` with one more column, of zeros."""
    return csr_array((a.data, a.indices, a.indptr), shape=(a.shape[0], a.shape[1] + 1))
