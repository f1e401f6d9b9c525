"""Kafka paused under a running service: the example service, as its own process with its
reporter, routing table and allocator client on a broker of this test alone, serves a steady
load while the broker is stopped (SIGSTOP) for 20 s, then continued (SIGCONT).

The service keeps answering every request with the last plan; its status page shows the
reporter dropping (counted, by reason) while Kafka is unreachable; once the broker is back,
reporting resumes by itself and new requests reach the requests topic.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from confluent_kafka import Producer

from shardshape.core.contracts import encode
from shardshape.core.settings import Settings
from shardshape.gateway.status import STATUS_PATH, GatewayStatus
from shardshape.infra.broker import EmbeddedBroker
from shardshape.infra.topics import create_topics
from tests.gateway.reporting import batch_ids, consume_batches, has_all
from tests.support.broker import paused_broker
from tests.support.plans import plan, route_entry, shard
from tests.support.polling import until
from tests.support.processes import settings_env
from tests.support.serving import example, example_server

pytestmark = [pytest.mark.slow, pytest.mark.broker]

PAUSE_S = 20.0
CLIENTS = 4
SLOTS = 8  # more than the clients: the pool never needs to queue or reject
THINK_S = 0.05
AFTER_ANSWERS = 50  # requests after reporting resumed, looked for on the requests topic
READ = "/items/{n}?read_ms=5"
# A request that waited on Kafka would wait for the reporter's stall timer (2 s) or for
# librdkafka's delivery timeout (10 s): seconds, not this.
MAX_ANSWER_S = 1.0


class Answer(NamedTuple):
    phase: str
    request_id: str
    outcome: int | str  # the HTTP status, or the client error's name
    seconds: float


class _Load:
    """Closed-loop clients reading items as the user ``reader``; every answer kept, tagged
    with the phase it was asked in (the request id carries it to the requests topic)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.phase = "before"
        self.answers: list[Answer] = []
        self._numbers = itertools.count()
        self._stop = asyncio.Event()
        self._clients: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._clients = [asyncio.create_task(self._client()) for _ in range(CLIENTS)]

    async def stop(self) -> None:
        """Let each client finish its request and return (again: nothing to do)."""
        self._stop.set()
        await asyncio.gather(*self._clients)

    async def _client(self) -> None:
        while not self._stop.is_set():
            n = next(self._numbers)
            phase, request_id = self.phase, f"{self.phase}-{n}"
            headers = {"x-user-id": "reader", "x-request-id": request_id}
            started = time.perf_counter()
            try:
                outcome: int | str = (
                    await self.http.get(READ.format(n=n), headers=headers)
                ).status_code
            except httpx.HTTPError as error:
                outcome = type(error).__name__
            self.answers.append(Answer(phase, request_id, outcome, time.perf_counter() - started))
            await asyncio.sleep(THINK_S)

    def of(self, phase: str) -> list[Answer]:
        return [answer for answer in self.answers if answer.phase == phase]


async def _status(http: httpx.AsyncClient) -> GatewayStatus:
    return GatewayStatus.from_json((await http.get(STATUS_PATH)).content)


async def _status_when(
    http: httpx.AsyncClient, ready: Callable[[GatewayStatus], object], timeout_s: float
) -> GatewayStatus:
    async def status_if_ready() -> GatewayStatus | None:
        status = await _status(http)
        return status if ready(status) else None

    return await until(status_if_ready, timeout_s, "the service's status", every_s=0.1)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test alone: pausing the session broker would stall other tests."""
    with EmbeddedBroker(Settings(), log_dir=tmp_path / "broker") as broker:
        yield broker


async def test_a_paused_broker_leaves_the_service_answering_and_reporting_resumes_by_itself(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=own_broker.bootstrap,
        topic_requests=f"o{tag}.requests",
        topic_dlq=f"o{tag}.dlq",
        topic_routing=f"o{tag}.routing",
        topic_plans=f"o{tag}.plans",
        data_dir=tmp_path / "data",
    )
    create_topics(settings)
    service = example("app").SERVICE
    key, entry = route_entry(service, "GET /items/{item_id}", "reader", 0)
    producer = Producer(settings.confluent_config())
    producer.produce(settings.topic_routing, key=key, value=entry)
    last_plan = plan(1, shard(0, concurrency=SLOTS, queue=64, timeout_ms=20_000))
    producer.produce(settings.topic_plans, key=service.encode(), value=encode(last_plan))
    assert producer.flush(10) == 0

    with example_server(settings_env(settings), tmp_path / "service.log") as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await _status_when(http, lambda s: s.plan_version == 1 and s.routing_entries == 1, 30)
            load = _Load(http)
            load.start()
            try:
                before = await _status_when(
                    http, lambda s: s.reporter is not None and s.reporter.delivered >= 50, 30
                )
                during: list[GatewayStatus] = []
                with paused_broker(own_broker):
                    load.phase = "paused"
                    pause_ends = time.monotonic() + PAUSE_S
                    while time.monotonic() < pause_ends:
                        during.append(await _status(http))
                        await asyncio.sleep(0.5)  # samples through the pause, PAUSE_S long
                load.phase = "resumed"  # from here on, nothing but the load: no manual step
                resumed = await _status_when(
                    http,
                    lambda s: (
                        s.reporter.kafka_reachable
                        and s.reporter.delivered > during[-1].reporter.delivered
                    ),
                    60,
                )
                load.phase = "after"
                await until(
                    lambda: len(load.of("after")) >= AFTER_ANSWERS, 30,
                    f"{AFTER_ANSWERS} answers after reporting resumed",
                )  # fmt: skip
                await load.stop()
                final = await _status_when(
                    http, lambda s: s.reporter.buffered == s.reporter.in_flight == 0, 30
                )
            finally:
                await load.stop()  # also when a check above failed

    answers = load.answers
    paused = load.of("paused")
    summary = (
        f"{len(answers)} answers, {len(paused)} while paused (slowest "
        f"{max(a.seconds for a in paused):.3f} s); reporter before {before.reporter}, at the "
        f"end of the pause {during[-1].reporter}, resumed {resumed.reporter}, "
        f"final {final.reporter}"
    )
    print(summary)
    # The service kept answering every request, with the last plan, while Kafka was stopped.
    assert {a.outcome for a in answers} == {200}, summary
    assert len(paused) >= CLIENTS * PAUSE_S / (THINK_S + 0.5), "a steady load through the pause"
    assert max(a.seconds for a in paused) < MAX_ANSWER_S, summary
    for status in (before, *during, resumed, final):
        assert status.plan_version == 1 and status.routing_entries == 1
        (pool,) = [p for p in status.pools if p.shard_id == 0]
        assert pool.limits.concurrency == SLOTS and pool.rejected == 0

    # The reporter's counters in the status page: what was dropped while Kafka was away.
    assert before.reporter.dropped == {} and before.reporter.kafka_reachable
    end = during[-1].reporter
    assert not end.kafka_reachable and end.dropped_total > 0, summary
    assert set(end.dropped) <= {"kafka_unreachable", "delivery_failed"}, summary
    assert end.spooled == 0, "no spool configured: what Kafka cannot take is dropped"
    assert end.delivered == during[2].reporter.delivered, "nothing delivered while stopped"
    assert end.reported > during[2].reporter.reported, "requests still reported"

    # Reporting resumed by itself; every event is accounted for.
    final_reporter = final.reporter
    assert final_reporter.kafka_reachable and final_reporter.dropped_total >= end.dropped_total
    assert final_reporter.reported == len(answers)
    assert final_reporter.delivered + final_reporter.dropped_total == final_reporter.reported

    # New requests reach the requests topic, each once, beside everything acknowledged. A batch
    # that timed out while the broker was stopped may still have been written when it went on
    # (librdkafka's "possibly persisted"): the reporter counts it as delivery_failed.
    after = {a.request_id for a in load.of("after")}
    batches = consume_batches(settings, has_all(after), timeout_s=30)
    received = batch_ids(batches)
    assert after and after <= set(received), "requests after the pause reach the topic"
    assert set(received.values()) == {1}, "each event once"
    possibly_written = final_reporter.dropped.get("delivery_failed", 0)
    print(f"on the requests topic: {sum(received.values())} events")
    assert (
        final_reporter.delivered
        <= sum(received.values())
        <= final_reporter.delivered + possibly_written
    ), summary
    assert set(received) <= {a.request_id for a in answers}
    events = [event for _, batch in batches for event in batch.events]
    assert {(e.service, e.request_type, e.user_id, e.shard_id, e.status) for e in events} == {
        (service, "GET /items/{item_id}", "reader", 0, "ok")
    }
