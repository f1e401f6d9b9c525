"""End to end on the real broker: events in, routing entries and one global snapshot out,
read back by a gateway's RoutingTable in this (another) process."""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path

from shardshape.core.contracts import (
    SNAPSHOT_KEY_PREFIX,
    RoutingEntry,
    ShardSnapshot,
    decode,
)
from shardshape.core.settings import Settings
from shardshape.core.trace import load_mapping, read_trace
from shardshape.gateway.routing_table import RoutingTable
from shardshape.infra.topics import create_topics
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.replay import replay
from tests.support.polling import wait_until
from tests.support.processes import running, settings_env, shardshape_command, wait_for_line
from tests.support.trace import GENAI_MAPPING, GENAI_TRACE, needs_genai_trace
from tests.support.workers import messages_on, settled, tails, unsettled, worker


def _worker_env(settings: Settings, worker_id: str) -> dict[str, str]:
    env = settings_env(settings)
    env.update(SHARDSHAPE_SNAPSHOT_INTERVAL_S="1", SHARDSHAPE_WORKER_ID=worker_id)
    return env


def _read_routing(settings: Settings) -> tuple[list[RoutingEntry], list[ShardSnapshot]] | None:
    """The routing entries and snapshots on the routing topic, read to its end as it is now;
    None while it holds no snapshot yet. Any such read is whole: an entry names a snapshot
    its worker adopted, published before it on the topic's one partition."""
    entries, snapshots = [], []
    for message in messages_on(settings, settings.topic_routing, settings.routing_partitions):
        if message.key().decode().startswith(SNAPSHOT_KEY_PREFIX):
            snapshots.append(decode(ShardSnapshot, message.value()))
        else:
            entries.append(decode(RoutingEntry, message.value()))
    return (entries, snapshots) if snapshots else None


def _adopted_versions(log: Path, service: str) -> list[int]:
    return [
        int(v)
        for v in re.findall(rf"adopted snapshot {re.escape(service)} v(\d+)", log.read_text())
    ]


def test_synthetic_events_become_routes_and_a_snapshot_a_gateway_predicts_with(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    log = tmp_path / "worker.log"
    labelled = list(SyntheticStream(seed=3).labelled(20_000))
    events = [event for event, _ in labelled]
    with running(shardshape_command("worker"), _worker_env(settings, "w1"), log) as worker:
        wait_for_line(log, "shardshape worker ready", worker, 90)
        replay(
            events,
            settings.confluent_config(),
            settings.topic_requests,
            settings.requests_partitions,
        )
        with RoutingTable(settings.confluent_config(), settings.topic_routing) as table:
            assert table.wait_for_snapshot("shop", min_version=1, timeout_s=60), log.read_text()
            # Entries follow the snapshot: keys are routed once their worker adopts it.
            wait_until(lambda: len(table) >= 50, 30, "routing entries for the keys seen")
            snapshot = table.snapshot("shop")
            live = {s.shard_id for s in snapshot.shards}
            assert 3 <= len(live) <= settings.max_shards + 1
            predictions = [table.predict(event) for event in events[-2_000:]]
            assert {p.shard_id for p in predictions} <= live
            assert {p.snapshot_version for p in predictions} == {table.snapshot_version("shop")}
            assert any(p.source == "key" for p in predictions)
            # An unseen user still gets a shard from the model.
            unseen = events[0].model_copy(update={"user_id": "never-seen-before"})
            assert table.predict(unseen).shard_id in live


def test_two_workers_share_one_snapshot_version(settings: Settings, tmp_path: Path) -> None:
    create_topics(settings)
    events = list(SyntheticStream(seed=5).events(30_000))
    with (
        worker(settings, tmp_path, "w1", snapshot_interval_s="1") as w1,
        worker(settings, tmp_path, "w2", snapshot_interval_s="1") as w2,
    ):
        both = [w1, w2]
        wait_until(
            lambda: all(w.partitions(settings.topic_requests) for w in both), 120,
            "both workers own partitions before any event arrives", every_s=0.5,
            explain=tails(both),
        )  # fmt: skip
        replay(
            events,
            settings.confluent_config(),
            settings.topic_requests,
            settings.requests_partitions,
        )
        wait_until(
            lambda: settled(settings, both), 120, "both workers handled and committed every event",
            every_s=0.5, explain=unsettled(settings, both),
        )  # fmt: skip
        entries, snapshots = wait_until(
            lambda: _read_routing(settings), 60, "a global snapshot on the routing topic",
            every_s=0.5, explain=tails(both),
        )  # fmt: skip
        versions = [s.version for s in snapshots]
        assert versions == sorted(set(versions)), "one merger: versions only grow, never repeat"
        latest = versions[-1]
        wait_until(
            lambda: all(latest in _adopted_versions(w.log, "shop") for w in both), 20,
            f"both workers adopted snapshot v{latest}", every_s=0.5, explain=tails(both),
        )  # fmt: skip
        assert {e.snapshot_version for e in entries} <= set(versions) | {0}


@needs_genai_trace
def test_replaying_the_real_trace_through_the_cli(settings: Settings, tmp_path: Path) -> None:
    create_topics(settings)
    log = tmp_path / "worker.log"
    env = _worker_env(settings, "w1")
    with running(shardshape_command("worker"), env, log) as worker:
        wait_for_line(log, "shardshape worker ready", worker, 90)
        done = subprocess.run(
            shardshape_command("replay", str(GENAI_TRACE), "--mapping", str(GENAI_MAPPING)),
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "sent 9," in done.stderr
        with RoutingTable(settings.confluent_config(), settings.topic_routing) as table:
            assert table.wait_for_snapshot("genai", timeout_s=60), log.read_text()
            snapshot = table.snapshot("genai")
            assert any("TXT_2_IMG" in s.summary for s in snapshot.shards)
            wait_until(lambda: len(table) >= 100, 30, "routing entries for the keys seen")
            events = list(read_trace([GENAI_TRACE], load_mapping(GENAI_MAPPING)))
            assignments = [table.predict(event) for event in events[-1_000:]]
            live = {s.shard_id for s in snapshot.shards}
            assert {a.shard_id for a in assignments} <= live
            sources = {a.source for a in assignments}
            assert "key" in sources and sources <= {"key", "model"}


def _write_synthetic_csv(path: Path, n: int) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["time", "op", "who", "ms", "outcome", "size", "pages"])
        for e in SyntheticStream(seed=9).events(n):
            writer.writerow([e.ts, e.request_type, e.user_id, e.latency_ms,
                             e.status, e.payload_bytes, e.attributes.get("pages", "")])  # fmt: skip


def test_replay_cli_sends_a_csv_through_a_mapping(settings: Settings, tmp_path: Path) -> None:
    create_topics(settings)
    trace = tmp_path / "synthetic.csv"
    _write_synthetic_csv(trace, 3_000)
    mapping = tmp_path / "synthetic.toml"
    mapping.write_text(
        'service = "shop"\n[time]\ncolumn = "time"\nformat = "unix"\n'
        '[request_type]\ncolumn = "op"\n[user]\ncolumn = "who"\n'
        '[latency]\ncolumn = "ms"\nunit = "ms"\n[status]\ncolumn = "outcome"\nerror = ["error"]\n'
        '[payload]\ncolumns = ["size"]\n[attributes.numeric]\npages = "pages"\n'
    )
    done = subprocess.run(
        shardshape_command("replay", str(trace), "--mapping", str(mapping), "--max-rate", "20000"),
        env=settings_env(settings), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "sent 3,000 events" in done.stderr
