"""Reading what reporters sent: the requests topic's batches from its start."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shardshape.infra.settings import Settings
from shardshape.streams.contracts import RequestBatch, decode


def consume_batches(
    settings: Settings, done: Callable[[list[tuple[int, RequestBatch]]], bool], timeout_s: float
) -> list[tuple[int, RequestBatch]]:
    """(partition, batch) of every requests-topic message, read until ``done`` or timeout."""
    consumer = Consumer(
        settings.confluent_config(
            **{"group.id": f"reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        )
    )
    consumer.assign(
        [
            TopicPartition(settings.topic_requests, p, OFFSET_BEGINNING)
            for p in range(settings.requests_partitions)
        ]
    )
    batches: list[tuple[int, RequestBatch]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(batches) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                batches.append((message.partition(), decode(RequestBatch, message.value())))
    finally:
        consumer.close()
    return batches


def batch_ids(batches: list[tuple[int, RequestBatch]]) -> Counter[str]:
    """How often each request id is in ``batches``."""
    return Counter(event.request_id for _, batch in batches for event in batch.events)


def has_all(ids: set[str]) -> Callable[[list[tuple[int, RequestBatch]]], bool]:
    """A ``done`` for :func:`consume_batches`: every one of ``ids`` read."""
    return lambda batches: ids <= set(batch_ids(batches))
