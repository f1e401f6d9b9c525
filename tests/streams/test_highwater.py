"""End offsets that count every record: several records produced in one batch are all counted,
however the broker reports the partition's end."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from shardshape.core.settings import Settings
from shardshape.streams.highwater import (
    apply_end_offset_correction,
    cluster_id,
    end_offsets,
    is_kafka_cluster_id,
    needs_end_offset_correction,
    true_end_offsets,
)


def _batched_topic(settings: Settings, name: str, records: int) -> None:
    """A 2-partition topic with ``records`` records in one batch on partition 0 only."""
    admin = AdminClient(settings.confluent_config())
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(30)
    producer = Producer(settings.confluent_config(**{"linger.ms": 200}))
    for i in range(records):
        producer.produce(name, value=b"x%d" % i, partition=0)
    assert producer.flush(30) == 0


def test_every_record_of_a_batch_counts_towards_the_end(settings: Settings, unique: str) -> None:
    topic = f"{unique}.batched"
    _batched_topic(settings, topic, records=25)

    assert end_offsets(settings.confluent_config(), topic, 2) == {0: 25, 1: 0}

    consumer = Consumer(settings.confluent_config(**{"group.id": f"{unique}-watermarks"}))
    try:
        reported = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()
    # Whatever the broker answers (25, or the last batch's base offset plus one), the true end
    # is read from the records themselves, and a correct answer stays as it is.
    assert true_end_offsets(settings.confluent_config(), {(topic, 0): reported}) == {(topic, 0): 25}
    assert true_end_offsets(settings.confluent_config(), {(topic, 0): 25}) == {(topic, 0): 25}


def test_the_correction_applies_where_the_cluster_is_not_apache_kafka(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    config = settings.confluent_config()
    found = cluster_id(config)
    assert found, "the session broker reports a cluster id"
    # The embedded Tansu broker (the default session broker) gets the correction; a Kafka
    # cluster (SHARDSHAPE_TEST_BOOTSTRAP or testcontainers) does not.
    tansu = not is_kafka_cluster_id(found)
    assert needs_end_offset_correction(config) is tansu
    assert needs_end_offset_correction(config, "on") and not needs_end_offset_correction(
        config, "off"
    )

    original = AIOKafkaConsumerThread._highwaters
    monkeypatch.setattr(AIOKafkaConsumerThread, "_highwaters", original)  # restored after
    assert apply_end_offset_correction(config, "off") is False
    assert AIOKafkaConsumerThread._highwaters is original, "off leaves Faust's method alone"
    assert apply_end_offset_correction(config) is tansu
    assert (AIOKafkaConsumerThread._highwaters is not original) is tansu
