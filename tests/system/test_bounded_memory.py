"""A stream of ever new users keeps a worker and a gateway's routing table within their caps:
the least recently seen keys are evicted and counted, and memory stops growing.

The figures for one million users, with and without caps, come from
``benchmarks/bench_memory.py``; this runs the same on the real broker at a smaller scale.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from shardshape.core.contracts import RoutingEntry, encode
from shardshape.core.net import ensure_port_free
from shardshape.core.settings import Settings
from shardshape.gateway.routing_table import RoutingTable
from shardshape.infra.memory import process_memory
from shardshape.infra.topics import create_topics
from shardshape.models.synthetic import distinct_users
from shardshape.streams.replay import replay
from tests.support.polling import wait_until
from tests.support.processes import running, settings_env, shardshape_command, wait_for_line
from tests.support.workers import all_committed

CAP = 20_000
PHASE = 100_000  # users per phase; the cap is reached early in the first
MIB = 1024 * 1024


def _stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/shardshape/stats", timeout=10) as r:
        return json.loads(r.read())


def _handled(settings: Settings, port: int, events: int, timeout_s: float) -> dict:
    """The worker's stats once it has committed every request: its counts are final then."""
    wait_until(lambda: all_committed(settings), timeout_s, f"{events:,} events handled",
               every_s=0.5)  # fmt: skip
    stats = _stats(port)
    assert stats["events"] == events
    return stats


@pytest.mark.slow
def test_worker_keeps_at_most_max_keys_and_memory_stays_flat(
    settings: Settings, tmp_path: Path
) -> None:
    port = ensure_port_free(0, "WEB_PORT")
    settings = settings.model_copy(
        update={"max_keys": CAP, "web_enabled": True, "web_port": port, "snapshot_interval_s": 1}
    )
    create_topics(settings)
    log = tmp_path / "worker.log"
    config, topic = settings.confluent_config(), settings.topic_requests
    with running(shardshape_command("worker"), settings_env(settings), log) as worker:
        wait_for_line(log, "shardshape worker ready", worker, 90)
        replay(distinct_users(PHASE), config, topic, settings.requests_partitions)
        _handled(settings, port, PHASE, 120)
        after_first = process_memory(worker.pid).rss_bytes
        replay(distinct_users(PHASE, start=PHASE), config, topic, settings.requests_partitions)
        stats = _handled(settings, port, 2 * PHASE, 120)
        after_second = process_memory(worker.pid).rss_bytes

        # Entries of evicted keys were retired on the routing topic too: a gateway that
        # follows it holds no more than the worker does, without evicting anything itself.
        with RoutingTable.from_settings(settings) as table:
            assert table.wait_caught_up(60)
            routed, gateway_evicted = len(table), table.evicted

    keys = stats["keys"]["shop"]
    assert 0.8 * CAP <= keys["keys"] <= CAP
    assert keys["evicted"] == 2 * PHASE - keys["keys"]
    assert stats["keys_stored"] <= CAP
    assert 0 < routed <= CAP and gateway_evicted == 0
    # Another 100,000 users (over 80 MiB uncapped, see the benchmark) add next to nothing.
    growth = (after_second - after_first) / MIB
    assert growth < 25, f"RSS grew {growth:.1f} MiB over the second {PHASE:,} users"


def test_routing_table_keeps_at_most_gateway_max_routes(settings: Settings) -> None:
    settings = settings.model_copy(update={"gateway_max_routes": 2_000})
    create_topics(settings)
    producer = Producer(settings.confluent_config(**{"linger.ms": 20}))
    keys = [f"shop|GET /item|user-{i}" for i in range(10_000)]
    for i, key in enumerate(keys):
        entry = RoutingEntry(service="shop", key=key, shard_id=i % 3, snapshot_version=1)
        producer.produce(settings.topic_routing, key=key.encode(), value=encode(entry))
        producer.poll(0)
    assert producer.flush(30) == 0

    with RoutingTable.from_settings(settings) as table:
        assert table.wait_caught_up(60)
        assert (len(table), table.evicted) == (2_000, 8_000)
        # The most recently seen stay: the last entries of the topic.
        assert all(table.entry(key) is not None for key in keys[-2_000:])
        # A lookup marks a key seen: it outlives keys that arrive after it.
        looked_up = keys[-2_000]
        event = next(distinct_users(1)).model_copy(
            update={"service": "shop", "request_type": "GET /item", "user_id": "user-8000"}
        )
        assert table.predict(event).source == "key"
        for i, key in enumerate(f"shop|GET /item|late-{j}" for j in range(1_999)):
            entry = RoutingEntry(service="shop", key=key, shard_id=i % 3, snapshot_version=1)
            table.apply(key.encode(), encode(entry))
        assert table.entry(looked_up) is not None and table.entry(keys[-1_999]) is None
        assert table.evicted == 8_000 + 1_999
