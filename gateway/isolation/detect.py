"""What the host allows for per-shard OS limits: cgroup v2, cgroup v1, rlimits, or nothing.

:func:`detect_capabilities` finds the cgroup hierarchies
(:mod:`shardshape.gateway.isolation.layout`), probes each controller
(:mod:`shardshape.gateway.isolation.probe`: a probe group is created, a limit written, the group
removed) and picks the mode with :func:`choose_mode`, a plain function of the probes, tested on
fabricated ones.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from shardshape.gateway.isolation import process_limits
from shardshape.gateway.isolation.layout import RESOURCES, Hierarchy, Resource, find_hierarchies
from shardshape.gateway.isolation.probe import ControllerProbe, probe_controllers

if TYPE_CHECKING:
    from shardshape.core.settings import IsolationSettings

Mode = Literal["cgroup2", "cgroup1", "rlimit", "none"]
RequestedMode = Literal["auto", "cgroup2", "cgroup1", "rlimit", "none"]
Via = Literal["cgroup2", "cgroup1", "nice", "rlimit", "ionice", "none"]

_FALLBACK: dict[Resource, Via] = {"cpu": "nice", "memory": "rlimit", "io": "ionice"}
_FALLBACK_LABEL = {
    "nice": "nice per worker",
    "rlimit": "RLIMIT_AS per worker",
    "ionice": "ionice per worker",
}


class IsolationError(RuntimeError):
    """The configured isolation mode cannot work on this host; the message says what to change."""


class Enforcement(BaseModel):
    """What enforces one resource's limit in the chosen mode."""

    model_config = ConfigDict(frozen=True)

    resource: Resource
    via: Via
    detail: str
    fallback: str = Field(description="What limits the resource if this way fails at start.")


class IsolationCapabilities(BaseModel):
    """The detected isolation of this host: the mode that will be used and how, per resource."""

    model_config = ConfigDict(frozen=True)

    requested: RequestedMode
    mode: Mode
    hierarchies: list[str]
    probes: list[ControllerProbe]
    enforcement: dict[Resource, Enforcement]
    reasons: list[str]
    error: str | None = None

    @property
    def cgroup_version(self) -> Literal[1, 2] | None:
        return {"cgroup2": 2, "cgroup1": 1}.get(self.mode)  # type: ignore[return-value]

    def cgroup_probes(self) -> dict[Resource, ControllerProbe]:
        """The writable probes of the chosen cgroup version, by resource."""
        return {
            p.resource: p
            for p in self.probes
            if p.writable and p.version == self.cgroup_version and self.uses_cgroup(p.resource)
        }

    def uses_cgroup(self, resource: Resource) -> bool:
        return self.enforcement[resource].via in ("cgroup1", "cgroup2")

    def require(self) -> IsolationCapabilities:
        """These capabilities, or :class:`IsolationError` when the configured mode cannot work."""
        if self.error:
            raise IsolationError(self.error)
        return self


def choose_mode(
    requested: RequestedMode,
    probes: list[ControllerProbe],
    process_limits_ok: bool,
    ionice_ok: bool,
) -> tuple[Mode, dict[Resource, Enforcement], list[str], str | None]:
    """Pick the mode (and what enforces each resource) from the probes of both cgroup versions.

    ``auto`` prefers the cgroup version that can limit more of CPU and memory (cgroup2 on a
    tie), then rlimits, then nothing. A named mode that the host cannot give returns an error.
    Resources the chosen cgroup version cannot limit fall back to process limits.

    >>> probe = ControllerProbe(version=1, resource="cpu", controller="cpu", writable=True)
    >>> mode, how, reasons, error = choose_mode("auto", [probe], True, False)
    >>> mode, how["cpu"].via, how["memory"].via, how["io"].via, error
    ('cgroup1', 'cgroup1', 'rlimit', 'none', None)
    >>> choose_mode("cgroup2", [probe], True, False)[3]
    'SHARDSHAPE_ISOLATION_MODE=cgroup2 but ...'
    """
    usable = {
        version: [p for p in probes if p.version == version and p.writable] for version in (1, 2)
    }
    core = {
        version: sum(p.resource in ("cpu", "memory") for p in found)
        for version, found in usable.items()
    }
    reasons: list[str] = []
    error = None
    mode: Mode
    if requested == "auto":
        if core[2] and core[2] >= core[1]:
            mode = "cgroup2"
        elif core[1]:
            mode = "cgroup1"
        elif process_limits_ok:
            mode = "rlimit"
            reasons.append("no writable cgroup controller for CPU or memory: using rlimits")
        else:
            mode = "none"
            reasons.append("no writable cgroup controller and no rlimits on this platform")
    else:
        mode = requested
        version = {"cgroup2": 2, "cgroup1": 1}.get(requested)
        if (version and not core[version]) or (requested == "rlimit" and not process_limits_ok):
            why = "; ".join(p.reason for p in probes if p.version == version and not p.writable)
            error = (
                f"SHARDSHAPE_ISOLATION_MODE={requested} but this host does not allow it"
                + (f" ({why})" if why else "")
                + ": run `shardshape doctor` to see what it allows, and set the mode to auto "
                "or to one listed there"
            )
            mode = "none"
    enforcement = {
        resource: _enforcement(resource, mode, usable, process_limits_ok, ionice_ok)
        for resource in RESOURCES
    }
    return mode, enforcement, reasons, error


def _enforcement(
    resource: Resource,
    mode: Mode,
    usable: dict[int, list[ControllerProbe]],
    process_limits_ok: bool,
    ionice_ok: bool,
) -> Enforcement:
    fallback = _FALLBACK[resource]
    can_fall_back = process_limits_ok and (fallback != "ionice" or ionice_ok)
    in_process = "in-process limits of the gateway only"
    version = {"cgroup2": 2, "cgroup1": 1}.get(mode)
    if version and any(p.resource == resource for p in usable[version]):
        return Enforcement(
            resource=resource,
            via=mode,
            detail=_CGROUP_DETAIL[version][resource],
            fallback=_FALLBACK_LABEL[fallback] if can_fall_back else in_process,
        )
    if mode == "none" or not can_fall_back:
        return Enforcement(
            resource=resource, via="none", detail="not limited by the OS", fallback=in_process
        )
    return Enforcement(
        resource=resource, via=fallback, detail=_PROCESS_DETAIL[resource], fallback=in_process
    )


_CGROUP_DETAIL = {
    2: {
        "cpu": "cpu.max: a hard CPU rate cap for the shard's group",
        "memory": "memory.max (swap off): the kernel OOM-kills the group's worker over it",
        "io": "io.weight: the shard's share of disk time under contention",
    },
    1: {
        "cpu": "cpu.cfs_quota_us / cpu.cfs_period_us: a hard CPU rate cap for the group",
        "memory": "memory.limit_in_bytes (+memsw): the kernel OOM-kills the group's worker",
        "io": "blkio weight: the shard's share of disk time under contention",
    },
}


_PROCESS_DETAIL = {
    "cpu": "nice per worker: a lower priority under contention, not a rate cap",
    "memory": "RLIMIT_AS per worker: allocations past the budget raise MemoryError",
    "io": "ionice best-effort level per worker (honoured by the BFQ scheduler)",
}


def detect_capabilities(settings: IsolationSettings | None = None) -> IsolationCapabilities:
    """Probe this host with the ``isolation_*`` settings (defaults when ``settings`` is None).

    Creates and removes a probe group under the configured parent in each hierarchy; never
    leaves anything behind.
    """
    requested: RequestedMode = settings.isolation_mode if settings else "auto"
    parent = settings.isolation_cgroup_parent if settings else "shardshape"
    base = settings.isolation_cgroup_base if settings else ""
    hierarchies = _host_hierarchies()
    probes: list[ControllerProbe] = []
    if requested in ("auto", "cgroup2", "cgroup1"):
        for version in (2, 1):
            if requested in ("auto", f"cgroup{version}"):
                probes += probe_controllers(version, hierarchies, base, parent)
    process_ok, process_reason = process_limits.available()
    ionice_ok = process_limits.ionice_available()
    mode, enforcement, reasons, error = choose_mode(requested, probes, process_ok, ionice_ok)
    if not process_ok:
        reasons.append(process_reason)
    if mode == "none" and not error:
        reasons.append(
            "the host allows no OS limits: shard pools fall back to in-process limits "
            "(concurrency, queues and budgets in the gateway)"
        )
    return IsolationCapabilities(
        requested=requested,
        mode=mode,
        hierarchies=[
            f"cgroup{h.version} at {h.mount} ({', '.join(sorted(h.controllers)) or 'unified'}; "
            f"this process in {h.own_path})"
            for h in hierarchies
        ],
        probes=probes,
        enforcement=enforcement,
        reasons=reasons,
        error=error,
    )


def _host_hierarchies() -> list[Hierarchy]:
    if not sys.platform.startswith("linux"):
        return []
    try:
        mounts = Path("/proc/self/mounts").read_text()
        own = Path("/proc/self/cgroup").read_text()
    except OSError:
        return []
    return find_hierarchies(mounts, own)
