"""The reporter's side of Kafka: request batches within Kafka's message limit, and a producer
configured never to block the reporter and to notice an outage quickly.

>>> from shardshape.core.contracts import RequestEvent
>>> events = [RequestEvent(request_id=f"r{i}", ts=0, service="s", request_type="t")
...           for i in range(3)]
>>> [count for _, count in batch_messages("gw-1", events)]
[3]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from shardshape.core.contracts import RequestBatch, RequestEvent, encode
from shardshape.core.settings import Settings

# Kafka's default max.message.bytes is about 1 MB; a larger batch is split in halves.
MAX_MESSAGE_BYTES = 900_000
# Spooled batches replayed at once; live batches keep the rest of the producer's queue.
REPLAY_IN_FLIGHT = 16


def batch_messages(gateway_id: str, events: list[RequestEvent]) -> Iterator[tuple[bytes, int]]:
    """``RequestBatch`` messages of ``events``, halved until each fits the message limit."""
    value = encode(RequestBatch(gateway_id=gateway_id, sent_ts=time.time(), events=events))
    if len(value) <= MAX_MESSAGE_BYTES or len(events) == 1:
        yield value, len(events)
        return
    half = len(events) // 2
    yield from batch_messages(gateway_id, events[:half])
    yield from batch_messages(gateway_id, events[half:])


def producer_config(settings: Settings, gateway_id: str, on_error: Any) -> dict[str, Any]:
    """librdkafka settings chosen so that an outage never blocks and is noticed quickly.

    ``produce()`` never blocks in confluent-kafka: a full queue raises ``BufferError``. The
    reporter's own bound (``reporter_max_buffered`` events) binds before librdkafka's queue
    does (every message holds at least one event), so a batch waits in the reporter, not in
    librdkafka. ``message.timeout.ms`` fails a batch that Kafka does not acknowledge in time,
    so a dead broker frees the queue; connection set-up and reconnects are short so that a
    broker that comes back is found within about a second.
    """
    timeout_ms = settings.reporter_delivery_timeout_ms
    return settings.confluent_config(
        **{
            "client.id": f"shardshape-reporter-{gateway_id}",
            "linger.ms": 5,  # batches are made here; librdkafka only packs ready ones together
            "compression.type": "lz4",
            "message.timeout.ms": timeout_ms,
            "queue.buffering.max.messages": settings.reporter_max_buffered + REPLAY_IN_FLIGHT,
            "socket.connection.setup.timeout.ms": max(1_000, min(timeout_ms, 10_000)),
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1_000,
            "error_cb": on_error,
            "logger": logging.getLogger("shardshape.gateway.reporter.kafka"),
        }
    )
