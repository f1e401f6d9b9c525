"""The allocator client on the real broker: new plans applied in order, the rest ignored."""

from __future__ import annotations

from confluent_kafka import Producer

from shardshape.allocator.client import AllocatorClient
from shardshape.core.contracts import AllocationPlan, ShardSpec, encode
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics


class RecordingBackend:
    def __init__(self, fail_on: int | None = None) -> None:
        self.applied: list[int] = []
        self.fail_on = fail_on

    def apply(self, plan: AllocationPlan) -> None:
        if plan.version == self.fail_on:
            raise RuntimeError("planted failure")
        self.applied.append(plan.version)


def _plan(version: int, service: str = "shop") -> AllocationPlan:
    return AllocationPlan(
        plan_id=f"{service}:{version}", version=version, service=service, pool_id="main",
        shards=[ShardSpec(shard_id=0, blocks={"small": version})],
    )  # fmt: skip


def test_client_applies_new_plans_and_ignores_the_rest(settings: Settings) -> None:
    create_topics(settings)
    producer = Producer(settings.confluent_config())
    for value in (
        encode(_plan(1)),
        b"{not a plan",
        encode(_plan(5, service="exports")),  # another service's
        encode(_plan(3)),
        encode(_plan(2)),  # stale once 3 is applied
        encode(_plan(4)),  # the backend refuses this one
        encode(_plan(6)),
    ):
        producer.produce(settings.topic_plans, key=b"shop", value=value)
    assert producer.flush(10) == 0

    backend = RecordingBackend(fail_on=4)
    seen: list[int] = []
    client = AllocatorClient(
        settings.confluent_config(), settings.topic_plans, "shop", backend,
        on_applied=lambda plan: seen.append(plan.version),
    )  # fmt: skip
    with client:
        assert client.wait_for_version(6, timeout_s=30)
    assert backend.applied == [1, 3, 6] == seen
    assert client.applied.shards[0].blocks == {"small": 6}
    assert client.ignored == 3  # the malformed, the stale and the refused plan
