"""A worker process: its app and id, its state directory, and how it consumes and commits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from shardshape.core.settings.group import SettingsGroup


class WorkerSettings(SettingsGroup):
    """``app_id``, ``worker_id``, ``data_dir``, the consumer's timings and offset handling."""

    app_id: str = Field("shardshape", min_length=1, max_length=128)
    worker_id: str = Field("", max_length=128, description="Defaults to host name and pid.")
    data_dir: Path = Path(".shardshape")
    session_timeout_s: float = Field(
        10.0, ge=1, le=3_600, description="Consumer group session timeout (Tansu joins in ~half)."
    )
    end_offset_correction: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Read partitions' true end offsets for table recovery (Tansu reports the "
        "last batch's base offset plus one); auto: unless the cluster id is Apache Kafka's "
        "generated form (docs/reliability.md).",
    )
    fetch_max_wait_ms: int = Field(
        50, ge=1, le=10_000, description="Longest a worker's fetch waits for new events."
    )
    commit_interval_s: float = Field(2.8, gt=0, le=600, description="Offset commit interval.")
