"""A backlog on the real broker: the profile agent merges queued messages into profiler calls,
yet every event is counted once and every table write lands in its own source partition."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from shardshape.core.metrics import merged_series, partition_of
from shardshape.core.net import ensure_port_free
from shardshape.core.partitioning import partition_for
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.replay import replay
from tests.support.polling import wait_until
from tests.support.processes import running, settings_env, shardshape_command, wait_for_line
from tests.support.workers import all_committed


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def _read_all(settings: Settings, topic: str) -> list[tuple[int, bytes, bytes | None]]:
    """(partition, key, value) of every message now in ``topic``."""
    consumer = Consumer(
        settings.confluent_config(**{"group.id": "reader", "enable.partition.eof": True})
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending, out = set(partitions), []
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is None:
                out.append((message.partition(), message.key(), message.value()))
            elif message.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(message.partition())
        assert not pending, f"{topic}: partitions {pending} not read to their end"
        return out
    finally:
        consumer.close()


def test_a_backlog_is_profiled_in_merged_calls_and_counted_once(
    settings: Settings, tmp_path: Path
) -> None:
    port = ensure_port_free(0, "WEB_PORT")
    settings = settings.model_copy(update={"web_enabled": True, "web_port": port})
    create_topics(settings)
    events = list(SyntheticStream(seed=4).events(20_000))
    # Loaded before the worker starts: its agent finds many messages queued at once.
    replay(events, settings.confluent_config(), settings.topic_requests,
           settings.requests_partitions, batch_size=250)  # fmt: skip
    checkpoints_topic = f"{settings.app_id}-key-stats-changelog"
    totals_topic = f"{settings.app_id}-shard-windows-10s-changelog"
    log = tmp_path / "worker.log"
    with running(shardshape_command("worker"), settings_env(settings), log) as worker:
        wait_for_line(log, "shardshape worker ready", worker, 90)
        # Every message handled and committed: the counts read now are final.
        wait_until(
            lambda: all_committed(settings), 90, "every message handled and committed",
            every_s=0.5, explain=lambda: log.read_text(errors="replace")[-3000:],
        )  # fmt: skip
        stats = _get(port, "/shardshape/stats")
        assert stats["events"] == len(events)
        assert stats["profiler_calls"] < stats["messages"]  # queued messages were merged

        windows = _get(port, "/shardshape/shards")
        for size in ("10s", "1m"):
            counted = sum(
                stats.count
                for window in windows[size]
                for stats in merged_series(
                    (slot, data.encode()) for slot, data in window["slots"].items()
                ).values()
            )
            assert counted == len(events)
        wait_until(
            lambda: _read_all(settings, checkpoints_topic) and _read_all(settings, totals_topic),
            30, "key checkpoints and window totals in their changelogs", every_s=1,
        )  # fmt: skip

    # Outside any one message's context the agent names each write's partition itself: key
    # checkpoints go to their key's partition, window records to their source partition's.
    n = settings.requests_partitions
    checkpoints = _read_all(settings, checkpoints_topic)
    assert checkpoints
    for partition, key, value in checkpoints:
        assert partition == partition_for(orjson.loads(key), n)
        assert value is None or "rec" in orjson.loads(value)
    totals = _read_all(settings, totals_topic)
    assert totals
    for partition, key, _ in totals:
        record, _window = orjson.loads(key)
        assert partition == partition_of(record)
