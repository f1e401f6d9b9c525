"""When experiments are proposed, how much traffic they may take, how they are tested."""

from __future__ import annotations

from dataclasses import dataclass, field

from shardshape.allocator.sequential import TestDesign

CONTROL = "control"


@dataclass(frozen=True, slots=True)
class ExperimentPolicy:
    """When experiments are proposed, how much traffic they may take, how they are tested.

    Parameters
    ----------
    enabled
        ``False``: no proposals (experiments already running still finish).
    budget
        Share of a service's traffic that may run in variant arms at once, over all its
        shards' experiments (a shard's share of the service times its variants' weight).
    variant_weight
        A proposed variant's weight within its shard, when the budget leaves room.
    min_variant_weight
        Below this weight (the budget nearly spent) nothing is proposed: too slow to decide.
    max_duration_s
        An experiment still undecided this long after it started expires.
    min_window_requests
        Requests a shard needs in a window for that window to count towards a proposal.
    trigger_windows
        Consecutive such windows missing the SLO (or with a low hit rate) before a proposal.
    low_hit_rate
        A cache hit rate below this (where the shard reports ``cache_hit``) is low.
    cache_size
        Entries of the cache proposed for a shard that has none.
    max_cache_size
        Largest cache size a proposal doubles up to.
    cooldown_s
        After an experiment on a shard ends, how long before the next one is proposed there.
    retry_after_s
        A change that was rejected, aborted or expired is not proposed again for this long.
    keep_finished
        Finished experiments listed in a service's plans (besides each shard's promotions).
    design
        The tests' levels, mixture scales and margins.
    """

    enabled: bool = True
    budget: float = 0.2
    variant_weight: float = 0.5
    min_variant_weight: float = 0.05
    max_duration_s: float = 3_600.0
    min_window_requests: int = 100
    trigger_windows: int = 2
    low_hit_rate: float = 0.5
    cache_size: int = 1_024
    max_cache_size: int = 1_000_000
    cooldown_s: float = 300.0
    retry_after_s: float = 86_400.0
    keep_finished: int = 16
    design: TestDesign = field(default_factory=TestDesign)

    def __post_init__(self) -> None:
        checks = {
            "budget": 0 <= self.budget <= 1,
            "variant_weight": 0 < self.variant_weight < 1,
            "min_variant_weight": 0 < self.min_variant_weight <= self.variant_weight,
            "max_duration_s": self.max_duration_s > 0,
            "trigger_windows": self.trigger_windows >= 1,
            "low_hit_rate": 0 < self.low_hit_rate <= 1,
            "cache_size": 1 <= self.cache_size <= self.max_cache_size,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"ExperimentPolicy: invalid {', '.join(bad)} ({self!r}); budget, weights and "
                "rates are fractions, min_variant_weight <= variant_weight < 1, "
                "1 <= cache_size <= max_cache_size"
            )
