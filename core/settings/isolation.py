"""The gateway's process-mode shard pools: their OS limits, see docs/isolation.md."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shardshape.core.settings.group import SettingsGroup


class IsolationSettings(SettingsGroup):
    """``isolation_mode`` and where the shard cgroups go (``isolation_cgroup_*``)."""

    isolation_mode: Literal["auto", "cgroup2", "cgroup1", "rlimit", "none"] = Field(
        "auto",
        description="OS limits of shard worker processes: auto takes the best the host allows "
        "(`shardshape doctor` shows it); a named mode fails at start if the host lacks it.",
    )
    isolation_cgroup_parent: str = Field(
        "shardshape",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$",
        description="cgroup made under the base to hold a group per service and shard.",
    )
    isolation_cgroup_base: str = Field(
        "",
        pattern=r"^(/[A-Za-z0-9_@:=+-][A-Za-z0-9_.@:=+-]*)*$",
        description="cgroup (path inside each hierarchy, e.g. /app.slice) under which the "
        "parent goes; empty = the gateway's own cgroup.",
    )
