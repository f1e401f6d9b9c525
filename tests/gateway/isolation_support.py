"""Helpers of the isolation tests: settings of their own, pools that clean up, measurements."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardshape.core.contracts import AllocationPlan, ResourceSpec, ShardSpec
from shardshape.core.settings import Settings
from shardshape.gateway.isolation import ProcessShardPool, detect_capabilities
from shardshape.gateway.isolation.detect import IsolationCapabilities
from shardshape.gateway.isolation.layout import find_hierarchies
from shardshape.gateway.isolation.probe import groups_base
from tests.support.plans import plan as gateway_plan

# The handlers the tests run in workers, by import path (a light module: workers import it).
HERE = "tests.gateway.isolation_handlers"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plan(service: str, version: int, shards: dict[int, ResourceSpec]) -> AllocationPlan:
    """A plan of ``service`` giving each shard ``shards[id]`` per replica (one replica)."""
    specs = [ShardSpec(shard_id=s, resources=r, per_replica=r) for s, r in shards.items()]
    return gateway_plan(version, *specs, service=service)


def isolation_settings(mode: str = "auto", base: Settings | None = None) -> Settings:
    """Settings with a cgroup parent of this test alone, so parallel runs never share groups."""
    parent = f"shardshape-t{uuid.uuid4().hex[:8]}"
    return (base or Settings()).model_copy(
        update={"isolation_mode": mode, "isolation_cgroup_parent": parent}
    )


def cgroup_capabilities(settings: Settings) -> IsolationCapabilities:
    """The host's cgroup isolation, or a skip saying why there is none."""
    caps = detect_capabilities(settings)
    if caps.cgroup_version is None:
        why = "; ".join(p.reason for p in caps.probes if not p.writable) or caps.mode
        pytest.skip(f"this host allows no cgroup limits for shard workers: {why}")
    return caps


def parent_dirs(settings: Settings) -> list[Path]:
    """Where ``settings``' cgroup parent would be, in every hierarchy of this process."""
    hierarchies = find_hierarchies(
        Path("/proc/self/mounts").read_text(), Path("/proc/self/cgroup").read_text()
    )
    return [groups_base(h, "") / settings.isolation_cgroup_parent for h in hierarchies]


@contextlib.contextmanager
def running_pool(
    service: str, settings: Settings, caps: IsolationCapabilities | None = None
) -> Iterator[ProcessShardPool]:
    """A pool that is closed on the way out, leaving no cgroup behind (asserted)."""
    pool = ProcessShardPool(service, settings, capabilities=caps, stop_timeout_s=5)
    try:
        yield pool
    finally:
        pool.close()
        left = [path for path in parent_dirs(settings) if path.exists()]
        assert not left, f"cgroups left behind: {left}"
