"""A worker's web views (dashboard, /metrics, stats): whether, where and on which port."""

from __future__ import annotations

from pydantic import Field

from shardshape.core.settings.group import SettingsGroup


class WebSettings(SettingsGroup):
    """``web_port``, ``web_enabled`` and ``web_bind``."""

    web_port: int = Field(6066, ge=0, le=65_535)
    web_enabled: bool = True
    web_bind: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=253,
        description="Address the worker's web views (dashboard, /metrics, stats) listen on; "
        "loopback unless you put them behind your own access control.",
    )
