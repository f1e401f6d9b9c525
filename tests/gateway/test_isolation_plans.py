"""Live plans on process-mode pools: limits change in the cgroup files at once, worker counts
change without failing a request in flight, and shards a plan drops are retired."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from shardshape.allocator.client import AllocatorClient
from shardshape.core.contracts import ResourceSpec, encode
from shardshape.core.settings import Settings
from shardshape.gateway.isolation import ShardUnavailable
from shardshape.gateway.isolation.detect import IsolationCapabilities
from shardshape.infra.topics import create_topics
from tests.gateway.isolation_support import (
    HERE,
    cgroup_capabilities,
    isolation_settings,
    plan,
    running_pool,
)
from tests.support.polling import wait_until
from tests.support.processes import pid_alive

WIDE = ResourceSpec(cpu_millicores=500, memory_mib=128, io_weight=100, concurrency=3)
NARROW = ResourceSpec(cpu_millicores=250, memory_mib=96, io_weight=150, concurrency=1)


def _expected(caps: IsolationCapabilities, spec: ResourceSpec) -> dict[str, str]:
    """The kernel's view of ``spec`` for each resource the cgroups limit here."""
    quota = spec.cpu_millicores * 100
    by_version = {
        2: {
            "cpu": {"cpu.max": f"{quota} 100000"},
            "memory": {"memory.max": str(spec.memory_mib << 20)},
            "io": {"io.weight": f"default {spec.io_weight}"},
        },
        1: {
            "cpu": {"cpu.cfs_quota_us": str(quota)},
            "memory": {"memory.limit_in_bytes": str(spec.memory_mib << 20)},
            "io": {caps.cgroup_probes()["io"].limit_file: str(spec.io_weight * 5)}
            if caps.uses_cgroup("io")
            else {},
        },
    }[caps.cgroup_version]
    return {
        name: value
        for resource, files in by_version.items()
        if caps.uses_cgroup(resource)
        for name, value in files.items()
    }


@pytest.mark.slow
def test_a_new_plan_rewrites_the_limits_and_shrinks_without_failing_requests_in_flight() -> None:
    settings = isolation_settings()
    caps = cgroup_capabilities(settings)
    with running_pool("live", settings, caps) as pool:
        pool.apply(plan("live", 1, {1: WIDE, 2: ResourceSpec(concurrency=1)}))
        assert pool.wait_ready(30)
        group = pool.group(1)
        assert _expected(caps, WIDE).items() <= group.values().items()
        wide_pids = set(pool.worker_pids(1))
        assert len(wide_pids) == 3

        in_flight = [pool.submit(1, f"{HERE}:nap", 1.0) for _ in range(3)]
        wait_until(lambda: pool.status()[0].in_flight == 3, 10, "three in flight", every_s=0.01)
        pool.apply(plan("live", 2, {1: NARROW, 2: ResourceSpec(concurrency=1)}))
        # The limits changed while the three requests still run ...
        assert _expected(caps, NARROW).items() <= group.values().items()
        assert pool.status()[0].in_flight == 3
        # ... and every one of them completes on the worker it started on.
        assert {future.result(30) for future in in_flight} == wide_pids
        wait_until(lambda: len(pool.worker_pids(1)) == 1, 10, "one worker of shard 1", every_s=0.01)
        (kept,) = pool.worker_pids(1)
        assert all(not pid_alive(pid) for pid in wide_pids - {kept})
        assert pool.status()[0].failures == 0

        pool.apply(plan("live", 3, {1: NARROW.model_copy(update={"concurrency": 2})}))
        assert pool.wait_ready(30)
        assert len(pool.worker_pids(1)) == 2 and kept in pool.worker_pids(1)
        # Shard 2 is not in plan 3: it is retired, its group removed, its requests refused.
        wait_until(lambda: pool.worker_pids(2) == [], 10, "no worker of shard 2", every_s=0.01)
        assert pool.group(2) is None
        with pytest.raises(ShardUnavailable, match=r"shard 2 of live has no workers.*\[1\]"):
            pool.submit(2, f"{HERE}:whoami")
        assert [s.shard_id for s in pool.status()] == [1]


def test_a_dropped_shard_finishes_its_running_request_before_it_goes() -> None:
    settings = isolation_settings()
    with running_pool("drop", settings) as pool:
        pool.apply(plan("drop", 1, {1: ResourceSpec(), 2: ResourceSpec()}))
        assert pool.wait_ready(30)
        (worker,) = pool.worker_pids(2)
        running = pool.submit(2, f"{HERE}:nap", 0.5)
        wait_until(lambda: pool.status()[1].in_flight == 1, 10, "one in flight", every_s=0.01)
        pool.apply(plan("drop", 2, {1: ResourceSpec()}))
        assert running.result(10) == worker
        wait_until(
            lambda: [s.shard_id for s in pool.status()] == [1], 10, "shard 2 gone", every_s=0.01
        )
        assert not pid_alive(worker)


def test_plans_on_the_plans_topic_size_the_pool(settings: Settings) -> None:
    settings = isolation_settings(base=settings)
    create_topics(settings)
    producer = Producer(settings.confluent_config())

    def publish(version: int, spec: ResourceSpec) -> None:
        value = encode(plan("topic", version, {1: spec}))
        producer.produce(settings.topic_plans, key=b"topic", value=value)
        assert producer.flush(10) == 0

    with running_pool("topic", settings) as pool:
        client = AllocatorClient(settings.confluent_config(), settings.topic_plans, "topic", pool)
        with client:
            publish(1, WIDE)
            assert client.wait_for_version(1, timeout_s=30)
            assert pool.wait_ready(30) and len(pool.worker_pids(1)) == 3
            assert pool.run(1, "math:hypot", 6, 8) == 10.0
            publish(2, NARROW)
            assert client.wait_for_version(2, timeout_s=30)
            wait_until(
                lambda: len(pool.worker_pids(1)) == 1, 10, "one worker of shard 1", every_s=0.01
            )
            assert pool.plan_version == 2 and pool.status()[0].limits == NARROW
            assert pool.run(1, "math:hypot", 6, 8) == 10.0
