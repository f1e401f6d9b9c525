"""The planner: the pools it plans for, its forecast step and how far it looks ahead."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from shardshape.core.settings.group import ENV_PREFIX, SettingsGroup


class PlanningSettings(SettingsGroup):
    """``pools_config``, ``plan_window`` and ``plan_horizon_s``."""

    pools_config: Path | None = Field(
        None,
        description="TOML of block types, pools and services (examples/pools.toml); "
        "without it no plans are made.",
    )
    plan_window: Literal["10s", "1m"] = Field(
        "1m", description="Metrics window that is one forecast step of the planner."
    )
    plan_horizon_s: float = Field(120.0, gt=0, le=86_400, description="How far plans look ahead.")

    @model_validator(mode="after")
    def _check_planning(self) -> Self:
        if self.pools_config is not None and not Path(self.pools_config).is_file():
            raise ValueError(
                f"{ENV_PREFIX}POOLS_CONFIG={self.pools_config} is not a file: point it at a "
                "pools TOML (see examples/pools.toml) or unset it to run without planning"
            )
        return self
