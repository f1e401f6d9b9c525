"""The gateway's in-process shard pools and middleware, see docs/gateway.md."""

from __future__ import annotations

from pydantic import Field

from shardshape.core.settings.group import SettingsGroup


class GatewaySettings(SettingsGroup):
    """``gateway_*``: the pools' defaults, shared slots, lending, routes, headers, the sidecar."""

    gateway_shaping: bool = Field(
        True, description="Per-shard pools; false runs every request in one shared pool."
    )
    gateway_default_concurrency: int = Field(
        16,
        ge=1,
        le=100_000,
        description="Slots of the default pool: requests before any plan and of unplanned shards.",
    )
    gateway_queue_size: int = Field(
        64, ge=0, le=1_000_000, description="Queue of a pool whose plan gives none (0: no queue)."
    )
    gateway_queue_timeout_ms: float = Field(
        2_000, gt=0, le=600_000, description="Longest wait in a queue whose plan gives none."
    )
    gateway_total_slots: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Slots shared by all pools (0: none); when plans over-commit it, "
        "waiting shards are served in proportion to their io_weight.",
    )
    gateway_lending: bool = Field(
        False,
        description="Work-conserving pools: a request whose shard's slots are all busy borrows "
        "an idle slot of a pool of equal or lower priority that keeps its reserve.",
    )
    gateway_lending_reserve: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Share of a lender's slots kept idle for its own arrivals (rounded down).",
    )
    gateway_lending_to_lower: bool = Field(
        True,
        description="Lending: a pool also lends to pools of lower priority (the quarantine "
        "shard, the default pool), beyond its reserve and always keeping one slot idle.",
    )
    gateway_max_routes: int = Field(
        1_000_000,
        ge=1_000,
        le=100_000_000,
        description="Most routing entries a gateway's routing table holds; the least recently "
        "seen are evicted and counted (their keys are predicted by the snapshot's model).",
    )
    gateway_user_header: str = Field(
        "x-user-id", min_length=1, max_length=128, description="Header naming the request's user."
    )
    gateway_upstream_timeout_ms: float = Field(
        30_000,
        gt=0,
        le=3_600_000,
        description="Sidecar (`shardshape gateway`): longest wait for the upstream service to "
        "connect, take or send a chunk; past it the client gets 504.",
    )
