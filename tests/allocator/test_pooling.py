"""Blocks planned for the pool (``[planning] block_rounding = "pool"``): one rounding and one
margin for the pool instead of one per shard, through the planner and the planning loop."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from shardshape.allocator.optimiser import ShardDemand
from shardshape.allocator.planner import PoolPlanner
from shardshape.allocator.planning import PlanningLoop
from shardshape.allocator.pooling import pool_rounded
from shardshape.allocator.pools_config import PoolsConfigError, parse_pools_config
from tests.allocator.shop import POOLS, WINDOW_S, steady


def _config(rounding: str):
    planning = f'[planning]\ntarget_utilisation = 0.8\nblock_rounding = "{rounding}"\n'
    return parse_pools_config(POOLS + planning)


def _demands(rng: np.random.Generator, n: int) -> list[ShardDemand]:
    out = []
    for shard in range(n):
        mean = float(rng.uniform(1, 60))
        out.append(ShardDemand("shop", shard, mean * 1.4, {"b": 10.0}, target_utilisation=0.8,
                               min_blocks=shard % 2, mean_rps=mean))  # fmt: skip
    return out


@pytest.mark.parametrize("seed", range(5))
def test_the_pool_rounds_once_and_carries_one_margin(seed: int) -> None:
    demands = _demands(np.random.default_rng(seed), 7)
    plans = {}
    for rounding in ("shard", "pool"):
        planner = PoolPlanner.from_config(_config(rounding), "main")
        step = planner.plan(demands, now=0.0)
        plans[rounding] = {
            s: sum(a.blocks.values()) for (_, s), a in step.allocation.shards.items()
        }
    per_shard, pooled = plans["shard"], plans["pool"]
    need = {d.shard_id: d.demand_rps / 8.0 for d in demands}  # blocks at the target
    mean = {d.shard_id: d.mean_rps / 8.0 for d in demands}
    for d in demands:
        s = d.shard_id
        assert per_shard[s] == max(d.min_blocks, math.ceil(need[s]))
        # Never past the shard's own plan, never under its mean's whole blocks or its minimum.
        assert max(d.min_blocks, math.floor(mean[s])) <= pooled[s] <= per_shard[s]
    margin = math.hypot(*(need[s] - mean[s] for s in need))
    assert sum(pooled.values()) >= sum(mean.values()) + margin - 1e-6
    assert sum(pooled.values()) < sum(per_shard.values())


def test_without_means_only_the_rounding_is_pooled() -> None:
    demands = [ShardDemand("shop", s, rps, {"b": 10.0}, target_utilisation=1.0)
               for s, rps in enumerate([21.0, 32.0, 3.0, 14.0])]  # fmt: skip
    rounded = pool_rounded(demands, {"b": 1.0})
    blocks = [math.ceil(d.demand_rps / 10.0 - 1e-6) for d in rounded]
    assert sum(blocks) == math.ceil(7.0) and blocks == [2, 3, 0, 2]
    assert [d.demand_rps for d in rounded][3] == 14.0  # the largest fraction kept its own


def test_the_planning_loop_plans_noisy_shards_with_fewer_blocks_for_the_pool() -> None:
    held = {}
    for rounding in ("shard", "pool"):
        loop = PlanningLoop(_config(rounding), WINDOW_S, horizon_s=20, complete_after_s=0)
        noise = np.random.default_rng(1)
        plans = []
        for window in range(80):
            series = {
                f"shop|{s}|": steady(noise.poisson(30 + 10 * s) / WINDOW_S, "shop")
                for s in range(6)
            }
            report = {"worker": "w1", "start": window * WINDOW_S, "end": (window + 1) * WINDOW_S,
                      "series": series, "replicas": {}}  # fmt: skip
            loop.add_report(orjson.dumps(report))
            plans += loop.tick(now=(window + 1) * WINDOW_S)
        held[rounding] = sum(sum(s.blocks.values()) for s in plans[-1].shards)
    assert held["pool"] < held["shard"], held


def test_a_wrong_rounding_names_the_setting() -> None:
    with pytest.raises(PoolsConfigError, match="block_rounding"):
        _config("pools")
