"""Live plans on the real broker: the example service follows its routing and plans topics
(RoutingTable and AllocatorClient), and a plan that shrinks a busy shard from 8 to 2 slots and
swaps its cache from LRU to LFU lands while requests are in flight without failing any; with
Kafka unreachable, the service answers with the last plan it has."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from shardshape.core.contracts import CachePolicy, RoutingEntry, encode
from shardshape.core.settings import Settings
from shardshape.gateway.status import STATUS_PATH
from shardshape.infra.topics import create_topics
from shardshape.models.features import profile_key
from tests.support.plans import plan, shard
from tests.support.polling import until
from tests.support.serving import example, serve

pytestmark = pytest.mark.broker


def _publish(settings: Settings, *messages: tuple[str, bytes, bytes]) -> None:
    producer = Producer(settings.confluent_config())
    for topic, key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0


async def test_shrinking_a_busy_shard_and_swapping_its_cache_fails_no_request(
    settings: Settings,
) -> None:
    create_topics(settings)
    service = example("app")
    reads = profile_key(service.SERVICE, "GET /items/{item_id}", "reader")
    entry = RoutingEntry(service=service.SERVICE, key=reads, shard_id=1, snapshot_version=1)
    lru = CachePolicy(policy="lru", size=1_000)
    before = plan(1, shard(1, concurrency=8, queue=256, timeout_ms=20_000, cache=lru))
    _publish(
        settings,
        (settings.topic_routing, reads.encode(), encode(entry)),
        (settings.topic_plans, b"shop", encode(before)),
    )
    outcomes: list[int | str] = []
    in_flight_at_swap = 0

    app = service.create_app(settings)
    pools = app.state.pools
    async with serve(app) as url:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
            # The plan and the routing entry arrive from the broker through the app's
            # AllocatorClient and RoutingTable; a request of the routed user lands in shard 1.
            await until(lambda: pools.plan_version == 1, 30, "plan v1 applied")
            await _routed(http, pools)
            assert pools.state(1).limits.concurrency == 8
            stop = asyncio.Event()
            numbers = iter(range(10**9))

            async def client() -> None:
                while not stop.is_set():
                    try:
                        response = await http.get(
                            f"/items/{next(numbers)}?read_ms=120", headers={"x-user-id": "reader"}
                        )
                        outcomes.append(response.status_code)
                    except httpx.HTTPError as error:
                        outcomes.append(type(error).__name__)

            clients = [asyncio.create_task(client()) for _ in range(30)]
            await until(
                lambda: pools.state(1).in_use == 8 and pools.state(1).queued > 0, 10, "shard 1 full"
            )
            entries_before = pools.state(1).cache_entries
            after = plan(2, shard(1, concurrency=2, queue=256, timeout_ms=20_000, cache=lfu()))
            _publish(settings, (settings.topic_plans, b"shop", encode(after)))
            await until(lambda: pools.plan_version == 2, 30, "plan v2 applied")  # by the consumer
            in_flight_at_swap = pools.state(1).in_use
            entries_after = pools.state(1).cache_entries
            # The old slots drain as their requests finish; then no more than 2 run at once.
            await until(lambda: pools.state(1).in_use <= 2, 10, "the old slots drained")
            # In use, sampled while ten more requests are admitted under the new limit.
            drained_at = pools.state(1).admitted
            samples = []

            def admitted_ten_more() -> bool:
                state = pools.state(1)
                samples.append(state.in_use)
                return state.admitted >= drained_at + 10

            await until(admitted_ten_more, 10, "ten more requests admitted to shard 1",
                        every_s=0.01)  # fmt: skip
            stop.set()
            await asyncio.gather(*clients)
            status = (await http.get(STATUS_PATH)).json()

    state = pools.state(1)
    assert outcomes and set(outcomes) == {200}, f"requests failed: {set(outcomes)}"
    assert in_flight_at_swap > 2  # the plan really landed mid-flight
    assert max(samples) <= 2 and state.completed >= len(outcomes)
    assert (state.limits.concurrency, state.limits.cache.policy) == (2, "lfu")
    assert entries_after >= min(entries_before, 1_000) > 0  # the cache kept its entries
    assert state.rejected == {}
    (shard_status,) = [p for p in status["pools"] if p["shard_id"] == 1]
    assert shard_status["limits"]["concurrency"] == 2 and status["plan_version"] == 2


async def _routed(http: httpx.AsyncClient, pools, timeout_s: float = 30) -> None:
    """Wait until the routing entry is in: a request of the reader runs in shard 1's pool."""

    async def admitted() -> bool:
        await http.get("/items/probe?read_ms=0", headers={"x-user-id": "reader"})
        return pools.state(1).admitted > 0

    await until(admitted, timeout_s, "the routing entry reached the gateway")


def lfu() -> CachePolicy:
    return CachePolicy(policy="lfu", size=1_000)


async def test_the_service_answers_with_its_last_plan_while_kafka_is_unreachable(
    tmp_path: Path,
) -> None:
    with socket.socket() as closed:  # a port nothing listens on: Kafka is down from the start
        closed.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{closed.getsockname()[1]}"
    settings = Settings(kafka_bootstrap=dead, data_dir=tmp_path)
    app = example("app").create_app(settings)
    pools = app.state.pools
    pools.apply(plan(3, shard(0, concurrency=2)))  # the last good plan
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=5) as http:
        started = time.monotonic()
        answers = await asyncio.gather(*(http.get(f"/items/{n}?read_ms=10") for n in range(20)))
        elapsed = time.monotonic() - started
    assert [a.status_code for a in answers] == [200] * 20
    assert elapsed < 3  # ten rounds of 2 slots x 10 ms: nothing waited for the broker
    assert pools.plan_version == 3 and pools.state(0).completed == 20
