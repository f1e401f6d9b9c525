"""Cost of the shaping middleware per request, against the bare app, in one run.

Run: ``python benchmarks/bench_middleware.py [requests]``. Prints figures; asserts nothing
(targets: at most 20 us added at p50 and 50 us at p99; ``RoutingTable.predict`` under half the
bare app's p50).

Both apps are the same Starlette app, called as ASGI in-process (no network, no server), so
the difference is the middleware's own work: building the arriving event, resolving the route
template, predicting the shard with a real routing table (a trained snapshot model plus
routing entries), taking and releasing a pool slot, counting the response and reporting the
completed event (into a deque, as a buffering reporter would). Calls to the two apps
alternate, so drift in the machine's load hits both alike; a call of ``RoutingTable.predict``
alone, for the same user, is timed beside each pair.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import sys
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from shardshape.core.contracts import (
    AllocationPlan,
    RequestEvent,
    ResourceSpec,
    ShardSpec,
    encode,
    snapshot_key,
)
from shardshape.gateway.middleware import ShapingMiddleware
from shardshape.gateway.pools import ShardPools
from shardshape.gateway.routing_table import RoutingTable
from shardshape.models.features import profile_key
from shardshape.models.profiler import Profiler
from shardshape.models.synthetic import SyntheticStream

BATCH = 500


async def search(request: Request) -> Response:
    return PlainTextResponse("ok")


def routing_table() -> RoutingTable:
    """A routing table loaded with a trained snapshot and its routing entries."""
    profiler = Profiler("shop")
    events = list(SyntheticStream(seed=1).events(20_000))
    for i in range(0, len(events), BATCH):
        profiler.process_batch(events[i : i + BATCH])
    table = RoutingTable({"bootstrap.servers": "127.0.0.1:1"}, "routing")  # fed, not started
    table.apply(snapshot_key("shop"), encode(profiler.snapshot()))
    for entry in profiler.routing_changes():
        table.apply(entry.key.encode(), encode(entry))
    return table


def plan_of(table: RoutingTable) -> AllocationPlan:
    share = ResourceSpec(concurrency=64)
    shards = [
        ShardSpec(shard_id=s.shard_id, per_replica=share) for s in table.snapshot("shop").shards
    ]
    return AllocationPlan(plan_id="shop:1", version=1, service="shop", pool_id="p", shards=shards)


def scope(user: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/search",
        "raw_path": b"/search",
        "root_path": "",
        "query_string": b"q=shoes",
        "headers": [(b"host", b"shop"), (b"x-user-id", user.encode()), (b"content-length", b"0")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


async def receive() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict) -> None:
    return None


async def measure(n: int) -> None:
    table = routing_table()
    pools = ShardPools()
    pools.apply(plan_of(table))
    reported: collections.deque = collections.deque(maxlen=100_000)
    bare = Starlette(routes=[Route("/search", search)])
    shaped = Starlette(routes=[Route("/search", search)])
    shaped.add_middleware(
        ShapingMiddleware, service="shop", pools=pools, routing=table, report=reported.append
    )
    users = [f"u{i}" for i in range(600)]  # known keys and unseen ones (model predictions)
    arriving = [
        RequestEvent(request_id="-", ts=0.0, service="shop", request_type="GET /search", user_id=u)
        for u in users
    ]
    timings: dict[str, list[float]] = {"bare": [], "shaped": []}
    predict: dict[str, list[float]] = {"known keys": [], "unseen keys": []}
    clock = time.perf_counter_ns
    for i in range(n + 2_000):  # the first 2,000 of each warm up
        for name, app in (("bare", bare), ("shaped", shaped)):
            request = scope(users[i % len(users)])
            started = clock()
            await app(request, receive, send)
            elapsed = clock() - started
            if i >= 2_000:
                timings[name].append(elapsed / 1000)
        event = arriving[i % len(users)]
        started = clock()
        table.predict(event)
        elapsed = clock() - started
        if i >= 2_000:
            key = profile_key(event.service, event.request_type, event.user_id)
            predict["known keys" if table.entry(key) else "unseen keys"].append(elapsed / 1000)
    assert len(reported) > 0 and pools.state(None).in_use == 0

    def q(values: list[float], p: float) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[p - 1]

    b50, b99 = q(timings["bare"], 50), q(timings["bare"], 99)
    s50, s99 = q(timings["shaped"], 50), q(timings["shaped"], 99)
    print(f"command: python benchmarks/bench_middleware.py {n}")
    print(f"{n:,} requests per app, alternating; in-process ASGI calls, microseconds per request")
    print(f"{'':<10}{'p50':>9}{'p99':>9}")
    print(f"{'bare':<10}{b50:>9.1f}{b99:>9.1f}")
    print(f"{'shaped':<10}{s50:>9.1f}{s99:>9.1f}")
    print(f"added     {s50 - b50:>9.1f}{s99 - b99:>9.1f}   (targets: p50 <= 20, p99 <= 50)")
    print(f"ratio     {s50 / b50:>9.2f}{s99 / b99:>9.2f}")
    for name, values in predict.items():
        median = statistics.median(values)
        print(
            f"RoutingTable.predict, {name}: median {median:.2f} us = {median / b50:.2f} x bare "
            f"p50 (target: under 0.5), p99 {q(values, 99):.2f} us ({len(values):,} calls)"
        )
    sources = collections.Counter(table.predict(e).source for e in list(reported)[:2_000])
    print(f"predictions by source (first 2,000): {dict(sources)}")


def main(n: int = 20_000) -> None:
    asyncio.run(measure(n))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
