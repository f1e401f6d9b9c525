"""The topics every process shares: their names, partitions and replication."""

from __future__ import annotations

from pydantic import Field

from shardshape.core.settings.group import SettingsGroup


class TopicSettings(SettingsGroup):
    """``topic_*``, ``*_partitions`` and ``replication_factor``."""

    topic_requests: str = Field("shardshape.requests", min_length=1, max_length=249)
    topic_dlq: str = Field("shardshape.requests.dlq", min_length=1, max_length=249)
    topic_routing: str = Field("shardshape.routing", min_length=1, max_length=249)
    topic_plans: str = Field("shardshape.plans", min_length=1, max_length=249)
    requests_partitions: int = Field(4, ge=1, le=10_000)
    dlq_partitions: int = Field(1, ge=1, le=10_000)
    routing_partitions: int = Field(1, ge=1, le=10_000)
    plans_partitions: int = Field(1, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=16)
