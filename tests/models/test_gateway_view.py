"""A gateway predicts from published routing entries and snapshots only; it must agree with
the planted profiles about as well as the profiler itself does."""

from __future__ import annotations

from shardshape.core.contracts import RoutingEntry
from shardshape.models.evaluate import adjusted_rand_index
from shardshape.models.predictor import ShardPredictor
from shardshape.models.profiler import Profiler, ProfilerConfig
from shardshape.models.synthetic import SyntheticStream


def test_gateway_view_recovers_the_planted_profiles() -> None:
    labelled = list(SyntheticStream(seed=0).labelled(22_000))
    profiler = Profiler("shop", ProfilerConfig())
    entries: dict[str, RoutingEntry] = {}
    predictor: ShardPredictor | None = None
    scored_pred, scored_true = [], []
    batch = 500
    for start in range(0, len(labelled), batch):
        chunk = labelled[start : start + batch]
        events = [event for event, _ in chunk]
        if predictor is not None and start >= 20_000:
            routes = [entries.get(f"shop|{e.request_type}|{e.user_id}") for e in events]
            scored_pred += predictor.predict_many(events, routes).tolist()
            scored_true += [label for _, label in chunk]
        profiler.process_batch(events)
        entries.update((entry.key, entry) for entry in profiler.routing_changes())
        predictor = ShardPredictor.from_snapshot(profiler.snapshot())
    ari = adjusted_rand_index(scored_true, scored_pred)
    assert ari >= 0.9, f"gateway-view ARI {ari:.3f}"
