"""``shardshape experiments list|show`` against plans on the real broker."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
from confluent_kafka import Producer

from shardshape.allocator.experiments import CONTROL, ExperimentManager
from shardshape.core.contracts import (
    AllocationPlan,
    Arm,
    ArmOverrides,
    CachePolicy,
    Experiment,
    encode,
)
from shardshape.core.metrics import metric_key
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics
from tests.allocator.shop import CONFIG, arm_stats, plan_with, spec
from tests.support.processes import settings_env, shardshape_command


def _decided_and_running_plan() -> AllocationPlan:
    """A plan of the real manager: shard 1's LFU promoted, shard 2's experiment running."""
    manager = ExperimentManager(CONFIG)
    manager.attach(plan_with([spec(1, CachePolicy(policy="lru", size=200)), spec(2)]))
    lfu = ArmOverrides(cache=CachePolicy(policy="lfu", size=100))
    for shard, name, over in ((1, "lfu-200", lfu), (2, "b", ArmOverrides())):
        manager.start(
            "shop",
            Experiment(
                experiment_id=f"exp-{shard}",
                shard_id=shard,
                primary_metric="mean_latency",
                arms=[Arm(name=CONTROL, weight=0.5), Arm(name=name, weight=0.5, overrides=over)],
            ),
            thresholds=(40.0, 60.0),
        )
    rng = np.random.default_rng(0)
    for window in range(3):
        series = {
            metric_key("shop", 1, CONTROL): arm_stats(rng.lognormal(math.log(20), 0.4, 500)),
            metric_key("shop", 1, "lfu-200"): arm_stats(rng.lognormal(math.log(12), 0.4, 500)),
            metric_key("shop", 2, CONTROL): arm_stats(rng.lognormal(math.log(20), 0.4, 50)),
        }
        manager.observe((10.0 * window, 10.0 * window + 10), series)
    return manager.attach(plan_with([spec(1), spec(2)], version=5))


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        shardshape_command("experiments", *args), env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_experiments_list_and_show_read_the_plans_topic(settings: Settings) -> None:
    create_topics(settings)
    plan = _decided_and_running_plan()
    producer = Producer(settings.confluent_config())
    older = plan.model_copy(update={"version": 4, "experiments": []})
    for message in (older, plan):
        producer.produce(settings.topic_plans, key=b"shop", value=encode(message))
    assert producer.flush(10) == 0
    env = settings_env(settings)

    listed = _run(env, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["experiment_id"], r["status"]) for r in rows] == [
        ("exp-2", "running"),
        ("exp-1", "promoted"),
    ]
    assert all(r["service"] == "shop" and r["plan_version"] == 5 for r in rows)

    shown = _run(env, "show", "exp-1", "--json")
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["decision"]["outcome"] == "promoted" and body["decision"]["arm"] == "lfu-200"
    variant = next(e for e in body["evidence"] if e["arm"] == "lfu-200")
    assert variant["requests"] > 0 and variant["figures"]["primary.high"] < 0
    assert body["decision"]["adopted"]["cache"] == {
        "v": 1,
        "policy": "lfu",
        "size": 100,
        "ttl_s": None,
    }

    text = _run(env, "show", "exp-1")
    assert text.returncode == 0, text.stderr
    assert "decision: promoted lfu-200" in text.stdout and "primary.estimate" in text.stdout
    table = _run({**env, "COLUMNS": "200"}, "list")
    assert table.returncode == 0 and "exp-2" in table.stdout and "running" in table.stdout

    missing = _run(env, "show", "nope")
    assert missing.returncode == 2 and "experiments list" in missing.stderr
