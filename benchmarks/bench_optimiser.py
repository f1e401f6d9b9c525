"""Solve time of the block optimiser: 50 shards x 4 block types (target: under 100 ms).

Run: ``python benchmarks/bench_optimiser.py [repeats]``. Prints median and p99 per scenario;
asserts nothing. Scenarios: a pool that covers every shard (solved per shard, no MILP unless a
block type binds), the same with smoothing from a previous plan, and an overloaded pool
(shortfall MILP stages by priority, 5 levels, within one ``time_limit_s`` budget per plan).
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from allocator.optimiser import ShardDemand, Smoothing, solve

TYPES = {"small": 1.0, "medium": 1.9, "large": 3.5, "io": 2.0}
SIZE = {"small": 1.0, "medium": 2.0, "large": 4.0, "io": 1.2}


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
    times.sort()
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    print(
        f"{name:<28} median {statistics.median(times):6.1f} ms  p99 {p99:6.1f} ms  "
        f"max {times[-1]:6.1f} ms  MILP solves/plan {statistics.mean(solves):4.1f}  "
        f"plans with shortfall {shortfalls}/{repeats}"
    )


def main(repeats: int = 200) -> None:
    print(f"50 shards x 4 block types, {repeats} instances each")
    measure("pool covers all", repeats, overload=False, smoothing=False)
    measure("pool covers all, smoothing", repeats, overload=False, smoothing=True)
    measure("overloaded pool (5 levels)", repeats, overload=True, smoothing=False)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
