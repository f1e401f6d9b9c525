"""What goes into the optimiser and what comes out: shard demands, smoothing, allocations.

>>> d = ShardDemand("shop", 3, demand_rps=100, capacity_rps={"small": 50})
>>> d.key, Smoothing().bounds(3)
(('shop', 3), (2, 8))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ShardKey = tuple[str, int]
TOL = 1e-6


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
        return any(a.shortfall_rps > TOL or a.min_shortfall for a in self.shards.values())

    def for_service(self, service: str) -> list[ShardAllocation]:
        """The service's shards, by shard id."""
        found = [a for (svc, _), a in self.shards.items() if svc == service]
        return sorted(found, key=lambda a: a.demand.shard_id)

    def blocks(self) -> dict[ShardKey, dict[str, int]]:
        """Blocks per shard: what the next solve takes as ``previous``."""
        return {key: dict(a.blocks) for key, a in self.shards.items()}


def check_inputs(
    demands: Sequence[ShardDemand], pool: Mapping[str, int], costs: Mapping[str, float]
) -> None:
    """Raise :class:`ValueError` naming the input at fault.

    >>> check_inputs([ShardDemand("shop", 0, 1, {"gpu": 1})], {"small": 1}, {"small": 1.0})
    Traceback (most recent call last):
    ...
    ValueError: shard ('shop', 0) may use block types ['gpu'] that the pool does not hold ...
    """
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
