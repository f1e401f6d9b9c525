"""The optimiser's problem as arrays: the MILP's variables, rows and bounds, and the answer.

For shards ``s`` and the block types ``t`` each may use (the *pairs*), the variables are
``[x (pairs), y (S), z (S), r (holds)]``: ``x`` the blocks of each pair (integer), ``y`` each
shard's demand shortfall as a fraction of its forecast, ``z`` the blocks it misses to its
minimum, ``r`` the slack of each soft hold from the previous plan. The rows are the demand
(as fractions of the forecast), the minimum, the pool and the holds (the package notes).

>>> from shardshape.allocator.optimiser.model import ShardDemand
>>> d = ShardDemand("shop", 0, demand_rps=100, capacity_rps={"small": 50}, min_blocks=1)
>>> p = Problem([d], {"small": 4, "large": 2}, {"small": 1.0, "large": 3.0}, None, None)
>>> p.types, p.n_pairs, p.n_vars, p.A.shape
(['large', 'small'], 1, 3, (3, 3))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.sparse import coo_array, csr_array

from shardshape.allocator.optimiser.model import (
    TOL,
    Allocation,
    ShardAllocation,
    ShardDemand,
    ShardKey,
    Smoothing,
    check_inputs,
)


class Problem:
    """The MILP's arrays; variables are ``[x (pairs), y (S), z (S), r (holds)]``.

    Raises :class:`ValueError` naming the input at fault (see
    :func:`~shardshape.allocator.optimiser.model.check_inputs`).
    """

    def __init__(
        self,
        demands: Sequence[ShardDemand],
        pool: Mapping[str, int],
        costs: Mapping[str, float],
        previous: Mapping[ShardKey, Mapping[str, int]] | None,
        smoothing: Smoothing | None,
    ) -> None:
        check_inputs(demands, pool, costs)
        self.demands = list(demands)
        self.types = sorted(pool)
        self.pool = {t: int(pool[t]) for t in self.types}
        self.costs = {t: float(costs[t]) for t in self.types}
        self.pool_arr = np.array([self.pool[t] for t in self.types], dtype=float)
        self.s_of, self.t_of, self.cap = self._pairs()
        self.n_pairs, self.n_shards = len(self.s_of), len(self.demands)
        self.pairs_of = [np.flatnonzero(self.s_of == s) for s in range(self.n_shards)]
        self.q = np.array([max(d.demand_rps, 0.0) for d in self.demands])
        self.u = np.array([d.target_utilisation for d in self.demands])
        self.m = np.array([max(d.min_blocks, 0) for d in self.demands], dtype=float)
        self.priority = np.array([d.priority for d in self.demands])
        self.hi, self.ramped, self.hold_lo = self._step_bounds(previous, smoothing)
        holds = np.flatnonzero(self.hold_lo > 0)
        self.n_vars = self.n_pairs + 2 * self.n_shards + len(holds)
        self.y0 = self.n_pairs
        self.z0 = self.n_pairs + self.n_shards
        self.r0 = self.n_pairs + 2 * self.n_shards
        q_of = self.q[self.s_of]
        self.coef = self.u[self.s_of] * self.cap / np.where(q_of > 0, q_of, 1.0)
        self.A, self.row_lo, self.row_up, self.pool_rows = self._rows(holds)
        # A shard with demand and no usable capacity is short by construction.
        usable = np.bincount(self.s_of, self.cap * (self.hi > 0), minlength=self.n_shards) > 0
        self.no_capacity = (self.q > 0) & ~usable
        self.y_fixed = self.no_capacity.astype(float)
        self.lb, self.ub = self._variable_bounds(holds)
        self.integrality = np.zeros(self.n_vars)
        self.integrality[: self.n_pairs] = 1
        self.cost_vec = self._costs()

    def _pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per (shard, block type it may use): the shard, the type and one block's capacity."""
        t_index = {t: i for i, t in enumerate(self.types)}
        s_of, t_of, cap = [], [], []
        for s, d in enumerate(self.demands):
            for name in sorted(d.capacity_rps):
                s_of.append(s)
                t_of.append(t_index[name])
                cap.append(max(float(d.capacity_rps[name]), 0.0))
        return np.array(s_of, dtype=np.int64), np.array(t_of, dtype=np.int64), np.array(cap)

    def _step_bounds(
        self, previous: Mapping[ShardKey, Mapping[str, int]] | None, smoothing: Smoothing | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per pair from the previous plan: the most blocks (the pool's size, or the ramp's
        step when it is lower), whether the ramp set it, and the soft hold (blocks kept)."""
        hi = self.pool_arr[self.t_of].copy()
        ramped = np.zeros(self.n_pairs, dtype=bool)
        hold_lo = np.zeros(self.n_pairs)
        if previous is None:
            return hi, ramped, hold_lo
        smooth = smoothing or Smoothing()
        prev = np.zeros(self.n_pairs)
        for p in range(self.n_pairs):
            d = self.demands[self.s_of[p]]
            prev[p] = previous.get(d.key, {}).get(self.types[self.t_of[p]], 0)
        prev_cap = np.bincount(self.s_of, prev * self.cap, minlength=self.n_shards)
        with np.errstate(divide="ignore", invalid="ignore"):
            prev_util = np.where(prev_cap > 0, self.q / prev_cap, np.inf)
        for p in range(self.n_pairs):
            down, up = smooth.bounds(int(prev[p]))
            if prev[p] + up < hi[p]:
                hi[p] = prev[p] + up
                ramped[p] = True
            keep = prev_util[self.s_of[p]] >= smooth.release_below_utilisation
            hold_lo[p] = prev[p] if keep else prev[p] - down
        return hi, ramped, hold_lo

    def _rows(self, holds: np.ndarray) -> tuple[csr_array, np.ndarray, np.ndarray, np.ndarray]:
        """The rows ``lo <= A v <= up`` (demand, minimum, pool, holds) and each block type's
        pool row (-1 for a type no shard uses)."""
        rows = _Rows()
        for s in range(self.n_shards):
            if self.q[s] > 0:
                mine = self.pairs_of[s]
                rows.add([*mine.tolist(), self.y0 + s], [*self.coef[mine].tolist(), 1.0], 1.0)
        for s in range(self.n_shards):
            if self.m[s] > 0:
                mine = self.pairs_of[s]
                rows.add([*mine.tolist(), self.z0 + s], [1.0] * (len(mine) + 1), self.m[s])
        pool_rows = np.full(len(self.types), -1)
        for t in range(len(self.types)):
            mine = np.flatnonzero(self.t_of == t)
            if len(mine):
                pool_rows[t] = rows.add(mine.tolist(), [1.0] * len(mine), -np.inf, self.pool_arr[t])
        for h, p in enumerate(holds):
            rows.add([int(p), self.r0 + h], [1.0, 1.0], self.hold_lo[p])
        return (*rows.matrix(self.n_vars), pool_rows)

    def _variable_bounds(self, holds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of ``x`` (the step bounds), ``y`` (a fraction, all of it for a shard without
        capacity), ``z`` (at most the minimum) and ``r`` (at most the hold)."""
        lb = np.zeros(self.n_vars)
        lb[self.y0 : self.y0 + self.n_shards] = self.y_fixed
        ub = np.concatenate([self.hi, np.ones(self.n_shards), self.m, self.hold_lo[holds]])
        return lb, ub

    def _costs(self) -> np.ndarray:
        """Objective: each block's cost; a hold's slack costs more than any block, so a hold
        yields only to a shortfall."""
        cost_vec = np.zeros(self.n_vars)
        cost_vec[: self.n_pairs] = np.array([self.costs[t] for t in self.types])[self.t_of]
        cost_vec[self.r0 :] = 2.0 * max(self.costs.values(), default=1.0) + 1.0
        return cost_vec

    def allocation(
        self, x: np.ndarray, solve_ms: float, solves: int, notes: list[str]
    ) -> Allocation:
        """The answer for the point ``x``: blocks, shortfalls and their reasons, the pool's use."""
        counts = np.rint(x[: self.n_pairs]).astype(np.int64)
        used = np.bincount(self.t_of, counts, minlength=len(self.types))
        surplus = {t: self.pool[t] - int(used[i]) for i, t in enumerate(self.types)}
        shards: dict[ShardKey, ShardAllocation] = {}
        for s, d in enumerate(self.demands):
            mine = self.pairs_of[s]
            blocks = {self.types[self.t_of[p]]: int(counts[p]) for p in mine if counts[p] > 0}
            capacity = float(counts[mine] @ self.cap[mine])
            short = max(0.0, self.q[s] - self.u[s] * capacity)
            short = 0.0 if short <= TOL * max(1.0, self.q[s]) else short
            under = max(0, int(self.m[s]) - int(counts[mine].sum()))
            reason = self._limited_by(s, counts, surplus) if short or under else ""
            shards[d.key] = ShardAllocation(d, blocks, capacity, short, under, reason)
        cost = float(sum(self.costs[t] * int(used[i]) for i, t in enumerate(self.types)))
        return Allocation(
            shards=shards,
            pool=dict(self.pool),
            used={t: int(used[i]) for i, t in enumerate(self.types)},
            surplus=surplus,
            cost=cost,
            solves=solves,
            solve_ms=solve_ms,
            notes=list(notes),
        )

    def _limited_by(self, s: int, counts: np.ndarray, surplus: dict[str, int]) -> str:
        """Why shard ``s`` is short: no usable block type, the ramp (a pair at its step bound
        while its type has blocks left), else the pool."""
        if self.no_capacity[s]:
            return "no capacity"
        for p in self.pairs_of[s]:
            if self.ramped[p] and counts[p] >= self.hi[p] and surplus[self.types[self.t_of[p]]]:
                return "ramp"
        return "pool"


class _Rows:
    """Sparse rows ``lo <= a v <= up``, added one at a time."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.lo: list[float] = []
        self.up: list[float] = []

    def add(self, cols: list[int], vals: list[float], lo: float, up: float = np.inf) -> int:
        """One row; returns its index."""
        row = len(self.lo)
        self.rows += [row] * len(cols)
        self.cols += cols
        self.vals += vals
        self.lo.append(lo)
        self.up.append(up)
        return row

    def matrix(self, n_vars: int) -> tuple[csr_array, np.ndarray, np.ndarray]:
        """The rows as ``(A, lo, up)`` over ``n_vars`` variables."""
        shape = (len(self.lo), n_vars)
        a = csr_array(coo_array((self.vals, (self.rows, self.cols)), shape=shape))
        return a, np.array(self.lo), np.array(self.up)
