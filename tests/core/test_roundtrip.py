"""A RequestBatch through a real broker comes back equal, event for event."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer

from shardshape.core.contracts import RequestBatch, RequestEvent, decode_requests, encode
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics


def test_request_batch_round_trip_through_kafka(settings: Settings) -> None:
    create_topics(settings)
    events = [
        RequestEvent(
            request_id=f"r{i}",
            ts=1_700_000_000 + i,
            service="images",
            request_type="TXT_2_IMG",
            user_id=f"user-{i % 7}",
            payload_bytes=100 + i,
            latency_ms=12.5 * i,
            status="error" if i % 10 == 0 else "ok",
            attributes={"steps": 30, "model": "m-1", "hd": True},
        )
        for i in range(500)
    ]
    batch = RequestBatch(gateway_id="gw-1", sent_ts=time.time(), events=events)
    producer = Producer(settings.confluent_config())
    producer.produce(settings.topic_requests, key=b"images", value=encode(batch))
    assert producer.flush(10) == 0

    consumer = Consumer(
        settings.confluent_config(**{"group.id": settings.app_id, "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([settings.topic_requests])
    try:
        deadline = time.monotonic() + 30
        message = None
        while message is None and time.monotonic() < deadline:
            candidate = consumer.poll(0.5)
            if candidate is not None and candidate.error() is None:
                message = candidate
    finally:
        consumer.close()
    assert message is not None, "the batch did not come back within 30 s"
    assert decode_requests(message.value()) == events
