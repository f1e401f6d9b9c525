"""Shard metrics on the real broker: a worker's windowed tables count every event once, and
`shardshape shards` shows them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from shardshape.core.contracts import RequestEvent
from shardshape.core.metrics import latest_window, merged_series
from shardshape.core.net import ensure_port_free
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.replay import replay
from tests.support.polling import wait_until
from tests.support.processes import settings_env, shardshape_command
from tests.support.workers import counted, settled, tails, worker


def test_windowed_shard_metrics_count_every_event_once(settings: Settings, tmp_path: Path) -> None:
    create_topics(settings)
    events = list(SyntheticStream(seed=8).events(6_000))
    # Some events say which shard and arm the gateway ran them in; those must be kept.
    events[:100] = [e.model_copy(update={"shard_id": 42, "arm": "variant"}) for e in events[:100]]
    errors = sum(e.status != "ok" for e in events)
    with worker(settings, tmp_path, "w") as w:
        replay(events, settings.confluent_config(), settings.topic_requests,
               settings.requests_partitions)  # fmt: skip
        wait_until(lambda: settled(settings, [w]), 60, "every message handled and committed",
                   every_s=0.5, explain=tails([w]))  # fmt: skip
        windows = w.page("/shardshape/shards")
        assert counted(windows["10s"]) == len(events)
        assert counted(windows["1m"]) == len(events)

        everything = merged_series(
            (slot, data.encode())
            for window in windows["1m"]
            for slot, data in window["slots"].items()
        )
        assert sum(sum(s.errors.values()) for s in everything.values()) == errors
        assert everything["shop|42|variant"].count == 100
        latencies = sorted(e.latency_ms for e in events)
        merged = everything.popitem()[1]
        assert merged.summary(60)["p50_ms"] is not None
        assert min(latencies) * 0.98 <= merged.summary(60)["p50_ms"] <= max(latencies) * 1.02

        # The command line reads the same windows.
        time.sleep(max(0.0, latest_window([windows["10s"]], time.time())[1] - time.time()) + 0.5)
        env = settings_env(settings)
        done = subprocess.run(
            shardshape_command("shards", "--worker", f"http://127.0.0.1:{w.port}", "--json"),
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)["shards"]
        assert rows and {row["service"] for row in rows} == {"shop"}
        assert all(row["count"] > 0 and row["p99_ms"] >= row["p50_ms"] for row in rows)
        table = subprocess.run(
            shardshape_command("shards", "--worker", f"http://127.0.0.1:{w.port}"),
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert table.returncode == 0 and "p99 ms" in table.stdout

    # A restarted worker recovers the windows from their changelogs: nothing lost (totals held
    # in memory are written before offsets are committed), nothing counted twice.
    with worker(settings, tmp_path, "w") as w:
        wait_until(lambda: settled(settings, [w]), 60, "tables recovered and offsets committed",
                   every_s=0.5, explain=tails([w]))  # fmt: skip
        assert counted(w.windows("1m")) == len(events)
        assert counted(w.windows("10s")) == len(events)


def test_shards_command_says_how_to_start_a_worker() -> None:
    port = ensure_port_free(0, "WEB_PORT")
    done = subprocess.run(
        shardshape_command("shards", "--worker", f"http://127.0.0.1:{port}"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "shardshape run" in done.stderr


def test_gateway_shard_wins_over_prediction() -> None:
    from shardshape.core.metrics import aggregate

    event = RequestEvent(request_id="r", ts=0, service="s", request_type="t", shard_id=5)
    assert set(aggregate([event], [1])) == {"s|5|"}
