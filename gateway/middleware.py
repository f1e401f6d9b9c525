"""ASGI middleware: every HTTP request predicted, run in its shard's pool, and reported.

Per request: note what is known at arrival (user from a header or a key function, request
type from the Starlette/FastAPI route template or ``METHOD path``, payload size from
``content-length``), predict its shard from the local routing table, hold a slot of the
shard's pool while the app answers (response bytes paced by the pool's bandwidth), then hand
the completed :class:`RequestEvent` (latency, status, shard, arm, response bytes) to
``report``. A pool that rejects the request answers 503 with ``Retry-After`` and the event is
reported as ``rejected``. Nothing here waits on Kafka: prediction is local, ``report`` must
not block. The per-request steps are :class:`~shardshape.gateway.shaping.RequestShaper`'s,
shared with the WSGI gateway.

>>> from starlette.applications import Starlette
>>> from shardshape.gateway.pools import ShardPools
>>> app = Starlette()
>>> app.add_middleware(ShapingMiddleware, service="shop", pools=ShardPools())
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from starlette.routing import Match

from shardshape.core.contracts import CACHE_HIT_ATTRIBUTE, RequestEvent, Status
from shardshape.gateway.pools import ShardPools, ShardRejected
from shardshape.gateway.shaping import (
    Arrival,
    Attributes,
    RequestShaper,
    Router,
    no_report,
    outcome,
    rejection,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ROUTE_CACHE_SIZE = 4_096
__all__ = ["Attributes", "Router", "ShapingMiddleware"]


class ShapingMiddleware:
    """Runs each HTTP request of ``app`` in the pool of its predicted shard.

    Parameters
    ----------
    app
        Any ASGI app; with ``Starlette.add_middleware`` the keyword arguments go through.
    service
        The service name in events and plans.
    pools
        The shard pools (a ``PlanBackend``: give them to an ``AllocatorClient``).
    routing
        The local shard predictor, usually a started ``RoutingTable``; without one every
        request goes to ``default_shard``.
    report
        Called once per completed request, on the event loop; it must not block (a reporter
        buffers and sends in the background). Its exceptions are logged and counted.
    user_header
        Header naming the user (``Settings.gateway_user_header``), unless ``user_key`` is given.
    user_key, request_type, attributes
        Functions of the ASGI scope that override how the user, the request type and the
        event's attributes are found.
    expected_memory_mib
        The memory a request is expected to need, from its arriving event and predicted shard,
        for the pool's memory admission (default: 0, memory is not checked).
    default_shard
        The shard of every request when there is no ``routing``.
    unshaped_paths
        Paths passed straight to the app, neither pooled nor reported (health probes, status
        pages: they must answer even when every shard is overloaded).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        pools: ShardPools,
        routing: Router | None = None,
        report: Callable[[RequestEvent], None] = no_report,
        user_header: str = "x-user-id",
        user_key: Callable[[Scope], str] | None = None,
        request_type: Callable[[Scope], str] | None = None,
        attributes: Callable[[Scope], Attributes] | None = None,
        expected_memory_mib: Callable[[RequestEvent, int], float] | None = None,
        default_shard: int = 0,
        unshaped_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.service = service
        self.pools = pools
        self.routing = routing
        self.unshaped_paths = frozenset(unshaped_paths)
        self.shaper = RequestShaper(
            service, pools, routing, report, expected_memory_mib, default_shard
        )
        self._user_header = user_header.lower().encode("latin-1")
        self._user_key = user_key
        self._request_type = request_type or self._route_template
        self._attributes = attributes
        self._routes: dict[tuple[str, str], str] = {}

    @property
    def report(self) -> Callable[[RequestEvent], None]:
        """Called once per completed request (may be replaced while serving)."""
        return self.shaper.report

    @report.setter
    def report(self, report: Callable[[RequestEvent], None]) -> None:
        self.shaper.report = report

    @property
    def report_errors(self) -> int:
        """Exceptions ``report`` raised so far (logged, never passed to the client)."""
        return self.shaper.report_errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.unshaped_paths:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        event = self._arriving(scope)
        shard, memory = self.shaper.shard_of(event)
        response = _Response(send)
        status: Status = "error"
        arm = None
        attributes = event.attributes
        try:
            async with self.pools.slot(
                shard, expected_memory_mib=memory, key=event.user_id or event.request_id
            ) as slot:
                arm = slot.arm
                if slot.pool.bucket.rate > 0:
                    response.slot = slot
                await self.app(scope, receive, response.send)
                if slot.cache_hit is not None:
                    attributes = {**attributes, CACHE_HIT_ATTRIBUTE: slot.cache_hit}
            status = outcome(response.status, response.started)
        except ShardRejected as rejected:
            status = "rejected"
            await _reject(rejected, response)
        except TimeoutError:
            status = "timeout"
            raise
        finally:
            self.shaper.completed(
                event,
                started=started,
                status=status,
                shard=shard,
                arm=arm,
                response_bytes=response.bytes,
                attributes=attributes,
            )

    def _arriving(self, scope: Scope) -> Arrival:
        user = ""
        payload = 0.0
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"content-length":
                payload = float(value) if value.isdigit() else 0.0
            elif name == self._user_header:
                user = value.decode("latin-1")
            elif name == b"x-request-id":
                request_id = value.decode("latin-1")
        if self._user_key is not None:
            user = self._user_key(scope)
        return self.shaper.arriving(
            self._request_type(scope),
            user=user,
            payload_bytes=payload,
            request_id=request_id,
            attributes=self._attributes(scope) if self._attributes else None,
        )

    def _route_template(self, scope: Scope) -> str:
        """``METHOD /template`` of the matching Starlette route, else ``METHOD path``."""
        method, path = scope["method"], scope["path"]
        cached = self._routes.get((method, path))
        if cached is not None:
            return cached
        routes = _routes_of(scope.get("app")) or _routes_of(self.app)
        if routes is None:
            return f"{method} {path}"
        template = _match(routes, scope)
        name = f"{method} {template}" if template is not None else f"{method} <unmatched>"
        if len(self._routes) >= _ROUTE_CACHE_SIZE:
            self._routes.clear()
        self._routes[(method, path)] = name
        return name


class _Response:
    """The app's ``send``, counting status and body bytes, paced by the pool's bandwidth."""

    __slots__ = ("_send", "bytes", "slot", "started", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0
        self.bytes = 0
        self.started = False
        self.slot = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            size = len(message.get("body", b""))
            self.bytes += size
            if self.slot is not None and size:
                await self.slot.throttle(size)
        elif kind == "http.response.start":
            self.status = message["status"]
            self.started = True
        await self._send(message)


async def _reject(rejected: ShardRejected, response: _Response) -> None:
    if response.started:  # cannot happen before the slot is held; keep the protocol sane
        return
    headers, body = rejection(rejected)
    await response.send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(k.encode(), v.encode()) for k, v in headers],
        }
    )
    await response.send({"type": "http.response.body", "body": body})


def _routes_of(app: object) -> list | None:
    routes = getattr(getattr(app, "router", None), "routes", None)
    return routes if routes is not None else getattr(app, "routes", None)


def _match(routes: list, scope: Scope) -> str | None:
    """Template of the route that fully matches ``scope`` (through mounts), else ``None``."""
    partial = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        template = getattr(route, "path", "")
        inner = getattr(route, "routes", None)
        if inner:
            nested = _match(inner, {**scope, **child})
            if nested is None:
                continue
            template = template.rstrip("/") + nested
        if match is Match.FULL:
            return template
        partial = partial or template  # the path matched, the method did not
    return partial
