"""From forecasts to AllocationPlans: the whole allocator path, and the plan's contents."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import pytest

from shardshape.allocator.calibration import ShardWindow
from shardshape.allocator.optimiser import ShardDemand, solve
from shardshape.allocator.plan import build_plan
from shardshape.allocator.planner import (
    PoolPlanner,
    calibrator_for,
    joint_capacity,
    shard_demands,
)
from shardshape.allocator.pools_config import load_pools_config
from shardshape.core.contracts import AllocationPlan, decode, encode

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pools.toml"


def test_planner_path_makes_one_plan_per_service_within_the_pool() -> None:
    config = load_pools_config(EXAMPLE)
    cal = calibrator_for(config)
    forecasts = {("shop", s): 300.0 for s in (0, 1, 2, 7)} | {("exports", 0): 40.0}
    planner = PoolPlanner.from_config(config, "main")
    step = planner.plan(shard_demands(config, cal, "main", forecasts), now=100.0)
    assert step.replanned
    pool = config.pools["main"].blocks
    for t, n in pool.items():
        assert step.allocation.used[t] + step.allocation.surplus[t] == n
    for service in ("shop", "exports"):
        plan = build_plan(
            step.allocation,
            service,
            pool_id="main",
            block_types=config.block_types,
            replicas=["gw-2", "gw-1", "gw-3"],
            version=1,
            calibrator=cal,
        )
        assert decode(AllocationPlan, encode(plan)) == plan
        for spec in plan.shards:
            assert spec.per_replica.cpu_millicores * 3 <= spec.resources.cpu_millicores
            assert spec.forecast_rps == forecasts[service, spec.shard_id]
        assert plan.replicas == ["gw-1", "gw-2", "gw-3"]
    shop = {
        s.shard_id: s
        for s in build_plan(
            step.allocation,
            "shop",
            pool_id="main",
            block_types=config.block_types,
            replicas=[],
            version=1,
        ).shards
    }
    assert shop[0].priority == 500 and shop[0].slo_p99_ms == 100
    assert shop[0].per_replica == shop[0].resources  # no replicas known: one assumed


def test_rationale_states_forecast_capacity_utilisation_and_shortfall() -> None:
    demands = [
        ShardDemand("shop", 0, 300, {"small": 50}, priority=9, quantile=0.9),
        ShardDemand("shop", 1, 300, {"small": 50}, priority=1, quantile=0.9),
    ]
    allocation = solve(demands, {"small": 10}, {"small": 1.0})
    from shardshape.allocator.blocks import BlockType

    small = BlockType(name="small", cpu_millicores=250, memory_mib=256, cost=1)
    plan = build_plan(
        allocation,
        "shop",
        pool_id="main",
        block_types={"small": small},
        replicas=["a"],
        version=3,
    )
    text = plan.rationale
    assert "shard 0: forecast p90 300.0 rps; 9 x small at 50.0 rps/block" in text
    assert "utilisation 0.67 (target 0.70)" in text
    assert "shard 1:" in text and "shortfall" in text and "(pool)" in text


def test_min_interval_holds_a_plan_unless_a_shard_is_overloaded() -> None:
    planner = PoolPlanner("main", {"a": 50}, {"a": 1.0}, min_interval_s=30)
    d = ShardDemand("svc", 0, 100, {"a": 50})
    first = planner.plan([d], now=0)
    assert not planner.plan([ShardDemand("svc", 0, 110, {"a": 50})], now=10).replanned
    surge = planner.plan([ShardDemand("svc", 0, 1000, {"a": 50})], now=11)
    assert (
        surge.replanned
        and surge.allocation.shards["svc", 0].blocks["a"]
        > first.allocation.shards["svc", 0].blocks["a"]
    )
    assert planner.plan([d], now=50).replanned


def test_a_shard_the_full_pool_cannot_cover_does_not_replan_every_tick() -> None:
    planner = PoolPlanner("main", {"a": 10}, {"a": 1.0}, min_interval_s=30)
    short = ShardDemand("svc", 0, 1_000, {"a": 50})  # needs 29 blocks at 0.7, the pool has 10
    assert planner.plan([short], now=0).allocation.shards["svc", 0].shortfall_rps > 0
    assert not planner.plan([short], now=10).replanned  # still short, nothing changed
    assert planner.plan([ShardDemand("svc", 0, 1_500, {"a": 50})], now=11).replanned  # grew


def test_demand_and_capacity_uncertainty_make_one_quantile_not_two() -> None:
    config = load_pools_config(EXAMPLE)
    cal = calibrator_for(config)
    for _ in range(30):  # some evidence: capacity known to a few percent
        cal.observe(ShardWindow("shop", 0, window_s=10, completions=400, busy_ms=40_000,
                                blocks={"small": 2}))  # fmt: skip
    forecasts, means = {("shop", 0): 130.0}, {("shop", 0): 100.0}
    stacked = shard_demands(config, cal, "main", forecasts)[0].capacity_rps["small"]
    joint = shard_demands(config, cal, "main", forecasts, means)[0].capacity_rps["small"]
    est = cal.estimate("shop", 0, "small")
    assert stacked == est.conservative_rps < joint < est.mean_rps
    # Without a demand band the capacity's own quantile is all there is.
    alone = joint_capacity(est, 100.0, 100.0, config.planning.forecast_quantile)
    assert alone < joint and alone == pytest.approx(
        est.mean_rps * math.exp(-NormalDist().inv_cdf(0.9) * est.sd_rps / est.mean_rps)
    )
