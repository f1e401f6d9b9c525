"""The shop service as the allocator tests plan for it: its pools configs, its plans, and what
the metrics agent counts for it in one window."""

from __future__ import annotations

import numpy as np

from shardshape.allocator.pools_config import parse_pools_config
from shardshape.core.contracts import (
    AllocationPlan,
    CachePolicy,
    RequestEvent,
    ResourceSpec,
    ShardSpec,
)
from shardshape.core.metrics import ShardStats

WINDOW_S = 10.0
# Two block types in pool main for the shop (experiment tests).
CONFIG = parse_pools_config("""
[block_types.small]
cpu_millicores = 500
memory_mib = 256
concurrency = 4
cost = 1.0
[block_types.large]
cpu_millicores = 2000
memory_mib = 1024
concurrency = 16
cost = 3.5
[pools.main]
blocks = { small = 40, large = 8 }
[services.shop]
pool = "main"
slo_p99_ms = 50
""")


def arm_stats(
    latency_ms: np.ndarray, errors: int = 0, hits: np.ndarray | None = None
) -> ShardStats:
    """What the metrics agent counts for one arm in one window (test_experiments_inputs has
    the same counters out of real events)."""
    stats = ShardStats()
    stats.count = len(latency_ms)
    stats.latency.add_many(latency_ms)
    stats.latency_sum = float(latency_ms.sum())
    if errors:
        stats.errors = {"error": errors}
    if hits is not None:
        stats.cache_hits, stats.cache_reported = int(hits.sum()), len(hits)
    return stats


def plan_with(shards: list[ShardSpec], version: int = 1) -> AllocationPlan:
    """The shop's plan in pool ``main`` with these shards."""
    return AllocationPlan(
        plan_id=f"shop:{version}",
        version=version,
        service="shop",
        pool_id="main",
        replicas=["gw-a"],
        shards=shards,
    )


def spec(shard: int, cache: CachePolicy | None = None, blocks: int = 4) -> ShardSpec:
    """A shard of ``blocks`` small blocks (4 slots each) under CONFIG."""
    slots = ResourceSpec(concurrency=4 * blocks)
    return ShardSpec(
        shard_id=shard,
        slo_p99_ms=50,
        blocks={"small": blocks},
        resources=slots,
        per_replica=slots,
        cache=cache or CachePolicy(),
    )


def steady(rps: float, service: str, latency_ms: float = 40.0) -> str:
    """One window's counters of ``rps`` steady requests, serialised as a worker reports them."""
    stats = ShardStats()
    event = RequestEvent(request_id="r", ts=0, service=service, request_type="t",
                         latency_ms=latency_ms)  # fmt: skip
    for _ in range(round(rps * WINDOW_S)):
        stats.add(event)
    return stats.to_bytes().decode()


# One pool of 100 one-core blocks for the shop (planning-loop and pooling tests).
POOLS = """
[block_types.b]
cpu_millicores = 1000
memory_mib = 1024
concurrency = 4
cost = 1.0

[pools.main]
blocks = { b = 100 }

[services.shop]
pool = "main"
min_blocks = 0
prior_rps_per_core = 50
"""
