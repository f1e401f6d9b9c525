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
those below it greedily, guided by the LP's dual prices
(:meth:`~shardshape.allocator.optimiser.milp.Stages.shortfall`): the cut level's minimax MILP
takes seconds at 50 shards. A shortfall is reported per shard, never an infeasible-solver
error. Blocks not allocated are the surplus, returned to the pool.

The modules: :mod:`~shardshape.allocator.optimiser.model` (the inputs and the answer),
:mod:`~shardshape.allocator.optimiser.problem` (the MILP's arrays),
:mod:`~shardshape.allocator.optimiser.cover` (exact per-shard covers, the path when the pool
does not bind), :mod:`~shardshape.allocator.optimiser.milp` (the MILP stages) and
:mod:`~shardshape.allocator.optimiser.fill` (the greedy fill).

>>> d = [ShardDemand("shop", 0, demand_rps=160, capacity_rps={"small": 50, "large": 120},
...                  target_utilisation=1.0, min_blocks=1)]
>>> a = solve(d, pool={"small": 10, "large": 2}, costs={"small": 1.0, "large": 2.0})
>>> a.shards["shop", 0].blocks, a.cost, a.surplus
({'large': 1, 'small': 1}, 3.0, {'large': 1, 'small': 9})
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from shardshape.allocator.optimiser.cover import per_shard
from shardshape.allocator.optimiser.milp import Stages
from shardshape.allocator.optimiser.model import (
    Allocation,
    OptimiserError,
    ShardAllocation,
    ShardDemand,
    ShardKey,
    Smoothing,
)
from shardshape.allocator.optimiser.problem import Problem

__all__ = [
    "Allocation",
    "OptimiserError",
    "ShardAllocation",
    "ShardDemand",
    "ShardKey",
    "Smoothing",
    "solve",
]


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
    problem = Problem(demands, pool, costs, previous, smoothing)
    stages = Stages(problem, time_limit_s, mip_rel_gap, started=started)
    x = per_shard(problem)
    if x is None:
        x = stages.cover()
    if x is None:
        x = stages.shortfall()
    return stages.allocation(x, (time.perf_counter() - started) * 1000)
