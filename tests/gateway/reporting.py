"""Reading what reporters sent: the requests topic's batches, and the queue reports on the
planner's topic, from their start."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shardshape.core.contracts import QueueReport, RequestBatch, decode
from shardshape.core.settings import Settings


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


class QueueReportReader:
    """Reads the planner's topic from its start: (key, report) of every message so far."""

    def __init__(self, settings: Settings) -> None:
        group = f"reader-{uuid.uuid4().hex[:8]}"
        self._consumer = Consumer(
            settings.confluent_config(**{"group.id": group, "enable.auto.commit": False})
        )
        self._partition = TopicPartition(settings.topic_windows, 0, OFFSET_BEGINNING)
        self._consumer.assign([self._partition])
        self.messages: list[tuple[bytes, QueueReport]] = []
        self._read_up_to = 0  # the offset after the last message read

    def read_until(
        self, done: Callable[[list[QueueReport]], bool], timeout_s: float = 20
    ) -> list[QueueReport]:
        deadline = time.monotonic() + timeout_s
        while not done(self.reports) and time.monotonic() < deadline:
            message = self._consumer.poll(0.2)
            if message is not None and message.error() is None:
                self.messages.append((message.key(), decode(QueueReport, message.value())))
                self._read_up_to = message.offset() + 1
        return self.reports

    def read_to_end(self, timeout_s: float = 20) -> list[QueueReport]:
        """Every report on the topic as it is now: read up to its end offset."""
        _, end = self._consumer.get_watermark_offsets(self._partition, timeout=10)
        return self.read_until(lambda _: self._read_up_to >= end, timeout_s)

    @property
    def reports(self) -> list[QueueReport]:
        return [report for _, report in self.messages]

    def close(self) -> None:
        self._consumer.close()
