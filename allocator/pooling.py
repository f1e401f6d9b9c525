"""Blocks for the pool, not per shard: the planner's rounding and margins when the gateway lends.

Planned one by one, every shard rounds its need up to a whole block and carries its own
margin for a demand above its mean: five shards needing 2.1, 3.2, 0.3, 0.05 (with a minimum
of one block) and 1.4 blocks get 3 + 4 + 1 + 1 + 2 = 11 blocks for 7.05 blocks of need, and
the margins of shards that rarely peak together add up. When the gateway's pools lend idle
slots (``SHARDSHAPE_GATEWAY_LENDING``), a shard's fraction of a block and its peaks run on
the idle slots of the others, so the pool only has to round once and carry one margin.

:func:`pool_rounded` sizes the pool at ``sum(mean needs) + hypot(margins)``, the forecast
quantile of the total for independent shards (a shard's margin is its quantile need over its
mean need; without a mean, its quantile is taken as sure). Every shard gets the whole blocks
of its mean need (at least its minimum); the blocks left go one at a time to the shard
furthest below its own quantile need, never past it. A shard left below its quantile need
has its demand trimmed to what it holds, so the optimiser (priorities, pool bound, smoothing)
works on the trimmed demands unchanged. Needs are counted in each shard's cheapest block
type per request (capacity over cost).

>>> from shardshape.allocator.optimiser import ShardDemand
>>> def shard(i, rps, mean=None, min_blocks=0):
...     return ShardDemand("shop", i, rps, {"block": 10.0}, min_blocks=min_blocks,
...                        target_utilisation=1.0, mean_rps=mean)
>>> needs = [shard(0, 21), shard(1, 32), shard(2, 3), shard(3, 0.5, min_blocks=1), shard(4, 14)]
>>> [round(d.demand_rps, 6) for d in pool_rounded(needs, {"block": 1.0})]
[20.0, 30.0, 0.0, 0.5, 14]

Two shards of 40 requests/s on average, each planned for 70 at its quantile, and a small one
with a minimum of one block: 15 blocks one by one, 13 for the pool (4 + 4 + 0.5 of mean need
and hypot(3, 3) = 4.24 of margin):

>>> busy = [shard(0, 70, mean=40), shard(1, 70, mean=40), shard(2, 5, min_blocks=1)]
>>> [round(d.demand_rps, 6) for d in pool_rounded(busy, {"block": 1.0})]
[60.0, 60.0, 5]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from shardshape.allocator.optimiser import ShardDemand

# Needs are rounded this much in the shards' favour, so that float error never asks for one
# block more (a trimmed demand sits this much under its whole blocks).
_EPS = 1e-9


def pool_rounded(demands: Sequence[ShardDemand], costs: Mapping[str, float]) -> list[ShardDemand]:
    """``demands`` trimmed to the blocks a pooled plan gives each shard (see the module
    notes); order is kept."""
    per_request = [_per_request(d, costs) for d in demands]
    needs = [d.demand_rps / c if c else 0.0 for d, c in zip(demands, per_request, strict=True)]
    means = [
        min(d.demand_rps if d.mean_rps is None else d.mean_rps, d.demand_rps) / c if c else 0.0
        for d, c in zip(demands, per_request, strict=True)
    ]
    held = [max(d.min_blocks, math.floor(m + _EPS)) for d, m in zip(demands, means, strict=True)]
    margin = math.hypot(*(n - m for n, m in zip(needs, means, strict=True)))
    for _ in range(max(0, math.ceil(sum(means) + margin - sum(held) - _EPS))):
        i = max(range(len(held)), key=lambda k: needs[k] - held[k])  # ties: the first
        if needs[i] - held[i] <= _EPS:
            break
        held[i] += 1
    return [
        replace(d, demand_rps=d.demand_rps * h / n * (1 - _EPS)) if h < n - _EPS else d
        for d, n, h in zip(demands, needs, held, strict=True)
    ]


def _per_request(demand: ShardDemand, costs: Mapping[str, float]) -> float:
    """Requests/s one block of the shard's cheapest type per request carries at its target
    (0 when no type it may use has capacity)."""
    usable = [
        (cap / costs[t], cap) for t, cap in demand.capacity_rps.items() if cap > 0 and t in costs
    ]
    if not usable:
        return 0.0
    return max(usable)[1] * demand.target_utilisation
