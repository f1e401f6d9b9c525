"""End offsets that count every record, whatever the broker answers.

Faust restores a table by reading its changelog partitions up to their end offsets (the
"highwater"). The embedded broker (Tansu 0.6) answers ListOffsets with the base offset of a
partition's last record batch plus one, not its last offset plus one: when that batch holds
several records (Faust's producer batches changelog writes), the end is too low. Faust then
either stops with ``ConsistencyError`` (it has read past that "end" before, seen as soon as a
second worker joins) or ends recovery before the last batch is applied, so a worker that takes
a partition over misses its newest table values.

:func:`correct_faust_highwaters` makes Faust ask :func:`true_end_offsets` instead: it reads
from the reported end minus one, which is at most the last batch, to the end of each
partition. On a broker that answers correctly this reads one record per partition and
changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

log = logging.getLogger("shardshape.worker")

TopicPartitionKey = tuple[str, int]

_original = AIOKafkaConsumerThread._highwaters


def true_end_offsets(
    consumer_config: dict,
    reported: Mapping[TopicPartitionKey, int],
    timeout_s: float = 10.0,
) -> dict[TopicPartitionKey, int]:
    """The offset after the last record of each partition, given the ``reported`` end offsets.

    Raises ``TimeoutError`` naming the partitions that could not be read to their end.
    """
    ends = dict(reported)
    pending = {tp for tp, end in ends.items() if end > 0}
    if not pending:
        return ends
    consumer = Consumer(
        {
            **consumer_config,
            "group.id": f"shardshape-end-offsets-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, ends[(topic, p)] - 1) for topic, p in pending])
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is None:
                continue
            tp = (message.topic(), message.partition())
            error = message.error()
            if error is None:
                ends[tp] = max(ends[tp], message.offset() + 1)
            elif error.code() == KafkaError._PARTITION_EOF:
                pending.discard(tp)
    finally:
        consumer.close()
    if pending:
        raise TimeoutError(
            f"could not read {sorted(pending)} to their end within {timeout_s:.0f} s; "
            "check that the broker is reachable"
        )
    return ends


def end_offsets(consumer_config: dict, topic: str, partitions: int) -> dict[int, int]:
    """The true end offset of each partition of ``topic`` (see :func:`true_end_offsets`)."""
    consumer = Consumer({**consumer_config, "group.id": f"shardshape-{uuid.uuid4().hex[:8]}"})
    try:
        reported = {
            (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()
    return {p: end for (_, p), end in true_end_offsets(consumer_config, reported).items()}


def correct_faust_highwaters(consumer_config: dict) -> None:
    """Make every Faust consumer in this process see true end offsets (see the module doc)."""

    async def highwaters(self, partitions):  # type: ignore[no-untyped-def]
        reported = await _original(self, partitions)
        if self.consumer.in_transaction:
            return reported  # last stable offsets: not what Tansu gets wrong
        ends = await asyncio.get_running_loop().run_in_executor(
            None,
            true_end_offsets,
            consumer_config,
            {(tp.topic, tp.partition): end for tp, end in reported.items() if end is not None},
        )
        return {tp: ends.get((tp.topic, tp.partition), end) for tp, end in reported.items()}

    AIOKafkaConsumerThread._highwaters = highwaters


def is_kafka_cluster_id(cluster_id: str | None) -> bool:
    """Whether ``cluster_id`` is one Apache Kafka generates: a UUID in URL-safe base64.

    >>> is_kafka_cluster_id("MkU3OEVBNTcwNTJENDM2Qg"), is_kafka_cluster_id("tansu_cluster")
    (True, False)
    >>> is_kafka_cluster_id(None), is_kafka_cluster_id("")
    (False, False)
    """
    if not cluster_id or len(cluster_id) != 22:
        return False
    try:
        return len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    except (binascii.Error, ValueError):
        return False


def cluster_id(consumer_config: dict, timeout_s: float = 10.0) -> str | None:
    """The cluster id the brokers report in their metadata; None when they do not answer."""
    try:
        return AdminClient(consumer_config).list_topics(timeout=timeout_s).cluster_id
    except KafkaException:
        return None


def needs_end_offset_correction(
    consumer_config: dict, mode: Literal["auto", "on", "off"] = "auto"
) -> bool:
    """Whether the brokers of ``consumer_config`` need the correction (see the module doc)."""
    if mode != "auto":
        return mode == "on"
    found = cluster_id(consumer_config)
    needed = not is_kafka_cluster_id(found)
    log.info(
        "cluster id %r: end offsets %s",
        found,
        "corrected (not Apache Kafka's form)" if needed else "as the brokers report them",
    )
    return needed


def apply_end_offset_correction(
    consumer_config: dict, mode: Literal["auto", "on", "off"] = "auto"
) -> bool:
    """Install :func:`correct_faust_highwaters` where needed; True when it was installed."""
    if not needs_end_offset_correction(consumer_config, mode):
        return False
    correct_faust_highwaters(consumer_config)
    return True
