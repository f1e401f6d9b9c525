"""Trace replay: send request events to the requests topic in batches, grouped by partition.

Events are grouped by the partition of their profile key (:class:`PartitionBatcher`), so each
``RequestBatch`` lands whole on the partition whose worker owns those keys. Pacing follows the
trace's own clock scaled by ``speed``, or a fixed ``max_rate``, or neither (as fast as the
broker takes them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import Producer

from shardshape.core.batching import PartitionBatcher
from shardshape.core.contracts import RequestBatch, RequestEvent, encode


@dataclass
class ReplayReport:
    events: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


class _Pacer:
    """Sleeps so that events leave no earlier than the trace clock or rate allows."""

    def __init__(self, speed: float | None, max_rate: float | None) -> None:
        self.speed, self.max_rate = speed, max_rate
        self.start = time.monotonic()
        self.first_ts: float | None = None

    def wait(self, event: RequestEvent, sent: int) -> float:
        """Seconds to sleep before sending ``event`` (the ``sent``-th)."""
        now = time.monotonic() - self.start
        due = 0.0
        if self.speed:
            if self.first_ts is None:
                self.first_ts = event.ts
            due = (event.ts - self.first_ts) / self.speed
        if self.max_rate:
            due = max(due, sent / self.max_rate)
        return max(due - now, 0.0)


def replay(
    events: Iterable[RequestEvent],
    producer_config: dict,
    topic: str,
    partitions: int,
    *,
    gateway_id: str = "replay",
    batch_size: int = 500,
    linger_s: float = 0.2,
    speed: float | None = None,
    max_rate: float | None = None,
    on_progress: Callable[[int], None] = lambda n: None,
) -> ReplayReport:
    """Produce ``events`` as ``RequestBatch`` messages; returns what was sent once delivered."""
    producer = Producer({"linger.ms": 20, "compression.type": "lz4", **producer_config})
    pacer = _Pacer(speed, max_rate)
    batcher = PartitionBatcher(partitions, batch_size, linger_s)
    report = ReplayReport()
    failures: list[str] = []

    def delivered(error, _message) -> None:
        if error is not None:
            failures.append(str(error))

    def send(batches: list[tuple[int, list[RequestEvent]]]) -> None:
        for partition, batch in batches:
            value = encode(RequestBatch(gateway_id=gateway_id, sent_ts=time.time(), events=batch))
            while True:
                try:
                    producer.produce(
                        topic, value=value, key=str(partition).encode(), partition=partition,
                        on_delivery=delivered,
                    )  # fmt: skip
                    break
                except BufferError:  # local queue full: let the broker catch up
                    producer.poll(0.1)
            producer.poll(0)
            report.batches += 1
            on_progress(len(batch))

    started = time.monotonic()
    for event in events:
        pause = pacer.wait(event, report.events)
        if pause > 0:
            # Paced: batches still fill for up to ``linger_s`` before they leave.
            send(batcher.due(time.monotonic()))
            time.sleep(pause)
        full = batcher.add(event, time.monotonic())
        report.events += 1
        if full is not None:
            send([full])
        elif speed or max_rate:
            send(batcher.due(time.monotonic()))
    send(batcher.due(time.monotonic(), everything=True))
    remaining = producer.flush(60)
    report.seconds = time.monotonic() - started
    if remaining or failures:
        raise RuntimeError(
            f"{remaining} batches undelivered, {len(failures)} failed"
            + (f" (first: {failures[0]})" if failures else "")
        )
    return report
