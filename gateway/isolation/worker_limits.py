"""The OS limits a shard's worker processes run under: its cgroup, or per-process fallbacks.

Each shard gets a cgroup (:mod:`shardshape.gateway.isolation.cgroups`) whose limits come from
its per-replica resources; a resource the host has no writable controller for, and every
resource of a shard whose cgroup could not be made, is limited per process instead
(:mod:`shardshape.gateway.isolation.process_limits`: nice, RLIMIT_AS, ionice), set on each
worker from outside when it is ready and again with each plan. When the service's cgroups
cannot be made at all, the whole pool falls back to per-process limits, or none.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from shardshape.core.contracts import ResourceSpec
from shardshape.gateway.isolation import process_limits
from shardshape.gateway.isolation.cgroups import CgroupTree, ShardGroup
from shardshape.gateway.isolation.detect import IsolationCapabilities, Mode
from shardshape.gateway.isolation.layout import Resource
from shardshape.gateway.isolation.probe import explain_os_error

log = logging.getLogger("shardshape.gateway.isolation")

_PROCESS_VIA = ("nice", "rlimit", "ionice")


class WorkerLimits:
    """Limits of one service's shard workers, as the host's isolation allows.

    Parameters
    ----------
    service
        The service whose shards these are (it names their cgroups and the log lines).
    capabilities
        The host's isolation, already required (:meth:`IsolationCapabilities.require`).
    """

    def __init__(self, service: str, capabilities: IsolationCapabilities) -> None:
        self.service = service
        self.mode: Mode = capabilities.mode
        self._tree: CgroupTree | None = None
        self._process_resources = {
            r for r, how in capabilities.enforcement.items() if how.via in _PROCESS_VIA
        }
        if capabilities.cgroup_version:
            try:
                self._tree = CgroupTree(capabilities, service)
            except OSError as exc:
                self._fall_back(
                    explain_os_error(exc, Path(exc.filename or "."), capabilities.cgroup_version)
                )

    def _fall_back(self, why: str) -> None:
        ok, _ = process_limits.available()
        self.mode = "rlimit" if ok else "none"
        self._tree = None
        self._process_resources = _fallback_resources()
        log.warning(
            "%s: cannot create the shard cgroups (%s); falling back to %s limits",
            self.service,
            why,
            self.mode,
        )

    def group(self, shard_id: int) -> ShardGroup | None:
        """A new cgroup for ``shard_id``; None without cgroups, or (warned) when it fails."""
        if self._tree is None:
            return None
        try:
            return self._tree.shard(shard_id)
        except OSError as exc:
            log.warning(
                "%s: no cgroup for shard %d (%s); its workers get per-process limits",
                self.service,
                shard_id,
                explain_os_error(exc, Path(exc.filename or "."), self._tree.version),
            )
            return None

    def set_group_limits(self, group: ShardGroup | None, spec: ResourceSpec) -> None:
        """Write ``spec`` into a shard's cgroup (a limit the kernel refuses is warned about)."""
        if group is not None:
            for problem in group.set_limits(spec):
                log.warning("%s: %s", self.service, problem)

    def place(self, pid: int, shard_id: int, group: ShardGroup | None) -> None:
        """Move a new worker into its shard's cgroup (it runs outside it, warned, on failure)."""
        if group is None:
            return
        try:
            group.add(pid)
        except OSError as exc:
            log.warning(
                "%s: worker %d of shard %d runs outside its cgroup: %s",
                self.service,
                pid,
                shard_id,
                exc,
            )

    def limit_process(
        self, pid: int, shard_id: int, group: ShardGroup | None, spec: ResourceSpec, baseline: int
    ) -> None:
        """Set the per-process limits of a worker whose resources have no cgroup controller.

        ``baseline`` is the worker's address space when it got ready (:func:`baseline_size`);
        its memory limit is that plus its part of the shard's memory.
        """
        workers = max(spec.concurrency, 1)
        resources = self._resources(group)
        try:
            if "cpu" in resources:
                process_limits.set_nice(pid, process_limits.nice_for(spec.cpu_millicores, workers))
            if "memory" in resources:
                process_limits.set_address_space(
                    pid, process_limits.address_space_limit(baseline, spec.memory_mib, workers)
                )
            if "io" in resources:
                process_limits.set_ionice(pid, process_limits.ioprio_level_for(spec.io_weight))
        except ProcessLookupError:
            pass  # it exited; its reader thread reports why
        except OSError as exc:
            log.warning("%s: limits of worker %d of shard %d: %s", self.service, pid, shard_id, exc)

    def mode_of(self, group: ShardGroup | None) -> Mode:
        """How a shard with ``group`` is isolated (per process when its cgroup failed)."""
        if self._tree is None or group is not None:
            return self.mode
        return "rlimit" if _fallback_resources() else "none"

    def remove(self, shard_id: int) -> None:
        """Remove a retired shard's cgroup."""
        if self._tree is not None:
            self._tree.remove_shard(shard_id)

    def close(self) -> None:
        """Remove the service's cgroups (those still in use are warned about and left)."""
        if self._tree is not None:
            left = self._tree.close()
            if left:
                log.warning("%s: cgroups still in use, not removed: %s", self.service, left)

    def _resources(self, group: ShardGroup | None) -> set[Resource]:
        outside = self._tree is not None and group is None  # its cgroup failed
        return _fallback_resources() if outside else self._process_resources


def baseline_size(pid: int) -> int:
    """A worker's address-space size now, 0 when it cannot be read (see :meth:`limit_process`)."""
    with contextlib.suppress(OSError):
        return process_limits.virtual_size(pid)
    return 0


def _fallback_resources() -> set[Resource]:
    if not process_limits.available()[0]:
        return set()
    return {"cpu", "memory"} | ({"io"} if process_limits.ionice_available() else set())
