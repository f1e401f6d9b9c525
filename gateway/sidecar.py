"""The sidecar: the gateway as a reverse proxy in front of a service in any language.

``shardshape gateway --service NAME --upstream http://HOST:PORT`` serves
:func:`sidecar_app` with uvicorn: the streaming :class:`~shardshape.gateway.proxy.ReverseProxy`
wrapped by the same :class:`~shardshape.gateway.middleware.ShapingMiddleware` as an ASGI
service, so prediction, per-shard pools, reporting, live plans, the status page and
``/metrics`` are the ASGI path's. Request types come from a routes file or the path's
normalisation (:mod:`shardshape.gateway.route_names`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable
from typing import Any

import orjson

from shardshape.gateway.middleware import ShapingMiddleware
from shardshape.gateway.proxy import ReverseProxy
from shardshape.gateway.route_names import RouteNames
from shardshape.gateway.status import STATUS_PATH
from shardshape.infra.settings import Settings

HEALTH_PATH = "/shardshape/gateway/healthz"


def sidecar_app(
    settings: Settings,
    service: str,
    upstream: str,
    *,
    routes: RouteNames | None = None,
) -> Any:
    """The sidecar as one ASGI app (lifespan included: it starts and stops the gateway).

    Parameters
    ----------
    settings
        The ``gateway_*`` and Kafka settings (``gateway_upstream_timeout_ms`` for the 504).
    service
        The service name in events and plans.
    upstream
        ``http://host:port`` of the service.
    routes
        Request types by template (``--routes FILE``); default: normalised paths.
    """
    from shardshape.gateway.prometheus import with_metrics
    from shardshape.gateway.runtime import GatewayRuntime

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per forwarded request
    names = routes or RouteNames(max_routes=settings.gateway_max_routes)
    proxy = ReverseProxy(upstream, timeout_s=settings.gateway_upstream_timeout_ms / 1000)
    runtime = GatewayRuntime(settings, service)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, runtime.start, _closer(runtime, proxy))
        elif scope["path"] == STATUS_PATH:
            await _json(send, runtime.status())
        elif scope["path"] == HEALTH_PATH:
            await _json(send, {"ok": True})
        else:
            await proxy(scope, receive, send)

    shaped = ShapingMiddleware(
        app,
        service=service,
        pools=runtime.pools,
        routing=runtime.routing,
        report=runtime.report,
        user_header=settings.gateway_user_header,
        request_type=lambda scope: names(scope["method"], scope["path"]),
        unshaped_paths={STATUS_PATH, HEALTH_PATH},
    )
    return with_metrics(shaped, runtime.metrics)


def _closer(runtime: Any, proxy: ReverseProxy) -> Callable[[], Any]:
    async def close() -> None:
        await asyncio.to_thread(runtime.stop)
        await proxy.aclose()

    return close


async def _lifespan(receive: Any, send: Any, start: Callable[[], None], stop: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                start()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            # What is loaded now lives as long as the process: keep it out of the collector's
            # full passes, which otherwise stall every request in flight (~200 ms here).
            gc.freeze()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            with contextlib.suppress(Exception):
                await stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _json(send: Any, body: object) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
