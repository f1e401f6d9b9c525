"""``shardshape doctor``'s view of the host's isolation, as rich renderables."""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from shardshape.gateway.isolation.detect import IsolationCapabilities


def capabilities_report(caps: IsolationCapabilities) -> list[RenderableType]:
    """The mode, what enforces each resource, and every cgroup controller probed (and why not)."""
    parts: list[RenderableType] = [
        Text.assemble(
            "isolation mode: ",
            (caps.mode, "bold green" if caps.cgroup_version else "bold yellow"),
            f" (requested: {caps.requested})",
        )
    ]
    enforcement = Table(
        "resource", "enforced by", "how", "fallback", title="limits of shard workers"
    )
    for resource, how in caps.enforcement.items():
        enforcement.add_row(resource, how.via, how.detail, how.fallback)
    parts.append(enforcement)
    if caps.probes:
        probes = Table(
            "cgroup", "controller", "resource", "writable", "why", title="controllers probed"
        )
        for probe in caps.probes:
            probes.add_row(
                f"v{probe.version}",
                probe.controller,
                probe.resource,
                "yes" if probe.writable else "no",
                probe.reason + (f" ({probe.groups_root})" if probe.writable else ""),
            )
        parts.append(probes)
    parts += [Text(f"hierarchy: {line}", style="dim") for line in caps.hierarchies]
    parts += [Text(reason) for reason in caps.reasons]
    if caps.error:
        parts.append(Text(caps.error, style="bold red"))
    return parts
