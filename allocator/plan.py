"""From an optimiser solution to the control message: one :class:`AllocationPlan` per service.

Per shard: blocks per type, the resources they add up to, each live replica's share (rounded
down, so the replicas together never claim more than the plan), the forecast, and a rationale
a person can read.

>>> from shardshape.allocator.blocks import BlockType
>>> from shardshape.allocator.optimiser import ShardDemand, solve
>>> small = BlockType(name="small", cpu_millicores=500, memory_mib=256, concurrency=4, cost=1)
>>> demand = ShardDemand("shop", 0, demand_rps=70, capacity_rps={"small": 50},
...                      target_utilisation=0.7, quantile=0.9)
>>> allocation = solve([demand], pool={"small": 10}, costs={"small": 1.0})
>>> plan = build_plan(allocation, "shop", pool_id="main", block_types={"small": small},
...                   replicas=["gw-b", "gw-a"], version=7)
>>> spec = plan.shards[0]
>>> spec.blocks, spec.resources.cpu_millicores, spec.per_replica.cpu_millicores, plan.replicas
({'small': 2}, 1000, 500, ['gw-a', 'gw-b'])
>>> print(plan.rationale.splitlines()[1])  # doctest: +NORMALIZE_WHITESPACE
shard 0: forecast p90 70.0 rps; 2 x small at 50.0 rps/block; capacity 100.0 rps,
utilisation 0.70 (target 0.70)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from shardshape.allocator.blocks import BlockType, Resources, total_resources
from shardshape.allocator.calibration import Calibrator
from shardshape.allocator.optimiser import Allocation, ShardAllocation
from shardshape.core.contracts import (
    MAX_SHARDS,
    MAX_TEXT_CHARS,
    AllocationPlan,
    CachePolicy,
    Experiment,
    ResourceSpec,
    ShardSpec,
)

_IO_WEIGHT_MIN, _IO_WEIGHT_MAX = 1, 10_000  # ResourceSpec.io_weight bounds (cgroup io.weight)


def build_plan(
    allocation: Allocation,
    service: str,
    *,
    pool_id: str,
    block_types: Mapping[str, BlockType],
    replicas: Sequence[str],
    version: int,
    created_ts: float = 0.0,
    snapshot_version: int | None = None,
    caches: Mapping[int, CachePolicy] | None = None,
    calibrator: Calibrator | None = None,
) -> AllocationPlan:
    """The :class:`AllocationPlan` of ``service`` from a pool's ``allocation``.

    Parameters
    ----------
    replicas
        Ids of the service's live gateways; each gets ``1/len`` of every shard's resources.
        With none, ``per_replica`` equals the total (one replica assumed) and the rationale
        says so.
    caches
        Cache policy per shard id (default: none); experiments are added by their owner.
    calibrator
        When given, the rationale shows the confidence of each capacity used.
    """
    live = sorted(set(replicas))
    shards = allocation.for_service(service)
    specs = [_shard_spec(a, block_types, len(live), caches or {}) for a in shards]
    return AllocationPlan(
        plan_id=f"{service}:{version}"[:128],
        version=version,
        service=service,
        pool_id=pool_id,
        created_ts=created_ts,
        snapshot_version=snapshot_version,
        replicas=live,
        shards=specs,
        rationale=_rationale(allocation, service, pool_id, shards, len(live), calibrator),
    )


def amend_plan(
    plan: AllocationPlan,
    *,
    shards: Iterable[ShardSpec] | None = None,
    experiments: Iterable[Experiment] | None = None,
    notes: Iterable[str] = (),
) -> AllocationPlan:
    """``plan`` with other shard specs or experiments, ``notes`` added to its rationale.

    Validated like any plan; the rationale stays within the contract's limit (the last
    lines give way) and only the last ``MAX_SHARDS`` experiments are kept.

    >>> plan = AllocationPlan(plan_id="shop:1", version=1, service="shop", pool_id="main",
    ...                       rationale="shop on pool main")
    >>> print(amend_plan(plan, notes=["experiment e1: running"]).rationale)
    shop on pool main
    experiment e1: running
    """
    update = plan.model_dump()
    if shards is not None:
        update["shards"] = list(shards)
    if experiments is not None:
        update["experiments"] = list(experiments)[-MAX_SHARDS:]
    lines = [plan.rationale, *notes] if plan.rationale else list(notes)
    update["rationale"] = _clip("\n".join(lines), "lines")
    return AllocationPlan.model_validate(update)


def resource_spec(resources: Resources) -> ResourceSpec:
    """A :class:`ResourceSpec` of ``resources``, kept within the contract's bounds.

    >>> resource_spec(Resources()).io_weight, resource_spec(Resources()).concurrency
    (1, 1)
    """
    return ResourceSpec(
        cpu_millicores=int(resources.cpu_millicores),
        memory_mib=int(resources.memory_mib),
        io_weight=min(max(int(resources.io_weight), _IO_WEIGHT_MIN), _IO_WEIGHT_MAX),
        net_mbit=float(resources.net_mbit),
        concurrency=min(max(int(resources.concurrency), 1), 100_000),
    )


def _shard_spec(
    shard: ShardAllocation,
    block_types: Mapping[str, BlockType],
    n_replicas: int,
    caches: Mapping[int, CachePolicy],
) -> ShardSpec:
    d = shard.demand
    total = total_resources(shard.blocks, block_types)
    share = total.split(n_replicas) if n_replicas else total
    return ShardSpec(
        shard_id=d.shard_id,
        priority=d.priority,
        slo_p99_ms=d.slo_p99_ms,
        blocks=dict(sorted(shard.blocks.items())),
        resources=resource_spec(total),
        per_replica=resource_spec(share),
        cache=caches.get(d.shard_id, CachePolicy()),
        forecast_rps=max(d.demand_rps, 0.0),
    )


def _rationale(
    allocation: Allocation,
    service: str,
    pool_id: str,
    shards: list[ShardAllocation],
    n_replicas: int,
    calibrator: Calibrator | None,
) -> str:
    blocks = sum(sum(a.blocks.values()) for a in shards)
    surplus = ", ".join(f"{t}={n}" for t, n in sorted(allocation.surplus.items()))
    who = f"{n_replicas} replicas" if n_replicas else "no live replicas known (per_replica = total)"
    lines = [
        f"{service} on pool {pool_id}: {len(shards)} shards, {blocks} blocks; {who}; "
        f"pool surplus returned: {surplus or 'none'}"
    ]
    for a in shards:
        lines.append(_shard_line(a, calibrator))
    return _clip("\n".join(lines), "shards")


def _clip(text: str, what: str) -> str:
    """``text`` within the rationale's limit, whole lines kept, the count of lines cut."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    cut = text[: MAX_TEXT_CHARS - 40].rsplit("\n", 1)[0]
    return f"{cut}\n... ({text.count(chr(10)) - cut.count(chr(10))} more {what})"


def _shard_line(a: ShardAllocation, calibrator: Calibrator | None) -> str:
    d = a.demand
    q = f"p{round(d.quantile * 100)}" if d.quantile is not None else "forecast"
    used = []
    for t, n in sorted(a.blocks.items()):
        per = f"{n} x {t} at {d.capacity_rps.get(t, 0.0):.1f} rps/block"
        if calibrator is not None:
            per += f" (confidence {calibrator.estimate(d.service, d.shard_id, t).confidence:.2f})"
        used.append(per)
    util = f"{a.utilisation:.2f}" if a.utilisation is not None else "n/a"
    line = (
        f"shard {d.shard_id}: forecast {q} {d.demand_rps:.1f} rps; "
        f"{', '.join(used) or 'no blocks'}; capacity {a.capacity_rps:.1f} rps, "
        f"utilisation {util} (target {d.target_utilisation:.2f})"
    )
    if a.shortfall_rps > 0:
        line += f"; shortfall {a.shortfall_rps:.1f} rps ({a.limited_by})"
    if a.min_shortfall:
        line += f"; {a.min_shortfall} blocks under the minimum of {d.min_blocks} ({a.limited_by})"
    return line
