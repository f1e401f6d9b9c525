"""ASGI middleware: every HTTP request predicted, run in its shard's pool, and reported.

Per request: note what is known at arrival (user from a header or a key function, request
type from the Starlette/FastAPI route template or ``METHOD path``, payload size from
``content-length``), predict its shard from the local routing table, hold a slot of the
shard's pool while the app answers (response bytes paced by the pool's bandwidth), then hand
the completed :class:`RequestEvent` (latency, status, shard, arm, response bytes) to
``report``. A pool that rejects the request answers 503 with ``Retry-After`` and the event is
reported as ``rejected``. Nothing here waits on Kafka: prediction is local, ``report`` must
not block. The event is built and validated once, when the request completes (see
``docs/gateway.md``, "Cost per request").

>>> from starlette.applications import Starlette
>>> from shardshape.gateway.pools import ShardPools
>>> app = Starlette()
>>> app.add_middleware(ShapingMiddleware, service="shop", pools=ShardPools())
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping
from typing import Any, NamedTuple, Protocol

import orjson
from pydantic import ValidationError
from starlette.routing import Match

from shardshape.gateway.pools import ShardPools, ShardRejected
from shardshape.gateway.routing_table import ArrivingRequest, ShardAssignment
from shardshape.streams.contracts import CACHE_HIT_ATTRIBUTE, MAX_ID_CHARS, RequestEvent

log = logging.getLogger("shardshape.gateway.middleware")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Attributes = Mapping[str, float | bool | str]

_ROUTE_CACHE_SIZE = 4_096
# RequestEvent(**fields) without pydantic's Python-level wrapper (half the cost per request).
_validate_event = RequestEvent.__pydantic_validator__.validate_python


class Router(Protocol):
    """What predicts a shard locally (:class:`shardshape.gateway.routing_table.RoutingTable`)."""

    def predict(self, request: ArrivingRequest) -> ShardAssignment: ...


def _no_report(event: RequestEvent) -> None:
    return None


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
        buffers and sends in the background). Its exceptions are logged and counted in
        ``report_errors``, as are events that fail validation (the request is served, its
        event dropped).
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
        report: Callable[[RequestEvent], None] = _no_report,
        user_header: str = "x-user-id",
        user_key: Callable[[Scope], str] | None = None,
        request_type: Callable[[Scope], str] | None = None,
        attributes: Callable[[Scope], Attributes] | None = None,
        expected_memory_mib: Callable[[RequestEvent, int], float] | None = None,
        default_shard: int = 0,
        unshaped_paths: Collection[str] = (),
    ) -> None:
        try:  # a bad name would make every event invalid: say so now, not per request
            RequestEvent(request_id="-", ts=0.0, service=service, request_type="-")
        except ValidationError as invalid:
            why = invalid.errors()[0]["msg"]
            raise ValueError(f"service {service!r} cannot name events: {why}") from None
        self.app = app
        self.service = service
        self.pools = pools
        self.routing = routing
        self.report = report
        self.default_shard = default_shard
        self.unshaped_paths = frozenset(unshaped_paths)
        self._user_header = user_header.lower().encode("latin-1")
        self._user_key = user_key
        self._request_type = request_type or self._route_template
        self._attributes = attributes
        self._expected_memory = expected_memory_mib
        self._routes: dict[tuple[str, str], str] = {}
        self._ids = itertools.count()
        self._id_prefix = os.urandom(6).hex()
        self.report_errors = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.unshaped_paths:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        arrival = self._arriving(scope)
        shard = self.default_shard
        if self.routing is not None:
            shard = self.routing.predict(arrival).shard_id
        memory = 0.0
        if self._expected_memory is not None:
            memory = self._expected_memory(_validate_event(arrival._asdict()), shard)
        response = _Response(send)
        status = "error"
        arm = None
        attributes = arrival.attributes
        try:
            async with self.pools.slot(
                shard, expected_memory_mib=memory, key=arrival.user_id or arrival.request_id
            ) as slot:
                arm = slot.arm
                if slot.pool.bucket.rate > 0:
                    response.slot = slot
                await self.app(scope, receive, response.send)
                if slot.cache_hit is not None:
                    attributes = {**attributes, CACHE_HIT_ATTRIBUTE: slot.cache_hit}
            status = "error" if response.status >= 500 else "ok"
        except ShardRejected as rejected:
            status = "rejected"
            await _reject(rejected, response)
        except TimeoutError:
            status = "timeout"
            raise
        finally:
            self._report(
                arrival,
                (time.perf_counter() - started) * 1000,
                status,
                shard,
                arm,
                float(response.bytes),
                attributes,
            )

    def _arriving(self, scope: Scope) -> _Arrival:
        user = ""
        payload = 0.0
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"content-length":
                payload = float(value) if value.isdigit() else 0.0
            elif name == self._user_header:
                user = value.decode("latin-1")[:MAX_ID_CHARS]
            elif name == b"x-request-id":
                request_id = value.decode("latin-1")[:MAX_ID_CHARS]
        if self._user_key is not None:
            user = self._user_key(scope)[:MAX_ID_CHARS]
        return _Arrival(
            request_id or f"{self._id_prefix}-{next(self._ids)}",
            time.time(),
            self.service,
            self._request_type(scope)[:MAX_ID_CHARS] or "unknown",
            user,
            payload,
            self._attributes(scope) if self._attributes else {},
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

    def _report(
        self,
        arrival: _Arrival,
        latency_ms: float,
        status: str,
        shard: int,
        arm: str | None,
        response_bytes: float,
        attributes: Attributes,
    ) -> None:
        # The event is validated here, once: a request whose event is invalid (a user_key,
        # request_type or attributes function returning what a RequestEvent cannot hold) is
        # served all the same, and its event is dropped and counted like a failed report.
        try:
            event = _validate_event(
                {
                    "request_id": arrival.request_id,
                    "ts": arrival.ts,
                    "service": arrival.service,
                    "request_type": arrival.request_type,
                    "user_id": arrival.user_id,
                    "payload_bytes": arrival.payload_bytes,
                    "latency_ms": latency_ms,
                    "status": status,
                    "shard_id": shard,
                    "arm": arm,
                    "response_bytes": response_bytes,
                    "attributes": attributes,
                }
            )
        except ValidationError as invalid:
            self._report_failed("dropped an invalid event", invalid)
            return
        try:
            self.report(event)
        except Exception as error:
            self._report_failed("report() failed", error)

    def _report_failed(self, what: str, error: Exception) -> None:
        self.report_errors += 1
        if self.report_errors == 1 or self.report_errors % 1000 == 0:
            log.error("%s (%d times so far)", what, self.report_errors, exc_info=error)


class _Arrival(NamedTuple):
    """What the middleware knows of a request when it arrives (an ``ArrivingRequest``).

    A plain tuple until the request completes: the :class:`RequestEvent` is built and
    validated once, with the outcome, instead of once at arrival and copied at the end.
    """

    request_id: str
    ts: float
    service: str
    request_type: str
    user_id: str
    payload_bytes: float
    attributes: Attributes


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
    body = orjson.dumps(
        {
            "error": str(rejected),
            "reason": rejected.reason,
            "pool": rejected.pool,
            "retry_after_s": round(rejected.retry_after_s, 3),
        }
    )
    await response.send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(max(1, math.ceil(rejected.retry_after_s))).encode()),
            ],
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
