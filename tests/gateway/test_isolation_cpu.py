"""Process mode on this host's cgroups: a shard's CPU limit caps the CPU its workers get."""

from __future__ import annotations

import time

import pytest

from shardshape.core.contracts import ResourceSpec
from tests.gateway.isolation_support import (
    HERE,
    cgroup_capabilities,
    cpu_seconds,
    isolation_settings,
    plan,
    running_pool,
)

BURN_S = 3.0


def _throttled(stat_text: str) -> int:
    return int(dict(line.split() for line in stat_text.splitlines())["nr_throttled"])


@pytest.mark.slow
def test_a_shard_limited_to_half_a_cpu_gets_at_most_0_6_cpu_seconds_per_second() -> None:
    settings = isolation_settings()
    caps = cgroup_capabilities(settings)
    if not caps.uses_cgroup("cpu"):
        pytest.skip(f"no writable cgroup CPU controller: {caps.enforcement['cpu'].detail}")
    half = ResourceSpec(cpu_millicores=500, concurrency=1)
    shared = ResourceSpec(cpu_millicores=500, concurrency=2)  # one quota for both workers
    with running_pool("cpu", settings, caps) as pool:
        pool.apply(plan("cpu", 1, {1: half, 2: shared}))
        assert pool.wait_ready(30)
        pids = {shard: pool.worker_pids(shard) for shard in (1, 2)}
        before = {pid: cpu_seconds(pid) for shard in pids.values() for pid in shard}
        started = time.monotonic()
        burning = {1: [pool.submit(1, f"{HERE}:burn", BURN_S)]}
        burning[2] = [pool.submit(2, f"{HERE}:burn", BURN_S) for _ in range(2)]
        rate = {}
        for shard, futures in burning.items():
            assert all(future.result(30) > 0 for future in futures)
            wall = time.monotonic() - started  # shard 1 is read first: its own busy time
            rate[shard] = sum(cpu_seconds(pid) - before[pid] for pid in pids[shard]) / wall
        stats = {shard: (pool.group(shard).dirs["cpu"] / "cpu.stat").read_text() for shard in pids}
    print(f"CPU-seconds per second while busy: {rate}")
    assert 0.05 < rate[1] <= 0.6, rate
    assert 0.05 < rate[2] <= 0.6, rate  # two busy workers share the shard's one quota
    # The cap is the group's quota at work, not a busy machine: the kernel throttled both groups.
    assert _throttled(stats[1]) > 0 and _throttled(stats[2]) > 0
