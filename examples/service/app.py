"""An example service behind the shaping middleware: three endpoints that behave very differently.

- ``GET /items/{item_id}``: a fast read (a store read of ``read_ms``, cached in the shard's
  cache, so a shard with a cache answers repeated ids at once);
- ``GET /exports/{report}``: a heavy export (a scan of a slow downstream for ``scan_ms``, then
  ``rows`` rows of CPU work in a worker thread); expects 64 MiB, for memory admission;
- ``GET /downloads/{name}``: a large download of ``mib`` MiB streamed in 64 KiB chunks (paced
  by the shard's bandwidth);
- ``GET /shardshape/gateway/status``: routing table, plan, pool states and the reporter's
  counters (what ``shardshape doctor --gateway-url`` reads); ``GET /healthz``.

With a broker (``SHARDSHAPE_KAFKA_BOOTSTRAP``) the gateway follows the routing and plans topics,
reports every completed request to the requests topic and, every few seconds while requests
wait in its pools, how many wait per shard to the planner's topic; without one every request
runs in the default pool and is reported nowhere. Run it with::

    python examples/service/app.py --port 8000

and load it with ``examples/service/loadgen.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shardshape.allocator.client import AllocatorClient
from shardshape.gateway.middleware import ShapingMiddleware
from shardshape.gateway.pools import ShardPools, current_slot
from shardshape.gateway.reporter import Reporter, default_gateway_id
from shardshape.gateway.routing_table import RoutingTable
from shardshape.gateway.status import (
    HEALTH_PATH,
    READY_PATH,
    STATUS_PATH,
    gateway_status,
    health_routes,
)
from shardshape.infra.settings import Settings, load_settings
from shardshape.streams.contracts import RequestEvent

SERVICE = "shop"
EXPORT_MEMORY_MIB = 64.0
CHUNK = 64 * 1024

log = logging.getLogger("shardshape.example")


def _number(request: Request, name: str, default: float, most: float) -> float:
    try:
        value = float(request.query_params.get(name, default))
    except ValueError:
        value = default
    return min(max(value, 0.0), most)


async def item(request: Request) -> Response:
    item_id = request.path_params["item_id"]
    slot = current_slot()
    cache = slot.cache if slot is not None else None
    body = cache.get(item_id) if cache is not None else None
    if body is None:
        await asyncio.sleep(_number(request, "read_ms", 20, 10_000) / 1000)  # the store read
        body = f'{{"item": "{item_id}"}}'.encode()
        if cache is not None:
            cache.set(item_id, body)
    return Response(body, media_type="application/json")


def _crunch(rows: int) -> str:
    digest = hashlib.sha256()
    for row in range(rows):
        digest.update(row.to_bytes(8, "little"))
    return digest.hexdigest()


async def export(request: Request) -> Response:
    await asyncio.sleep(_number(request, "scan_ms", 200, 60_000) / 1000)  # the slow downstream
    rows = int(_number(request, "rows", 20_000, 10_000_000))
    digest = await run_in_threadpool(_crunch, rows)
    return JSONResponse({"report": request.path_params["report"], "rows": rows, "sha": digest})


async def download(request: Request) -> Response:
    size = int(_number(request, "mib", 4, 1024) * 1024 * 1024)

    async def body() -> AsyncIterator[bytes]:
        chunk = b"x" * CHUNK
        for start in range(0, size, CHUNK):
            yield chunk[: size - start]

    return StreamingResponse(body(), media_type="application/octet-stream")


def _expected_memory_mib(event: RequestEvent, shard_id: int) -> float:
    return EXPORT_MEMORY_MIB if event.request_type.startswith("GET /exports/") else 0.0


def _report_nowhere(event: RequestEvent) -> None:
    return None


def create_app(
    settings: Settings,
    report: Callable[[RequestEvent], None] | None = None,
    *,
    reporter: Reporter | None = None,
) -> Starlette:
    """The example service; with a bootstrap set it follows routing and plans from Kafka and
    reports each completed request with a :class:`~shardshape.gateway.reporter.Reporter`.

    Without ``report`` and ``reporter``, the service makes its own reporter (when a bootstrap
    is set) and closes it when it shuts down. A ``reporter`` given is the caller's to close;
    its counters show in the status page. A ``report`` given is called instead of the
    reporter's (e.g. to count each event, then hand it to ``reporter.report``). The reporter,
    own or given, also sends the planner how many requests wait in the pools, by shard
    (:meth:`~shardshape.gateway.reporter.Reporter.watch_queues`).
    """
    pools = ShardPools.from_settings(settings)
    routing: RoutingTable | None = None
    allocator: AllocatorClient | None = None
    own_reporter: Reporter | None = None
    if settings.kafka_bootstrap:
        routing = RoutingTable.from_settings(settings)
        allocator = AllocatorClient.from_settings(settings, SERVICE, pools)
        if reporter is None and report is None:
            reporter = own_reporter = Reporter(settings, gateway_id=default_gateway_id())
    if reporter is not None:
        # The planner sees a burst waiting in the pools within seconds, not a window later.
        reporter.watch_queues(SERVICE, pools.queued_by_shard)
    if report is None:
        report = reporter.report if reporter is not None else _report_nowhere
    gateway_id = reporter.gateway_id if reporter is not None else ""

    async def status(request: Request) -> Response:
        state = gateway_status(
            SERVICE, pools, routing, allocator, gateway_id=gateway_id, reporter=reporter
        )
        return JSONResponse({**state, "shaping": pools.shaping})

    async def healthz(request: Request) -> Response:
        return Response("ok")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Both follow their topics in background threads; the service never waits on Kafka.
        for follower in (routing, allocator):
            if follower is not None:
                follower.start()
        try:
            yield
        finally:
            if own_reporter is not None:
                # Requests have stopped: send what is held, for as long as it takes to notice
                # a stalled Kafka, then drop (counted) what is left.
                await asyncio.to_thread(own_reporter.close, settings.reporter_stall_ms / 1000)
            for follower in (allocator, routing):
                if follower is not None:
                    await asyncio.to_thread(follower.stop)

    app = Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/exports/{report}", export),
            Route("/downloads/{name}", download),
            Route(STATUS_PATH, status),
            Route("/healthz", healthz),
            *health_routes(routing, allocator),
        ],
        lifespan=lifespan,
    )
    app.state.pools = pools
    app.add_middleware(
        ShapingMiddleware,
        service=SERVICE,
        pools=pools,
        routing=routing,
        report=report,
        user_header=settings.gateway_user_header,
        expected_memory_mib=_expected_memory_mib,
        unshaped_paths={"/healthz", STATUS_PATH, HEALTH_PATH, READY_PATH},
    )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper().replace("WARN", "WARNING"))
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
