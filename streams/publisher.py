"""The routing topic's producer in the worker: librdkafka, flushed before Faust commits.

A busy worker publishes tens of routing entries per batch (new keys, moved keys, confidence
updates). Through Faust's producer each costs ~25 us of Python on the agent's loop; librdkafka
takes one in ~1 us and batches them in its own thread. At-least-once is kept: Faust flushes its
producer before it commits consumed offsets, and :func:`flush_before_commits` makes that flush
wait for this producer too, so an entry is on the broker before the batch that caused it is
committed. Keys are partitioned with murmur2, as Faust's producer does, so a key keeps its
partition in a compacted topic whichever producer wrote it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import faust
from confluent_kafka import KafkaError, Message, Producer

from shardshape.core.signing import Signer

log = logging.getLogger("shardshape.worker")


class Publisher(Protocol):
    """What the worker's steps publish routing entries with (:class:`RoutingPublisher`)."""

    def publish(self, key: bytes, value: bytes | None) -> None: ...

    def poll(self) -> None: ...


class RoutingPublisher:
    """Produces (key, value) messages to one topic; :meth:`flush` waits for their delivery.

    With a ``signer`` every message carries its signature (:mod:`shardshape.core.signing`).
    """

    def __init__(self, producer_config: dict, topic: str, signer: Signer | None = None) -> None:
        self.topic = topic
        self.signer = signer
        self.failed = 0
        self._producer = Producer(
            {
                "linger.ms": 5,
                "compression.type": "lz4",
                "partitioner": "murmur2_random",
                # Only failures call back into Python (flush still waits for every delivery):
                # 40-80 entries per 1,000 events made the callbacks ~1.5% of the agent's time.
                "delivery.report.only.error": True,
                **producer_config,
            }
        )

    def publish(self, key: bytes, value: bytes | None) -> None:
        """Produce one message (``value`` None: a tombstone, retiring ``key``)."""
        headers = self.signer.headers(key, value) if self.signer is not None else None
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, headers=headers, on_delivery=self._sent
                )
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                self._producer.poll(0.05)

    def poll(self) -> None:
        """Serve delivery reports (call often; it does not wait)."""
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every message to be delivered; the number still undelivered."""
        return self._producer.flush(timeout_s)

    def _sent(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failed += 1
            log.error("routing entry %r not delivered: %s", message.key(), error)


def flush_before_commits(
    app: faust.App, publisher: RoutingPublisher, before: Callable[[], None] = lambda: None
) -> None:
    """Make Faust's pre-commit producer flush wait for ``publisher`` as well; ``before`` runs
    first (it may hand Faust's producer more changelog messages)."""
    producer = app.producer
    faust_flush = producer.flush

    async def flush() -> None:
        before()
        await faust_flush()
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, publisher.flush, 5.0):
            log.warning("routing entries still undelivered before a commit; waiting")

    producer.flush = flush  # type: ignore[method-assign]
