"""The fast path for a pool too small for every shard, checked against the MILP path."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from shardshape.allocator.optimiser import Allocation, ShardDemand, Smoothing, solve
from shardshape.allocator.optimiser.cover import per_shard
from shardshape.allocator.optimiser.milp import Stages
from shardshape.allocator.optimiser.problem import Problem


def _binding_instance(rng: random.Random, n_shards: int, types: list[str]):
    costs = {t: round(rng.uniform(0.5, 4), 2) for t in types}
    demands = [
        ShardDemand(
            f"svc{s % 2}",
            s,
            demand_rps=round(rng.uniform(50, 600), 1),
            capacity_rps={t: round(rng.uniform(20, 150), 1) for t in types if rng.random() < 0.9},
            priority=rng.choice([0, 5, 9]),
            min_blocks=rng.randint(0, 2),
            target_utilisation=rng.choice([0.7, 1.0]),
        )
        for s in range(n_shards)
    ]
    pool = {t: rng.randint(1, 3 * n_shards) for t in types}
    return demands, pool, costs


def _by_level(result: Allocation) -> list[tuple[int, float]]:
    """Per priority level, highest first: blocks under the minima, worst demand shortfall."""
    levels: dict[int, list[tuple[int, float]]] = {}
    for a in result.shards.values():
        y = a.shortfall_rps / a.demand.demand_rps
        levels.setdefault(a.demand.priority, []).append((a.min_shortfall, y))
    return [
        (sum(m for m, _ in v), max(y for _, y in v))
        for _, v in sorted(levels.items(), reverse=True)
    ]


def _one_block(demands: list[ShardDemand], priority: int) -> float:
    """The largest share of its demand one block covers, over the shards at ``priority``."""
    return max(
        (
            d.target_utilisation * c / d.demand_rps
            for d in demands
            if d.priority == priority
            for c in d.capacity_rps.values()
        ),
        default=0.0,
    )


@pytest.mark.parametrize("with_previous", [False, True])
def test_fast_path_meets_the_levels_the_milp_meets_and_cuts_the_next_within_a_block(
    with_previous: bool,
) -> None:
    rng = random.Random(100 + with_previous)
    binding = same = 0
    for _ in range(150):
        types = ["a", "b", "c"][: rng.randint(1, 3)]
        demands, pool, costs = _binding_instance(rng, rng.randint(2, 6), types)
        previous, smoothing = None, None
        if with_previous:
            previous = {d.key: {t: rng.randint(0, 4) for t in types} for d in demands}
            smoothing = Smoothing(max_step_up=rng.randint(1, 4), max_step_down=rng.randint(0, 2))
        fast = solve(demands, pool, costs, previous=previous, smoothing=smoothing)
        problem = Problem(demands, pool, costs, previous, smoothing)
        stages = Stages(problem, 10.0, 0.0)
        if per_shard(problem) is not None or stages.cover() is not None:
            continue  # the pool covers everything: not the shortfall path
        binding += 1
        milp = stages.allocation(stages.run(), 0.0)
        assert not milp.notes, "the reference must be the MILP's optimum, not a time-out"
        for t, n in pool.items():
            assert fast.used[t] + fast.surplus[t] == n and fast.used[t] <= n
        if previous is not None:
            for d in demands:
                for t, n in fast.shards[d.key].blocks.items():
                    assert n <= previous[d.key][t] + smoothing.bounds(previous[d.key][t])[1]
        got, want = _by_level(fast), _by_level(milp)
        # Minima, and the highest levels met in full, are exact (MILP stages in both).
        assert [m for m, _ in got] == [m for m, _ in want]
        first_cut = next(i for i, (_, y) in enumerate(want) if y > 0)
        assert all(y == 0 for _, y in got[:first_cut]) and got[first_cut][1] > 0
        levels = sorted({d.priority for d in demands}, reverse=True)
        tolerance = _one_block(demands, levels[first_cut])
        assert got[first_cut][1] <= want[first_cut][1] + tolerance + 1e-9, (got, want)
        same += [round(y, 9) for _, y in got] == [round(y, 9) for _, y in want]
    assert binding >= 60
    assert same >= 0.7 * binding, (same, binding)  # most often exactly the MILP's levels


def test_a_short_shard_is_never_passed_over_for_a_lower_priority_one() -> None:
    rng = random.Random(5)
    costs = {"a": 1.0, "b": 1.5, "c": 2.0}
    checked = 0
    for _ in range(25):
        # High priorities use a and b, low ones b and c: c goes to the low ones, b must not.
        demands = [
            ShardDemand(
                "svc",
                s,
                demand_rps=rng.uniform(100, 900),
                capacity_rps={t: rng.uniform(20, 150) for t in ("ab" if high else "bc")},
                priority=rng.choice([5, 9] if high else [0, 1]),
                min_blocks=rng.randint(0, 2),
            )
            for s, high in enumerate(rng.random() < 0.5 for _ in range(rng.randint(6, 16)))
        ]
        pool = {t: rng.randint(2, 20) for t in costs}
        result = solve(demands, pool, costs)
        for short in result.shards.values():
            if short.limited_by != "pool":
                continue
            usable = set(short.demand.capacity_rps)
            for other in result.shards.values():
                d = other.demand
                if (
                    d.priority >= short.demand.priority
                    or sum(other.blocks.values()) <= d.min_blocks
                ):
                    continue
                checked += 1
                # A lower shard above its minimum holds only types the short one cannot use.
                assert not usable & set(other.blocks), (short, other)
    assert checked >= 20


@pytest.mark.parametrize("seed", [3, 4])
def test_a_large_overloaded_pool_is_planned_in_full_and_put_to_use(seed: int) -> None:
    """40 shards, 5 levels: every stage runs (no time-budget fallback), the top level is met
    exactly when its demand fits beside everyone's minima, and no block is left over while
    demand exceeds the pool."""
    rng = random.Random(seed)
    demands = [
        ShardDemand(
            f"svc{s % 3}",
            s,
            demand_rps=rng.uniform(10, 1500),
            capacity_rps={t: rng.uniform(20, 80) * size for t, size in (("s", 1), ("l", 4))},
            priority=rng.choice([0, 10, 50, 100, 500]),
            min_blocks=rng.randint(0, 2),
        )
        for s in range(40)
    ]
    pool, costs = {"s": 200, "l": 25}, {"s": 1.0, "l": 3.5}
    result = solve(demands, pool, costs, time_limit_s=5.0)
    assert result.has_shortfall and not result.notes
    top = max(d.priority for d in demands)
    alone = solve(
        [d if d.priority == top else replace(d, demand_rps=0.0) for d in demands], pool, costs
    )
    met = all(a.shortfall_rps == 0 for a in result.shards.values() if a.demand.priority == top)
    assert met == (not alone.has_shortfall)
    assert result.used == pool  # every block is put to use when demand exceeds the pool


def test_a_pool_too_small_degrades_to_a_greedy_allocation_when_highs_runs_out_of_time() -> None:
    # Ten shards wanting about 110 blocks of a pool of 12: with no time for HiGHS to find any
    # allocation, the plan is filled by priority instead of failing.
    demands = [
        ShardDemand(
            "s",
            i,
            demand_rps=50.0 + 10 * i,
            capacity_rps={"b": 10.0},
            priority=100 if i < 4 else 0,
            min_blocks=1,
        )
        for i in range(10)
    ]
    result = solve(demands, {"b": 12}, {"b": 1.0}, time_limit_s=1e-9)
    assert any("filled greedily" in note for note in result.notes)
    assert result.used == {"b": 12} and result.has_shortfall
    blocks = {key[1]: sum(a.blocks.values()) for key, a in result.shards.items()}
    assert all(blocks[i] >= 1 for i in range(10))  # every minimum, then demand by priority
    assert sum(blocks[i] for i in range(4)) == 6
    assert all(blocks[i] == 1 for i in range(4, 10))
    worst = max(a.shortfall_rps / a.demand.demand_rps for a in result.shards.values())
    timed = solve(demands, {"b": 12}, {"b": 1.0})
    assert worst == pytest.approx(
        max(a.shortfall_rps / a.demand.demand_rps for a in timed.shards.values())
    )


@pytest.mark.timeout(60)  # before the fix the greedy fill never returned on this instance
def test_the_greedy_fill_ends_when_blocks_go_round() -> None:
    # A plan a worker's planner made in a crash test (calibrated capacities, the example pools):
    # two shards whose capacity per block is nearly nothing kept taking and giving back blocks.
    def shard(s: int, rps: float, small: float, large: float, priority: int = 100) -> ShardDemand:
        return ShardDemand(
            "shop", s, demand_rps=rps, capacity_rps={"small": small, "large": large},
            priority=priority, min_blocks=2 if s == 0 else 1, target_utilisation=0.7,
        )  # fmt: skip

    demands = [
        shard(0, 271.69, 2.3104, 7.2842, priority=500),
        shard(1, 467.19, 151.20, 530.15),
        shard(2, 271.54, 1.505e-06, 2.5388),
        shard(3, 349.67, 26.327, 95.097),
        shard(4, 169.03, 0.15851, 3.921e-27),
    ]
    previous = {
        ("shop", 0): {"large": 12, "small": 9},
        ("shop", 1): {"small": 6},
        ("shop", 2): {"large": 3, "small": 33},
        ("shop", 3): {"large": 1, "small": 8},
        ("shop", 4): {"small": 8},
    }
    pool = {"small": 64, "large": 16, "io": 8}
    result = solve(
        demands, pool, {"small": 1.0, "large": 3.5, "io": 2.0},
        previous=previous, smoothing=Smoothing(max_step_up=8, max_step_down=2),
    )  # fmt: skip
    held = {t: sum(a.blocks.get(t, 0) for a in result.shards.values()) for t in pool}
    assert all(held[t] <= pool[t] for t in pool), held
    assert sum(result.shards[("shop", 0)].blocks.values()) >= 2  # the top shard's minimum
    assert any("went round" in note for note in result.notes), result.notes
