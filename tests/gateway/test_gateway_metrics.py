"""The gateway's /metrics over real HTTP: requests per shard and their latency histogram from what
the middleware reports, pool occupancy and rejections read from the live pools."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from shardshape.core.contracts import RequestEvent
from shardshape.gateway.limits import PoolDefaults
from shardshape.gateway.middleware import ShapingMiddleware
from shardshape.gateway.pools import ShardPools
from shardshape.gateway.prometheus import GatewayMetrics, with_metrics
from tests.support.exposition import labelled, samples
from tests.support.plans import plan, shard
from tests.support.serving import serve


async def test_metrics_count_requests_per_shard_and_pool_rejections() -> None:
    pools = ShardPools(PoolDefaults(queue_size=0))
    pools.apply(plan(4, shard(0, concurrency=1)))
    reported: list[RequestEvent] = []
    metrics = GatewayMetrics("shop", pools)

    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: Request) -> Response:
        entered.set()
        # Held until the test has looked, and at least 0.3 s of work.
        await asyncio.gather(release.wait(), asyncio.sleep(0.3))
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/slow", slow)])
    app.add_middleware(
        ShapingMiddleware, service="shop", pools=pools, report=metrics.observing(reported.append)
    )
    async with serve(with_metrics(app, metrics)) as url, httpx.AsyncClient(base_url=url) as http:
        first = asyncio.create_task(http.get("/slow"))
        await asyncio.wait_for(entered.wait(), 10)
        during = samples((await http.get("/metrics")).text)
        rejected = await http.get("/slow")  # the one slot is taken and there is no queue
        release.set()
        assert (await first).text == "done" and rejected.status_code == 503
        response = await http.get("/metrics")
    after = samples(response.text)
    assert response.headers["content-type"].startswith("text/plain")
    pool = labelled(pool="shard 0", service="shop")
    assert during[("shardshape_gateway_pool_in_flight", pool)] == 1
    assert during[("shardshape_gateway_pool_occupancy_ratio", pool)] == 1.0
    assert after[("shardshape_gateway_pool_in_flight", pool)] == 0
    assert after[("shardshape_gateway_pool_slots", pool)] == 1
    rejections = labelled(pool="shard 0", service="shop", reason="queue_full")
    assert after[("shardshape_gateway_pool_rejections_total", rejections)] == 1
    by_status = {
        dict(labels)["status"]: value
        for (name, labels), value in after.items()
        if name == "shardshape_shard_requests_total"
    }
    assert by_status == {"ok": 1.0, "rejected": 1.0}
    shard_0 = labelled(service="shop", shard="0", arm="")
    assert after[("shardshape_shard_request_duration_seconds_count", shard_0)] == 2
    fast = labelled(service="shop", shard="0", arm="", le="0.25")
    # The rejection was answered at once; the slow request took 0.3 s.
    assert after[("shardshape_shard_request_duration_seconds_bucket", fast)] == 1
    assert after[("shardshape_plan_version", labelled(service="shop"))] == 4
    assert ("process_cpu_seconds_total", ()) in after
    assert [e.status for e in reported] == ["rejected", "ok"]  # handed on after counting


async def test_metrics_negotiate_the_format_and_gzip() -> None:
    metrics = GatewayMetrics("shop", ShardPools(PoolDefaults()))
    app = with_metrics(Starlette(routes=[]), metrics)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        plain = await http.get("/metrics", headers={"Accept-Encoding": "identity"})
        zipped = await http.get("/metrics", headers={"Accept-Encoding": "gzip"})
        open_metrics = await http.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert samples(zipped.text).keys() == samples(plain.text).keys()  # httpx unzipped it
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")
