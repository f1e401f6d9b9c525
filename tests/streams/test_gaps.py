"""Offsets the consumer skipped are read again from the real broker (streams.gaps)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer

from shardshape.core.contracts import encode
from shardshape.core.partitioning import partition_for
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics
from shardshape.models.features import profile_key
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.gaps import GapReader, SkippedOffsets
from tests.support.polling import wait_until
from tests.support.workers import all_committed, counted_by, tails, worker


def _produce(settings: Settings, partition: int, count: int) -> None:
    producer = Producer(settings.confluent_config())
    for i in range(count):
        producer.produce(
            settings.topic_requests, value=b"m%d" % i, key=b"k%d" % i, partition=partition
        )
    assert producer.flush(10) == 0


def _skipped_offsets(settings: Settings) -> SkippedOffsets:
    return SkippedOffsets(
        lambda: GapReader(settings.confluent_config(), settings.topic_requests, "gap-test")
    )


def test_skipped_offsets_are_read_again_in_order(settings: Settings) -> None:
    create_topics(settings)
    _produce(settings, partition=1, count=20)
    skipped = _skipped_offsets(settings)

    async def scenario() -> list[list[tuple[int, bytes | None, bytes | None]]]:
        seen = []
        starts = {(1, 5): 5, (1, 11): 0}  # where the consumer started (only the first counts)
        for partition, offset in ((1, 5), (1, 6), (1, 11), (1, 12), (1, 7), (2, 9), (1, 14)):
            found = await skipped.before(partition, offset, starts.get((partition, offset)))
            seen.append([(m.offset, m.key, m.value) for m in found])
            assert all(m.partition == partition and m.timestamp > 0 for m in found)
        return seen

    try:
        seen = asyncio.run(scenario())
    finally:
        skipped.close()
    assert seen == [
        [],  # 5: where the consumer started, as expected
        [],
        [(o, b"k%d" % o, b"m%d" % o) for o in range(7, 11)],  # 7-10 skipped before 11
        [],
        [],  # 7 again: a replay, nothing skipped
        [],  # partition 2: no expectation before its first message (no start known)
        [(13, b"k13", b"m13")],
    ]
    assert skipped.read_again == 5


def test_a_skip_found_at_the_first_message_of_a_taken_over_partition(settings: Settings) -> None:
    create_topics(settings)
    _produce(settings, partition=0, count=6)
    skipped = _skipped_offsets(settings)

    async def first_message(offset: int, start: int | None) -> list[int]:
        return [m.offset for m in await skipped.before(0, offset, start)]

    try:
        # The consumer started at the committed offset 2 and handed on 4 first.
        assert asyncio.run(first_message(4, start=2)) == [2, 3]
        skipped.forget(keep=set())  # moved elsewhere: no expectation until taken over again
        assert asyncio.run(first_message(5, start=None)) == []
    finally:
        skipped.close()


def test_offsets_of_transaction_markers_hold_nothing_to_read(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # A transaction's commit marker takes an offset: a consumer never hands it on.
    create_topics(settings)
    producer = Producer(settings.confluent_config(**{"transactional.id": settings.app_id}))
    producer.init_transactions(10)
    for batch in ((b"a", b"b"), (b"c",)):
        producer.begin_transaction()
        for value in batch:
            producer.produce(settings.topic_requests, value=value, partition=3)
        producer.commit_transaction(10)
    skipped = _skipped_offsets(settings)

    async def after_the_first_transaction() -> list[bytes | None]:
        found = await skipped.before(3, 1)  # nothing expected yet
        found += await skipped.before(3, 3)  # "c" after the marker at 2
        return [m.value for m in found]

    try:
        with caplog.at_level(logging.INFO, logger="shardshape.worker"):
            assert asyncio.run(after_the_first_transaction()) == []
    finally:
        skipped.close()
    assert "offsets [2] hold no messages" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_worker_counts_a_transactional_producers_events_once(
    settings: Settings, tmp_path: Path
) -> None:
    # Every commit marker is an offset Faust's consumer never hands on: the worker reads each
    # such skip directly, finds nothing there, and counts every event once.
    create_topics(settings)
    events = list(SyntheticStream(seed=5).events(2_000))
    producer = Producer(settings.confluent_config(**{"transactional.id": settings.app_id}))
    producer.init_transactions(10)
    after_last: dict[int, int] = {}  # partition -> the offset after its last message

    def delivered(error: KafkaError | None, message: Message) -> None:
        assert error is None, error
        partition = message.partition()
        after_last[partition] = max(after_last.get(partition, 0), message.offset() + 1)

    with worker(settings, tmp_path, "w") as w:
        for start in range(0, len(events), 100):
            producer.begin_transaction()
            for event in events[start : start + 100]:
                key = profile_key(event.service, event.request_type, event.user_id)
                partition = partition_for(key, settings.requests_partitions)
                producer.produce(settings.topic_requests, value=encode(event),
                                 partition=partition, on_delivery=delivered)  # fmt: skip
            producer.commit_transaction(10)
        assert producer.flush(10) == 0
        # Committed up to the last message: every message was handled, so the count is final
        # (the topic's end is one further, at the last commit marker, which nobody commits).
        wait_until(
            lambda: all_committed(settings, after_last),
            90,
            "every message handled and committed",
            every_s=0.5,
            explain=tails([w]),
        )
        assert counted_by([w]) == len(events)
        log = w.log.read_text()
    assert "the consumer skipped offsets" in log and "hold no messages" in log
    assert "could not be read" not in log
