"""``install(app, service)`` on a real broker: one call shapes a Starlette app. Routing entries
and plans from the topics reach its pools, completed requests reach the requests topic, queued
requests reach the planner's topic, the status page and metrics answer, the app's own lifespan
still runs inside the gateway's, and shutdown leaves no follower or reporter thread. Without a
broker: one log line, and every request is served."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator

import httpx
import pytest
from confluent_kafka import Producer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from shardshape.core.contracts import QueueReport, encode
from shardshape.core.settings import Settings
from shardshape.gateway import Gateway, install
from shardshape.gateway.status import STATUS_PATH
from shardshape.infra.topics import create_topics
from tests.gateway.reporting import QueueReportReader, batch_ids, consume_batches, has_all
from tests.support.plans import plan, route_entry, shard
from tests.support.polling import until
from tests.support.serving import serve

GATEWAY_THREADS = ("follow-", "shardshape-reporter-")


def _app(lifespan_log: list[str]) -> Starlette:
    """An app with its own lifespan (which hands the requests a state) and a slow read."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        lifespan_log.append("app started")
        yield {"store": "the app's store"}
        lifespan_log.append("app stopped")

    async def item(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params.get("read_ms", 0)) / 1000)
        return PlainTextResponse(request.state.store)

    return Starlette(routes=[Route("/items/{item_id}", item)], lifespan=lifespan)


def _gateway_threads(before: set[threading.Thread]) -> list[str]:
    return sorted(
        t.name
        for t in set(threading.enumerate()) - before
        if t.is_alive() and t.name.startswith(GATEWAY_THREADS)
    )


def _waiting_on_shard_1(reports: list[QueueReport]) -> bool:
    return any(s.shard_id == 1 and s.queued > 0 for r in reports for s in r.shards)


@pytest.mark.broker
async def test_one_call_follows_plans_and_routing_reports_and_stops_cleanly(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"reporter_queue_interval_ms": 200})
    create_topics(settings)
    key, entry = route_entry("shop", "GET /items/{item_id}", "reader", 1)
    producer = Producer(settings.confluent_config())
    producer.produce(settings.topic_routing, key=key, value=entry)
    layout = plan(1, shard(1, concurrency=1, queue=8, timeout_ms=30_000))
    producer.produce(settings.topic_plans, key=b"shop", value=encode(layout))
    assert producer.flush(10) == 0

    lifespan_log: list[str] = []
    app = _app(lifespan_log)
    gateway = install(app, "shop", settings=settings)
    assert isinstance(gateway, Gateway) and gateway.shaped
    before = set(threading.enumerate())
    windows = QueueReportReader(settings)
    try:
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert lifespan_log == ["app started"]
            running = _gateway_threads(before)
            assert len(running) == 3, running  # two topic followers and the reporter
            await until(
                lambda: gateway.pools.plan_version == 1 and len(gateway.routing) == 1,
                30,
                "the plan and the routing entry applied",
            )
            assert gateway.pools.state(1).limits.concurrency == 1

            # Three slow reads of the routed user: one runs in shard 1's single slot, two wait.
            ids = [f"install-{i}" for i in range(3)]
            answers = await asyncio.gather(
                *(
                    http.get(
                        f"/items/{i}",
                        params={"read_ms": 800},
                        headers={"x-user-id": "reader", "x-request-id": request_id},
                    )
                    for i, request_id in enumerate(ids)
                )
            )
            assert [a.status_code for a in answers] == [200, 200, 200]
            assert {a.text for a in answers} == {"the app's store"}, "the app's lifespan state"
            status = (await http.get(STATUS_PATH)).json()
            metrics = (await http.get("/metrics")).text
        stopped = _gateway_threads(before)
        batches = await asyncio.to_thread(consume_batches, settings, has_all(set(ids)), 20)
        reports = await asyncio.to_thread(windows.read_until, _waiting_on_shard_1)
    finally:
        windows.close()

    assert lifespan_log == ["app started", "app stopped"]
    assert stopped == [], "shutdown leaves no follower or reporter thread"
    assert set(batch_ids(batches)) == set(ids)
    events = [e for _, b in batches for e in b.events if e.request_id in ids]
    assert {(e.service, e.shard_id, e.status) for e in events} == {("shop", 1, "ok")}
    assert _waiting_on_shard_1(reports), reports
    assert status["plan_version"] == 1 and status["routing_entries"] == 1
    assert status["reporter"]["reported"] == 3
    assert 'shardshape_shard_requests_total{arm="",service="shop",shard="1",status="ok"} 3.0' in (
        metrics
    )


async def test_without_a_broker_it_logs_one_line_and_serves_every_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One slot and no queue: shaped, most of these requests would be turned away.
    settings = Settings(kafka_bootstrap=None, gateway_default_concurrency=1, gateway_queue_size=0)
    lifespan_log: list[str] = []
    app = _app(lifespan_log)
    caplog.set_level(logging.INFO, logger="shardshape")
    gateway = install(app, "shop", settings=settings, metrics_path="/internal/metrics")
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        answers = await asyncio.gather(
            *(http.get(f"/items/{i}", params={"read_ms": 200}) for i in range(12))
        )
        status = (await http.get(STATUS_PATH)).json()
        moved = await http.get("/internal/metrics")
        default_path = await http.get("/metrics")

    assert [a.status_code for a in answers] == [200] * 12
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("shardshape")]
    assert len(lines) == 1 and "runs unshaped" in lines[0], lines
    assert "SHARDSHAPE_KAFKA_BOOTSTRAP" in lines[0]
    assert not gateway.shaped and gateway.routing is None and gateway.reporter is None
    assert status["service"] == "shop" and status["reporter"] is None
    assert moved.status_code == 200 and "shardshape_gateway_pool_slots" in moved.text
    assert default_path.status_code == 404, "the metrics moved; /metrics is the app's"
    assert lifespan_log == ["app started", "app stopped"]


def test_metrics_and_status_can_be_turned_off_and_bad_options_are_named() -> None:
    app = Starlette()
    settings = Settings(kafka_bootstrap=None)
    gateway = install(app, "shop", settings=settings, metrics_path=None, status_path=None)
    assert gateway.metrics is None and app.user_middleware == []
    with pytest.raises(TypeError, match="unknown gateway option 'queue_size'"):
        install(Starlette(), "shop", settings=settings, queue_size=4)
    with pytest.raises(TypeError, match="Starlette or FastAPI app"):
        install(object(), "shop", settings=settings)
