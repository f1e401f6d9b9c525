"""How shardshape logs: the level, read as operators write it, and text or JSON lines.

>>> from shardshape.core.settings import Settings
>>> Settings(log_level="WARNING").log_level
'warn'
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from shardshape.core.settings.group import SettingsGroup

LogLevel = Literal["debug", "info", "warn", "error", "critical"]
# Standard names as operators write them (any case) -> the LogLevel they mean.
_LOG_LEVEL_NAMES = {"warning": "warn", "fatal": "critical"}


class LogSettings(SettingsGroup):
    """``log_level`` and ``log_format``."""

    log_level: LogLevel = Field(
        "info",
        description="debug, info, warn (or warning), error or critical, in any case.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="json: one JSON object a line, with the service, shard, snapshot and plan "
        "versions known at the time (docs/observability.md).",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _standard_level_names(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return _LOG_LEVEL_NAMES.get(value, value)
        return value
