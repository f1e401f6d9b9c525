"""The optimiser: integer block counts per (shard, block type) at least cost, as a MILP (HiGHS).

For shards ``s`` and block types ``t``, with forecast ``q_s`` (a quantile), per-block capacity
``c_st``, target utilisation ``u_s``, minimum ``m_s``, pool ``A_t`` and block cost ``w_t``::

    minimise    sum_st w_t x_st
    subject to  sum_t u_s c_st x_st >= q_s        (demand)
                sum_t x_st          >= m_s        (minimum)
                sum_s x_st          <= A_t        (pool, shared by every service in it)
                lo_st <= x_st <= hi_st, integer   (smoothing, see :class:`Smoothing`)

When the pool cannot cover everything, the demand and minimum rows get shortfall variables
and are relaxed lexicographically by priority: minima first (highest priority first), then
demand level by level (the worst relative shortfall within a level minimised first, so a level
is cut evenly), then cost with every shortfall held at what was reached. ``solve`` does the
minima and finds the levels met in full with MILPs, and fills the first level that is cut and
those below it greedily, guided by the LP's dual prices (:meth:`_Problem.shortfall`): the
cut level's minimax MILP takes seconds at 50 shards. A shortfall is reported per shard, never
an infeasible-solver error. Blocks not allocated are the surplus, returned to the pool.

>>> d = [ShardDemand("shop", 0, demand_rps=160, capacity_rps={"small": 50, "large": 120},
...                  target_utilisation=1.0, min_blocks=1)]
>>> a = solve(d, pool={"small": 10, "large": 2}, costs={"small": 1.0, "large": 2.0})
>>> a.shards["shop", 0].blocks, a.cost, a.surplus
({'large': 1, 'small': 1}, 3.0, {'large': 1, 'small': 9})
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import coo_array, csr_array, vstack

ShardKey = tuple[str, int]
_TOL = 1e-6


class OptimiserError(RuntimeError):
    """The solver failed for a reason other than a too-small pool (which is a shortfall)."""


@dataclass(frozen=True, slots=True)
class ShardDemand:
    """One shard's input to the optimiser.

    ``capacity_rps`` maps each block type the shard may use to the requests/s one block
    sustains at full utilisation (the calibration's conservative estimate); types absent from
    it are not used for the shard. ``quantile`` and ``slo_p99_ms`` are carried into the plan;
    the SLO acts through ``target_utilisation``, the headroom that keeps the p99 within it.
    """

    service: str
    shard_id: int
    demand_rps: float
    capacity_rps: Mapping[str, float]
    priority: int = 0
    min_blocks: int = 0
    target_utilisation: float = 0.7
    quantile: float | None = None
    slo_p99_ms: float | None = None
    mean_rps: float | None = None  # the mean forecast under demand_rps (pooled margins)

    @property
    def key(self) -> ShardKey:
        return (self.service, self.shard_id)


@dataclass(frozen=True, slots=True)
class Smoothing:
    """How far one plan may move from the previous one.

    Per (shard, block type) with ``p`` blocks before, a step adds at most
    ``max(max_step_up, ceil(step_fraction p))`` and removes at most
    ``max(max_step_down, floor(step_fraction p))``. A shard keeps all its blocks while the
    forecast would still load its previous allocation to ``release_below_utilisation`` or more
    (hysteresis: blocks are released only when clearly idle, so a noisy forecast around a
    boundary does not add and remove the same block every step). Holding is soft: a
    higher-priority shard's demand and the pool bound come first.
    """

    max_step_up: int = 8
    max_step_down: int = 2
    step_fraction: float = 0.5
    release_below_utilisation: float = 0.5

    def bounds(self, previous: int) -> tuple[int, int]:
        """(most blocks removable, most blocks addable) in one step from ``previous``.

        >>> Smoothing().bounds(40)
        (20, 20)
        """
        down = max(self.max_step_down, math.floor(self.step_fraction * previous))
        up = max(self.max_step_up, math.ceil(self.step_fraction * previous))
        return min(down, previous), up


@dataclass(frozen=True, slots=True)
class ShardAllocation:
    """The optimiser's answer for one shard.

    ``capacity_rps`` is what the blocks sustain at full utilisation; ``shortfall_rps`` is the
    forecast not covered at the target utilisation; ``min_shortfall`` the blocks missing to the
    minimum; ``limited_by`` says why there is a shortfall: ``"pool"`` (higher priorities took
    the blocks), ``"ramp"`` (smoothing bounded the step) or ``"no capacity"`` (no usable block
    type); empty when there is none.
    """

    demand: ShardDemand
    blocks: dict[str, int]
    capacity_rps: float
    shortfall_rps: float
    min_shortfall: int
    limited_by: str

    @property
    def utilisation(self) -> float | None:
        """Forecast over capacity (``None`` without capacity)."""
        return self.demand.demand_rps / self.capacity_rps if self.capacity_rps > 0 else None


@dataclass(frozen=True)
class Allocation:
    """The optimiser's answer for one pool: per-shard blocks, the pool's use and surplus."""

    shards: dict[ShardKey, ShardAllocation]
    pool: dict[str, int]
    used: dict[str, int]
    surplus: dict[str, int]
    cost: float
    solves: int = 1
    solve_ms: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def has_shortfall(self) -> bool:
        return any(a.shortfall_rps > _TOL or a.min_shortfall for a in self.shards.values())

    def for_service(self, service: str) -> list[ShardAllocation]:
        """The service's shards, by shard id."""
        found = [a for (svc, _), a in self.shards.items() if svc == service]
        return sorted(found, key=lambda a: a.demand.shard_id)

    def blocks(self) -> dict[ShardKey, dict[str, int]]:
        """Blocks per shard: what the next solve takes as ``previous``."""
        return {key: dict(a.blocks) for key, a in self.shards.items()}


def solve(
    demands: Sequence[ShardDemand],
    pool: Mapping[str, int],
    costs: Mapping[str, float],
    *,
    previous: Mapping[ShardKey, Mapping[str, int]] | None = None,
    smoothing: Smoothing | None = None,
    mip_rel_gap: float = 0.01,
    time_limit_s: float = 1.0,
) -> Allocation:
    """Allocate blocks of ``pool`` (type -> blocks available) to the shards of ``demands``.

    ``previous`` (blocks per shard of the last plan) and ``smoothing`` bound the change per
    step; without ``previous`` there are no step bounds (the first plan). Pass the shards of
    every service that draws on the pool in one call: the pool row then holds for all of them.
    ``mip_rel_gap`` is HiGHS's relative optimality gap (the cost found is within it of the
    optimum; small instances are solved exactly). ``time_limit_s`` is the budget of the whole
    plan across its MILP stages; a stage out of time keeps its best allocation so far, or the
    previous stage's (its shortfalls are then held where that one left them, so the priority
    order still holds), and the stages after the budget is spent reuse it (noted in
    ``Allocation.notes``). When the pool does not bind, no MILP is solved at all; when it is
    too small, the levels below the highest that is cut are filled greedily (the module
    notes); if no stage found any allocation in time, the whole pool is filled greedily by
    priority, minima first (noted), rather than failing.

    Raises :class:`ValueError` naming the input at fault (a duplicate shard, a block type the
    pool does not hold, a block type without a cost), :class:`OptimiserError` if HiGHS fails.
    """
    started = time.perf_counter()
    problem = _Problem(demands, pool, costs, previous, smoothing, time_limit_s, mip_rel_gap)
    x = problem.per_shard()
    if x is None:
        x = problem.cover()
    if x is None:
        x = problem.shortfall()
    return problem.allocation(x, (time.perf_counter() - started) * 1000)


@dataclass(frozen=True)
class _LevelStage:
    """A level stage's objective and rows over ``[x, y, z, r, tau]``."""

    c: np.ndarray
    a: csr_array
    row_lo: np.ndarray
    row_up: np.ndarray


class _Problem:
    """The MILP's arrays; variables are ``[x (pairs), y (S), z (S), r (holds)]``."""

    def __init__(
        self,
        demands: Sequence[ShardDemand],
        pool: Mapping[str, int],
        costs: Mapping[str, float],
        previous: Mapping[ShardKey, Mapping[str, int]] | None,
        smoothing: Smoothing | None,
        time_limit_s: float,
        mip_rel_gap: float,
    ) -> None:
        _check_inputs(demands, pool, costs)
        self.demands = list(demands)
        self.types = sorted(pool)
        self.pool = {t: int(pool[t]) for t in self.types}
        self.costs = {t: float(costs[t]) for t in self.types}
        self.time_limit_s = time_limit_s
        self.mip_rel_gap = mip_rel_gap
        self.solves = 0
        self.last_x: np.ndarray | None = None
        self.deadline = time.perf_counter() + time_limit_s
        self.notes: list[str] = []
        t_index = {t: i for i, t in enumerate(self.types)}
        s_of, t_of, cap = [], [], []
        for s, d in enumerate(self.demands):
            for name in sorted(d.capacity_rps):
                s_of.append(s)
                t_of.append(t_index[name])
                cap.append(max(float(d.capacity_rps[name]), 0.0))
        self.s_of = np.array(s_of, dtype=np.int64)
        self.t_of = np.array(t_of, dtype=np.int64)
        self.cap = np.array(cap)
        n_pairs, n_shards = len(s_of), len(self.demands)
        self.n_pairs, self.n_shards = n_pairs, n_shards
        q = np.array([max(d.demand_rps, 0.0) for d in self.demands])
        u = np.array([d.target_utilisation for d in self.demands])
        m = np.array([max(d.min_blocks, 0) for d in self.demands], dtype=float)
        self.q, self.u, self.m = q, u, m
        self.priority = np.array([d.priority for d in self.demands])
        pool_arr = np.array([self.pool[t] for t in self.types], dtype=float)
        self.pool_arr = pool_arr
        self.pairs_of = [np.flatnonzero(self.s_of == s) for s in range(n_shards)]

        # Step bounds and soft holds from the previous plan.
        hi = pool_arr[self.t_of].copy()
        prev = np.zeros(n_pairs)
        self.ramped = np.zeros(n_pairs, dtype=bool)
        hold_lo = np.zeros(n_pairs)
        if previous is not None:
            smooth = smoothing or Smoothing()
            for p in range(n_pairs):
                d = self.demands[self.s_of[p]]
                prev[p] = previous.get(d.key, {}).get(self.types[self.t_of[p]], 0)
            prev_cap = np.bincount(self.s_of, prev * self.cap, minlength=n_shards)
            with np.errstate(divide="ignore", invalid="ignore"):
                prev_util = np.where(prev_cap > 0, q / prev_cap, np.inf)
            for p in range(n_pairs):
                down, up = smooth.bounds(int(prev[p]))
                if prev[p] + up < hi[p]:
                    hi[p] = prev[p] + up
                    self.ramped[p] = True
                keep = prev_util[self.s_of[p]] >= smooth.release_below_utilisation
                hold_lo[p] = prev[p] if keep else prev[p] - down
        self.hi = hi
        holds = np.flatnonzero(hold_lo > 0)
        self.n_holds = len(holds)
        n_vars = n_pairs + 2 * n_shards + len(holds)
        self.n_vars = n_vars
        self.y0, self.z0, self.r0 = n_pairs, n_pairs + n_shards, n_pairs + 2 * n_shards

        # Rows: demand (as fractions of q), minimum, pool, holds.
        rows, cols, vals, lo, up = [], [], [], [], []
        row = 0
        self.demand_rows = np.full(n_shards, -1)
        coef = u[self.s_of] * self.cap / np.where(q[self.s_of] > 0, q[self.s_of], 1.0)
        self.coef, self.hold_lo = coef, hold_lo
        for s in range(n_shards):
            if q[s] <= 0:
                continue
            mine = np.flatnonzero(self.s_of == s)
            rows += [row] * (len(mine) + 1)
            cols += [*mine.tolist(), self.y0 + s]
            vals += [*coef[mine].tolist(), 1.0]
            lo.append(1.0)
            up.append(np.inf)
            self.demand_rows[s] = row
            row += 1
        for s in range(n_shards):
            if m[s] <= 0:
                continue
            mine = np.flatnonzero(self.s_of == s)
            rows += [row] * (len(mine) + 1)
            cols += [*mine.tolist(), self.z0 + s]
            vals += [1.0] * (len(mine) + 1)
            lo.append(m[s])
            up.append(np.inf)
            row += 1
        self.pool_rows = np.full(len(self.types), -1)
        for t in range(len(self.types)):
            mine = np.flatnonzero(self.t_of == t)
            if len(mine) == 0:
                continue
            self.pool_rows[t] = row
            rows += [row] * len(mine)
            cols += mine.tolist()
            vals += [1.0] * len(mine)
            lo.append(-np.inf)
            up.append(pool_arr[t])
            row += 1
        for h, p in enumerate(holds):
            rows += [row, row]
            cols += [int(p), self.r0 + h]
            vals += [1.0, 1.0]
            lo.append(hold_lo[p])
            up.append(np.inf)
            row += 1
        self.A = csr_array(coo_array((vals, (rows, cols)), shape=(row, n_vars)))
        self.row_lo, self.row_up = np.array(lo), np.array(up)

        # Variable bounds: y (demand shortfall fraction), z (blocks under the minimum), r (hold
        # slack). A shard with demand and no usable capacity is short by construction.
        self.lb = np.zeros(n_vars)
        self.ub = np.concatenate([hi, np.ones(n_shards), m, hold_lo[holds]])
        usable = np.bincount(self.s_of, self.cap * (hi > 0), minlength=n_shards) > 0
        self.no_capacity = (q > 0) & ~usable
        self.y_fixed = self.no_capacity.astype(float)
        self.lb[self.y0 : self.y0 + n_shards] = self.y_fixed
        self.integrality = np.zeros(n_vars)
        self.integrality[:n_pairs] = 1
        self.cost_vec = np.zeros(n_vars)
        self.cost_vec[:n_pairs] = np.array([self.costs[t] for t in self.types])[self.t_of]
        hold_penalty = 2.0 * max(self.costs.values(), default=1.0) + 1.0
        self.cost_vec[self.r0 :] = hold_penalty

    # --------------------------------------------------------------------- per-shard path

    def per_shard(self) -> np.ndarray | None:
        """The exact optimum when the pool does not bind, else ``None`` (take the MILP path).

        Without the pool row the problem separates by shard, and so does every lexicographic
        stage: each shard's least shortfall of its minimum, then of its demand, is reached by
        taking every block its bounds allow, and its cheapest allocation at those shortfalls is
        a covering problem in at most a few integer variables, solved exactly by enumeration
        (:func:`_cheapest_cover`). If the shards' optima fit the pool together they are the
        MILP's optimum; if not, or if a shard's enumeration would be too large, ``None``.
        """
        x = np.zeros(self.n_pairs)
        for s in range(self.n_shards):
            mine = np.flatnonzero(self.s_of == s)
            hi = self.hi[mine]
            # Below its hold a block costs w - penalty < 0: every optimum keeps the holds.
            low = np.minimum(self.hold_lo[mine], hi)
            need_blocks = max(0.0, self.m[s] - max(0.0, self.m[s] - hi.sum()) - low.sum())
            need = 0.0
            if self.q[s] > 0 and not self.no_capacity[s]:
                a = self.coef[mine]
                need = min(1.0, float(a @ hi)) - float(a @ low)
            else:
                a = np.zeros(len(mine))
            extra = _cheapest_cover(
                self.cost_vec[mine], a, hi - low, max(need, 0.0), round(need_blocks)
            )
            if extra is None:
                return None
            x[mine] = low + extra
        used = np.bincount(self.t_of, x, minlength=len(self.types))
        if np.any(used > np.array([self.pool[t] for t in self.types]) + _TOL):
            return None
        return x

    # ------------------------------------------------------------------------------- stages

    def run(self) -> np.ndarray:
        """The MILP path: stage 0, then every shortfall stage as a MILP (what ``solve`` did
        before :meth:`shortfall`; the tests and the benchmark compare the two)."""
        x = self.cover()
        return x if x is not None else self._stages()

    def cover(self) -> np.ndarray | None:
        """Stage 0, a MILP: every minimum and demand met at least cost; ``None`` if the pool
        cannot (or HiGHS found no allocation within the budget)."""
        ub = self.ub.copy()
        ub[self.y0 : self.z0] = self.y_fixed
        ub[self.z0 : self.r0] = 0.0
        return self._solve(self.cost_vec, self.lb, ub)

    def shortfall(self) -> np.ndarray:
        """The pool is too small: MILPs where they are cheap, a greedy fill where they are not.

        1. Minima by priority and the bisection for the levels whose demand fits in full, as
           in :meth:`run` (feasibility MILPs of a few ms each): exact.
        2. The first level that is cut: its level stage's LP relaxation, for the dual prices
           of the pool rows (what one more block of each type is worth to that level).
        3. A MILP at a loose gap and a short limit (:data:`_PRICED_GAP`): the minima and the
           full levels met at the least price, so they leave the blocks the cut level
           values. Without an answer in time, step 1's point is used.
        4. :class:`_Fill` hands out the rest by priority.

        The cut level's minimax MILP, the one that took seconds, is never solved: that level
        and those below it are cut evenly by water-filling, not to the MILP's optimum.
        """
        ub = self._shortfall_bounds()
        levels, shards_at = self._levels()
        ub = self._minimise_shortfall(self.z0, ub, levels, shards_at, cut_evenly=False)
        ub = self._minimise_shortfall(
            self.y0, ub, levels, shards_at, cut_evenly=True, whole_only=True
        )
        if self.last_x is None:
            return self._greedy(levels, shards_at)
        met = ub[self.y0 : self.z0] <= self.y_fixed + _TOL
        cut = [s for s in range(self.n_shards) if not met[s]]
        prices, direct = np.zeros(len(self.types)), np.zeros(len(self.types))
        if cut:
            top = max(self.priority[s] for s in cut)
            members = [s for s in cut if self.priority[s] == top]
            prices = self._pool_prices(ub, [self.y0 + s for s in members])
            mine = np.concatenate([self.pairs_of[s] for s in members])
            direct = np.bincount(self.t_of[mine], self.coef[mine], minlength=len(self.types))
        # The LP's dual prices first. They value a type the cut level cannot use as much as
        # one it can when the first frees the second (say, for a minimum elsewhere): the
        # direct use breaks such ties, then the cost.
        value = _unit(prices) + 1e-2 * _unit(direct)
        w = self.cost_vec[: self.n_pairs]
        price = value[self.t_of] + 1e-4 * _unit(w) + 1e-12
        c = np.zeros(self.n_vars)
        c[: self.n_pairs] = price
        self._solve(c, self.lb, ub, gap=_PRICED_GAP, limit_s=_PRICED_LIMIT_S)
        x = np.rint(self.last_x[: self.n_pairs])
        return _Fill(self, x, price).run(met, levels, shards_at)

    def _greedy(self, levels: list[int], shards_at: dict[int, list[int]]) -> np.ndarray:
        """No MILP found an allocation within the time budget: degrade, never fail. From no
        blocks at all (always feasible: every shortfall at its bound), the minima by priority
        level, then :class:`_Fill` hands out the rest by priority, block types at their cost."""
        self.notes.append(
            "time budget: HiGHS found no allocation in time, the pool was filled greedily "
            "by priority"
        )
        price = _unit(self.cost_vec[: self.n_pairs]) + 1e-12
        fill = _Fill(self, np.zeros(self.n_pairs), price)
        for level in levels:
            for s in shards_at[level]:
                for _ in range(round(self.m[s])):
                    if not fill._add_block(s, minimum=True):
                        break
        met = np.array([fill._coverage(s) >= 1.0 - _TOL for s in range(self.n_shards)])
        return fill.run(met, levels, shards_at)

    def _pool_prices(self, ub: np.ndarray, members: list[int]) -> np.ndarray:
        """Dual prices of the pool rows in the LP relaxation of ``members``' level stage: what
        one more block of each type is worth to the first level that is cut (0 if unknown)."""
        stage = self._level_rows(members)
        finite_up, finite_lo = np.isfinite(stage.row_up), np.isfinite(stage.row_lo)
        a_ub = vstack([stage.a[finite_up], -stage.a[finite_lo]], format="csr")
        b_ub = np.concatenate([stage.row_up[finite_up], -stage.row_lo[finite_lo]])
        lb, ub = np.append(self.lb, 0.0), np.append(np.maximum(ub, self.lb), 1.0)
        # A block count bounded only by its pool would take the pool row's dual price.
        ub[: self.n_pairs][~self.ramped] = np.inf
        res = linprog(stage.c, A_ub=a_ub, b_ub=b_ub, bounds=np.column_stack([lb, ub]))
        self.solves += 1
        prices = np.zeros(len(self.types))
        if res.status == 0:
            position = np.cumsum(finite_up) - 1  # row i of A -> its row in a_ub
            for t, row in enumerate(self.pool_rows):
                if row >= 0:
                    prices[t] = max(0.0, -float(res.ineqlin.marginals[position[row]]))
        return prices

    def _shortfall_bounds(self) -> np.ndarray:
        ub = self.ub.copy()
        ub[self.y0 : self.z0] = (self.q > 0).astype(float)  # any demand shortfall in [0, 1]
        return ub

    def _levels(self) -> tuple[list[int], dict[int, list[int]]]:
        """Priority levels, highest first, and the shards at each."""
        levels = sorted({d.priority for d in self.demands}, reverse=True)
        shards_at = {p: [s for s, d in enumerate(self.demands) if d.priority == p] for p in levels}
        return levels, shards_at

    def _stages(self) -> np.ndarray:
        """Minima, then demand, by priority level, then cost: every stage a MILP."""
        ub = self._shortfall_bounds()
        levels, shards_at = self._levels()
        # Minima, highest priority first (skipped at once when all minima fit).
        ub = self._minimise_shortfall(self.z0, ub, levels, shards_at, cut_evenly=False)
        # Demand: the highest levels that fit whole are found by bisection, then level by level.
        ub = self._minimise_shortfall(self.y0, ub, levels, shards_at, cut_evenly=True)
        x = self._solve(self.cost_vec, self.lb, ub)
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
        levels: list[int],
        shards_at: dict[int, list[int]],
        *,
        cut_evenly: bool,
        whole_only: bool = False,
    ) -> np.ndarray:
        ub = ub.copy()
        # The longest prefix of levels met in full: all of them (one solve), else by bisection.
        lo_k, hi_k = 0, len(levels)
        mid = hi_k
        while lo_k < hi_k:
            trial = ub.copy()
            for p in levels[:mid]:
                for s in shards_at[p]:
                    trial[offset + s] = self._floor(offset, s)
            if self._solve(np.zeros(self.n_vars), self.lb, trial) is not None:
                lo_k = mid
            else:
                hi_k = mid - 1
            mid = (lo_k + hi_k + 1) // 2
        for p in levels[:lo_k]:
            for s in shards_at[p]:
                ub[offset + s] = self._floor(offset, s)
        if whole_only:
            return ub
        for p in levels[lo_k:]:
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
                ub[v] = min(ub[v], x[v] + _TOL)
        return ub

    def _floor(self, offset: int, s: int) -> float:
        return float(self.y_fixed[s]) if offset == self.y0 else 0.0

    def _level_stage(
        self, members: list[int], ub: np.ndarray, cut_evenly: bool
    ) -> np.ndarray | None:
        """Minimise the shortfall of one priority level (evenly: the worst one first)."""
        if not cut_evenly:
            c = np.zeros(self.n_vars)
            c[members] = 1.0
            return self._solve(c, self.lb, ub)
        stage = self._level_rows(members)
        x = self._solve(
            stage.c,
            np.append(self.lb, 0.0),
            np.append(ub, 1.0),
            a=stage.a,
            row_lo=stage.row_lo,
            row_up=stage.row_up,
            integrality=np.append(self.integrality, 0),
        )
        return None if x is None else x[:-1]

    def _level_rows(self, members: list[int]) -> _LevelStage:
        """One extra variable, the level's worst shortfall fraction ``tau`` (``y <= tau`` for
        each member), minimised with a small sum term so the others go as low as they can."""
        n = len(members)
        c = np.zeros(self.n_vars + 1)
        c[-1] = 1.0
        c[members] = 0.1 / n
        extra = coo_array(
            ([1.0] * n + [-1.0] * n, (list(range(n)) * 2, members + [self.n_vars] * n)),
            shape=(n, self.n_vars + 1),
        )
        return _LevelStage(
            c,
            vstack([_pad_column(self.A), extra], format="csr"),
            np.concatenate([self.row_lo, np.full(n, -np.inf)]),
            np.concatenate([self.row_up, np.zeros(n)]),
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
        remaining = min(self.deadline - time.perf_counter(), limit_s)
        if self.last_x is None:  # nothing to fall back on yet: always give HiGHS a chance
            remaining = max(remaining, 0.1 * self.time_limit_s)
        elif remaining <= 0:
            return None
        self.solves += 1
        a = self.A if a is None else a
        constraints = (
            [
                LinearConstraint(
                    a,
                    self.row_lo if row_lo is None else row_lo,
                    self.row_up if row_up is None else row_up,
                )
            ]
            if a.shape[0]
            else []
        )
        res = milp(
            c,
            integrality=self.integrality if integrality is None else integrality,
            bounds=Bounds(lb, np.maximum(ub, lb)),
            constraints=constraints,
            options={
                "time_limit": remaining,
                "mip_rel_gap": self.mip_rel_gap if gap is None else max(gap, self.mip_rel_gap),
            },
        )
        if res.x is not None and res.status in (0, 1):
            self.last_x = res.x[: self.n_vars]
            return res.x
        if res.status in (1, 2):  # infeasible, or out of time before any allocation was found
            return None
        raise OptimiserError(f"HiGHS stopped without an allocation: {res.message}")

    # ------------------------------------------------------------------------------- answer

    def allocation(self, x: np.ndarray, solve_ms: float) -> Allocation:
        counts = np.rint(x[: self.n_pairs]).astype(np.int64)
        used = np.bincount(self.t_of, counts, minlength=len(self.types))
        shards: dict[ShardKey, ShardAllocation] = {}
        surplus = {t: self.pool[t] - int(used[i]) for i, t in enumerate(self.types)}
        for s, d in enumerate(self.demands):
            mine = np.flatnonzero(self.s_of == s)
            blocks = {self.types[self.t_of[p]]: int(counts[p]) for p in mine if counts[p] > 0}
            capacity = float(counts[mine] @ self.cap[mine])
            short = max(0.0, self.q[s] - self.u[s] * capacity)
            short = 0.0 if short <= _TOL * max(1.0, self.q[s]) else short
            under = max(0, int(self.m[s]) - int(counts[mine].sum()))
            reason = ""
            if short or under:
                if self.no_capacity[s]:
                    reason = "no capacity"
                elif any(
                    self.ramped[p] and counts[p] >= self.hi[p] and surplus[self.types[self.t_of[p]]]
                    for p in mine
                ):
                    reason = "ramp"
                else:
                    reason = "pool"
            shards[d.key] = ShardAllocation(d, blocks, capacity, short, under, reason)
        cost = float(sum(self.costs[t] * int(used[i]) for i, t in enumerate(self.types)))
        return Allocation(
            shards=shards,
            pool=dict(self.pool),
            used={t: int(used[i]) for i, t in enumerate(self.types)},
            surplus=surplus,
            cost=cost,
            solves=self.solves,
            solve_ms=solve_ms,
            notes=list(self.notes),
        )


class _Fill:
    """The greedy part of :meth:`_Problem.shortfall`: from ``x``, which meets every minimum and
    every level met in full, the rest of the pool by priority, block types valued at ``price``
    (per pair).

    1. **Reprice.** A shard met in full takes its cheapest cover at those prices (exact, by
       :func:`_cheapest_cover`, over what it holds plus what is free). The first cut level's
       shards keep their minimum in the types that cover most of their own demand per price,
       the lower levels' in the cheapest.
    2. **Fill**, level by level from the first cut one: water-filling, one block at a time to
       the shard with the largest relative shortfall, of the type with the most coverage per
       price, free or taken from a lower-priority shard above its minimum. When no such block
       helps the first cut level's worst shard, a shard met in full gives it a block of a type
       it uses and covers itself again with free blocks of other types. Blocks that change no
       shortfall go back, to the levels above first. So a short shard is never passed over
       for a lower-priority one.
    3. **Holds** (smoothing) are restored from what is left, highest priority first: like the
       MILP's soft holds, they yield to any shortfall.
    """

    def __init__(self, problem: _Problem, x: np.ndarray, price: np.ndarray) -> None:
        self.p = problem
        self.x = x
        self.price = price
        self.left = problem.pool_arr - np.bincount(problem.t_of, x, minlength=len(problem.types))

    def run(
        self, met: np.ndarray, levels: list[int], shards_at: dict[int, list[int]]
    ) -> np.ndarray:
        p = self.p
        cut = [level for level in levels if not all(met[s] for s in shards_at[level])]
        first_cut = cut[0] if cut else None
        donors = [int(s) for s in np.flatnonzero(met)]
        for s in donors:
            self._reprice(s, keep_coverage=True)
        for level in cut[1:]:
            for s in shards_at[level]:
                self._reprice(s, keep_coverage=False)
        for s in shards_at.get(first_cut, []):
            self._reseat_minimum(s)
        for i, level in enumerate(levels):
            above = levels[: i + 1]
            seen: set[bytes] = set()
            while (
                sum(self._water_fill(shards_at[higher]) for higher in above)
                + sum(self._tidy(s) for higher in above for s in shards_at[higher])
                + (self._swap_in(shards_at[level], donors) if level == first_cut else 0)
            ):
                # Until the levels so far neither take nor give back a block. Blocks can go
                # round (a shard takes one, another gives one back, ...): an allocation seen
                # before ends the level, every one on the way is feasible.
                state = self.x.tobytes()
                if state in seen:
                    p.notes.append(f"greedy fill: priority {level} went round, stopped")
                    break
                seen.add(state)
        for level in levels:
            for s in shards_at[level]:
                for pair in p.pairs_of[s]:
                    back = min(p.hold_lo[pair] - self.x[pair], self.left[p.t_of[pair]])
                    if back > 0:
                        self.x[pair] += back
                        self.left[p.t_of[pair]] -= back
        return self.x

    def _water_fill(self, shards: list[int]) -> int:
        """Blocks to ``shards``, one at a time to the one with the largest relative shortfall,
        until none of them can use a free block; returns how many were given."""
        p, given = self.p, 0
        heap = [(self._coverage(s), s) for s in shards if p.q[s] > 0 and not p.no_capacity[s]]
        heap = [(c, s) for c, s in heap if c < 1.0 - _TOL]
        heapq.heapify(heap)
        while heap:
            _, s = heapq.heappop(heap)
            if self._add_block(s):
                given += 1
                if self._coverage(s) < 1.0 - _TOL:
                    heapq.heappush(heap, (self._coverage(s), s))
        return given

    def _swap_in(self, shards: list[int], donors: list[int]) -> int:
        """Blocks for the worst-covered of ``shards`` that no free block can help: a type it
        uses, taken from a shard met in full that covers itself again with free blocks of
        other types (its cheapest cover at the prices). Stops when the worst cannot gain."""
        p, moves = self.p, 0
        while True:
            short = [s for s in shards if p.q[s] > 0 and not p.no_capacity[s]]
            short = [s for s in short if self._coverage(s) < 1.0 - _TOL]
            if not short or not self._take_for(min(short, key=self._coverage), donors):
                return moves
            moves += 1

    def _take_for(self, s: int, donors: list[int]) -> bool:
        p = self.p
        for pair in sorted(p.pairs_of[s], key=lambda pair: -p.coef[pair] / self.price[pair]):
            t = p.t_of[pair]
            if p.coef[pair] <= 0 or self.x[pair] >= p.hi[pair] or self.left[t] >= 1:
                continue
            for r in donors:
                mine = p.pairs_of[r]
                top = np.minimum(p.hi[mine], self.x[mine] + self.left[p.t_of[mine]])
                given = p.t_of[mine] == t
                if not np.any(self.x[mine][given] >= 1):
                    continue
                top[given] = self.x[mine][given] - 1
                demand = p.q[r] > 0 and not p.no_capacity[r]
                need = self._coverage(r) if demand else 0.0
                a = p.coef[mine] if demand else np.zeros(len(mine))
                blocks = round(min(p.m[r], self.x[mine].sum()))
                if a @ top < need - _EPS or top.sum() < blocks:
                    continue
                new = _cheapest_cover(self.price[mine], a, top, need, blocks)
                if new is None:
                    continue
                self._move(mine, new)
                self.x[pair] += 1
                self.left[t] -= 1
                return True
        return False

    def _coverage(self, s: int) -> float:
        """Share of shard ``s``'s demand its blocks cover at the target utilisation (<= 1)."""
        mine = self.p.pairs_of[s]
        return min(1.0, float(self.p.coef[mine] @ self.x[mine])) if self.p.q[s] > 0 else 1.0

    def _move(self, pairs: np.ndarray, new: np.ndarray) -> None:
        delta = new - self.x[pairs]
        self.x[pairs] = new
        self.left -= np.bincount(self.p.t_of[pairs], delta, minlength=len(self.left))

    def _reprice(self, s: int, keep_coverage: bool) -> None:
        """Shard ``s``'s cheapest cover at the prices: at the coverage it has, or (a shard
        below the first cut level) of its minimum alone."""
        p, mine = self.p, self.p.pairs_of[s]
        if not len(mine):
            return
        held = self.x[mine]
        top = np.minimum(p.hi[mine], held + self.left[p.t_of[mine]])
        demand = keep_coverage and p.q[s] > 0 and not p.no_capacity[s]
        need = self._coverage(s) if demand else 0.0
        a = p.coef[mine] if demand else np.zeros(len(mine))
        new = _cheapest_cover(self.price[mine], a, top, need, round(min(p.m[s], held.sum())))
        if new is not None:
            self._move(mine, new)

    def _reseat_minimum(self, s: int) -> None:
        """A shard that is cut: as many blocks as it holds for its minimum, chosen again as
        the ones that cover most of its demand per price."""
        mine = self.p.pairs_of[s]
        blocks = round(min(self.p.m[s], self.x[mine].sum()))
        self._move(mine, np.zeros(len(mine)))
        for _ in range(blocks):
            self._add_block(s, minimum=True)

    def _add_block(self, s: int, minimum: bool = False) -> bool:
        """One more block for shard ``s``'s demand (or its minimum: any type will do), of
        the type with the most coverage per price: a free one, else (for demand) one that a
        lower-priority shard holds above its own minimum, taken from the lowest."""
        p = self.p
        need = 1.0 - self._coverage(s)
        best, best_key, best_donor = -1, (0.0, 0.0, 0.0), -1
        for pair in p.pairs_of[s]:
            t = p.t_of[pair]
            if self.x[pair] >= p.hi[pair]:
                continue
            gain = min(float(p.coef[pair]), need)
            if gain <= 0 and not minimum:
                continue
            donor = -1 if self.left[t] >= 1 or minimum else self._donor(s, t)
            if self.left[t] < 1 and donor < 0:
                continue
            key = (gain / self.price[pair], -self.price[pair], float(donor < 0))
            if best < 0 or key > best_key:
                best, best_key, best_donor = int(pair), key, donor
        if best < 0:
            return False
        self.x[best] += 1
        if best_donor >= 0:
            self.x[best_donor] -= 1
        else:
            self.left[p.t_of[best]] -= 1
        return True

    def _donor(self, s: int, t: int) -> int:
        """The pair of type ``t`` of the lowest-priority shard below ``s`` that holds more
        blocks than its minimum, or -1."""
        p = self.p
        below = p.priority < p.priority[s]
        found, found_priority = -1, np.inf
        for pair in np.flatnonzero((p.t_of == t) & below[p.s_of] & (self.x >= 1)):
            r = p.s_of[pair]
            if p.priority[r] < found_priority and self.x[p.pairs_of[r]].sum() > p.m[r]:
                found, found_priority = int(pair), p.priority[r]
        return found

    def _tidy(self, s: int) -> int:
        """Give back blocks of ``s`` that change neither its shortfall nor its minimum,
        dearest first; returns how many."""
        p = self.p
        mine = p.pairs_of[s]
        reached, freed = self._coverage(s), 0
        for pair in sorted(mine, key=lambda pair: -p.cost_vec[pair]):
            while self.x[pair] > 0 and self.x[mine].sum() > p.m[s]:
                self.x[pair] -= 1
                if self._coverage(s) < reached - _TOL:
                    self.x[pair] += 1
                    break
                self.left[p.t_of[pair]] += 1
                freed += 1
        return freed


_MAX_ENUMERATION = 200_000


def _cheapest_cover(
    w: np.ndarray, a: np.ndarray, top: np.ndarray, need: float, blocks: int
) -> np.ndarray | None:
    """Least-cost integers ``0 <= e <= top`` with ``a @ e >= need`` and ``sum(e) >= blocks``.

    Exact by enumeration in a box that provably holds an optimum: a type beyond
    ``max(ceil(need / a_t), blocks)`` blocks can drop one and still cover both rows alone, and,
    with ``(lam, mu)`` the best dual point of the LP relaxation and ``d = w - lam a - mu >= 0``
    its reduced costs, any allocation no dearer than a known one ``ub`` has
    ``d @ e <= ub - lam need - mu blocks``. The type with the widest box is not enumerated: its
    least count is closed-form. ``None`` when the box exceeds ``_MAX_ENUMERATION`` points.
    ``top`` must be feasible (the caller lowered ``need`` and ``blocks`` to what it reaches).

    >>> _cheapest_cover(np.array([1.0, 2.0]), np.array([0.3, 0.8]), np.array([9, 9]), 1.0, 0)
    array([1., 1.])
    """
    n = len(w)
    if n == 0 or (need <= _EPS and blocks <= 0):
        return np.zeros(n)
    top = top.astype(float)

    def least(t: int, rest_cover: float, rest_blocks: float) -> float:
        """Fewest blocks of type ``t`` to finish both rows."""
        by_demand = 0.0
        if need - rest_cover > _EPS:
            by_demand = math.ceil((need - rest_cover - _EPS) / a[t]) if a[t] > 0 else math.inf
        return max(0.0, by_demand, blocks - rest_blocks)

    # A known allocation: all of ``top``, or one type alone.
    best = float(w @ top)
    for t in range(n):
        k = least(t, 0.0, 0.0)
        if k <= top[t]:
            best = min(best, w[t] * k)
    # The LP relaxation's best dual point (vertices of {lam, mu >= 0, lam a + mu <= w}).
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
    gap = max(0.0, best - bound) * (1 + 1e-9) + 1e-9
    reduced = np.maximum(w - lam * a - mu, 0.0)
    box = top.copy()
    for t in range(n):
        alone = least(t, 0.0, 0.0)
        if alone < box[t]:
            box[t] = alone
        if reduced[t] > 0:
            box[t] = min(box[t], math.floor(gap / reduced[t]))
    free = int(np.argmax(box))
    others = [t for t in range(n) if t != free]
    sizes = [int(box[t]) + 1 for t in others]
    if math.prod(sizes) > _MAX_ENUMERATION:
        return None
    grid = np.indices(sizes).reshape(len(others), -1).astype(float) if others else np.zeros((0, 1))
    cover = a[others] @ grid
    count = grid.sum(axis=0)
    short = need - cover
    if a[free] > 0:
        by_demand = np.where(short > _EPS, np.ceil((short - _EPS) / a[free]), 0.0)
    else:
        by_demand = np.where(short > _EPS, np.inf, 0.0)
    k = np.maximum(np.maximum(by_demand, blocks - count), 0.0)
    total = w[others] @ grid + w[free] * np.where(k <= top[free], k, np.inf)
    pick = int(np.lexsort((count + k, total))[0])
    if not np.isfinite(total[pick]):  # cannot happen for a feasible ``top``
        return None
    e = np.zeros(n)
    e[others] = grid[:, pick]
    e[free] = k[pick]
    return e


_EPS = 1e-9
# The fast path's priced MILP only guides the greedy fill: a loose gap and a short limit.
_PRICED_GAP = 0.05
_PRICED_LIMIT_S = 0.05


def _unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to a maximum of 1 (unchanged when it has no positive entry)."""
    top = float(v.max(initial=0.0))
    return v / top if top > 0 else v


def _pad_column(a: csr_array) -> csr_array:
    return csr_array((a.data, a.indices, a.indptr), shape=(a.shape[0], a.shape[1] + 1))


def _check_inputs(
    demands: Sequence[ShardDemand], pool: Mapping[str, int], costs: Mapping[str, float]
) -> None:
    seen: set[ShardKey] = set()
    for d in demands:
        if d.key in seen:
            raise ValueError(f"shard {d.key} appears twice in the demands: give each shard once")
        seen.add(d.key)
        unknown = sorted(set(d.capacity_rps) - set(pool))
        if unknown:
            raise ValueError(
                f"shard {d.key} may use block types {unknown} that the pool does not hold "
                f"(it holds {sorted(pool)}): drop them from its capacity_rps"
            )
        if not 0 < d.target_utilisation <= 1:
            raise ValueError(f"shard {d.key}: target_utilisation must be in (0, 1]")
        if not math.isfinite(d.demand_rps):
            raise ValueError(f"shard {d.key}: demand_rps must be finite, got {d.demand_rps}")
    missing = sorted(set(pool) - set(costs))
    if missing:
        raise ValueError(f"no cost for block types {missing}: give every pool block type a cost")
    negative = sorted(t for t, n in pool.items() if n < 0)
    if negative:
        raise ValueError(f"pool counts must be >= 0; negative for {negative}")
