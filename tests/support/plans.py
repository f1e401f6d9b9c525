"""Small plans and routing entries, as workers publish them and gateways apply them."""

from __future__ import annotations

from shardshape.core.contracts import (
    AllocationPlan,
    CachePolicy,
    Experiment,
    ResourceSpec,
    RoutingEntry,
    ShardSpec,
    encode,
)
from shardshape.models.features import profile_key


def shard(
    shard_id: int,
    concurrency: int,
    *,
    queue: int = 0,
    timeout_ms: float = 0,
    memory_mib: int = 0,
    net_mbit: float = 0,
    io_weight: int = 100,
    cache: CachePolicy | None = None,
    priority: int = 0,
) -> ShardSpec:
    """A shard whose per-replica share has these limits (0: the gateway's default / none)."""
    share = ResourceSpec(
        concurrency=concurrency,
        queue_size=queue,
        queue_timeout_ms=timeout_ms,
        memory_mib=memory_mib,
        net_mbit=net_mbit,
        io_weight=io_weight,
    )
    return ShardSpec(
        shard_id=shard_id,
        priority=priority,
        resources=share,
        per_replica=share,
        cache=cache or CachePolicy(),
    )


def plan(
    version: int,
    *shards: ShardSpec,
    experiments: tuple[Experiment, ...] = (),
    service: str = "shop",
) -> AllocationPlan:
    return AllocationPlan(
        plan_id=f"{service}:{version}",
        version=version,
        service=service,
        pool_id="main",
        shards=list(shards),
        experiments=list(experiments),
    )


def route_entry(service: str, request_type: str, user: str, shard_id: int) -> tuple[bytes, bytes]:
    """A routing-topic message (key, value) sending one user's requests to ``shard_id``."""
    key = profile_key(service, request_type, user)
    entry = RoutingEntry(service=service, key=key, shard_id=shard_id, snapshot_version=1)
    return key.encode(), encode(entry)
