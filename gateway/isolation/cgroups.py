"""One cgroup per shard: create it, write its limits, place workers in it, remove it.

Groups live at ``<base>/<parent>/<service>.<pid>/shard-<id>`` in each hierarchy the chosen
mode uses (one directory in cgroup2, one per controller in cgroup1). ``<base>`` is the
gateway's own group unless ``SHARDSHAPE_ISOLATION_CGROUP_BASE`` names another; the pid keeps
the groups of several gateway processes of one service (e.g. uvicorn workers) apart, and lets
a new gateway remove the empty groups of one that died without cleaning up.

The values written are plain functions of the shard's per-replica :class:`ResourceSpec`:

>>> from shardshape.core.contracts import ResourceSpec
>>> spec = ResourceSpec(cpu_millicores=500, memory_mib=64, io_weight=200)
>>> limit_values(2, spec)["cpu"], limit_values(2, spec)["io"]
([('cpu.max', '50000 100000')], [('io.weight', 'default 200')])
>>> limit_values(1, spec, io_file="blkio.weight")["io"]
[('blkio.weight', '1000')]
>>> limit_values(1, ResourceSpec())["memory"]
[('memory.limit_in_bytes', '-1'), ('memory.memsw.limit_in_bytes', '-1')]
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from pathlib import Path
from typing import Literal

from shardshape.core.contracts import ResourceSpec
from shardshape.gateway.isolation.detect import IsolationCapabilities
from shardshape.gateway.isolation.layout import Resource
from shardshape.gateway.isolation.probe import enable_controllers, make_group, remove_group

log = logging.getLogger("shardshape.gateway.isolation")

CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000  # the kernel's smallest quota
_STALE_NAME = re.compile(r"\.(\d+)$")


def cpu_quota_us(cpu_millicores: int) -> int | None:
    """CPU time per :data:`CPU_PERIOD_US` for ``cpu_millicores`` (None: no limit).

    >>> cpu_quota_us(500), cpu_quota_us(2500), cpu_quota_us(0)
    (50000, 250000, None)
    """
    if cpu_millicores <= 0:
        return None
    return max(MIN_CPU_QUOTA_US, cpu_millicores * CPU_PERIOD_US // 1000)


def blkio_weight(io_weight: int) -> int:
    """cgroup1 block I/O weight (10-1000, default 500) for a cgroup2 ``io.weight`` (1-10000,
    default 100), scaled as systemd does.

    >>> blkio_weight(100), blkio_weight(1), blkio_weight(10_000)
    (500, 10, 1000)
    """
    return min(1000, max(10, io_weight * 5))


def limit_values(
    version: Literal[1, 2], spec: ResourceSpec, io_file: str = "blkio.weight"
) -> dict[Resource, list[tuple[str, str]]]:
    """Interface file -> value, per resource, in the order to write them (0 means no limit)."""
    quota = cpu_quota_us(spec.cpu_millicores)
    memory = spec.memory_mib << 20 if spec.memory_mib > 0 else None
    if version == 2:
        return {
            "cpu": [("cpu.max", f"{quota if quota else 'max'} {CPU_PERIOD_US}")],
            "memory": [
                ("memory.max", str(memory) if memory else "max"),
                ("memory.swap.max", "0" if memory else "max"),
            ],
            "io": [("io.weight", f"default {spec.io_weight}")],
        }
    return {
        "cpu": [
            ("cpu.cfs_period_us", str(CPU_PERIOD_US)),
            ("cpu.cfs_quota_us", str(quota) if quota else "-1"),
        ],
        "memory": [
            ("memory.limit_in_bytes", str(memory) if memory else "-1"),
            ("memory.memsw.limit_in_bytes", str(memory) if memory else "-1"),
        ],
        "io": [(io_file, str(blkio_weight(spec.io_weight)))],
    }


class ShardGroup:
    """The group(s) of one shard: one directory per hierarchy the mode uses."""

    def __init__(
        self, shard_id: int, version: Literal[1, 2], dirs: dict[Resource, Path], io_file: str
    ) -> None:
        self.shard_id = shard_id
        self.version = version
        self.dirs = dirs
        self._io_file = io_file

    @property
    def paths(self) -> list[Path]:
        return sorted(set(self.dirs.values()))

    def create(self) -> None:
        for path in self.paths:
            make_group(path)

    def set_limits(self, spec: ResourceSpec) -> list[str]:
        """Write ``spec``'s limits; returns what could not be written (the old value stays)."""
        problems = []
        for resource, writes in limit_values(self.version, spec, self._io_file).items():
            directory = self.dirs.get(resource)
            if directory is None:
                continue
            try:
                _write_in_order(directory, writes)
            except OSError as exc:
                problems.append(f"{resource} limit of shard {self.shard_id}: {_why(exc)}")
        return problems

    def add(self, pid: int) -> None:
        """Move process ``pid`` into this shard's group(s)."""
        for path in self.paths:
            (path / "cgroup.procs").write_text(str(pid))

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer stopped in this shard's memory group."""
        directory = self.dirs.get("memory")
        if directory is None:
            return 0
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError):
            for line in (directory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def values(self) -> dict[str, str]:
        """The limit files of this shard as the kernel reports them now."""
        found = {}
        for resource, directory in self.dirs.items():
            for name, _ in limit_values(self.version, ResourceSpec(), self._io_file)[resource]:
                with contextlib.suppress(OSError):
                    found[name] = (directory / name).read_text().strip()
        return found

    def remove(self) -> bool:
        """Remove the group(s); False when one still holds processes."""
        return all([remove_group(path) for path in self.paths])


class CgroupTree:
    """All shard groups of one gateway process for one service, and their common parents.

    Parameters
    ----------
    capabilities
        A cgroup mode from :func:`~shardshape.gateway.isolation.detect.detect_capabilities`.
    service
        The service whose shards get groups.
    """

    def __init__(self, capabilities: IsolationCapabilities, service: str) -> None:
        version = capabilities.cgroup_version
        if version is None:
            raise ValueError(f"CgroupTree needs a cgroup mode, not {capabilities.mode!r}")
        self.version: Literal[1, 2] = version
        probes = capabilities.cgroup_probes()
        self._roots = {r: p.groups_root for r, p in probes.items() if p.groups_root}
        self._io_file = probes["io"].limit_file if "io" in probes else ""
        self._controllers = [p.controller for p in probes.values()]
        self.name = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', service)}.{os.getpid()}"
        self._groups: dict[int, ShardGroup] = {}
        self._create_service_dirs()

    def _create_service_dirs(self) -> None:
        for root in sorted(set(self._roots.values())):
            for attempt in range(3):
                try:
                    self._create_chain(root)
                    break
                except FileNotFoundError:  # another gateway removed the empty parent just now
                    if attempt == 2:
                        raise

    def _create_chain(self, root: Path) -> None:
        if self.version == 2:
            enable_controllers(root.parent, self._controllers)
        make_group(root)
        self._sweep_stale(root)
        if self.version == 2:
            enable_controllers(root, self._controllers)
        make_group(root / self.name)
        if self.version == 2:
            enable_controllers(root / self.name, self._controllers)

    def shard(self, shard_id: int) -> ShardGroup:
        """The group of ``shard_id``, created on first use."""
        group = self._groups.get(shard_id)
        if group is None:
            dirs = {r: root / self.name / f"shard-{shard_id}" for r, root in self._roots.items()}
            group = ShardGroup(shard_id, self.version, dirs, self._io_file)
            group.create()
            self._groups[shard_id] = group
        return group

    def remove_shard(self, shard_id: int) -> bool:
        group = self._groups.get(shard_id)
        if group is None or not group.remove():
            return False
        del self._groups[shard_id]
        return True

    def close(self) -> list[Path]:
        """Remove every group this tree made; returns those that still hold processes."""
        left = []
        for shard_id in list(self._groups):
            if not self.remove_shard(shard_id):
                left += self._groups[shard_id].paths
        for root in sorted(set(self._roots.values())):
            remove_group(root / self.name)
            # The parent goes when empty; another gateway's groups keep it, which is fine.
            remove_group(root)
        return left

    def _sweep_stale(self, root: Path) -> None:
        """Remove empty groups left by gateway processes of this host that died."""
        with contextlib.suppress(OSError):
            for child in root.iterdir():
                match = _STALE_NAME.search(child.name)
                if not child.is_dir() or not match or _pid_alive(int(match[1])):
                    continue
                for shard_dir in child.iterdir():
                    if shard_dir.is_dir():
                        remove_group(shard_dir)
                if remove_group(child):
                    log.info("removed the empty cgroup %s of a gateway that exited", child)


def _write_in_order(directory: Path, writes: list[tuple[str, str]]) -> None:
    """Write limit files; a pair the kernel orders (memory before memsw) is retried reversed."""
    present = [(name, value) for name, value in writes if (directory / name).exists()]
    try:
        for name, value in present:
            (directory / name).write_text(value)
    except OSError as exc:
        if exc.errno != errno.EINVAL or len(present) < 2:
            raise
        for name, value in reversed(present):
            (directory / name).write_text(value)


def _why(exc: OSError) -> str:
    if exc.errno == errno.EBUSY:
        return "the shard uses more than the new limit now; it is kept until usage drops"
    return exc.strerror or str(exc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
