"""What a plan asks of a gateway's pools: one per shard, one per arm of a running experiment.

:func:`plan_layout` turns a plan into the pools' keys and limits (an experiment's shard splits
its resources among its arms by weight) and the shared pool's limits (all shards' together,
for when shaping is off). It is pure and runs in the caller's thread, so a bad plan fails
there and the event loop only installs the result. :class:`ArmPools` picks the arm a request
runs in by the same hash as every other gateway.

>>> from shardshape.core.contracts import AllocationPlan, ResourceSpec, ShardSpec
>>> spec = ResourceSpec(concurrency=4)
>>> plan = AllocationPlan(plan_id="p2", version=2, service="shop", pool_id="main", shards=[
...     ShardSpec(shard_id=1, resources=spec, per_replica=spec)])
>>> layout = plan_layout(plan, PoolDefaults(), shaping=True)
>>> layout.version, list(layout.pools), layout.pools[PoolKey(1)].concurrency
(2, [PoolKey(shard_id=1, arm=None)], 4)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from shardshape.allocator.arms import ArmAssigner
from shardshape.core.contracts import AllocationPlan
from shardshape.gateway.limits import (
    PoolDefaults,
    PoolLimits,
    limits_of_arm,
    limits_of_shard,
    running_experiments,
)
from shardshape.gateway.shard_pool import PoolKey, ShardPool


@dataclass(frozen=True)
class PoolLayout:
    """What a plan asks for, computed (and validated) off the event loop."""

    version: int
    pools: dict[PoolKey, PoolLimits]
    arms: dict[int, ArmAssigner]
    shared: PoolLimits


def plan_layout(plan: AllocationPlan, defaults: PoolDefaults, *, shaping: bool) -> PoolLayout:
    """The pools ``plan`` asks for (none but the shared pool's limits when not ``shaping``);
    ``defaults`` fill what a shard's plan leaves out."""
    experiments = running_experiments(plan)
    pools: dict[PoolKey, PoolLimits] = {}
    arms: dict[int, ArmAssigner] = {}
    shard_limits = []
    for spec in plan.shards:
        limits = limits_of_shard(spec, defaults)
        shard_limits.append(limits)
        experiment = experiments.get(spec.shard_id)
        if experiment is None:
            pools[PoolKey(spec.shard_id)] = limits
            continue
        shares = _shares([arm.weight for arm in experiment.arms])
        arms[spec.shard_id] = ArmAssigner(experiment)
        for arm, share in zip(experiment.arms, shares, strict=True):
            pools[PoolKey(spec.shard_id, arm.name)] = limits_of_arm(limits, arm, share)
    shared = defaults.default_pool()
    if shard_limits:
        shared = shard_limits[0]
        for limits in shard_limits[1:]:
            shared = shared.combined(limits)
    if not shaping:
        return PoolLayout(plan.version, {}, {}, shared)
    return PoolLayout(plan.version, pools, arms, shared)


class ArmPools:
    """The pools of one shard's experiment arms, and which one a request's key runs in."""

    __slots__ = ("assigner", "pools")

    def __init__(self, assigner: ArmAssigner, pools: list[ShardPool]) -> None:
        self.assigner = assigner
        self.pools = pools

    def pick(self, key: str) -> ShardPool:
        # The same hash as every other gateway (shardshape.allocator.arms): a user stays in one arm.
        return self.pools[self.assigner.index(key or _anonymous_key())]


def _shares(weights: list[float]) -> list[float]:
    """Weights normalised to sum to 1 (equal shares when they are all 0).

    >>> _shares([1, 3]), _shares([0, 0])
    ([0.25, 0.75], [0.5, 0.5])
    """
    total = sum(weights)
    return [w / total for w in weights] if total > 0 else [1 / len(weights)] * len(weights)


_anonymous = itertools.count()


def _anonymous_key() -> str:
    """A key of its own for a request that brings none (callers that pass no ``key``)."""
    return f"anonymous-{next(_anonymous)}"
