"""Ready-to-run setups of the two scenarios, and the whole evaluation in one call.

>>> setup = mixed_setup(hours=0.25, warmup_h=0.25)
>>> out = evaluate(setup, strategies=("shared-reactive", "oracle"), comparisons=("budget",),
...                budget=4.0)
>>> sorted(out["comparisons"]["equal_budget"]["strategies"])
['oracle', 'shared-reactive']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shardshape.allocator.lending import LendingPolicy
from shardshape.allocator.pools_config import PoolsConfig
from shardshape.allocator.simulate.compare import Comparison, Progress, Runner, Setup
from shardshape.allocator.simulate.from_trace import trace_pools_config, trace_workload
from shardshape.allocator.simulate.mixed import mixed_history, mixed_workload, pools_config
from shardshape.allocator.simulate.names import BLOCK_START_S, STRATEGIES

COMPARISONS = ("budget", "target")
LENDING = LendingPolicy()  # the gateway's rule, with its default reserve


def mixed_setup(
    *,
    hours: float = 24.0,
    warmup_h: float = 3.0,
    start_h: float = 0.0,
    seed: int = 0,
    config: PoolsConfig | None = None,
    max_shards: int = 8,
    window_s: float = 60.0,
    horizon_s: float = 120.0,
    default_slots: int = 16,
    lending: LendingPolicy | None = LENDING,
    block_start_s: float = BLOCK_START_S,
) -> Setup:
    """The ``mixed`` scenario (see :mod:`shardshape.allocator.simulate.mixed`) on its own pool, or
    on ``config`` (which must serve the service ``shop``); ``lending`` is how ``shardshape``'s
    and the oracle's queues lend idle slots (``None``: not at all)."""
    config = config or pools_config(quarantine_shard=max_shards)
    blocks = _service_blocks(config, "shop")
    return Setup(
        name="mixed",
        workload=mixed_workload(
            hours=hours, warmup_h=warmup_h, seed=seed, block_types=blocks, start_h=start_h
        ),
        history=mixed_history(warmup_h=warmup_h, seed=seed, block_types=blocks, start_h=start_h),
        config=config,
        seed=seed,
        max_shards=max_shards,
        window_s=window_s,
        horizon_s=horizon_s,
        default_slots=default_slots,
        lending=lending,
        block_start_s=block_start_s,
    )


def trace_setup(
    traces: Sequence[str | Path],
    mapping: str | Path,
    *,
    speed: float = 1.0,
    warmup: float = 0.5,
    config: PoolsConfig | None = None,
    seed: int = 0,
    max_shards: int = 8,
    window_s: float = 60.0,
    horizon_s: float = 120.0,
    default_slots: int = 16,
    lending: LendingPolicy | None = LENDING,
    score_after: float | None = None,
    score_until: float | None = None,
    block_start_s: float = BLOCK_START_S,
) -> Setup:
    """The ``trace`` scenario (see :mod:`shardshape.allocator.simulate.from_trace`)."""
    workload = trace_workload(
        traces,
        mapping,
        config,
        speed=speed,
        warmup=warmup,
        score_after=score_after,
        score_until=score_until,
    )
    config = config or trace_pools_config(workload.service)
    history = workload.subset(np.flatnonzero(workload.arrival < workload.score_from))
    return Setup(
        name="trace",
        workload=workload,
        history=history,
        config=config,
        seed=seed,
        max_shards=max_shards,
        window_s=window_s,
        horizon_s=horizon_s,
        default_slots=default_slots,
        lending=lending,
        block_start_s=block_start_s,
    )


def evaluate(
    setup: Setup,
    *,
    strategies: Sequence[str] = STRATEGIES,
    comparisons: Sequence[str] = COMPARISONS,
    budget: float | None = None,
    target: float = 0.99,
    progress: Progress | None = None,
) -> dict[str, object]:
    """Both comparisons for ``strategies``; the JSON the CLI prints (``_runs`` holds the
    :class:`~shardshape.allocator.simulate.compare.Comparison` objects for a report)."""
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies {sorted(unknown)}; choose from {STRATEGIES}")
    runner = Runner(setup, progress)
    done: dict[str, Comparison] = {}
    if "budget" in comparisons:
        done["equal_budget"] = runner.equal_budget(tuple(strategies), budget)
    if "target" in comparisons:
        done["equal_target"] = runner.equal_target(tuple(strategies), target)
    w = setup.workload
    return {
        "scenario": setup.name,
        "seed": setup.seed,
        "hours": round(w.hours, 3),
        "requests": int(w.scored.sum()),
        "profiles": {p.name: p.slo_ms for p in w.profiles},
        "settings": {
            "tick_s": setup.tick_s,
            "max_wait_s": setup.max_wait_s,
            "plan_window_s": setup.window_s,
            "plan_horizon_s": setup.horizon_s,
            "max_shards": setup.max_shards,
            "default_target_utilisation": setup.default_utilisation,
            "block_rounding": setup.block_rounding,
            "block_start_s": setup.block_start_s,
            "lending": (
                {
                    "reserve_fraction": setup.lending.reserve_fraction,
                    "to_lower": setup.lending.to_lower,
                }
                if setup.lending
                else None
            ),
        },
        "comparisons": {name: c.as_json() for name, c in done.items()},
        "_runs": done,
    }


def _service_blocks(config: PoolsConfig, service: str) -> tuple:
    if service not in config.services:
        raise ValueError(
            f"the pools config has no [services.{service}]: the mixed scenario's service is "
            f"{service!r}"
        )
    names = config.shard_settings(service, 0).block_types
    return tuple(config.block_types[name] for name in names)
