"""The sidecar: the gateway as a reverse proxy in front of a service in any language.

``shardshape gateway --service NAME --upstream http://HOST:PORT`` serves
:func:`sidecar_app` with uvicorn: the streaming :class:`~shardshape.gateway.proxy.ReverseProxy`
wrapped by the same :class:`~shardshape.gateway.middleware.ShapingMiddleware` and fed by the
same :class:`~shardshape.gateway.wiring.Gateway` as an ASGI service's ``install``, so
prediction, per-shard pools, reporting, live plans, the status page and ``/metrics`` are the
ASGI path's. Request types come from a routes file or the path's normalisation
(:mod:`shardshape.gateway.route_names`). Without a broker it forwards every request unshaped,
as ``install`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable
from typing import Any

from shardshape.core.settings import Settings
from shardshape.gateway.endpoints import with_endpoints
from shardshape.gateway.middleware import ShapingMiddleware
from shardshape.gateway.proxy import ReverseProxy
from shardshape.gateway.route_names import RouteNames
from shardshape.gateway.wiring import Gateway


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
    names = routes or RouteNames(max_routes=settings.gateway_max_routes)
    proxy = ReverseProxy(upstream, timeout_s=settings.gateway_upstream_timeout_ms / 1000)
    gateway = Gateway(service, settings)

    async def forward(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, gateway.start, _closer(gateway, proxy))
        else:
            await proxy(scope, receive, send)

    app: Any = forward
    if gateway.shaped:
        app = ShapingMiddleware(
            forward,
            **gateway.shaping_options(),
            request_type=lambda scope: names(scope["method"], scope["path"]),
        )
    # The status page, health, readiness and metrics are answered here: never pooled, never
    # forwarded.
    return with_endpoints(app, gateway.endpoints())


def _closer(gateway: Gateway, proxy: ReverseProxy) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        await asyncio.to_thread(gateway.stop)
        await proxy.aclose()

    return close


async def _lifespan(
    receive: Any, send: Any, start: Callable[[], object], stop: Callable[[], Awaitable[None]]
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                start()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            # What is loaded now lives as long as the process: keep it out of the collector's
            # full passes, which otherwise stall every request in flight (~150 ms here).
            gc.freeze()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            with contextlib.suppress(Exception):
                await stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
