"""An example service behind the shaping middleware: three endpoints that behave very differently.

- ``GET /items/{item_id}``: a fast read (a store read of ``read_ms``, cached in the shard's
  cache, so a shard with a cache answers repeated ids at once);
- ``GET /exports/{report}``: a heavy export (a scan of a slow downstream for ``scan_ms``, then
  ``rows`` rows of CPU work in a worker thread); expects 64 MiB, for memory admission;
- ``GET /downloads/{name}``: a large download of ``mib`` MiB streamed in 64 KiB chunks (paced
  by the shard's bandwidth);
- ``GET /healthz``; and from the gateway: ``GET /shardshape/gateway/status`` (routing table,
  plan, pool states and the reporter's counters: what ``shardshape doctor --gateway-url``
  reads), its health ``GET /shardshape/gateway/healthz`` and ``/readyz``, and ``GET /metrics``
  (Prometheus).

One call, ``install(app, SERVICE, ...)``, shapes it: with a broker
(``SHARDSHAPE_KAFKA_BOOTSTRAP``) the gateway follows the routing and plans topics, reports
every completed request to the requests topic and, every few seconds while requests wait in its
pools, how many wait per shard to the planner's topic; without one it logs that it runs
unshaped and every request goes straight to the app. Run it with::

    python examples/service/app.py --port 8000

and load it with ``examples/service/loadgen.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shardshape.core.contracts import RequestEvent
from shardshape.core.settings import Settings, load_settings
from shardshape.gateway import install
from shardshape.gateway.pools import current_slot

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


async def healthz(request: Request) -> Response:
    return Response("ok")


def _expected_memory_mib(event: RequestEvent, shard_id: int) -> float:
    return EXPORT_MEMORY_MIB if event.request_type.startswith("GET /exports/") else 0.0


def create_app(settings: Settings | None = None, **options: Any) -> Starlette:
    """The example service, shaped by :func:`shardshape.gateway.install` from ``settings``
    (default: the environment); ``options`` go to ``install`` (e.g. ``reporter=`` to report
    with one you close yourself). ``app.state.gateway`` is the gateway's handle."""
    app = Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/exports/{report}", export),
            Route("/downloads/{name}", download),
            Route("/healthz", healthz),
        ]
    )
    app.state.gateway = install(
        app,
        SERVICE,
        settings=settings,
        expected_memory_mib=_expected_memory_mib,
        unshaped_paths={"/healthz"},
        **options,
    )
    app.state.pools = app.state.gateway.pools
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
