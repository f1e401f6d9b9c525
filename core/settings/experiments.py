"""Experiments the planner proposes and decides, see docs/feedback.md.

The planning loop turns these into its policy
(:func:`shardshape.allocator.planning.experiment_policy`).
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from shardshape.core.settings.group import ENV_PREFIX, SettingsGroup


class ExperimentSettings(SettingsGroup):
    """``experiments_*``."""

    experiments_enabled: bool = Field(
        True, description="false: the planner proposes no experiments (running ones finish)."
    )
    experiments_budget: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of a service's traffic that may run in variant arms at once.",
    )
    experiments_variant_weight: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="A proposed variant's weight within its shard, when the budget leaves room.",
    )
    experiments_min_variant_weight: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Below this variant weight (the budget nearly spent) nothing is proposed.",
    )
    experiments_trigger_windows: int = Field(
        2,
        ge=1,
        le=1_000,
        description="Consecutive plan windows missing the SLO (or with a low cache hit rate) "
        "before the planner proposes an experiment on a shard.",
    )
    experiments_min_window_requests: int = Field(
        100,
        ge=1,
        le=100_000_000,
        description="Requests a shard needs in a plan window for it to count towards a proposal.",
    )
    experiments_low_hit_rate: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A shard's cache hit rate below this is low (counts towards a proposal).",
    )
    experiments_cache_size: int = Field(
        1_024,
        ge=1,
        le=1_000_000,
        description="Entries of the cache proposed for a shard that has none.",
    )
    experiments_min_requests: int = Field(
        200,
        ge=10,
        le=100_000_000,
        description="Requests each arm needs before the sequential test decides anything.",
    )
    experiments_max_duration_s: float = Field(
        3_600.0,
        gt=0,
        le=30 * 86_400,
        description="An experiment still undecided this long after it started expires.",
    )
    experiments_cooldown_s: float = Field(
        300.0,
        ge=0,
        le=30 * 86_400,
        description="After an experiment on a shard ends, how long before the next is proposed.",
    )

    @model_validator(mode="after")
    def _check_experiments(self) -> Self:
        if self.experiments_min_variant_weight > self.experiments_variant_weight:
            raise ValueError(
                f"{ENV_PREFIX}EXPERIMENTS_MIN_VARIANT_WEIGHT={self.experiments_min_variant_weight} "
                f"is above {ENV_PREFIX}EXPERIMENTS_VARIANT_WEIGHT="
                f"{self.experiments_variant_weight}: no experiment could ever be proposed; "
                "lower the first or raise the second"
            )
        return self
