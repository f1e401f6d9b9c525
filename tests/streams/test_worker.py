"""A real worker process validates the requests topic and dead-letters what is invalid."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

from shardshape.core.contracts import DeadLetter, RequestBatch, RequestEvent, decode, encode
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics
from tests.support.processes import running, settings_env, shardshape_command, wait_for_line


def _event(i: int) -> RequestEvent:
    return RequestEvent(request_id=f"ok-{i}", ts=1.0 + i, service="svc", request_type="read")


def _read_dead_letters(settings: Settings, count: int, timeout_s: float) -> list[DeadLetter]:
    consumer = Consumer(
        settings.confluent_config(
            **{"group.id": f"{settings.app_id}-dlq-reader", "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([settings.topic_dlq])
    letters: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(letters) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                letters.append(decode(DeadLetter, message.value()))
        # Anything beyond the expected count would be a wrongly rejected valid message.
        end = time.monotonic() + 3
        while time.monotonic() < end:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                letters.append(decode(DeadLetter, message.value()))
    finally:
        consumer.close()
    return letters


def test_worker_sends_malformed_messages_to_the_dlq_with_reasons(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    log = tmp_path / "worker.log"
    with running(shardshape_command("worker"), settings_env(settings), log) as worker:
        wait_for_line(log, "shardshape worker ready", worker, 90)

        partly_bad = orjson.dumps(
            {
                "v": 1,
                "gateway_id": "gw",
                "events": [
                    orjson.loads(encode(_event(1))),
                    {"v": 1, "request_id": "bad-1", "ts": -5, "service": "s", "request_type": "r"},
                    orjson.loads(encode(_event(2))),
                ],
            }
        )
        hostile = {
            b"not json at all": "not-json",
            b"\xff\xfe\x00garbage": "invalid-utf8",
            b'{"v": 9, "request_id": "x", "ts": 1, "service": "s", "request_type": "r"}': "version",
        }
        producer = Producer(settings.confluent_config())
        valid = RequestBatch(gateway_id="gw", events=[_event(i) for i in range(10, 20)])
        producer.produce(settings.topic_requests, key=b"k-valid", value=encode(valid))
        producer.produce(settings.topic_requests, key=b"k-partly", value=partly_bad)
        for raw, name in hostile.items():
            producer.produce(settings.topic_requests, key=name.encode(), value=raw)
        assert producer.flush(10) == 0

        letters = _read_dead_letters(settings, count=4, timeout_s=60)

    by_key = {letter.key_b64: letter for letter in letters}
    assert len(letters) == 4, [letter.reason for letter in letters]
    import base64

    def key(name: str) -> str:
        return base64.b64encode(name.encode()).decode()

    for raw, name in hostile.items():
        letter = by_key[key(name)]
        assert letter.original() == raw, "the DLQ keeps the original bytes"
        assert letter.reason and letter.error_class
        assert letter.source_topic == settings.topic_requests and letter.offset >= 0
    assert "version" in by_key[key("version")].reason
    partly = by_key[key("k-partly")]
    assert b"bad-1" in partly.original() and "ts" in partly.reason
    assert key("k-valid") not in by_key
