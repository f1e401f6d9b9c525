"""What an experiment tries on a shard, which changes are proposed, and what a change makes
of the shard in a plan: a variant arm's overrides, the definition a promotion adopts.

>>> change = cache_change("lru", 1024)
>>> change.label, ShardDefinition().adopt(change).cache.size
('lru-1024', 1024)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from shardshape.allocator.blocks import BlockType
from shardshape.allocator.experiments.policy import ExperimentPolicy
from shardshape.core.contracts import (
    Arm,
    ArmOverrides,
    CachePolicy,
    Experiment,
    ExperimentDecision,
    ResourceSpec,
    ShardSpec,
)

ShardKey = tuple[str, int]
ChangeKind = Literal["cache", "slots", "block_type"]


@dataclass(frozen=True, slots=True)
class Change:
    """What a variant tries on a shard, in whole-shard terms (see the package docstring).

    ``slots_factor`` multiplies the request slots of the shard's blocks (1.25: a shard of four
    blocks gets one more block's slots). The ``label`` names the variant arm.
    """

    kind: ChangeKind
    label: str
    cache: CachePolicy | None = None
    slots_factor: float = 1.0
    block_type: str | None = None


@dataclass(frozen=True, slots=True)
class ShardDefinition:
    """What promoted experiments made of a shard: its cache, slots per block, block type."""

    cache: CachePolicy | None = None
    slots_factor: float = 1.0
    block_type: str | None = None

    def adopt(self, change: Change) -> ShardDefinition:
        if change.kind == "cache":
            return replace(self, cache=change.cache)
        if change.kind == "slots":
            return replace(self, slots_factor=self.slots_factor * change.slots_factor)
        return replace(self, block_type=change.block_type)


# -- proposing ------------------------------------------------------------------------------
def cache_changes(current: CachePolicy, policy: ExperimentPolicy) -> list[Change]:
    """The changes tried on a shard whose cache (``current``) hits too rarely: a cache, or
    another eviction policy, then a bigger cache."""
    size = current.size if current.size else policy.cache_size
    bigger = min(2 * size, policy.max_cache_size)
    out = []
    if current.policy == "none" or current.size == 0:
        out.append(cache_change("lru", size))
    elif current.policy == "lru":
        out.append(cache_change("lfu", size))
    elif current.policy == "ttl":
        out.append(cache_change("lru", size))
    if current.policy in ("lru", "lfu") and bigger > size:
        out.append(cache_change(current.policy, bigger))
    return out


def capacity_changes(
    spec: ShardSpec | None,
    allowed: Sequence[str],
    block_types: Mapping[str, BlockType],
    chosen: str | None,
) -> list[Change]:
    """The changes tried on a shard that misses its SLO as planned (``spec``): one more
    block's worth of slots, then each other block type it may use (``allowed``) but the one
    its definition already ``chosen``."""
    held = sum(spec.blocks.values()) if spec else 0
    out = []
    if held:
        out.append(
            Change("slots", f"slots-x{(held + 1) / held:.2f}", slots_factor=(held + 1) / held)
        )
    in_use = set(spec.blocks) if spec else set()
    for name in allowed:
        if name != chosen and {name} != in_use and name in block_types:
            out.append(Change("block_type", f"type-{name}", block_type=name))
    return out


def cache_change(policy: Literal["lru", "lfu"], size: int) -> Change:
    return Change("cache", f"{policy}-{size}", cache=CachePolicy(policy=policy, size=size))


# -- in plans -------------------------------------------------------------------------------
def defined_spec(spec: ShardSpec, definition: ShardDefinition | None) -> ShardSpec:
    """``spec`` as the shard's definition makes it: its cache, its slots per block."""
    if definition is None:
        return spec
    update: dict = {}
    if definition.cache is not None:
        update["cache"] = definition.cache
    if definition.slots_factor != 1.0:
        factor = definition.slots_factor
        update["resources"] = _scaled_slots(spec.resources, factor)
        update["per_replica"] = _scaled_slots(spec.per_replica, factor)
    return spec.model_copy(update=update) if update else spec


def arm_overrides(
    change: Change,
    spec: ShardSpec,
    share: float,
    block_types: Mapping[str, BlockType],
    replicas: int,
) -> ArmOverrides:
    """A variant arm's concrete overrides for ``share`` of ``spec`` (per replica, the service
    running ``replicas``)."""
    if change.kind == "cache" and change.cache is not None:
        size = max(1, math.floor(change.cache.size * share)) if change.cache.size else 0
        return ArmOverrides(cache=change.cache.model_copy(update={"size": size}))
    slots = spec.per_replica.concurrency * share
    if change.kind == "slots":
        return ArmOverrides(
            concurrency=max(math.floor(slots) + 1, math.ceil(slots * change.slots_factor))
        )
    kind = block_types.get(change.block_type or "")
    if kind is None:
        return ArmOverrides(block_type=change.block_type)
    # The same money in the other type: the arm's share of the shard's cost, re-bought.
    cost = sum(price(block_types, t) * n for t, n in spec.blocks.items())
    bought = cost / kind.cost * kind.concurrency / replicas * share
    return ArmOverrides(block_type=change.block_type, concurrency=max(1, math.floor(bought)))


def adopted_overrides(change: Change, spec: ShardSpec | None) -> ArmOverrides:
    """What a promoted ``change`` makes the shard's definition, as a plan lists it."""
    if change.kind == "cache":
        return ArmOverrides(cache=change.cache)
    if change.kind == "block_type":
        return ArmOverrides(block_type=change.block_type)
    base = spec.per_replica.concurrency if spec else 1
    return ArmOverrides(concurrency=max(1, math.ceil(base * change.slots_factor)))


def change_of(arm: Arm) -> Change | None:
    """The change a variant without a recorded one stands for: its cache or block type
    (``None``: nothing a shard's definition holds, so nothing is adopted)."""
    over = arm.overrides
    if over.block_type is not None:
        return Change("block_type", arm.name, block_type=over.block_type)
    if over.cache is not None:
        return Change("cache", arm.name, cache=over.cache)
    return None


def restored(
    definition: ShardDefinition, experiment: Experiment, decision: ExperimentDecision
) -> ShardDefinition:
    """``definition`` with what a promoted experiment of a published plan adopted."""
    adopted = decision.adopted
    assert adopted is not None
    if adopted.cache is not None:
        return replace(definition, cache=adopted.cache)
    if adopted.block_type is not None:
        return replace(definition, block_type=adopted.block_type)
    figures = next((e.figures for e in experiment.evidence if e.arm == decision.arm), {})
    return replace(
        definition, slots_factor=definition.slots_factor * figures.get("slots_factor", 1.0)
    )


def kind_of(adopted: ArmOverrides) -> str:
    """Which kind of change adopted ``adopted``."""
    if adopted.cache is not None:
        return "cache"
    return "block_type" if adopted.block_type is not None else "slots"


def price_shifts(
    spec: ShardSpec | None, experiment: Experiment, block_types: Mapping[str, BlockType]
) -> dict[str, float]:
    """Log of each variant's price per request slot over control's (cost per request)."""
    if spec is None or not spec.blocks:
        return {}
    slots = sum(block_types[t].concurrency * n for t, n in spec.blocks.items()
                if t in block_types)  # fmt: skip
    cost = sum(price(block_types, t) * n for t, n in spec.blocks.items())
    if not slots or not cost:
        return {}
    shifts = {}
    for arm in experiment.arms[1:]:
        kind = block_types.get(arm.overrides.block_type or "")
        if kind is not None:
            shifts[arm.name] = math.log((kind.cost / kind.concurrency) / (cost / slots))
    return shifts


def price(block_types: Mapping[str, BlockType], block_type: str) -> float:
    """One block's cost (0 for a type the configuration does not know)."""
    kind = block_types.get(block_type)
    return kind.cost if kind is not None else 0.0


def _scaled_slots(resources: ResourceSpec, factor: float) -> ResourceSpec:
    return resources.model_copy(
        update={"concurrency": min(max(1, math.ceil(resources.concurrency * factor)), 100_000)}
    )
