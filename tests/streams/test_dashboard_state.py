"""What the dashboard and /metrics show, from the messages and windows a worker really sees:
snapshots and quarantined keys on the routing topic, plans on the plans topic, metric windows
aggregated from request events, pipeline counters."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from shardshape.allocator.pools_config import load_pools_config
from shardshape.core.contracts import (
    AllocationPlan,
    Arm,
    Experiment,
    RequestEvent,
    RoutingEntry,
    ShardProfile,
    ShardSnapshot,
    ShardSpec,
    encode,
    snapshot_key,
)
from shardshape.core.exposition import exposition
from shardshape.core.metrics import aggregate
from shardshape.streams.dashboard.prometheus import worker_registry
from shardshape.streams.dashboard.state import DashboardState
from tests.support.paths import REPO_ROOT

READ_KEY = "shop|GET /items/{item_id}|scraper-bot"


def window(start: float, latencies: dict[int, list[float]], arm: str | None = None) -> dict:
    """A 10 s window as ``shardshape.streams.windows.window_slots`` gives it: per-partition
    slots of stats aggregated from request events (shard -> their latencies)."""
    events, shards = [], []
    for shard, values in latencies.items():
        for i, latency in enumerate(values):
            events.append(
                RequestEvent(request_id=f"{start}-{shard}-{i}", ts=start, service="shop",
                             request_type="GET /items/{item_id}", latency_ms=latency,
                             status="error" if latency > 1000 else "ok", arm=arm)
            )  # fmt: skip
            shards.append(shard)
    stats = aggregate(events, shards)
    slots = {
        f"{key}#{p}": s.to_bytes(offset=1).decode() for p, (key, s) in enumerate(stats.items())
    }
    return {"start": start, "end": start + 10, "slots": slots}


def snapshot(version: int, *shards: ShardProfile) -> tuple[bytes, bytes]:
    value = ShardSnapshot(service="shop", version=version, shards=list(shards), quarantine_shard=7)
    return snapshot_key("shop"), encode(value)


def plan(version: int, blocks: dict[int, dict[str, int]], **extra: object) -> tuple[bytes, bytes]:
    shards = [
        ShardSpec(shard_id=s, blocks=b, slo_p99_ms=100.0 if s == 0 else 250.0)
        for s, b in blocks.items()
    ]
    value = AllocationPlan(plan_id=f"shop:{version}", version=version, service="shop",
                           pool_id="main", shards=shards,
                           rationale="shop on pool main: 2 shards, 5 blocks; 1 replicas",
                           **extra)  # fmt: skip
    return b"shop", encode(value)


def routing_entry(anomalous: bool) -> tuple[bytes, bytes]:
    entry = RoutingEntry(service="shop", key=READ_KEY, shard_id=7 if anomalous else 0,
                         snapshot_version=2, anomalous=anomalous)  # fmt: skip
    return READ_KEY.encode(), encode(entry)


def fed_state() -> DashboardState:
    state = DashboardState(load_pools_config(REPO_ROOT / "examples" / "pools.toml"))
    state.on_routing(*snapshot(1, ShardProfile(shard_id=0, summary="GET /items 97%, ~20 ms")))
    state.on_routing(
        *snapshot(
            2,
            ShardProfile(shard_id=0, summary="GET /items 97%, ~20 ms"),
            ShardProfile(shard_id=1, summary="GET /exports 100%, ~600 ms"),
            ShardProfile(shard_id=7, summary="quarantine", quarantine=True),
        )
    )
    state.on_routing(*snapshot(1))  # older: ignored
    state.on_plan(*plan(1, {0: {"small": 2}, 1: {"large": 1}}))
    arms = [Arm(name="control", weight=0.5), Arm(name="lfu", weight=0.5)]
    test = Experiment(experiment_id="e1", shard_id=0, reason="p99 over the SLO", arms=arms)
    state.on_plan(*plan(2, {0: {"small": 4}, 1: {"large": 1}}, experiments=[test]))
    state.on_plan(*plan(1, {0: {"small": 9}}))  # older: ignored
    state.on_routing(*routing_entry(anomalous=True))
    return state


def test_document_joins_profiles_plans_windows_and_quarantine() -> None:
    state = fed_state()
    state.update_windows(
        [
            window(1000.0, {0: [20.0] * 50, 1: [600.0] * 4}),
            window(1010.0, {0: [21.0] * 60, 1: [650.0] * 5, 7: [30.0] * 200}),
            window(1020.0, {0: [22.0] * 10}),  # still open at 1031 (2 s grace)
        ],
        now=1031.0,
    )
    doc = state.document(now=1031.0)
    (shop,) = doc["services"]
    assert (shop["snapshot_version"], shop["plan"]["version"], shop["plans_seen"]) == (2, 2, 2)
    shards = {s["shard"]: s for s in shop["shards"]}
    assert sorted(shards) == [0, 1, 7]
    items, exports, quarantine = shards[0], shards[1], shards[7]
    assert items["summary"] == "GET /items 97%, ~20 ms" and items["blocks"] == {"small": 4}
    assert abs(items["latest"]["p99_ms"] - 21.0) < 0.5 and items["latest"]["rps"] == 6.0
    assert items["slo_p99_ms"] == 100.0 and exports["slo_p99_ms"] == 250.0
    assert exports["latest"]["p99_ms"] > exports["slo_p99_ms"]
    # Not in the plan: the SLO comes from the pools config (shard 7 has the service's).
    assert quarantine["quarantine"] and quarantine["keys_quarantined"] == 1
    assert quarantine["slo_p99_ms"] == 250.0 and quarantine["blocks"] == {}
    assert shop["quarantined_keys"] == [READ_KEY]
    assert [e["id"] for e in shop["experiments"]] == ["e1"]
    assert doc["window"] == {"start": 1010.0, "end": 1020.0}
    assert [p["t"] for p in doc["series"]["shop|0"]] == [1010.0, 1020.0]  # closed ones only
    assert [p["rps"] for p in doc["series"]["shop|1"]] == [0.4, 0.5]
    usage = doc["pools"]["main"]
    assert usage["small"] == {"capacity": 64, "allocated": {"shop": 4}}
    assert usage["large"] == {"capacity": 16, "allocated": {"shop": 1}}
    assert usage["io"] == {"capacity": 8, "allocated": {}}


def test_the_feed_says_what_changed_once() -> None:
    state = fed_state()
    state.on_routing(*routing_entry(anomalous=True))  # republished: no second event
    state.on_routing(*routing_entry(anomalous=False))
    texts = [e["text"] for e in state.document()["events"]]
    assert texts == [
        "shop: new shard 0 (GET /items 97%, ~20 ms), snapshot v1",
        "shop: new shard 1 (GET /exports 100%, ~600 ms), snapshot v2",
        "shop plan v1 (2 shards, 5 blocks): shard 0 small 0→2, shard 1 large 0→1",
        "shop plan v2 (2 shards, 5 blocks): shard 0 small 2→4",
        "experiment e1 on shop shard 0: running (p99 over the SLO)",
        f"quarantined {READ_KEY} (shard 7)",
        f"released {READ_KEY}",
    ]
    assert state.quarantined() == {}
    plan_events = [e for e in state.document()["events"] if e["kind"] == "plan"]
    assert [(e["plan_version"], e["moves"]) for e in plan_events] == [(1, 2), (2, 1)]


def test_closed_windows_count_once_and_open_ones_as_they_stand() -> None:
    state = DashboardState()
    first, second = window(0.0, {0: [10.0] * 5}), window(10.0, {0: [10.0] * 3})
    state.update_windows([first, second], now=15.0)  # first closed, second open
    state.update_windows([first, second], now=16.0)
    assert state.cumulative()["shop|0|"].count == 8
    grown = window(10.0, {0: [10.0] * 7})  # the open window went on filling
    state.update_windows([first, grown], now=30.0)  # now both closed
    state.update_windows([first, grown], now=31.0)
    assert state.cumulative()["shop|0|"].count == 12
    assert state.latest()[0] == (10.0, 20.0)


def test_prometheus_exposition_has_per_shard_series_and_pipeline_figures() -> None:
    state = fed_state()
    state.update_windows(
        [window(1000.0, {0: [20.0] * 50, 1: [600.0] * 3 + [2000.0]}, arm="lfu")], now=1015.0
    )
    state.note_pipeline({"messages": 10, "events": 0, "dead_letters": 0}, {}, now=100.0)
    lag = {("shardshape.requests", 0): 3, ("shardshape.requests", 1): 0}
    state.note_pipeline({"messages": 30, "events": 500, "dead_letters": 2}, lag, now=102.0)
    families = {f.name: f for f in text_string_to_metric_families(
        exposition(worker_registry(state)).decode())}  # fmt: skip

    def value(family: str, sample: str | None = None, **labels: str) -> float:
        name = sample or family
        found = [s.value for s in families[family].samples
                 if s.name == name and labels.items() <= s.labels.items()]  # fmt: skip
        assert len(found) == 1, (name, labels, families[family].samples)
        return found[0]

    shard_1 = {"service": "shop", "shard": "1", "arm": "lfu"}
    requests = "shardshape_shard_requests", "shardshape_shard_requests_total"
    assert value(*requests, status="ok", **shard_1) == 3
    assert value(*requests, status="error", **shard_1) == 1  # ok and errors sum to the requests
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in families["shardshape_shard_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["shard"] == "1"
    ]
    counts = [n for _, n in sorted(buckets)]
    assert counts == sorted(counts) and counts[-1] == 4  # cumulative, +Inf holds them all
    assert dict(buckets)[1.0] == 3  # the 2 s request is above 1 s
    assert value("shardshape_shard_window_requests_per_second", **shard_1) == 0.4
    p99 = value("shardshape_shard_window_latency_seconds", quantile="0.99",
                service="shop", shard="0")  # fmt: skip
    assert abs(p99 - 0.020) < 0.0005
    assert value("shardshape_shard_blocks", service="shop", shard="0", block_type="small") == 4
    assert value("shardshape_shard_slo_p99_seconds", service="shop", shard="0") == 0.1
    assert value("shardshape_pool_capacity_blocks", pool="main", block_type="small") == 64
    assert value("shardshape_pool_allocated_blocks", pool="main", block_type="small") == 4
    assert value("shardshape_plan_version", service="shop") == 2
    assert value("shardshape_snapshot_version", service="shop") == 2
    assert value("shardshape_shards", service="shop") == 2  # the quarantine shard not counted
    assert value("shardshape_quarantined_keys", service="shop") == 1
    assert value("shardshape_experiments", service="shop", status="running") == 1
    assert value("shardshape_pipeline_events", "shardshape_pipeline_events_total") == 500
    assert value("shardshape_pipeline_dead_letters", "shardshape_pipeline_dead_letters_total") == 2
    assert value("shardshape_pipeline_events_per_second") == 250.0
    assert value("shardshape_consumer_lag_messages", partition="0") == 3
    assert "process_cpu_seconds" in families and "python_info" in families
