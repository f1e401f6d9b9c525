"""How workers profile: shards per service, keys kept, and how often they share and write."""

from __future__ import annotations

from pydantic import Field

from shardshape.core.settings.group import SettingsGroup


class ProfilingSettings(SettingsGroup):
    """``max_shards``, ``max_keys`` and the snapshot, checkpoint and metrics intervals."""

    max_shards: int = Field(8, ge=1, le=64, description="Most behaviour shards per service.")
    snapshot_interval_s: float = Field(
        5.0, gt=0, le=3_600, description="How often workers share summaries and snapshots merge."
    )
    checkpoint_interval_s: float = Field(
        30.0,
        ge=0,
        le=3_600,
        description="Longest a changed key's statistics wait to be written to the key-stats table.",
    )
    max_keys: int = Field(
        1_000_000,
        ge=10_000,
        le=100_000_000,
        description="Most profile keys a worker keeps per service (memory and the key-stats "
        "table); the least recently seen are evicted and counted.",
    )
    metrics_write_interval_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Longest shard metrics wait in memory before they are written to their table.",
    )
