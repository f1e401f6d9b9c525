"""End offsets that count every record: several records produced in one batch are all counted,
however the broker reports the partition's end."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from shardshape.infra.settings import Settings
from shardshape.streams.highwater import end_offsets, true_end_offsets


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
