"""The middleware over real HTTP (uvicorn on a loopback socket, httpx): what it reports, how it
rejects, how it paces downloads, and that it never breaks a response of its own accord."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from shardshape.allocator.arms import ArmAssigner
from shardshape.core.contracts import (
    Arm,
    CachePolicy,
    Experiment,
    RequestEvent,
    RoutingEntry,
    encode,
)
from shardshape.core.metrics import CACHE_HIT_ATTRIBUTE
from shardshape.gateway.limits import PoolDefaults
from shardshape.gateway.middleware import ShapingMiddleware
from shardshape.gateway.pools import ShardPools, current_slot
from shardshape.gateway.routing_table import RoutingTable
from shardshape.models.features import profile_key
from tests.support.plans import plan, shard
from tests.support.serving import serve


async def item(request: Request) -> Response:
    slot = current_slot()
    return JSONResponse({"id": request.path_params["item_id"], "pool": slot.pool.name})


def cached(request: Request) -> Response:  # sync: Starlette runs it in a worker thread
    cache = current_slot().cache
    hit = cache.get("k") is not None
    cache.set("k", 1)
    return PlainTextResponse("hit" if hit else "miss")


async def upload(request: Request) -> Response:
    return PlainTextResponse(str(len(await request.body())))


async def download(request: Request) -> Response:
    return Response(b"x" * int(request.query_params["n"]))


async def boom(request: Request) -> Response:
    raise RuntimeError("planted failure")


def routing_table(*routes: tuple[str, str, int]) -> RoutingTable:
    """A real routing table fed directly, as its topic follower would (never started)."""
    table = RoutingTable({"bootstrap.servers": "127.0.0.1:1"}, "routing")
    for request_type, user, shard_id in routes:
        key = profile_key("shop", request_type, user)
        entry = RoutingEntry(service="shop", key=key, shard_id=shard_id, snapshot_version=1)
        table.apply(key.encode(), encode(entry))
    return table


def shop(pools: ShardPools, events: list[RequestEvent], **options: object) -> Starlette:
    app = Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/cached", cached),
            Route("/upload", upload, methods=["POST"]),
            Route("/download", download),
            Route("/boom", boom),
            Route("/healthz", lambda request: PlainTextResponse("ok")),
        ]
    )
    app.add_middleware(
        ShapingMiddleware, service="shop", pools=pools, report=events.append, **options
    )
    return app


async def test_each_request_is_reported_with_its_route_user_shard_and_outcome() -> None:
    pools = ShardPools()
    pools.apply(plan(1, shard(0, concurrency=4), shard(3, concurrency=4)))
    events: list[RequestEvent] = []
    routing = routing_table(("GET /items/{item_id}", "ann", 3), ("POST /upload", "bob", 3))
    app = shop(pools, events, routing=routing, unshaped_paths={"/healthz"})
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        ann = await http.get("/items/42", headers={"x-user-id": "ann", "x-request-id": "r-1"})
        other = await http.get("/items/43", headers={"x-user-id": "zoe"})
        upload = await http.post("/upload", content=b"a" * 1234, headers={"x-user-id": "bob"})
        missing = await http.get("/nowhere")
        health = await http.get("/healthz")
    assert ann.json() == {"id": "42", "pool": "shard 3"}
    assert other.json()["pool"] == "shard 0"  # no routing entry: the table's default shard
    assert upload.text == "1234" and missing.status_code == 404 and health.text == "ok"
    first, second, third, fourth = events  # /healthz is not shaped and not reported
    assert (first.request_id, first.request_type, first.user_id, first.shard_id) == (
        "r-1",
        "GET /items/{item_id}",
        "ann",
        3,
    )
    assert first.status == "ok" and first.response_bytes == len(ann.content)
    assert first.latency_ms > 0 and first.arm is None and first.service == "shop"
    assert (second.user_id, second.shard_id) == ("zoe", 0)
    assert (third.request_type, third.payload_bytes, third.shard_id) == ("POST /upload", 1234, 3)
    assert (fourth.request_type, fourth.status) == ("GET <unmatched>", "ok")
    assert len({e.request_id for e in events}) == 4


async def test_a_rejected_request_gets_503_with_retry_after_and_is_reported() -> None:
    pools = ShardPools(PoolDefaults(queue_size=0))  # a plan's queue of 0 takes this default
    pools.apply(plan(1, shard(0, concurrency=1)))
    events: list[RequestEvent] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(request: Request) -> Response:
        entered.set()
        await release.wait()
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/held", held)])
    app.add_middleware(ShapingMiddleware, service="shop", pools=pools, report=events.append)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        first = asyncio.create_task(http.get("/held"))
        await asyncio.wait_for(entered.wait(), 10)  # the one slot is taken
        # Answered while the first still holds the slot: at once, not after it.
        rejected = await asyncio.wait_for(http.get("/held"), 10)
        assert not first.done()
        release.set()
        assert (await first).text == "done"
    assert rejected.status_code == 503
    assert int(rejected.headers["retry-after"]) >= 1
    assert rejected.json()["reason"] == "queue_full" and rejected.json()["pool"] == "shard 0"
    assert sorted(e.status for e in events) == ["ok", "rejected"]
    assert pools.state(0).rejected == {"queue_full": 1}


async def test_downloads_are_paced_by_the_shards_bandwidth() -> None:
    pools = ShardPools()
    pools.apply(plan(1, shard(0, concurrency=4), shard(1, concurrency=4, net_mbit=2.4)))
    events: list[RequestEvent] = []
    routing = routing_table(("GET /download", "slow", 1))
    app = shop(pools, events, routing=routing)
    size = 150_000
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        started = time.monotonic()
        fast = await http.get("/download", params={"n": size}, headers={"x-user-id": "fast"})
        fast_s = time.monotonic() - started
        started = time.monotonic()
        slow = await http.get("/download", params={"n": size}, headers={"x-user-id": "slow"})
        slow_s = time.monotonic() - started
    assert len(fast.content) == len(slow.content) == size
    # 2.4 Mbit/s is 300 kB/s; a 64 KiB burst goes at once, the rest waits for tokens.
    assert slow_s >= (size - 64 * 1024) / 300_000 * 0.9
    assert fast_s < slow_s
    assert [e.response_bytes for e in events] == [size, size]


async def test_handlers_reach_their_shards_cache_also_from_worker_threads() -> None:
    pools = ShardPools()
    pools.apply(plan(1, shard(0, concurrency=4, cache=CachePolicy(policy="lru", size=8))))
    async with serve(shop(pools, [])) as url, httpx.AsyncClient(base_url=url) as http:
        answers = [(await http.get("/cached")).text for _ in range(3)]
    assert answers == ["miss", "hit", "hit"]
    assert (pools.state(0).cache_hits, pools.state(0).cache_misses) == (2, 1)


async def test_failures_of_the_app_and_of_report_are_contained() -> None:
    pools = ShardPools()
    events: list[RequestEvent] = []
    app = shop(pools, events)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        failed = await http.get("/boom")
        assert failed.status_code == 500
        middleware = _middleware_of(app)
        middleware.report = _raising
        still = await http.get("/items/1")
    assert still.status_code == 200
    assert [e.status for e in events] == ["error"]
    assert middleware.report_errors == 1
    assert pools.state(None).in_use == 0  # the failed request gave its slot back


async def test_user_and_request_type_functions_and_plain_asgi_apps() -> None:
    events: list[RequestEvent] = []

    async def plain(scope: dict, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = ShapingMiddleware(
        plain,
        service="raw",
        pools=ShardPools(),
        report=events.append,
        user_key=lambda scope: scope["query_string"].decode(),
        attributes=lambda scope: {"tls": scope["scheme"] == "https"},
    )
    async with serve(app, lifespan="off") as url, httpx.AsyncClient(base_url=url) as http:
        await http.delete("/things/7?carol")
    (event,) = events
    assert (event.request_type, event.user_id, event.attributes) == (
        "DELETE /things/7",
        "carol",
        {"tls": False},
    )


def _raising(event: RequestEvent) -> None:
    raise RuntimeError("reporter down")


def _middleware_of(app: Starlette) -> ShapingMiddleware:
    layer = app.middleware_stack
    while not isinstance(layer, ShapingMiddleware):
        layer = layer.app
    return layer


@pytest.fixture(autouse=True)
def _quiet_middleware_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="shardshape.gateway.middleware")


async def test_a_cache_lookup_is_reported_as_a_hit_or_miss_with_the_arm() -> None:
    experiment = Experiment(
        experiment_id="cache-1",
        shard_id=0,
        arms=[Arm(name="control", weight=0.5), Arm(name="lfu", weight=0.5)],
    )
    pools = ShardPools()
    lru = CachePolicy(policy="lru", size=10)
    pools.apply(plan(1, shard(0, concurrency=4, cache=lru), experiments=(experiment,)))
    events: list[RequestEvent] = []
    async with serve(shop(pools, events)) as url, httpx.AsyncClient(base_url=url) as http:
        answers = [(await http.get("/cached", headers={"x-user-id": "ann"})).text for _ in "ab"]
        await http.get("/items/1", headers={"x-user-id": "ann"})  # looks nothing up
    assert answers == ["miss", "hit"]  # a sync handler: its lookups reach the event all the same
    miss, hit, plain = events
    assert miss.attributes[CACHE_HIT_ATTRIBUTE] is False and hit.attributes[CACHE_HIT_ATTRIBUTE]
    assert CACHE_HIT_ATTRIBUTE not in plain.attributes
    assert miss.arm == hit.arm == plain.arm == ArmAssigner(experiment).pick("ann")


async def test_a_request_whose_event_is_invalid_is_served_and_its_event_counted() -> None:
    events: list[RequestEvent] = []
    app = shop(ShardPools(), events, attributes=lambda scope: {"": 1.0})  # names are 1+ chars
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        answers = [await http.get("/items/1") for _ in range(2)]
    assert [a.json()["id"] for a in answers] == ["1", "1"]
    assert events == [] and _middleware_of(app).report_errors == 2


def test_a_service_name_that_cannot_name_events_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="service '' cannot name events"):
        ShapingMiddleware(Starlette(), service="", pools=ShardPools())
