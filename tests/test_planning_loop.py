"""The planning loop in-process: one shard ramps up while another winds down, two services
share one pool. Plans must lead the load, release what is no longer needed, fit the pool."""

from __future__ import annotations

import orjson

from allocator.pools_config import load_pools_config
from streams.contracts import RequestEvent
from streams.metrics import ShardStats
from streams.planning import PlanningLoop
from tests.conftest import REPO_ROOT

WINDOW_S = 10.0
PEAK_WINDOW = 30


def _stats(rps: float, service: str, latency_ms: float = 40.0) -> str:
    stats = ShardStats()
    event = RequestEvent(request_id="r", ts=0, service=service, request_type="t",
                         latency_ms=latency_ms)  # fmt: skip
    for _ in range(round(rps * WINDOW_S)):
        stats.add(event)
    return stats.to_bytes().decode()


def _demand(window: int) -> dict[str, float]:
    progress = min(window, PEAK_WINDOW) / PEAK_WINDOW
    return {
        "shop|1|": 20 + 380 * progress,  # ramps up to 400 rps at the peak
        "shop|2|": max(20.0, 400 - 380 * progress),  # winds down
        "exports|0|": 3.0,  # another service on the same pool, steady
    }


def test_plans_lead_a_ramp_release_a_decline_and_fit_the_pool() -> None:
    config = load_pools_config(REPO_ROOT / "examples" / "pools.toml")
    pool = config.pools["main"].blocks
    loop = PlanningLoop(config, WINDOW_S, horizon_s=60, complete_after_s=0)
    planner = loop.planners["main"]
    in_force_at: dict[int, tuple[float, object]] = {}
    shrinking_blocks: list[int] = []
    for window in range(PEAK_WINDOW + 6):
        # The plan in force while this window's requests arrive: made before the window.
        in_force_at[window] = (planner.last_ts, planner.previous)
        demand = _demand(window)
        series = {key: _stats(rps, key.split("|")[0]) for key, rps in demand.items()}
        report = {"worker": "w1", "start": window * WINDOW_S, "end": (window + 1) * WINDOW_S,
                  "series": series, "replicas": {"shop": ["gw-a"]}}  # fmt: skip
        loop.add_report(orjson.dumps(report))
        for plan in loop.tick(now=(window + 1) * WINDOW_S):
            assert plan.replicas == (["gw-a"] if plan.service == "shop" else [])
        allocation = planner.previous
        assert allocation is not None
        for block_type, used in allocation.used.items():
            assert used <= pool[block_type], "two services together never exceed the pool"
        shrinking_blocks.append(sum(allocation.shards["shop", 2].blocks.values()))

    # The plan in force during the peak window was made from earlier windows only.
    made_at, at_peak = in_force_at[PEAK_WINDOW]
    assert at_peak is not None and made_at <= PEAK_WINDOW * WINDOW_S
    growing = at_peak.shards["shop", 1]
    peak = _demand(PEAK_WINDOW)["shop|1|"]
    target = growing.demand.target_utilisation
    assert growing.capacity_rps * target >= 0.9 * peak, (growing.capacity_rps, peak)
    # The shard winding down gave blocks back.
    assert shrinking_blocks[-1] < max(shrinking_blocks[:5])
