"""What a plan means for one in-process pool: slots, queue, memory, bandwidth, I/O weight, cache.

A plan states every shard's resources per replica (:class:`ShardSpec.per_replica`); a gateway
takes that share. Fields a plan leaves at 0 mean "not limited" (memory, network) or "the
gateway's default" (queue size and timeout). A running experiment splits its shard between
its arms in proportion to their weights, with each arm's overrides on top.

>>> from shardshape.core.contracts import ResourceSpec, ShardSpec
>>> spec = ShardSpec(shard_id=3, per_replica=ResourceSpec(concurrency=8, memory_mib=512,
...                                                     net_mbit=8, io_weight=200))
>>> limits = limits_of_shard(spec, PoolDefaults())
>>> limits.concurrency, limits.memory_mib, limits.net_bytes_per_s, limits.queue_size
(8, 512.0, 1000000.0, 64)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from shardshape.core.contracts import AllocationPlan, Arm, CachePolicy, Experiment, ShardSpec

BYTES_PER_MBIT = 125_000


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """The limits of one pool; 0 for ``memory_mib`` or ``net_bytes_per_s`` means unlimited."""

    concurrency: int = 16
    queue_size: int = 64
    queue_timeout_s: float = 2.0
    memory_mib: float = 0.0
    net_bytes_per_s: float = 0.0
    io_weight: int = 100
    cache: CachePolicy = field(default_factory=CachePolicy)
    priority: int = 0  # the shard's plan priority; who may borrow its idle slots (lending)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"pool concurrency must be at least 1, got {self.concurrency}")
        if self.queue_size < 0 or self.queue_timeout_s <= 0:
            raise ValueError(
                f"pool queue needs queue_size >= 0 and queue_timeout_s > 0, got "
                f"{self.queue_size} and {self.queue_timeout_s}"
            )
        if self.memory_mib < 0 or self.net_bytes_per_s < 0 or self.io_weight < 1:
            raise ValueError(
                "pool memory_mib and net_bytes_per_s must be >= 0 and io_weight >= 1, got "
                f"{self.memory_mib}, {self.net_bytes_per_s} and {self.io_weight}"
            )

    def combined(self, other: PoolLimits) -> PoolLimits:
        """Both pools' resources in one (the shared pool when shaping is off).

        The cache keeps this pool's policy (or takes the other's when this one has none) with
        both sizes added.

        >>> PoolLimits(concurrency=4, memory_mib=100).combined(PoolLimits(concurrency=2))
        ... # doctest: +ELLIPSIS
        PoolLimits(concurrency=6, queue_size=128, queue_timeout_s=2.0, memory_mib=0.0, ...)
        """
        cache = self.cache if self.cache.policy != "none" else other.cache
        unlimited_memory = self.memory_mib == 0 or other.memory_mib == 0
        unlimited_net = self.net_bytes_per_s == 0 or other.net_bytes_per_s == 0
        return replace(
            self,
            concurrency=self.concurrency + other.concurrency,
            queue_size=self.queue_size + other.queue_size,
            queue_timeout_s=max(self.queue_timeout_s, other.queue_timeout_s),
            memory_mib=0.0 if unlimited_memory else self.memory_mib + other.memory_mib,
            net_bytes_per_s=0.0 if unlimited_net else self.net_bytes_per_s + other.net_bytes_per_s,
            io_weight=self.io_weight + other.io_weight,
            cache=cache.model_copy(update={"size": self.cache.size + other.cache.size}),
        )


@dataclass(frozen=True, slots=True)
class PoolDefaults:
    """What the gateway uses where a plan says nothing (``Settings.gateway_*``)."""

    concurrency: int = 16
    queue_size: int = 64
    queue_timeout_s: float = 2.0

    def default_pool(self) -> PoolLimits:
        """The pool of requests before any plan and of shards the plan does not know."""
        return PoolLimits(
            concurrency=self.concurrency,
            queue_size=self.queue_size,
            queue_timeout_s=self.queue_timeout_s,
        )


def limits_of_shard(spec: ShardSpec, defaults: PoolDefaults) -> PoolLimits:
    """A shard's pool limits from its per-replica share of the plan."""
    share = spec.per_replica
    return PoolLimits(
        concurrency=share.concurrency,
        queue_size=share.queue_size or defaults.queue_size,
        queue_timeout_s=share.queue_timeout_ms / 1000 or defaults.queue_timeout_s,
        memory_mib=float(share.memory_mib),
        net_bytes_per_s=share.net_mbit * BYTES_PER_MBIT,
        io_weight=share.io_weight,
        cache=spec.cache,
        priority=spec.priority,
    )


def limits_of_arm(shard: PoolLimits, arm: Arm, share: float) -> PoolLimits:
    """One arm's pool: ``share`` (its normalised weight) of the shard, then its overrides.

    >>> from shardshape.core.contracts import ArmOverrides
    >>> arm = Arm(name="b", weight=0.25, overrides=ArmOverrides(queue_timeout_ms=500))
    >>> limits = limits_of_arm(PoolLimits(concurrency=8, memory_mib=400), arm, 0.25)
    >>> limits.concurrency, limits.memory_mib, limits.queue_timeout_s
    (2, 100.0, 0.5)
    """
    over = arm.overrides
    cache = shard.cache
    if over.cache is not None:
        cache = over.cache
    elif cache.size:
        cache = cache.model_copy(update={"size": max(1, math.floor(cache.size * share))})
    return PoolLimits(
        concurrency=over.concurrency or max(1, math.floor(shard.concurrency * share)),
        queue_size=max(1, math.ceil(shard.queue_size * share)) if shard.queue_size else 0,
        queue_timeout_s=(
            over.queue_timeout_ms / 1000 if over.queue_timeout_ms else shard.queue_timeout_s
        ),
        memory_mib=shard.memory_mib * share,
        net_bytes_per_s=shard.net_bytes_per_s * share,
        io_weight=max(1, round(shard.io_weight * share)),
        cache=cache,
    )


def running_experiments(plan: AllocationPlan) -> dict[int, Experiment]:
    """The running experiment of each shard (the first listed, if a plan names several)."""
    running: dict[int, Experiment] = {}
    for experiment in plan.experiments:
        if experiment.status == "running":
            running.setdefault(experiment.shard_id, experiment)
    return running
