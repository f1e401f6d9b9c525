"""The profiler's batched path learns what its one-event path learns, bit for bit.

A batch's key statistics are folded in per occurrence rank, numpy over the keys of a rank, and
the last ranks of a few busy keys with plain floats (``KeyTable.fold_many``); its anomaly checks
and shard decisions are computed for the whole batch, then the routing rules run over its
events in order (``KeyRouter.route_events``). An event processed alone takes the plain-float
path for everything. So one seeded stream, once in batches of mixed sizes through
``process_many`` (the agent's path) and once event by event through ``process_batch``, must
leave the same key statistics, routes and anomaly flags.

The shard model itself learns per batch (a clusterer budget per batch, refreshes between
batches), so for routes the two runs route by one fixed global model, as a federated worker
(the worker's setting, ``streams/app.py``) does between snapshots; a second model is adopted
half way (the keys of a shard it retires are routed again at once). Key statistics do not
depend on the model: they are also compared while each profiler learns its own.
"""

from __future__ import annotations

import random

from shardshape.core.columns import columns_of
from shardshape.core.contracts import RequestEvent, RoutingEntry
from shardshape.models.keystats import (
    BEHAVIOUR_SLICE,
    GAP,
    LAST_TS,
    QUARANTINED,
    RECORD_LENGTH,
    N,
)
from shardshape.models.profiler import Profiler, ProfilerConfig
from shardshape.models.shards import Shards
from shardshape.models.synthetic import SyntheticStream

EVENTS = 12_000
HALF = EVENTS // 2
STATISTICS = [N, LAST_TS, GAP, *range(BEHAVIOUR_SLICE.start, BEHAVIOUR_SLICE.stop)]


def stream(seed: int, n: int = EVENTS) -> list[RequestEvent]:
    """Drift half way, a scraper, 200 users and 20 busy tenants; every 9th event incomplete
    (an arrival only: predicted, not learned)."""
    events = SyntheticStream(seed=seed, drift_at=n // 2, users=200, scraper_share=0.05).events(n)
    return [
        e.model_copy(update={"latency_ms": None}) if i % 9 == 4 else e for i, e in enumerate(events)
    ]


def cuts(n: int, start: int = 0) -> list[tuple[int, int]]:
    """Batches of mixed sizes, as the agent merges queued gateway batches, over [start, n)."""
    rng = random.Random(n + start)
    out = []
    while start < n:
        end = min(n, start + rng.choice([1, 2, 7, 40, 250, 500, 1_000]))
        out.append((start, end))
        start = end
    return out


def learned(stream: SyntheticStream, n: int) -> Shards:
    learner = Profiler("shop")
    events = list(stream.events(n))
    for i in range(0, n, 500):
        learner.process_batch(events[i : i + 500])
    return learner.clusterer.shards


def global_models() -> tuple[Shards, Shards]:
    """Two global models learned elsewhere; the second after the drift, without the first's
    shard 3 (a shard retired: its keys are routed again when it is adopted)."""
    first = learned(SyntheticStream(seed=31, users=200), 6_000)
    second = learned(SyntheticStream(seed=32, users=200, drift_at=0), 6_000)
    assert 3 in first.ids and 3 not in second.ids
    return first, second


class Run:
    """One pass over the stream; what it saw at the batched run's batch ends."""

    def __init__(self, config: ProfilerConfig, models: tuple[Shards, Shards] | None = None) -> None:
        self.profiler = Profiler("shop", config)
        self.models = models
        if models:
            self.profiler.adopt_global(models[0], None, 1)
        self.observed: list[int] = []
        self.anomalous: list[bool] = []
        self.changes: list[list[RoutingEntry]] = []

    def feed(self, events: list[RequestEvent], one_by_one: bool, batches: int = 1) -> None:
        if one_by_one:
            for event in events:
                (_, _, observed, anomalous) = self.profiler.process_batch([event])[0]
                self.observed.append(observed)
                self.anomalous.append(anomalous)
        else:
            result = self.profiler.process_many(columns_of(events), batches=batches)
            self.observed += result.observed
            self.anomalous += result.anomalous
        self.changes.append(self.profiler.routing_changes())

    def over(self, events: list[RequestEvent], one_by_one: bool) -> Run:
        for start, end in cuts(HALF) + cuts(len(events), HALF):
            if start == HALF and self.models:
                self.profiler.adopt_global(self.models[1], None, 2)
                self.changes.append(self.profiler.routing_changes())
            self.feed(events[start:end], one_by_one, batches=1 + (end - start) // 500)
        return self


def first_difference(batched: dict[str, list], scalar: dict[str, list], fields) -> str | None:
    """The first field of a key's record that differs between the runs, if any."""
    if batched.keys() != scalar.keys():
        return f"keys differ: {sorted(batched.keys() ^ scalar.keys())[:5]}"
    for key, rec in batched.items():
        for field in fields:
            if rec[field] != scalar[key][field]:
                one = scalar[key][field]
                return f"{key} field {field}: batched {rec[field]!r}, one by one {one!r}"
    return None


def test_batched_and_one_event_paths_agree_on_statistics_routes_and_flags() -> None:
    events = stream(seed=5)
    models = global_models()
    config = ProfilerConfig(federated=True)
    batched = Run(config, models).over(events, one_by_one=False)
    scalar = Run(config, models).over(events, one_by_one=True)
    b, s = batched.profiler, scalar.profiler
    records_b, records_s = dict(b.keys), dict(s.keys)

    # The stream exercises what could diverge: quarantine, moves between shards, anomalies.
    entries = [e for batch in batched.changes for e in batch]
    assert any(e.anomalous for e in entries) and any(rec[QUARANTINED] for rec in records_b.values())
    shards_of: dict[str, set[int]] = {}
    for e in entries:
        if not e.anomalous:
            shards_of.setdefault(e.key, set()).add(e.shard_id)
    assert sum(len(ids) > 1 for ids in shards_of.values()) >= 20
    assert sum(batched.anomalous) >= 5

    # Key statistics and the whole routing state (shard, pending shard, streaks, confidence,
    # quarantine, confidence last published), bit for bit.
    difference = first_difference(records_b, records_s, range(RECORD_LENGTH))
    assert difference is None, difference
    # Routes as a gateway holds them, and as published, batch by batch.
    assert {k: b.route_of(k) for k in records_b} == {k: s.route_of(k) for k in records_s}
    assert batched.changes == scalar.changes
    # Anomaly flags: per event, and the detector's own state.
    assert batched.anomalous == scalar.anomalous
    assert batched.observed == scalar.observed
    assert b.detector.cutoff == s.detector.cutoff


def test_statistics_do_not_depend_on_batching_while_the_model_learns() -> None:
    events = stream(seed=8, n=3_000)
    batched = Run(ProfilerConfig()).over(events, one_by_one=False)
    scalar = Run(ProfilerConfig()).over(events, one_by_one=True)
    records_b, records_s = dict(batched.profiler.keys), dict(scalar.profiler.keys)
    assert len(records_b) > 200
    difference = first_difference(records_b, records_s, STATISTICS)
    assert difference is None, difference
