"""The gateway's reporter: completed requests to the requests topic, see docs/reporter.md."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from shardshape.core.contracts import MAX_BATCH_EVENTS
from shardshape.core.settings.group import ENV_PREFIX, SettingsGroup

_MIN_QUEUE_INTERVAL_MS = 100


class ReporterSettings(SettingsGroup):
    """``reporter_*``: batching, the buffer bound, outage detection, the spool, queue reports."""

    reporter_batch_events: int = Field(
        500, ge=1, le=MAX_BATCH_EVENTS, description="Most events in one RequestBatch message."
    )
    reporter_linger_ms: float = Field(
        200.0, ge=0, le=60_000, description="Longest an event waits for its batch to fill."
    )
    reporter_max_buffered: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description="Most events held unacknowledged (memory and producer queue); "
        "beyond it report() drops.",
    )
    reporter_stall_ms: int = Field(
        2_000,
        ge=10,
        le=600_000,
        description="A batch unacknowledged this long marks Kafka unreachable: "
        "batches are dropped or spooled, one probe batch at a time, until one is acknowledged.",
    )
    reporter_delivery_timeout_ms: int = Field(
        10_000,
        ge=100,
        le=3_600_000,
        description="librdkafka message.timeout.ms: a batch not acknowledged by then fails.",
    )
    reporter_spool_path: Path | None = Field(
        None, description="JSON-lines file for batches Kafka cannot take; unset = drop them."
    )
    reporter_spool_max_bytes: int = Field(
        64 * 1024 * 1024, ge=64 * 1024, le=1 << 40, description="Bound of the spool file."
    )
    reporter_queue_interval_ms: int = Field(
        5_000,
        ge=0,
        le=10_000,
        description="How often a gateway tells the planner how many requests wait in its pools, "
        "by shard (a QueueReport, while any wait); 0: never. At least 100 when set; at most "
        "10,000, since the planner forgets a report after 30 s.",
    )

    @model_validator(mode="after")
    def _check_reporter(self) -> Self:
        if self.reporter_max_buffered < self.reporter_batch_events:
            raise ValueError(
                f"{ENV_PREFIX}REPORTER_MAX_BUFFERED={self.reporter_max_buffered} is smaller than "
                f"{ENV_PREFIX}REPORTER_BATCH_EVENTS={self.reporter_batch_events}: a batch could "
                "never fill; raise the first or lower the second"
            )
        if self.reporter_stall_ms >= self.reporter_delivery_timeout_ms:
            raise ValueError(
                f"{ENV_PREFIX}REPORTER_STALL_MS={self.reporter_stall_ms} must be below "
                f"{ENV_PREFIX}REPORTER_DELIVERY_TIMEOUT_MS={self.reporter_delivery_timeout_ms}: "
                "a stall is noticed before a batch times out"
            )
        if 0 < self.reporter_queue_interval_ms < _MIN_QUEUE_INTERVAL_MS:
            raise ValueError(
                f"{ENV_PREFIX}REPORTER_QUEUE_INTERVAL_MS={self.reporter_queue_interval_ms} is "
                f"below {_MIN_QUEUE_INTERVAL_MS}: queue reports that often would load the "
                "planner's one partition; use 100 or more, or 0 to send none"
            )
        return self
