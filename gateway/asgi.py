"""``install(app, service)``: a Starlette or FastAPI app shaped by shardshape in one call.

::

    from shardshape.gateway import install

    app = FastAPI()  # or Starlette(...)
    gateway = install(app, service="shop")

What it adds to ``app`` (before the app starts): the shaping middleware, fed by a
:class:`~shardshape.gateway.wiring.Gateway` built from the settings; the status page at
:data:`~shardshape.gateway.status.STATUS_PATH`, its health beside it (``.../healthz`` and
``.../readyz``) and the Prometheus metrics at ``/metrics`` (answered before the shaping
middleware, never pooled); and the gateway's start and stop
around the app's own lifespan (its ``lifespan=`` or startup and shutdown handlers still run,
inside). Without a broker it logs one line and adds no shaping: every request goes straight
to the app.

>>> from starlette.applications import Starlette
>>> from shardshape.core.settings import Settings
>>> app = Starlette()
>>> gateway = install(app, "shop", settings=Settings(kafka_bootstrap=None), metrics_path=None)
>>> gateway.shaped
False
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from shardshape.core.contracts import RequestEvent
from shardshape.core.settings import Settings
from shardshape.gateway.endpoints import with_endpoints
from shardshape.gateway.middleware import Attributes, Scope, ShapingMiddleware
from shardshape.gateway.prometheus import METRICS_PATH
from shardshape.gateway.reporter import Reporter
from shardshape.gateway.status import STATUS_PATH
from shardshape.gateway.wiring import Gateway, gateway_settings


def install(
    app: Any,
    service: str,
    *,
    settings: Settings | None = None,
    metrics_path: str | None = METRICS_PATH,
    status_path: str | None = STATUS_PATH,
    reporter: Reporter | None = None,
    user_key: Callable[[Scope], str] | None = None,
    request_type: Callable[[Scope], str] | None = None,
    attributes: Callable[[Scope], Attributes] | None = None,
    expected_memory_mib: Callable[[RequestEvent, int], float] | None = None,
    unshaped_paths: Collection[str] = (),
    **overrides: Any,
) -> Gateway:
    """Shape the requests of ``app``, a Starlette or FastAPI app that has not started yet.

    Parameters
    ----------
    app
        The app; its ``add_middleware`` and ``router.lifespan_context`` are used.
    service
        The service name in events, plans and metrics.
    settings
        Default: the ``SHARDSHAPE_*`` environment.
    metrics_path, status_path
        Where the gateway's Prometheus metrics and status page are served (``None``: not
        served). The status page brings its health along, at
        :data:`~shardshape.gateway.status.HEALTH_PATH` and
        :data:`~shardshape.gateway.status.READY_PATH`.
    reporter
        A reporter of the caller's, used and never closed here (default: the gateway's own).
    user_key, request_type, attributes, expected_memory_mib, unshaped_paths
        The hooks of :class:`~shardshape.gateway.middleware.ShapingMiddleware`.
    **overrides
        Settings by field name (``gateway_queue_size=64``, ``kafka_bootstrap="k:9092"``), over
        ``settings``.

    Returns
    -------
    Gateway
        The handle: ``.pools``, ``.routing``, ``.reporter`` (once started), ``.status()``.
    """
    if not (hasattr(app, "add_middleware") and hasattr(app, "router")):
        raise TypeError(
            f"install() takes a Starlette or FastAPI app, got {type(app).__name__}: for another "
            "ASGI app, wrap it in shardshape.gateway.middleware.ShapingMiddleware and start and "
            "stop a shardshape.gateway.wiring.Gateway around it (docs/gateway.md)"
        )
    gateway = Gateway(
        service,
        gateway_settings(settings, overrides),
        reporter=reporter,
        metrics=metrics_path is not None,
    )
    if gateway.shaped:
        app.add_middleware(
            ShapingMiddleware,
            **gateway.shaping_options(),
            user_key=user_key,
            request_type=request_type,
            attributes=attributes,
            expected_memory_mib=expected_memory_mib,
            unshaped_paths=unshaped_paths,
        )
    endpoints = gateway.endpoints(status_path, metrics_path)
    if endpoints:
        app.add_middleware(with_endpoints, endpoints=endpoints)  # outside the shaping
    app.router.lifespan_context = _around(app.router.lifespan_context, gateway)
    return gateway


def _around(lifespan: Callable[[Any], Any], gateway: Gateway) -> Callable[[Any], Any]:
    """``lifespan`` (the app's own) run inside the gateway's start and stop."""

    @contextlib.asynccontextmanager
    async def gateway_lifespan(app: Any) -> AsyncIterator[Any]:
        gateway.start()  # starts threads, waits on nothing
        try:
            async with lifespan(app) as state:
                yield state
        finally:
            await asyncio.to_thread(gateway.stop)

    return gateway_lifespan
