"""Solve time of the block optimiser: 50 shards x 4 block types (target: under 100 ms).

Run: ``python benchmarks/bench_optimiser.py [repeats] [binding_repeats]``. Prints median and
p99 per scenario; asserts nothing. Scenarios: a pool that covers every shard (solved per
shard, no MILP unless a block type binds), the same with smoothing from a previous plan, and
an overloaded pool (5 priority levels, half the blocks needed), where ``solve`` (the fast
shortfall path) runs side by side with the MILP path (every shortfall stage a MILP, within
the same 1 s budget per plan), interleaved per instance, with the ratio of the medians and
what each reached: the levels met in full, and at the first level that is cut, the worst and
the mean relative shortfall.
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from shardshape.allocator.optimiser import Allocation, ShardDemand, Smoothing, solve
from shardshape.allocator.optimiser.milp import Stages
from shardshape.allocator.optimiser.problem import Problem

TYPES = {"small": 1.0, "medium": 1.9, "large": 3.5, "io": 2.0}
SIZE = {"small": 1.0, "medium": 2.0, "large": 4.0, "io": 1.2}
TIME_LIMIT_S = 1.0


def instance(seed: int, overload: bool) -> tuple[list[ShardDemand], dict[str, int]]:
    rng = random.Random(seed)
    demands = []
    for s in range(50):
        per_small = rng.uniform(20, 80)
        demands.append(
            ShardDemand(
                service=f"svc{s % 3}",
                shard_id=s,
                demand_rps=rng.uniform(10, 1500),
                capacity_rps={t: per_small * SIZE[t] * rng.uniform(0.8, 1.2) for t in TYPES},
                priority=rng.choice([0, 10, 50, 100, 500]),
                min_blocks=rng.randint(0, 2),
                target_utilisation=rng.choice([0.6, 0.7, 0.8]),
            )
        )
    scale = 0.5 if overload else 3.0
    pool = {"small": int(600 * scale), "medium": int(150 * scale), "large": int(80 * scale)}
    pool["io"] = int(60 * scale)
    return demands, pool


def _summary(times: list[float]) -> str:
    times = sorted(times)
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    return f"median {statistics.median(times):7.1f} ms  p99 {p99:7.1f} ms  max {times[-1]:7.1f} ms"


def measure(name: str, repeats: int, overload: bool, smoothing: bool) -> None:
    times, solves, shortfalls = [], [], 0
    for i in range(repeats):
        demands, pool = instance(i, overload)
        previous = None
        if smoothing:
            previous = solve(instance(i + 10_000, overload)[0], pool, TYPES).blocks()
            previous = {key: previous[(f"svc{key[1] % 3}", key[1])] for key in previous}
        started = time.perf_counter()
        result = solve(demands, pool, TYPES, previous=previous, smoothing=Smoothing())
        times.append((time.perf_counter() - started) * 1000)
        solves.append(result.solves)
        shortfalls += result.has_shortfall
    print(
        f"{name:<28} {_summary(times)}  solver calls/plan {statistics.mean(solves):4.1f}  "
        f"plans with shortfall {shortfalls}/{repeats}"
    )


def _levels(result: Allocation) -> list[tuple[int, float, float]]:
    """Per priority level, highest first: (blocks under the minima, worst and mean relative
    demand shortfall)."""
    levels: dict[int, list] = {}
    for shard in result.shards.values():
        d = shard.demand
        y = shard.shortfall_rps / d.demand_rps if d.demand_rps > 0 else 0.0
        levels.setdefault(d.priority, []).append((shard.min_shortfall, y))
    return [
        (sum(m for m, _ in v), max(y for _, y in v), statistics.mean(y for _, y in v))
        for _, v in sorted(levels.items(), reverse=True)
    ]


def compare_binding(repeats: int) -> None:
    """The overloaded pool: ``solve`` and the MILP path on the same instances, interleaved."""
    times: dict[str, list[float]] = {"fast": [], "milp": []}
    same_full, worst, mean, timed_out = 0, {"fast": [], "milp": []}, {"fast": [], "milp": []}, 0
    for i in range(repeats):
        demands, pool = instance(i, overload=True)
        started = time.perf_counter()
        fast = solve(demands, pool, TYPES, time_limit_s=TIME_LIMIT_S)
        times["fast"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        stages = Stages(Problem(demands, pool, TYPES, None, None), TIME_LIMIT_S, 0.01)
        milp = stages.allocation(stages.run(), 0.0)
        times["milp"].append((time.perf_counter() - started) * 1000)
        timed_out += bool(milp.notes)
        levels = {"fast": _levels(fast), "milp": _levels(milp)}
        full = {k: [y == 0 for _, y, _ in v] for k, v in levels.items()}
        same_full += full["fast"] == full["milp"]
        cut = min(f.index(False) if False in f else len(f) for f in full.values())
        if cut == len(full["fast"]):
            continue  # every level met in full by both: nothing to compare
        for k, v in levels.items():
            worst[k].append(v[cut][1])
            mean[k].append(v[cut][2])
    ratio = statistics.median(times["milp"]) / statistics.median(times["fast"])
    print(f"overloaded pool (5 levels), {repeats} instances, budget {TIME_LIMIT_S:.0f} s per plan")
    print(f"  fast path (solve)          {_summary(times['fast'])}")
    print(f"  MILP path (every stage)    {_summary(times['milp'])}  out of time {timed_out}")
    print(f"  MILP / fast median ratio   {ratio:.1f}x")
    print(f"  same levels met in full    {same_full}/{repeats}")
    for k, label in (("fast", "fast"), ("milp", "MILP")):
        print(
            f"  first cut level, {label:<4}     worst shortfall median "
            f"{statistics.median(worst[k]):.3f}, mean shortfall median "
            f"{statistics.median(mean[k]):.3f}"
        )


def main(repeats: int = 200, binding_repeats: int = 30) -> None:
    print(f"50 shards x 4 block types, {repeats} instances each")
    measure("pool covers all", repeats, overload=False, smoothing=False)
    measure("pool covers all, smoothing", repeats, overload=False, smoothing=True)
    measure("overloaded pool, smoothing", repeats, overload=True, smoothing=True)
    compare_binding(binding_repeats)


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:3]))
