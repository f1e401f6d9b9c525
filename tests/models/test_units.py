"""Unit checks: ARI, merging, matching, snapshots, hysteresis, quarantine, trace mapping."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from shardshape.core.contracts import ShardSnapshot, decode, encode
from shardshape.core.trace import MappingError, TraceReport, map_rows, parse_mapping
from shardshape.models.evaluate import adjusted_rand_index
from shardshape.models.merge import merge_summaries
from shardshape.models.predictor import Route, ShardPredictor
from shardshape.models.profiler import Profiler, ProfilerConfig
from shardshape.models.shards import MicroSummary
from shardshape.models.synthetic import SCRAPER, SyntheticStream


def test_ari_known_value() -> None:
    # sklearn.metrics.adjusted_rand_score([0, 0, 1, 2], [0, 0, 1, 1]) == 0.5714285714285715
    assert adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(0.5714285714285715)
    assert adjusted_rand_index([1, 1, 2, 2], [2, 2, 1, 1]) == 1.0


def test_merge_keeps_ids_of_previous_shards() -> None:
    a = MicroSummary(np.array([[1.0, 0], [8.0, 0]]), np.array([5.0, 5.0]), np.zeros(2))
    first = merge_summaries([a], np.ones(2), max_shards=8)
    swapped = MicroSummary(np.array([[8.1, 0], [1.1, 0], [4.5, 0]]), np.ones(3), np.zeros(3))
    second = merge_summaries([swapped], np.ones(2), max_shards=8, previous=first)
    by_id = dict(zip(second.ids, second.centroids[:, 0].round(1), strict=True))
    old = dict(zip(first.ids, first.centroids[:, 0].round(1), strict=True))
    assert by_id[next(i for i, c in old.items() if c == 1.0)] == 1.1
    assert len(set(second.ids)) == 3


def _trained(n: int = 6_000, **kw) -> Profiler:
    profiler = Profiler("shop", ProfilerConfig(**kw))
    events = list(SyntheticStream(seed=3).events(n))
    for i in range(0, n, 500):
        profiler.process_batch(events[i : i + 500])
    return profiler


def test_snapshot_is_json_and_predicts_like_the_profiler() -> None:
    profiler = _trained()
    snapshot = decode(ShardSnapshot, encode(profiler.snapshot()))
    assert orjson.loads(encode(snapshot))["model"]["format"]
    gateway = ShardPredictor.from_snapshot(snapshot)
    events = list(SyntheticStream(seed=9).events(300))
    routes = [profiler.route_of(f"shop|{e.request_type}|{e.user_id}") for e in events]
    many = gateway.predict_many(events, routes)
    assert many.tolist() == profiler.predictor.predict_many(events, routes).tolist()
    one = [
        gateway.predict_one(e.request_type, e.payload_bytes, e.attributes, r)
        for e, r in zip(events, routes, strict=True)
    ]
    assert one == many.tolist()
    assert all(s.summary for s in snapshot.shards)


def test_unseen_user_gets_a_sensible_shard() -> None:
    profiler = _trained()
    gateway = profiler.predictor
    slow = gateway.predict_one("POST /render", 20_000, {"pages": 50.0, "region": "eu"})
    fast = gateway.predict_one("GET /item", 300, {"region": "eu"})
    centroids = dict(zip(gateway.ids, gateway.centroids[:, 0], strict=True))
    assert centroids[slow] > 9.0 > 3.0 > centroids[fast]


def test_confident_route_is_a_lookup_and_quarantine_wins() -> None:
    gateway = _trained().predictor
    target = gateway.ids[-1]
    assert gateway.predict_one("GET /item", 1, {}, Route(target, 0.99, False)) == target
    assert gateway.predict_one("GET /item", 1, {}, Route(target, 0.99, True)) == 8


def test_scraper_is_quarantined() -> None:
    profiler = Profiler("shop")
    entries = []
    stream = SyntheticStream(seed=5, scraper_share=0.05)
    batch = []
    for event, _ in stream.labelled(20_000):
        batch.append(event)
        if len(batch) == 500:
            profiler.process_batch(batch)
            entries += profiler.routing_changes()
            batch = []
    route = profiler.route_of("shop|GET /item|scraper")
    assert route is not None and route.anomalous and route.shard_id == profiler.quarantine_shard
    quarantined = {e.key for e in entries if e.anomalous}
    assert "shop|GET /item|scraper" in quarantined
    assert len(quarantined) <= 5, quarantined
    assert SCRAPER == 5


def test_routes_do_not_flap() -> None:
    profiler = Profiler("shop")
    events = list(SyntheticStream(seed=3).events(16_000))
    published: dict[str, int] = {}
    moves = 0
    for i in range(0, len(events), 500):
        profiler.process_batch(events[i : i + 500])
        for entry in profiler.routing_changes():
            # A key's first route is a publication, not a move.
            moved = entry.key in published and published[entry.key] != entry.shard_id
            moves += moved and i >= 12_000
            published[entry.key] = entry.shard_id
    assert moves / 4_000 < 0.01


MAPPING = {
    "service": "api",
    "time": {"column": "t", "format": "%Y-%m-%d %H:%M:%S"},
    "request_type": {"column": "op"},
    "user": {"column": "who"},
    "latency": {"column": "sec", "unit": "s"},
    "status": {"column": "st", "error": ["FAILED"], "unfinished": ["PENDING"]},
    "payload": {"columns": ["a", "b"]},
    "attributes": {"numeric": {"n": "num"}, "categorical": {"m": "model"}},
}


def test_trace_mapping_maps_and_reports() -> None:
    mapping = parse_mapping(MAPPING)
    rows = [
        {
            "t": "2024-01-01 00:00:01",
            "op": "X",
            "who": "g",
            "sec": "2",
            "st": "FAILED",
            "a": "3",
            "b": "",
            "num": "",
            "model": "M1",
        },
        {
            "t": "bad",
            "op": "X",
            "who": "g",
            "sec": "2",
            "st": "OK",
            "a": "",
            "b": "",
            "num": "1",
            "model": "",
        },
        {
            "t": "2024-01-01 00:00:02",
            "op": "X",
            "who": "g",
            "sec": "",
            "st": "OK",
            "a": "",
            "b": "",
            "num": "1",
            "model": "",
        },
    ]
    report = TraceReport()
    (event,) = map_rows(rows, mapping, "f", report)
    assert (event.latency_ms, event.status, event.payload_bytes) == (2000.0, "error", 3.0)
    assert event.attributes == {"m": "M1"} and event.ts == 1704067201.0
    assert report.skipped == {"time: unparseable": 1, "latency: missing or unparseable": 1}


def test_a_request_the_trace_caught_unfinished_arrives_without_a_latency() -> None:
    mapping = parse_mapping(MAPPING)
    row = {"t": "2024-01-01 00:00:01", "op": "X", "who": "g", "sec": "0", "st": "PENDING"}
    report = TraceReport()
    (event,) = map_rows([row], mapping, "f", report)
    assert (event.latency_ms, event.status) == (None, "ok")
    (finished,) = map_rows([{**row, "st": "OK"}], mapping, "f", report)
    assert finished.latency_ms == 0.0
    assert (report.events, report.unfinished) == (2, 1)


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ({"latency": {"column": "sec", "unit": "hours"}}, "latency.unit"),
        ({"time": {"format": "unix"}}, "time.column"),
        ({"payload": {"columns": "a"}}, "payload.columns"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_mapping_names_the_key(patch: dict, named: str) -> None:
    with pytest.raises(MappingError, match=named.replace(".", r"\.")):
        parse_mapping({**MAPPING, **patch})


def test_older_snapshot_formats_still_predict_as_trained() -> None:
    snapshot = _trained(2_000).snapshot()
    assert snapshot.model["format"] == "linear-nearest-centroid/3"
    assert len(snapshot.model["shapes"]) > 0  # type: ignore[arg-type]
    new = ShardPredictor.from_snapshot(snapshot)
    assert new.key_power == 2.0 and new.space.numeric_bins and new.space.shapes
    # A gateway still reads what a worker without the shape memory publishes (format /2),
    # and format /1 (no bins, key weight = confidence).
    without = _trained(2_000, shape_features=False).snapshot()
    assert without.model["format"] == "linear-nearest-centroid/2"
    gateway = ShardPredictor.from_snapshot(without)
    assert not gateway.space.shapes and gateway.space.n_features == len(without.feature_names)
    model = {
        k: v for k, v in without.model.items() if k not in ("numeric_bins", "key_power", "shapes")
    }
    old = without.model_copy(update={"model": {**model, "format": "linear-nearest-centroid/1"}})
    gateway = ShardPredictor.from_snapshot(old)
    assert gateway.key_power == 1.0 and not gateway.space.numeric_bins
    assert not gateway.space.shapes


def test_a_shard_the_cut_leaves_out_lives_until_enough_cuts_in_a_row_leave_it_out() -> None:
    from shardshape.models.shards import Shards, keep_left_out

    def shards(ids: list[int]) -> Shards:
        centroids = np.array([[float(i), 0.0, 0.0, 0.0] for i in ids]).reshape(len(ids), 4)
        return Shards(ids, centroids, np.ones(len(ids)), np.ones(len(ids)))

    missing: dict[int, int] = {}
    held = shards([0, 1, 2])
    lives = []
    for cut in ([0, 1], [0, 1], [0, 1, 2], [0, 1], [0, 1], [0, 1]):
        held = keep_left_out(held, shards(cut), missing, 3, 3)
        lives.append(sorted(held.ids))
    # Shard 2 is left out twice, back, then left out three times in a row: retired.
    assert lives == [[0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1]]
    kept = keep_left_out(shards([0, 1, 2]), shards([0, 1]), {}, 3, 3)
    assert kept.centroids[kept.ids.index(2)].tolist() == [2.0, 0.0, 0.0, 0.0]  # as it was
    # Never beyond max_shards: a full cut leaves no room for a left-out shard.
    assert sorted(keep_left_out(shards([0, 1, 2]), shards([0, 1, 3]), {}, 3, 3).ids) == [0, 1, 3]


def test_the_merged_model_keeps_its_shard_ids_from_one_merge_to_the_next() -> None:
    from shardshape.models.federation import GlobalModel, worker_summary

    config = ProfilerConfig(max_shards=8)
    worker = Profiler("shop", config)
    events = list(SyntheticStream(seed=2).events(8_000))
    model = GlobalModel("shop", config)
    snapshots = []
    for i in range(0, 8_000, 2_000):
        worker.process_batch(events[i : i + 2_000])
        snapshots.append(model.merge([worker_summary(worker)], now=0.0))
    # Each merge matches its shards to the last one's: a behaviour keeps its id.
    first, last = snapshots[-2], snapshots[-1]
    latency = {p.shard_id: p.latency_ms_p50 for p in first.shards if not p.quarantine}
    for p in last.shards:
        if not p.quarantine and p.shard_id in latency:
            assert abs(np.log(p.latency_ms_p50) - np.log(latency[p.shard_id])) < 1.0, (p, latency)
