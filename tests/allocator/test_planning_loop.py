"""The planning loop in-process: one shard ramps up while another winds down, two services
share one pool. Plans must lead the load, release what is no longer needed, fit the pool."""

from __future__ import annotations

import orjson
import pytest

from shardshape.allocator.planning import QUEUE_REPORT_TTL_S, PlanningLoop
from shardshape.allocator.pools_config import load_pools_config, parse_pools_config
from shardshape.core.contracts import (
    AllocationPlan,
    QueueReport,
    RequestEvent,
    ShardProfile,
    ShardSnapshot,
    encode,
)
from shardshape.core.metrics import ShardStats
from tests.allocator.shop import POOLS, WINDOW_S, steady
from tests.support.paths import REPO_ROOT

PEAK_WINDOW = 30


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
        series = {key: steady(rps, key.split("|")[0]) for key, rps in demand.items()}
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


def _window(loop: PlanningLoop, window: int, series: dict[str, str]) -> list:
    report = {"worker": "w1", "start": window * WINDOW_S, "end": (window + 1) * WINDOW_S,
              "series": series, "replicas": {}}  # fmt: skip
    loop.add_report(orjson.dumps(report))
    return loop.tick(now=(window + 1) * WINDOW_S)


def _snapshot(version: int, shards: list[int]) -> ShardSnapshot:
    return ShardSnapshot(
        service="shop",
        version=version,
        shards=[ShardProfile(shard_id=s) for s in shards],
        quarantine_shard=8,
    )


def test_a_shard_the_snapshot_no_longer_has_gives_its_blocks_back_at_once() -> None:
    loop = PlanningLoop(parse_pools_config(POOLS), WINDOW_S, horizon_s=20, complete_after_s=0)
    loop.note_snapshot(_snapshot(1, [0, 1]))
    for window in range(20):
        _window(loop, window, {"shop|0|": steady(40, "shop"), "shop|1|": steady(40, "shop")})
    assert loop.planners["main"].previous.shards["shop", 1].blocks
    loop.note_snapshot(_snapshot(2, [0]))  # shard 1 merged away
    loop.note_snapshot(_snapshot(1, [0, 1]))  # an older snapshot changes nothing
    # Reports of shard 1 still arrive (gateways on the old snapshot): it stays retired.
    plans = _window(loop, 20, {"shop|0|": steady(40, "shop"), "shop|1|": steady(5, "shop")})
    assert [s.shard_id for s in plans[0].shards] == [0]
    assert ("shop", 1) not in loop.forecasters


def test_new_shards_are_learned_in_sorted_order() -> None:
    # The calibration's prior for a new shard sums over the shards in the order they were
    # added: that order must not follow the process's string hashing.
    loop = PlanningLoop(parse_pools_config(POOLS), WINDOW_S, complete_after_s=0)
    series = {f"shop|{s}|": steady(10, "shop") for s in (7, 2, 5, 0, 3)}
    _window(loop, 0, series)
    assert list(loop.forecasters) == sorted(loop.forecasters)


def test_rejected_requests_are_demand_but_not_served_work() -> None:
    loop = PlanningLoop(parse_pools_config(POOLS), WINDOW_S, complete_after_s=0)
    stats = ShardStats()
    served = RequestEvent(request_id="r", ts=0, service="shop", request_type="t",
                          latency_ms=500.0, attributes={"busy_ms": 500.0})  # fmt: skip
    rejected = served.model_copy(update={"status": "rejected", "attributes": {"busy_ms": 0.0}})
    for _ in range(40):
        stats.add(served)
    for _ in range(400):
        stats.add(rejected)
    for window in range(30):
        _window(loop, window, {"shop|0|": stats.to_bytes().decode()})
    # 40 served a window, each holding a slot 0.5 s: a block's 4 slots serve 8/s. Counting
    # the rejected as served (no busy time) would make it 88/s, and the shard look idle.
    estimate = loop.calibrator.estimate("shop", 0, "b")
    assert 6.0 < estimate.mean_rps < 12.0, estimate
    assert loop.forecasters["shop", 0].forecast(1)[0] == 44.0  # every request was demand


def test_a_shard_expected_to_see_no_request_in_the_horizon_holds_no_block() -> None:
    loop = PlanningLoop(parse_pools_config(POOLS), WINDOW_S, horizon_s=20, complete_after_s=0)
    _window(loop, 0, {"shop|0|": steady(20, "shop"), "shop|1|": steady(20, "shop")})
    plan = None
    for window in range(1, 60):
        plans = _window(loop, window, {"shop|0|": steady(20, "shop")})  # shard 1 fell silent
        plan = plans[-1] if plans else plan
    assert plan is not None
    blocks = {s.shard_id: sum(s.blocks.values()) for s in plan.shards}
    assert blocks[0] >= 1 and blocks.get(1, 0) == 0


def _queued(gateway: str, ts: float, waiting: dict[int, int]) -> bytes:
    return encode(QueueReport.counted(gateway, "shop", ts, waiting))


def _blocks(plan: AllocationPlan) -> dict[int, int]:
    return {s.shard_id: sum(s.blocks.values()) for s in plan.shards}


def test_requests_waiting_in_the_gateways_get_blocks_before_the_next_window() -> None:
    config = parse_pools_config(POOLS + "\n[planning]\nqueue_replan_s = 2\n")
    loop = PlanningLoop(config, WINDOW_S, horizon_s=20, complete_after_s=0)
    # Shard 1 (a batch tenant, say) was busy, then fell silent long enough to hold no block.
    for window in range(30):
        busy = steady(20 if window < 3 else 0, "shop")
        _window(loop, window, {"shop|0|": steady(20, "shop"), "shop|1|": busy})
    assert not sum(loop.planners["main"].previous.shards["shop", 1].blocks.values())
    # A burst of shard 1 waits in two gateways, a few seconds into the window.
    now = 30 * WINDOW_S + 3
    loop.add_queued(_queued("gw-a", now - 1, {1: 3000}))
    loop.add_queued(_queued("gw-b", now - 1, {1: 1000, 0: 0}))
    loop.add_queued(_queued("gw-b", now - 2, {1: 99_999}))  # older than gw-b's last: ignored
    assert loop.backlog(now) == {("shop", 1): 4000}
    [plan] = loop.tick(now)
    spec = {s.shard_id: s for s in plan.shards}[1]
    drain_s = loop.config.planning.queue_drain_s
    assert spec.forecast_rps >= 4000 / drain_s  # the queued requests, served within the drain
    assert _blocks(plan)[1] >= 1
    # The queue grows: planned again after queue_replan_s (not before), with more blocks.
    loop.add_queued(_queued("gw-a", now + 1, {1: 20_000}))
    assert loop.tick(now + 1) == []
    [grown] = loop.tick(now + 2)
    assert _blocks(grown)[1] > _blocks(plan)[1]
    # A report older than QUEUE_REPORT_TTL_S counts for nothing (its gateway went quiet).
    assert loop.backlog(now + QUEUE_REPORT_TTL_S + 2) == {}


def test_an_empty_queue_report_ends_the_backlog_and_a_malformed_one_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = PlanningLoop(parse_pools_config(POOLS), WINDOW_S, complete_after_s=0)
    _window(loop, 0, {"shop|0|": steady(20, "shop")})
    loop.add_queued(_queued("gw-a", 11, {0: 500}))
    loop.add_queued(_queued("gw-a", 12, {}))  # drained
    assert loop.backlog(13) == {}
    assert loop.tick(13 + loop.config.planning.queue_replan_s) == []
    loop.add_queued(b'{"v": 1, "gateway_id": "gw-a", "shards": "lots"}')
    assert "ignored malformed queue report" in caplog.text
    assert loop.backlog(14) == {}


@pytest.mark.parametrize("drain_s", [0, 40])
def test_queue_drain_s_zero_ignores_queue_reports(drain_s: float) -> None:
    config = parse_pools_config(POOLS + f"\n[planning]\nqueue_drain_s = {drain_s}\n")
    loop = PlanningLoop(config, WINDOW_S, complete_after_s=0)
    _window(loop, 0, {"shop|0|": steady(20, "shop")})  # planned at 10 s
    loop.add_queued(_queued("gw-a", 24, {0: 5000}))
    plans = loop.tick(25)  # between windows, queue_replan_s after the last plan
    assert bool(plans) == bool(drain_s)


def _noisy(window: int) -> float:
    """Requests/s of a shard whose windows swing between quiet and busy."""
    return (5.0, 40.0, 10.0, 25.0)[window % 4]


@pytest.mark.parametrize(
    ("slo_ms", "latency_ms", "margin"),
    [
        (None, 400.0, True),  # no SLO: the forecast quantile
        (30_000.0, 400.0, True),  # 0.4 s of service leaves 29.6 s: less than the reaction
        (120_000.0, 400.0, False),  # 119.6 s: a burst can wait for blocks the reports bring
        (120_000.0, 100_000.0, True),  # slow requests leave too little of the SLO to wait
    ],
)
def test_a_shard_whose_slo_leaves_time_to_wait_for_blocks_is_planned_at_its_mean(
    slo_ms: float | None, latency_ms: float, margin: bool
) -> None:
    slo = f"slo_p99_ms = {slo_ms}\n" if slo_ms else ""
    config = parse_pools_config(POOLS + slo)
    loop = PlanningLoop(config, WINDOW_S, horizon_s=20, complete_after_s=0)
    # Reaction: a gateway's longest report interval, a replan, a block's start-up.
    assert loop.reaction_s() == 10.0 + 10.0 + 30.0
    plans, means = [], []
    for window in range(40):
        event = RequestEvent(request_id="r", ts=0, service="shop", request_type="t",
                             latency_ms=latency_ms, attributes={"busy_ms": latency_ms})  # fmt: skip
        stats = ShardStats()
        for _ in range(round(_noisy(window) * WINDOW_S)):
            stats.add(event)
        made = _window(loop, window, {"shop|0|": stats.to_bytes().decode()})
        plans += made
        means += [max(loop.forecasters["shop", 0].forecast(loop.horizon_bins))] * len(made)
    assert loop.can_wait(("shop", 0)) is not margin
    (spec,) = plans[-1].shards
    mean = means[-1]
    # The plan says which it planned: "forecast p90 ..." or "forecast p50 ..." (the mean).
    if margin:
        assert spec.forecast_rps > 1.1 * mean and "shard 0: forecast p90" in plans[-1].rationale
    else:
        assert spec.forecast_rps == pytest.approx(mean)
        assert "shard 0: forecast p50" in plans[-1].rationale
