"""What every gateway does per request, whatever the protocol (ASGI middleware, WSGI wrapper):
what is known of a request at arrival (an :class:`Arrival`), the predicted shard and expected
memory, the completed :class:`RequestEvent` handed to ``report``, and the 503 a rejection
answers. The event is built and validated once, when the request completes: an arrival is a
plain tuple until then (docs/gateway.md, "Cost per request").

>>> from shardshape.gateway.pools import ShardPools
>>> reported = []
>>> shaper = RequestShaper("shop", ShardPools(), report=reported.append, default_shard=3)
>>> arrival = shaper.arriving("GET /items/{id}", user="ann", payload_bytes=0.0, request_id="")
>>> shaper.shard_of(arrival)
(3, 0.0)
>>> shaper.completed(arrival, started=0.0, status="ok", shard=3, arm=None, response_bytes=12,
...                  attributes={})
>>> reported[0].status, reported[0].shard_id, reported[0].response_bytes
('ok', 3, 12.0)
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol

import orjson
from pydantic import ValidationError

from shardshape.core.contracts import MAX_ID_CHARS, RequestEvent, Status
from shardshape.gateway.pools import ShardPools, ShardRejected
from shardshape.gateway.routing_table import ArrivingRequest, ShardAssignment

log = logging.getLogger("shardshape.gateway.shaping")

Attributes = Mapping[str, float | bool | str]
# RequestEvent(**fields) without pydantic's Python-level wrapper (half the cost per request).
_validate_event = RequestEvent.__pydantic_validator__.validate_python


class Arrival(NamedTuple):
    """What a gateway knows of a request when it arrives (an ``ArrivingRequest``)."""

    request_id: str
    ts: float
    service: str
    request_type: str
    user_id: str
    payload_bytes: float
    attributes: Attributes


class Router(Protocol):
    """What predicts a shard locally (:class:`shardshape.gateway.routing_table.RoutingTable`)."""

    def predict(self, request: ArrivingRequest) -> ShardAssignment: ...


def no_report(event: RequestEvent) -> None:
    return None


def outcome(status_code: int, started: bool = True) -> Status:
    """The reported status of a response: ``timeout`` for a 504, ``error`` for another 5xx or
    none sent at all, else ``ok``.

    >>> outcome(200), outcome(503), outcome(504), outcome(0, started=False)
    ('ok', 'error', 'timeout', 'error')
    """
    if status_code == 504:
        return "timeout"
    return "error" if status_code >= 500 or not started else "ok"


def rejection(rejected: ShardRejected) -> tuple[list[tuple[str, str]], bytes]:
    """The headers and JSON body of the 503 that answers a rejected request.

    >>> headers, body = rejection(ShardRejected("queue_full", "shard 1", 0.2, "full"))
    >>> dict(headers)["retry-after"], orjson.loads(body)["reason"]
    ('1', 'queue_full')
    """
    body = orjson.dumps(
        {
            "error": str(rejected),
            "reason": rejected.reason,
            "pool": rejected.pool,
            "retry_after_s": round(rejected.retry_after_s, 3),
        }
    )
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("retry-after", str(max(1, math.ceil(rejected.retry_after_s)))),
    ]
    return headers, body


class RequestShaper:
    """A gateway's per-request steps, without the protocol.

    Parameters
    ----------
    service
        The service name in events and plans.
    pools
        The shard pools.
    routing
        The local shard predictor; without one every request goes to ``default_shard``.
    report
        Called once per completed request; it must not block. Its exceptions are logged and
        counted (``report_errors``).
    expected_memory_mib
        The memory a request is expected to need, from its arriving event and predicted shard
        (default: 0, memory is not checked).
    default_shard
        The shard of every request when there is no ``routing``.
    """

    def __init__(
        self,
        service: str,
        pools: ShardPools,
        routing: Router | None = None,
        report: Callable[[RequestEvent], None] = no_report,
        expected_memory_mib: Callable[[RequestEvent, int], float] | None = None,
        default_shard: int = 0,
    ) -> None:
        try:  # a bad name would make every event invalid: say so now, not per request
            RequestEvent(request_id="-", ts=0.0, service=service, request_type="-")
        except ValidationError as invalid:
            why = invalid.errors()[0]["msg"]
            raise ValueError(f"service {service!r} cannot name events: {why}") from None
        self.service = service
        self.pools = pools
        self.routing = routing
        self.report = report
        self.expected_memory = expected_memory_mib
        self.default_shard = default_shard
        self.report_errors = 0
        self._ids = itertools.count()
        self._id_prefix = os.urandom(6).hex()

    def arriving(
        self,
        request_type: str,
        *,
        user: str,
        payload_bytes: float,
        request_id: str,
        attributes: Attributes | None = None,
    ) -> Arrival:
        """A request as it arrives (ids and types cut to their longest)."""
        return Arrival(
            request_id[:MAX_ID_CHARS] or f"{self._id_prefix}-{next(self._ids)}",
            time.time(),
            self.service,
            request_type[:MAX_ID_CHARS] or "unknown",
            user[:MAX_ID_CHARS],
            payload_bytes,
            attributes or {},
        )

    def shard_of(self, arrival: Arrival) -> tuple[int, float]:
        """The predicted shard of ``arrival`` and the memory it is expected to need there."""
        shard = self.default_shard
        if self.routing is not None:
            shard = self.routing.predict(arrival).shard_id
        memory = 0.0
        if self.expected_memory is not None:
            memory = self.expected_memory(_validate_event(arrival._asdict()), shard)
        return shard, memory

    def completed(
        self,
        arrival: Arrival,
        *,
        started: float,
        status: Status,
        shard: int,
        arm: str | None,
        response_bytes: int,
        attributes: Attributes,
    ) -> None:
        """Report the completed request (``started``: ``time.perf_counter()`` at arrival).

        The event is validated here, once: a request whose event is invalid (a user_key,
        request_type or attributes function returning what a RequestEvent cannot hold) has
        been served all the same; its event is dropped and counted like a failed report.
        """
        try:
            event = _validate_event(
                {
                    "request_id": arrival.request_id,
                    "ts": arrival.ts,
                    "service": arrival.service,
                    "request_type": arrival.request_type,
                    "user_id": arrival.user_id,
                    "payload_bytes": arrival.payload_bytes,
                    "latency_ms": (time.perf_counter() - started) * 1000,
                    "status": status,
                    "shard_id": shard,
                    "arm": arm,
                    "response_bytes": float(response_bytes),
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
