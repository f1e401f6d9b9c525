"""Plans on the real broker: workers report metric windows, one of them plans the pool."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

from shardshape.allocator.pools_config import load_pools_config
from shardshape.core.settings import Settings
from shardshape.gateway.reporter import Reporter
from shardshape.infra.topics import create_topics
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.replay import replay
from tests.support.paths import REPO_ROOT
from tests.support.polling import wait_until
from tests.support.processes import running, settings_env, shardshape_command, wait_for_line

POOLS = REPO_ROOT / "examples" / "pools.toml"


def _plans(env: dict[str, str]) -> list[dict]:
    done = subprocess.run(
        shardshape_command("plan", "show", "--service", "shop", "--json"),
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_worker_publishes_plans_within_the_pool(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(
        update={"pools_config": POOLS, "plan_window": "10s", "plan_horizon_s": 30}
    )
    create_topics(settings)
    env = settings_env(settings)
    log = tmp_path / "worker.log"
    events = list(SyntheticStream(seed=6, rate_per_s=400).events(12_000))
    with running(shardshape_command("worker"), env, log) as worker:
        wait_for_line(log, "shardshape worker ready", worker, 90)
        # Two replicas of the service, each with its own gateway, send half the requests.
        senders = [
            threading.Thread(
                target=replay,
                args=(events[i::2], settings.confluent_config(), settings.topic_requests,
                      settings.requests_partitions),
                kwargs={"max_rate": 200, "gateway_id": gateway},
            )
            for i, gateway in enumerate(("gw-a", "gw-b"))
        ]  # fmt: skip
        for sender in senders:
            sender.start()
        plans = wait_until(lambda: _plans(env), 90, "a plan of shop", every_s=2,
                           explain=lambda: log.read_text()[-3000:])  # fmt: skip
        for sender in senders:
            sender.join(60)

    plan = plans[0]
    assert plan["service"] == "shop" and plan["version"] >= 1 and plan["pool_id"] == "main"
    assert plan["shards"], "every shard seen gets a spec"
    pool = load_pools_config(POOLS).pools["main"].blocks
    used: dict[str, int] = {}
    for spec in plan["shards"]:
        for block_type, n in spec["blocks"].items():
            used[block_type] = used.get(block_type, 0) + n
        assert spec["forecast_rps"] is not None and spec["forecast_rps"] >= 0
    assert all(used[t] <= pool[t] for t in used), (used, pool)
    assert sum(used.values()) >= 1
    assert "forecast" in plan["rationale"]
    # Each live replica gets its share, and together they never claim more than the plan.
    assert plan["replicas"] == ["gw-a", "gw-b"]
    for spec in plan["shards"]:
        total, share = spec["resources"], spec["per_replica"]
        assert (
            2 * share["cpu_millicores"] <= total["cpu_millicores"] < 2 * share["cpu_millicores"] + 2
        )
        assert 2 * share["memory_mib"] <= total["memory_mib"]
    text = subprocess.run(
        shardshape_command("plan", "show"), env=env, capture_output=True, text=True, timeout=60
    )
    assert text.returncode == 0 and "shop plan v" in text.stdout


def _forecast(plans: list[dict], shard_id: int) -> float:
    specs = {spec["shard_id"]: spec for spec in plans[0]["shards"]} if plans else {}
    return specs[shard_id]["forecast_rps"] if shard_id in specs else 0.0


def test_requests_waiting_in_a_gateway_reach_the_plan(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(
        update={"pools_config": POOLS, "plan_window": "10s", "plan_horizon_s": 30,
                "reporter_queue_interval_ms": 500}
    )  # fmt: skip
    create_topics(settings)
    env = settings_env(settings)
    log = tmp_path / "worker.log"
    events = list(SyntheticStream(seed=6, rate_per_s=400).events(4_000))
    drain_s = load_pools_config(POOLS).planning.queue_drain_s
    with running(shardshape_command("worker"), env, log) as worker:
        wait_for_line(log, "shardshape worker ready", worker, 90)
        replay(events, settings.confluent_config(), settings.topic_requests,
               settings.requests_partitions, max_rate=400, gateway_id="gw-a")  # fmt: skip
        plans = wait_until(lambda: _plans(env), 90, "a plan of shop", every_s=2,
                           explain=lambda: log.read_text()[-3000:])  # fmt: skip
        shard = plans[0]["shards"][0]["shard_id"]
        assert _forecast(plans, shard) < 40_000 / drain_s
        # A burst of that shard now waits in a gateway's pools; its reporter tells the planner.
        waiting = {shard: 40_000}
        before_drained: list[int] = []  # queue reports acknowledged when it was counted
        with Reporter(settings, gateway_id="gw-a") as reporter:

            def queued() -> dict[int, int]:
                # Counted on the reporter's thread, only with no report in flight: once the
                # queues are empty, the next report acknowledged is the drained one.
                if not waiting and not before_drained:
                    before_drained.append(reporter.stats().queue_reports)
                return dict(waiting)

            reporter.watch_queues("shop", queued)

            def with_the_burst() -> list[dict] | None:
                newest = _plans(env)
                return newest if _forecast(newest, shard) >= 40_000 / drain_s else None

            plans = wait_until(
                with_the_burst, 60, f"a plan counting shard {shard}'s waiting requests",
                every_s=2, explain=lambda: log.read_text()[-3000:],
            )  # fmt: skip
            waiting.clear()

            def drained_acknowledged() -> bool:
                return bool(before_drained) and reporter.stats().queue_reports > before_drained[0]

            wait_until(drained_acknowledged, 10, "the drained (empty) queue report acknowledged",
                       explain=lambda: f"{reporter.stats()}, {before_drained=}")  # fmt: skip
            reports = reporter.stats().queue_reports
    assert reports >= 2  # the burst, then its end
