"""``shardshape doctor --gateway-url`` against the example service as a real process: the
routing table, snapshot and plan come from the broker, and doctor shows them with the pools
and the reporter's counters, read from the status path it expects by default."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from shardshape.core.contracts import encode, snapshot_key
from shardshape.core.settings import Settings
from shardshape.gateway.status import STATUS_PATH, GatewayStatus
from shardshape.infra.topics import create_topics
from tests.gateway.isolation_support import isolation_settings, parent_dirs
from tests.support.plans import plan, shard
from tests.support.polling import wait_until
from tests.support.processes import settings_env, shardshape_command
from tests.support.serving import example_server
from tests.support.trained import trained_profiler

pytestmark = pytest.mark.broker

REQUESTS = 12


def _status_when(url: str, ready, timeout_s: float = 30) -> GatewayStatus:
    """The service's status once ``ready(status)`` holds."""

    def status_if_ready() -> GatewayStatus | None:
        status = GatewayStatus.from_json(httpx.get(f"{url}{STATUS_PATH}").content)
        return status if ready(status) else None

    return wait_until(status_if_ready, timeout_s, "the service's status")


def _doctor(url: str, isolated: Settings, *flags: str) -> subprocess.CompletedProcess[str]:
    """The real ``shardshape doctor --gateway-url url`` command."""
    env = {
        **os.environ,
        "COLUMNS": "200",
        "SHARDSHAPE_ISOLATION_CGROUP_PARENT": isolated.isolation_cgroup_parent,
    }
    command = shardshape_command("doctor", "--gateway-url", url, *flags)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_doctor_shows_a_running_services_routing_snapshot_plan_pools_and_reporter(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    profiler, _ = trained_profiler(4_000)
    snapshot = profiler.snapshot()
    entries = profiler.routing_changes()
    shard_ids = sorted(s.shard_id for s in snapshot.shards)
    layout = plan(7, *(shard(s, concurrency=3 + s) for s in shard_ids))
    producer = Producer(settings.confluent_config())
    producer.produce(settings.topic_routing, key=snapshot_key("shop"), value=encode(snapshot))
    for entry in entries:
        producer.produce(settings.topic_routing, key=entry.key.encode(), value=encode(entry))
    producer.produce(settings.topic_plans, key=b"shop", value=encode(layout))
    assert producer.flush(10) == 0

    with example_server(settings_env(settings), tmp_path / "service.log") as url:
        _status_when(
            url,
            lambda s: (
                s.plan_version == 7
                and s.routing_entries == len(entries)
                and s.snapshot_versions == {"shop": snapshot.version}
            ),
        )
        for n in range(REQUESTS):
            assert httpx.get(f"{url}/items/{n}?read_ms=1").status_code == 200
        served = _status_when(url, lambda s: s.reporter and s.reporter.delivered == REQUESTS)

        isolated = isolation_settings()  # doctor's probe group under a parent of its own
        shown = _doctor(url, isolated)
        as_json = _doctor(url, isolated, "--json")
    assert not [path for path in parent_dirs(isolated) if path.exists()]

    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    gateway_id = served.gateway_id
    assert re.fullmatch(r".+:\d+", gateway_id), "host name and pid of the service"
    assert (
        f"gateway shop ({gateway_id}): {len(entries):,} routing entries, "
        f"snapshot shop v{snapshot.version}, plan v7"
    ) in text
    rows = {
        cells[0]: cells
        for line in text.splitlines()
        if "│" in line
        for cells in [[cell.strip() for cell in line.strip("│ ").split("│")]]
    }
    for s in shard_ids:
        assert rows[f"shard {s}"][1:3] == ["in-process", str(3 + s)], rows
    assert rows["default"][1:3] == ["in-process", str(settings.gateway_default_concurrency)]
    assert (
        f"reporter: {REQUESTS} reported, {REQUESTS} delivered, 0 dropped, 0 spooled, "
        "0 buffered, 0 in flight; Kafka reachable"
    ) in text

    assert as_json.returncode == 0, as_json.stderr
    status = GatewayStatus.model_validate(json.loads(as_json.stdout)["gateway"])
    assert status.reporter is not None and status.reporter.delivered == REQUESTS
    assert {p.shard_id for p in status.pools} == {*shard_ids, None}
