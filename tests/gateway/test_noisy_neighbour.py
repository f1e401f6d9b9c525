"""Noisy neighbour, with real processes and real HTTP load.

The example service runs as its own process, routing and plans come from the broker. Two
shards: fast reads (shard 0) and heavy exports (shard 1), each holding a slot while it awaits
its downstream, so the pool's slots and queue are what the exports saturate. With shaping, the
exports fill their own shard's slots and queue and the reads keep their unloaded latency; with
one shared pool of the same total size, the reads queue behind the exports.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from shardshape.gateway.status import STATUS_PATH
from shardshape.infra.settings import Settings
from shardshape.infra.topics import create_topics
from shardshape.streams.contracts import encode
from tests.conftest import settings_env
from tests.gateway.plans import plan, route_entry, shard
from tests.gateway.serving import example, example_server

pytestmark = [pytest.mark.slow, pytest.mark.broker]

READ = "/items/{n}?read_ms=30"
EXPORT = "/exports/r{n}?scan_ms=150&rows=0"
SECONDS = 3.0


def _wait_for_plan(url: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}{STATUS_PATH}").json()
        if status["plan_version"] == 1 and status["routing_entries"] == 2:
            return status
        time.sleep(0.1)
    raise AssertionError(f"the service never took the plan and routes: {status}")


def _measure(url: str) -> dict[str, float]:
    """Read p99 alone, then while exports saturate their shard; export p50 as a check."""
    loadgen = example("loadgen")
    reads = loadgen.Workload("reads", READ, "reader", clients=2)
    exports = loadgen.Workload("exports", EXPORT, "exporter", clients=24)

    async def run() -> dict[str, float]:
        await loadgen.run_load(url, [reads], 0.5)  # warm connections and code paths
        alone = await loadgen.run_load(url, [reads], SECONDS)

        async def reads_after_ramp():
            await asyncio.sleep(0.5)  # the exports fill their slots and queue first
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

    return asyncio.run(run())


def test_shaping_keeps_reads_fast_next_to_saturated_exports_and_one_pool_does_not(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    service = example("app").SERVICE
    routes = [
        route_entry(service, "GET /items/{item_id}", "reader", 0),
        route_entry(service, "GET /exports/{report}", "exporter", 1),
    ]
    layout = plan(
        1,
        shard(0, concurrency=4, timeout_ms=20_000),
        shard(1, concurrency=4, queue=64, timeout_ms=20_000),
    )
    producer = Producer(settings.confluent_config())
    for key, value in routes:
        producer.produce(settings.topic_routing, key=key, value=value)
    producer.produce(settings.topic_plans, key=service.encode(), value=encode(layout))
    assert producer.flush(10) == 0

    figures = {}
    for shaping in (True, False):
        env = {**settings_env(settings), "SHARDSHAPE_GATEWAY_SHAPING": str(shaping).lower()}
        with example_server(env, tmp_path / f"service-{shaping}.log") as url:
            status = _wait_for_plan(url)
            assert status["shaping"] is shaping
            figures[shaping] = _measure(url)
            pools = {p["name"]: p for p in httpx.get(f"{url}{STATUS_PATH}").json()["pools"]}
        if shaping:
            assert {"shard 0", "shard 1", "default"} == set(pools)
        else:
            assert set(pools) == {"shared"} and pools["shared"]["limits"]["concurrency"] == 8

    shaped, shared = figures[True], figures[False]
    summary = f"shaped {shaped}, one shared pool {shared}"
    print(summary)
    # The exports were saturated: each waited in a queue well beyond its own 150 ms.
    assert shaped["exports_p50"] > 2 * 150 and shared["exports_p50"] > 2 * 150, summary
    assert shaped["loaded_p99"] <= 1.5 * shaped["alone_p99"], summary
    assert shared["loaded_p99"] > 3 * shared["alone_p99"], summary
