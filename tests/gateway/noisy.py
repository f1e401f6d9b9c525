"""The noisy-neighbour measurement shared by the ASGI, WSGI and sidecar tests: a light shard's
read p99 alone, then next to a heavy shard saturated by exports; and the plan they run under.

Two shards: fast reads (shard 0) and heavy exports (shard 1), each holding a slot while it
awaits its downstream, so the pool's slots and queue are what the exports saturate. With
shaping, the exports fill their own shard's slots and queue and the reads keep their unloaded
latency; with one shared pool of the same total size, the reads queue behind the exports.
"""

from __future__ import annotations

import asyncio
import gc

import httpx
from confluent_kafka import Producer

from shardshape.core.contracts import encode
from shardshape.core.settings import Settings
from shardshape.gateway.status import STATUS_PATH
from tests.support.plans import plan, route_entry, shard
from tests.support.polling import until, wait_until
from tests.support.serving import example

SECONDS = 3.0
EXPORT_MS = 150


def publish_reads_and_exports(
    settings: Settings, service: str, read_type: str, export_type: str
) -> None:
    """Route user ``reader``'s ``read_type`` to shard 0 and ``exporter``'s ``export_type`` to
    shard 1, and plan 4 slots for each (the exports with a deep queue)."""
    layout = plan(
        1,
        shard(0, concurrency=4, timeout_ms=20_000),
        shard(1, concurrency=4, queue=64, timeout_ms=20_000),
        service=service,
    )
    producer = Producer(settings.confluent_config())
    for key, value in (
        route_entry(service, read_type, "reader", 0),
        route_entry(service, export_type, "exporter", 1),
    ):
        producer.produce(settings.topic_routing, key=key, value=value)
    producer.produce(settings.topic_plans, key=service.encode(), value=encode(layout))
    assert producer.flush(10) == 0


def wait_for_plan(url: str, version: int = 1, routes: int = 2, timeout_s: float = 30) -> dict:
    """The gateway's status once it applies plan ``version`` and holds ``routes`` entries."""

    def applied() -> dict | None:
        status = httpx.get(f"{url}{STATUS_PATH}").json()
        taken = status["plan_version"] == version and status["routing_entries"] == routes
        return status if taken else None

    return wait_until(applied, timeout_s, f"the gateway on plan v{version} with {routes} routes")


def pool_load(url: str, name: str) -> tuple[int, int]:
    """(in flight, queued) of the gateway's pool ``name``, from its status page."""
    pools = httpx.get(f"{url}{STATUS_PATH}").json()["pools"]
    return next((p["in_flight"], p["queued"]) for p in pools if p["name"] == name)


async def _exports_queue(http: httpx.AsyncClient) -> list[dict]:
    """The gateway's pools once one has requests waiting (only the exports run yet), else []."""
    pools = (await http.get(STATUS_PATH)).json()["pools"]
    return pools if any(p["queued"] for p in pools) else []


def measure(url: str, read_path: str, export_path: str) -> dict[str, float]:
    """Read p99 alone, then while 24 export clients saturate their shard; export p50 too."""
    loadgen = example("loadgen")
    reads = loadgen.Workload("reads", read_path, "reader", clients=2)
    exports = loadgen.Workload("exports", export_path, "exporter", clients=24)

    async def run() -> dict[str, float]:
        await loadgen.run_load(url, [reads], 0.5)  # warm connections and code paths
        alone = await loadgen.run_load(url, [reads], SECONDS)

        async def reads_after_ramp():
            async with httpx.AsyncClient(base_url=url) as http:
                await until(lambda: _exports_queue(http), 10,
                            "the exports filling their slots and queueing",
                            explain=lambda: httpx.get(f"{url}{STATUS_PATH}").text)  # fmt: skip
            return await loadgen.run_load(url, [reads], SECONDS)

        loaded, noisy = await asyncio.gather(
            reads_after_ramp(), loadgen.run_load(url, [exports], SECONDS + 1.0)
        )
        for result in (alone["reads"], loaded["reads"], noisy["exports"]):
            assert set(result.statuses) == {200} and not result.failures, result
        return {
            "alone_p99": alone["reads"].quantile_ms(0.99),
            "loaded_p99": loaded["reads"].quantile_ms(0.99),
            "exports_p50": noisy["exports"].quantile_ms(0.5),
        }

    # The test process holds a large heap (every test module, the broker fixture): keep it out
    # of the collector's full passes while measuring, or their pauses land in the client's
    # latencies, not the service's.
    gc.collect()
    gc.freeze()
    try:
        return asyncio.run(run())
    finally:
        gc.unfreeze()


def assert_isolated(shaped: dict[str, float], shared: dict[str, float]) -> None:
    """Reads keep their p99 (<= 1.5x) with shaping and lose it (> 3x) in one shared pool."""
    summary = f"shaped {shaped}, one shared pool {shared}"
    print(summary)
    # The exports were saturated: each waited in a queue well beyond its own time.
    assert shaped["exports_p50"] > 2 * EXPORT_MS and shared["exports_p50"] > 2 * EXPORT_MS, summary
    assert shaped["loaded_p99"] <= 1.5 * shaped["alone_p99"], summary
    assert shared["loaded_p99"] > 3 * shared["alone_p99"], summary
