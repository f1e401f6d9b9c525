"""The experiment manager in-process: proposals, decisions with evidence, adoption, budget.

Traffic is simulated per window, as the metrics agent would count it per (service, shard, arm):
the arm of each request is the real :class:`~shardshape.allocator.arms.ArmAssigner`'s, caches are
real cachetools caches, latencies are drawn per request and folded into real
:class:`~shardshape.core.metrics.ShardStats` (sketch and counters), so the manager sees what the
planning loop hands it from the workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cachetools
import numpy as np
import orjson
import pytest

from shardshape.allocator.arms import ArmAssigner
from shardshape.allocator.experiments import CONTROL, ExperimentManager, ExperimentPolicy
from shardshape.allocator.planning import PlanningLoop
from shardshape.allocator.pools_config import PoolsConfig, load_pools_config
from shardshape.allocator.sequential import TestDesign
from shardshape.core.contracts import (
    AllocationPlan,
    Arm,
    CachePolicy,
    Experiment,
    decode,
    encode,
)
from shardshape.core.metrics import ShardStats, metric_key
from tests.allocator.shop import CONFIG, WINDOW_S, arm_stats, plan_with, spec
from tests.support.paths import REPO_ROOT

# -- a planted better configuration ---------------------------------------------------------


class ZipfShop:
    """Users request items with Zipf popularity (s = 1 over 10,000 items); each arm answers
    from its own cache: 2 ms on a hit, 20 ms on a miss (lognormal, sd 0.3 in log)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        weights = 1.0 / np.arange(1, 10_001)
        self.popularity = weights / weights.sum()

    def items(self, n: int) -> list[int]:
        return self.rng.choice(len(self.popularity), n, p=self.popularity).tolist()

    def window(
        self, n: int, caches: dict[str, cachetools.Cache], arm_of: Callable[[str], str]
    ) -> dict[str, ShardStats]:
        users = self.rng.integers(0, 50_000, n).tolist()
        arms = [arm_of(f"user-{u}") for u in users]
        hit = np.zeros(n, dtype=bool)
        for i, (item, arm) in enumerate(zip(self.items(n), arms, strict=True)):
            hit[i] = _lookup(caches[arm], item)
        latency = np.where(hit, 2.0, 20.0) * self.rng.lognormal(0.0, 0.3, n)
        names = np.array(arms)
        return {arm: arm_stats(latency[names == arm], hits=hit[names == arm]) for arm in set(arms)}


def _lookup(cache: cachetools.Cache, item: int) -> bool:
    if item in cache:
        cache[item]  # a read counts as a use (recency for LRU, frequency for LFU)
        return True
    cache[item] = True
    return False


def _cache(policy: CachePolicy) -> cachetools.Cache:
    kind = {"lru": cachetools.LRUCache, "lfu": cachetools.LFUCache}[policy.policy]
    return kind(maxsize=policy.size)


def test_lfu_is_proposed_for_a_zipf_shard_and_promoted_within_20k_requests() -> None:
    """The shard runs LRU (200 entries) at a hit rate under 0.6: the manager proposes LFU on
    half the traffic; LFU's clear hit-rate margin makes it faster, and it is promoted within
    20,000 requests of the experiment's start; the next plan gives the shard LFU, full size."""
    shop = ZipfShop(seed=4)
    planted = {
        kind: cachetools.LRUCache if kind == "lru" else cachetools.LFUCache
        for kind in ("lru", "lfu")
    }
    rates = {}
    for kind, cache_type in planted.items():  # the arms' caches, 100 entries, on 30k requests
        cache = cache_type(maxsize=100)
        rates[kind] = np.mean([_lookup(cache, item) for item in shop.items(30_000)])
    assert rates["lfu"] - rates["lru"] >= 0.08, f"the planted hit-rate margin: {rates}"

    policy = ExperimentPolicy(budget=0.5, low_hit_rate=0.6, trigger_windows=2)
    manager = ExperimentManager(CONFIG, policy)
    manager.attach(plan_with([spec(1, CachePolicy(policy="lru", size=200))]))
    caches: dict[str, cachetools.Cache] = {"": cachetools.LRUCache(200)}
    assigner: ArmAssigner | None = None
    started_at, decided_at, served = None, None, 0
    for window in range(60):
        running = manager.running("shop")
        if running and assigner is None:  # the gateway follows the new plan
            experiment = running[0]
            assigner = ArmAssigner(experiment)
            for arm in experiment.arms:
                share = arm.weight / sum(a.weight for a in experiment.arms)
                given = arm.overrides.cache or CachePolicy(
                    policy="lru", size=math.floor(200 * share)
                )
                caches[arm.name] = _cache(given)
            started_at = served
        series = shop.window(1_000, caches, assigner.pick if assigner else lambda key: "")
        served += 1_000
        span = (window * WINDOW_S, (window + 1) * WINDOW_S)
        decided = manager.observe(span, {metric_key("shop", 1, a): s for a, s in series.items()})
        if decided:
            decided_at = served
            break

    assert started_at is not None, "a low hit rate proposes an experiment"
    assert experiment.arms[1].name == "lfu-200" and experiment.primary_metric == "mean_latency"
    assert experiment.arms[1].overrides.cache == CachePolicy(policy="lfu", size=100)
    assert "cache hit rate" in experiment.reason
    assert decided_at is not None and decided_at - started_at <= 20_000
    (finished,) = decided
    assert finished.status == "promoted" and finished.decision is not None
    assert finished.decision.arm == "lfu-200"
    assert finished.decision.adopted is not None
    assert finished.decision.adopted.cache == CachePolicy(policy="lfu", size=200)
    evidence = {e.arm: e for e in finished.evidence}
    assert evidence["lfu-200"].figures["primary.high"] < 0
    assert (
        evidence["lfu-200"].figures["cache_hit_rate"] > evidence[CONTROL].figures["cache_hit_rate"]
    )
    # A promotion is the shard's definition from the next plan on.
    nxt = manager.attach(plan_with([spec(1, CachePolicy(policy="lru", size=200))], version=2))
    assert nxt.shards[0].cache == CachePolicy(policy="lfu", size=200)
    assert [e.status for e in nxt.experiments] == ["promoted"]
    assert "promoted" in nxt.rationale


# -- a planted worse configuration ---------------------------------------------------------


def test_a_much_slower_variant_is_aborted_by_its_p99_guardrail_within_1000_requests() -> None:
    """The shard misses its 50 ms SLO: the manager proposes one more block's slots. The
    variant is planted 5x slower; its share of requests above the control's p99 aborts it
    within 1,000 requests of the experiment, and nothing is adopted."""
    manager = ExperimentManager(CONFIG, ExperimentPolicy(budget=0.5))
    manager.attach(plan_with([spec(2, blocks=4)]))
    rng = np.random.default_rng(2)
    served, started_at, decided = 0, None, []
    for window in range(40):
        running = manager.running("shop")
        if running and started_at is None:
            experiment, started_at = running[0], served
            assigner = ArmAssigner(experiment)
        n = 500
        latency = rng.lognormal(math.log(30.0), 0.4, n)  # p99 about 76 ms: over the SLO
        if started_at is None:
            series = {metric_key("shop", 2, None): arm_stats(latency)}
        else:
            arms = np.array([assigner.pick(f"u{served + i}") for i in range(n)])
            latency[arms != CONTROL] *= 5.0
            series = {metric_key("shop", 2, a): arm_stats(latency[arms == a]) for a in set(arms)}
        served += n
        decided = manager.observe((window * WINDOW_S, (window + 1) * WINDOW_S), series)
        if decided:
            break

    assert started_at is not None and experiment.primary_metric == "p95_latency"
    assert experiment.arms[1].name == "slots-x1.25"
    assert experiment.arms[1].overrides.concurrency == 10  # 16 slots x 0.5 = 8, x 1.25
    assert decided and decided[0].status == "aborted"
    assert served - started_at <= 1_000
    assert "guardrail share above p99" in decided[0].decision.reason  # type: ignore[union-attr]
    assert ("shop", 2) not in manager.definitions
    assert manager.running("shop") == []


# -- A/A -------------------------------------------------------------------------------------


def test_an_aa_experiment_run_200_times_promotes_in_at_most_5_percent() -> None:
    """Both arms draw from one distribution (lognormal latency, 1% errors); each run goes
    until the manager decides or the experiment expires after 30 windows of 600 requests."""
    rng = np.random.default_rng(2024)
    outcomes: dict[str, int] = {}
    for run in range(200):
        manager = ExperimentManager(CONFIG, ExperimentPolicy(enabled=False))
        manager.start(
            "shop",
            Experiment(
                experiment_id=f"aa-{run}",
                shard_id=1,
                primary_metric="mean_latency",
                arms=[Arm(name=CONTROL, weight=0.5), Arm(name="b", weight=0.5)],
                max_duration_s=30 * WINDOW_S,
            ),
            thresholds=(45.0, 62.0),
        )
        for window in range(31):
            n = rng.binomial(600, 0.5, 2)
            series = {
                metric_key("shop", 1, arm): arm_stats(
                    rng.lognormal(math.log(20.0), 0.5, k), errors=int(rng.binomial(k, 0.01))
                )
                for arm, k in zip((CONTROL, "b"), n, strict=True)
            }
            decided = manager.observe((window * WINDOW_S, (window + 1) * WINDOW_S), series)
            if decided:
                outcomes[decided[0].status] = outcomes.get(decided[0].status, 0) + 1
                break
    assert sum(outcomes.values()) == 200, "every run ends: decided or expired"
    assert outcomes.get("promoted", 0) / 200 <= 0.05, outcomes


# -- proposals: one per shard, budget, cooldown, retry ------------------------------------------


def _low_hits(n: int = 1_000, hit_rate: float = 0.2) -> ShardStats:
    latency = np.random.default_rng(n).lognormal(2.3, 0.3, n)
    return arm_stats(latency, hits=np.arange(n) < hit_rate * n)


def test_the_budget_bounds_the_traffic_in_experiments_and_one_runs_per_shard() -> None:
    manager = ExperimentManager(CONFIG, ExperimentPolicy(trigger_windows=1, budget=0.2))
    series = {metric_key("shop", 1, None): _low_hits(), metric_key("shop", 2, None): _low_hits()}
    manager.observe((0.0, 10.0), series)
    (running,) = manager.running("shop")
    assert running.shard_id == 1 and running.arms[1].weight == pytest.approx(0.4)
    assert manager.traffic_in_experiments("shop") == pytest.approx(0.2)
    manager.observe((10.0, 20.0), series)  # still no room for shard 2
    assert [e.shard_id for e in manager.running("shop")] == [1]
    with pytest.raises(ValueError, match="one at a time per shard"):
        manager.start("shop", running)


def test_after_a_rejection_the_next_change_waits_for_the_cooldown_and_is_a_new_one() -> None:
    policy = ExperimentPolicy(
        trigger_windows=1, budget=0.5, cooldown_s=60, design=TestDesign(min_requests=50)
    )
    manager = ExperimentManager(CONFIG, policy)
    manager.attach(plan_with([spec(1, CachePolicy(policy="lru", size=200))]))
    manager.observe((0.0, 10.0), {metric_key("shop", 1, None): _low_hits()})
    first = manager.running("shop")[0]
    assert first.arms[1].name == "lfu-200"
    rng = np.random.default_rng(1)
    t, decided = 10.0, []
    while not decided:  # the variant is planted slower: rejected on the primary metric
        series = {
            metric_key("shop", 1, CONTROL): arm_stats(rng.lognormal(2.3, 0.3, 500)),
            metric_key("shop", 1, "lfu-200"): arm_stats(rng.lognormal(2.4, 0.3, 500)),
        }
        decided = manager.observe((t, t + 10), series)
        t += 10
    assert decided[0].status == "rejected"
    manager.observe((t, t + 10), {metric_key("shop", 1, None): _low_hits()})
    assert manager.running("shop") == [], "cooling down"
    manager.observe((t + 60, t + 70), {metric_key("shop", 1, None): _low_hits()})
    (second,) = manager.running("shop")
    assert second.arms[1].name == "lru-400", "LFU is not retried; a bigger LRU is"


def test_a_new_planner_restores_promotions_and_ends_what_was_running() -> None:
    manager = ExperimentManager(CONFIG, ExperimentPolicy(trigger_windows=1))
    promoted = Experiment(
        experiment_id="e-old",
        shard_id=1,
        status="promoted",
        arms=[Arm(name=CONTROL, weight=0.5), Arm(name="lfu-200", weight=0.5)],
        decision={
            "outcome": "promoted",
            "arm": "lfu-200",
            "adopted": {"cache": {"policy": "lfu", "size": 200}},
        },
    )
    running = Experiment(
        experiment_id="e-run",
        shard_id=2,
        arms=[Arm(name=CONTROL, weight=0.5), Arm(name="x", weight=0.5)],
    )
    published = plan_with([spec(1), spec(2)]).model_copy(
        update={"experiments": [promoted, running]}
    )
    manager.restore(published)
    plan = manager.attach(plan_with([spec(1), spec(2)], version=8))
    assert plan.shards[0].cache == CachePolicy(policy="lfu", size=200)
    statuses = {e.experiment_id: e.status for e in plan.experiments}
    assert statuses == {"e-old": "promoted", "e-run": "expired"}
    manager.restore(published)  # its own plans coming back change nothing
    assert manager.definitions[("shop", 1)].cache == CachePolicy(policy="lfu", size=200)


def test_a_promoted_block_type_limits_the_shard_to_that_type_in_the_optimiser() -> None:
    from shardshape.allocator.optimiser import ShardDemand

    manager = ExperimentManager(CONFIG)
    manager.attach(plan_with([spec(3, blocks=2)]))
    manager.start(
        "shop",
        Experiment(
            experiment_id="types",
            shard_id=3,
            primary_metric="mean_latency",
            arms=[
                Arm(name=CONTROL, weight=0.5),
                Arm(name="large", weight=0.5, overrides={"block_type": "large"}),
            ],
        ),
        thresholds=(30.0, 40.0),
    )
    rng = np.random.default_rng(0)
    t, decided = 0.0, []
    while not decided:
        series = {
            metric_key("shop", 3, CONTROL): arm_stats(rng.lognormal(3.0, 0.3, 400)),
            metric_key("shop", 3, "large"): arm_stats(rng.lognormal(2.6, 0.3, 400)),
        }
        decided = manager.observe((t, t + 10), series)
        t += 10
    assert decided[0].status == "promoted"
    demand = ShardDemand("shop", 3, demand_rps=100, capacity_rps={"small": 50, "large": 200})
    (shaped,) = manager.shape_demands([demand])
    assert shaped.capacity_rps == {"large": 200}


# -- the planning loop: plans carry experiments and decisions --------------------------------


def _report(window: int, series: dict[str, ShardStats]) -> bytes:
    return orjson.dumps(
        {
            "worker": "w1",
            "start": window * WINDOW_S,
            "end": (window + 1) * WINDOW_S,
            "series": {key: stats.to_bytes().decode() for key, stats in series.items()},
            "replicas": {"shop": ["gw-a"]},
        }
    )


def test_the_planning_loop_publishes_the_experiment_then_its_decision_then_the_new_definition() -> (
    None
):
    config: PoolsConfig = load_pools_config(REPO_ROOT / "examples" / "pools.toml")
    policy = ExperimentPolicy(trigger_windows=1, budget=0.5, cache_size=500)
    loop = PlanningLoop(config, WINDOW_S, horizon_s=30, complete_after_s=0, experiments=policy)
    rng = np.random.default_rng(12)
    plans: list[AllocationPlan] = []
    experiment = None
    for window in range(40):
        n = 800
        latency = rng.lognormal(math.log(40.0), 0.3, n)
        if experiment is None:  # no cache yet: every lookup misses
            series = {metric_key("shop", 1, None): arm_stats(latency, hits=np.zeros(n, bool))}
        else:  # the variant's cache answers 60% of requests in 4 ms
            assigner = ArmAssigner(experiment)
            arms = np.array([assigner.pick(f"u{window}-{i}") for i in range(n)])
            hit = (arms != CONTROL) & (rng.random(n) < 0.6)
            latency[hit] = 4.0
            series = {
                metric_key("shop", 1, a): arm_stats(latency[arms == a], hits=hit[arms == a])
                for a in set(arms.tolist())
            }
        loop.add_report(_report(window, series))
        for plan in loop.tick(now=(window + 1) * WINDOW_S):
            plans.append(decode(AllocationPlan, encode(plan)))  # what the plans topic carries
            loop.note_published(plan)
        running = [e for e in plans[-1].experiments if e.status == "running"] if plans else []
        experiment = running[0] if running else experiment
        if plans and any(e.status == "promoted" for e in plans[-1].experiments):
            break

    started = next(i for i, p in enumerate(plans) if p.experiments)
    first = plans[started].experiments[0]
    assert first.status == "running" and first.arms[1].name == "lru-500"
    assert first.arms[1].overrides.cache == CachePolicy(policy="lru", size=250)
    decided = next(
        i
        for i, p in enumerate(plans)
        if p.experiments[-1:] and p.experiments[-1].status != "running"
    )
    assert decided > started, "the decision comes in a later plan"
    final = plans[decided].experiments[-1]
    assert final.status == "promoted" and final.decision is not None
    assert final.decision.adopted is not None
    assert final.decision.adopted.cache == CachePolicy(policy="lru", size=500)
    shard = next(s for s in plans[decided].shards if s.shard_id == 1)
    assert shard.cache == CachePolicy(policy="lru", size=500)
    assert all(p.version == plans[0].version + i for i, p in enumerate(plans))


def test_a_promoted_slots_change_scales_the_shard_slots_in_later_plans_and_survives_failover() -> (
    None
):
    """Shard 2 misses its SLO; one more block's slots make the variant's tail shorter (planted:
    a third less latency), so p95 is promoted and every later plan gives the shard 5/4 of the
    slots its blocks have; a planner that takes over restores the factor from the plan."""
    manager = ExperimentManager(CONFIG, ExperimentPolicy(budget=0.5))
    manager.attach(plan_with([spec(2, blocks=4)]))
    rng = np.random.default_rng(6)
    decided: list[Experiment] = []
    for window in range(40):
        running = manager.running("shop")
        latency = rng.lognormal(math.log(30.0), 0.4, 600)
        if not running:
            series = {metric_key("shop", 2, None): arm_stats(latency)}
        else:
            assigner = ArmAssigner(running[0])
            arms = np.array([assigner.pick(f"u{window}-{i}") for i in range(600)])
            latency[arms != CONTROL] *= 0.67
            series = {metric_key("shop", 2, a): arm_stats(latency[arms == a]) for a in set(arms)}
        decided = manager.observe((window * WINDOW_S, (window + 1) * WINDOW_S), series)
        if decided:
            break
    assert decided and decided[0].status == "promoted"
    assert decided[0].primary_metric == "p95_latency" and decided[0].arms[1].name == "slots-x1.25"
    plan = manager.attach(plan_with([spec(2, blocks=8)], version=2))
    assert plan.shards[0].per_replica.concurrency == 40  # 8 blocks x 4 slots x 5/4
    assert plan.shards[0].resources.concurrency == 40

    successor = ExperimentManager(CONFIG)
    successor.restore(plan)
    again = successor.attach(plan_with([spec(2, blocks=8)], version=3))
    assert again.shards[0].per_replica.concurrency == 40
