"""The profiler: per-batch prediction and learning for one service's request stream.

Per batch of events (the Faust agent calls :meth:`Profiler.process_batch` per decoded batch):

1. **predict at arrival**, vectorised, with the current :class:`~models.predictor.ShardPredictor`
   and each key's route as it stood before the batch, exactly as a gateway would;
2. **per event, O(1)**: fold the completed event into its key's running statistics
   (:mod:`models.keystats`) and the key's confidence in its shard;
3. **per key, on a cadence**: re-decide the key's shard with hysteresis every
   ``decide_every`` of its events, check it for anomalies every ``anomaly_every``;
4. **per batch**: add the batch to the behaviour regressor's sufficient statistics (one matrix
   product); feed every ``sample_every``-th event to the river clusterer, at most
   ``max_samples_per_batch`` per batch (river's ``learn_one`` costs ~100 us).

Changed key routes accumulate for :meth:`Profiler.routing_changes`; :meth:`Profiler.snapshot`
returns the current model as a :class:`~streams.contracts.ShardSnapshot`.

>>> from models.synthetic import SyntheticStream
>>> profiler = Profiler("shop", ProfilerConfig(max_shards=8))
>>> events = list(SyntheticStream(seed=1).events(3_000))
>>> assignments = [a for i in range(0, 3_000, 500) for a in profiler.process_batch(events[i:i+500])]
>>> len(assignments), 2 <= len(profiler.snapshot().shards) <= 9
(3000, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from models.anomaly import KeyAnomalyDetector
from models.clustering import BehaviourClusterer
from models.describe import ShardDescriber
from models.features import N_BEHAVIOUR, FeatureSpace, behaviour_matrix
from models.keystats import (
    CONFIDENCE,
    ERROR,
    LAST_TS,
    NO_SHARD,
    PUBLISHED_CONFIDENCE,
    QUARANTINED,
    SHARD,
    KeyTable,
    N,
)
from models.predictor import Route, ShardPredictor
from models.regression import BehaviourRegressor
from models.routing import KeyRouter
from models.shards import Shards
from streams.contracts import RequestEvent, RoutingEntry, ShardProfile, ShardSnapshot


@dataclass(frozen=True)
class ProfilerConfig:
    """Knobs of the profiler; the defaults are what the tests and the trace figures use."""

    max_shards: int = 8
    n_buckets: int = 128
    behaviour_scale: dict[str, float] = field(
        default_factory=lambda: {
            "log_latency_ms": 1.0,
            "error": 1.0,
            "log_payload_bytes": 0.05,
            "log_response_bytes": 0.05,
        }
    )
    sample_every: int = 4
    max_samples_per_batch: int = 8
    n_micro: int = 32
    recluster_every: int = 250
    min_gain: float = 0.005
    regression_halflife: float = 1_500
    key_min_alpha: float = 0.05
    decide_every: int = 4
    margin: float = 0.25
    patience: int = 3
    lookup_confidence: float = 0.9
    # A key's entry is published again when its confidence moves this much (gateways weigh
    # the key by it), or crosses ``lookup_confidence``.
    republish_confidence: float = 0.1
    confidence_alpha: float = 0.05
    anomaly_every: int = 16
    anomaly_threshold: float = 0.8
    quarantine_after: int = 3
    release_after: int = 5
    seed: int = 0
    # One of several workers: predict and route only with the adopted global snapshot.
    federated: bool = False


class Assignment(NamedTuple):
    """One event's outcome: its key, shard predicted at arrival, shard of its behaviour."""

    key: str
    predicted: int
    observed: int
    anomalous: bool


class Profiler:
    """Learns one service's shards online and predicts them at arrival.

    Parameters
    ----------
    service
        Service name written into snapshots and routing entries.
    config
        See :class:`ProfilerConfig`.
    """

    def __init__(self, service: str = "service", config: ProfilerConfig | None = None) -> None:
        self.service = service
        self.config = cfg = config or ProfilerConfig()
        self.quarantine_shard = cfg.max_shards
        self.space = FeatureSpace(cfg.n_buckets)
        self.keys = KeyTable(min_alpha=cfg.key_min_alpha)
        self.clusterer = BehaviourClusterer(
            max_shards=cfg.max_shards,
            n_micro=cfg.n_micro,
            recluster_every=cfg.recluster_every,
            min_gain=cfg.min_gain,
            scale=cfg.behaviour_scale,
            seed=cfg.seed,
        )
        self.scale = self.clusterer.scale_vector
        self.regressor = BehaviourRegressor(
            self.space.n_features, N_BEHAVIOUR, halflife=cfg.regression_halflife
        )
        self.router = KeyRouter(cfg.margin, cfg.patience, cfg.quarantine_after, cfg.release_after)
        self.detector = KeyAnomalyDetector(threshold=cfg.anomaly_threshold, seed=cfg.seed)
        self.describer = ShardDescriber()
        self._global_shards = Shards([], np.zeros((0, N_BEHAVIOUR)), np.zeros(0), np.zeros(0))
        self.version = 0
        self.predictor = self._build_predictor()
        self._changed: dict[str, RoutingEntry] = {}
        self._n_events = 0
        self._last_ts = 0.0

    # -- the batch path -------------------------------------------------------------------
    def process_batch(self, events: Sequence[RequestEvent]) -> list[Assignment]:
        """Predict every event's shard at arrival, then learn from the completed ones."""
        if not events:
            return []
        cfg = self.config
        keys = [f"{e.service}|{e.request_type}|{e.user_id}" for e in events]
        routes = [self._route(self.keys.get(k)) for k in keys]
        x = self.space.arrival_matrix(events, *self.predictor.key_rows(routes))
        predicted = self.predictor.predict_matrix(x, routes).tolist()

        done = [i for i, e in enumerate(events) if e.latency_ms is not None]
        b = behaviour_matrix([events[i] for i in done])
        observed = np.full(len(events), NO_SHARD)
        anomalous = np.zeros(len(events), dtype=bool)
        shards = self.shards
        if done and shards.ids:
            shard, dist = shards.nearest(b, self.scale)
            observed[done] = shard
            spread = dict(zip(shards.ids, shards.spread, strict=True))
            limit = np.array([4.0 * spread[s] + 0.5 for s in shard.tolist()])
            anomalous[done] = dist > limit
        observed_list = observed.tolist()
        b_rows = b.tolist()

        conf_a = cfg.confidence_alpha
        for row, i in enumerate(done):
            e = events[i]
            key = keys[i]
            rec = self.keys.update(key, e.ts, b_rows[row])
            rec[CONFIDENCE] += conf_a * ((observed_list[i] == rec[SHARD]) - rec[CONFIDENCE])
            n = rec[N]
            decide_now = n % cfg.decide_every == 1 or cfg.decide_every == 1
            if decide_now and (
                self.router.decide(rec, shards, self.scale) or self._confidence_moved(rec)
            ):
                self._changed[key] = self._entry(key, rec, e.ts)
            if n % cfg.anomaly_every == 0:
                score = self.detector.score_and_learn(self.keys.rate_per_s(rec), rec[ERROR])
                if self.router.check_anomaly(rec, score >= cfg.anomaly_threshold):
                    self._changed[key] = self._entry(key, rec, e.ts)
            if e.ts > self._last_ts:
                self._last_ts = e.ts

        if done:
            self._learn_models(events, done, x, b, observed)
        self._n_events += len(events)
        return [
            Assignment(keys[i], predicted[i], observed_list[i], bool(anomalous[i]))
            for i in range(len(events))
        ]

    def _learn_models(
        self,
        events: Sequence[RequestEvent],
        done: list[int],
        x: np.ndarray,
        b: np.ndarray,
        observed: np.ndarray,
    ) -> None:
        refresh = self.regressor.learn_many(x[done], b)
        # Sample by global position so the cadence does not depend on batch sizes.
        start = self._n_events
        picked = [row for row, i in enumerate(done) if (start + i) % self.config.sample_every == 0]
        budget = self.config.max_samples_per_batch
        if len(picked) > budget:
            # Big batches (high load): a fixed number of river updates per batch.
            picked = picked[:: -(-len(picked) // budget)]
        if picked:
            refresh |= self.clusterer.learn_many(b[picked])
            # Described by this profiler's own shards; a federation maps them to global ids.
            local, _ = self.clusterer.predict_many(b[picked])
            for row, shard in zip(picked, local.tolist(), strict=True):
                e = events[done[row]]
                self.describer.learn_one(shard, e.request_type, e.attributes)
        if refresh and not self.config.federated:
            self.version += 1
            self.predictor = self._build_predictor()

    # -- outputs --------------------------------------------------------------------------
    def routing_changes(self) -> list[RoutingEntry]:
        """Routes that changed since the last call (one per key, the latest)."""
        changed, self._changed = list(self._changed.values()), {}
        return changed

    def snapshot(self) -> ShardSnapshot:
        """The current model as a versioned :class:`ShardSnapshot` of plain numbers."""
        return self.predictor.to_snapshot(self.service, self.version, created_ts=self._last_ts)

    def route_of(self, key: str) -> Route | None:
        """The key's current route, as a gateway would hold it (None for an unknown key)."""
        return self._route(self.keys.get(key))

    @property
    def shards(self) -> Shards:
        """The shards this profiler routes by: its own, or the adopted global ones."""
        return self._global_shards if self.config.federated else self.clusterer.shards

    def adopt_global(self, shards: Shards, predictor: ShardPredictor | None, version: int) -> None:
        """Route by merged ``shards`` and predict with ``predictor`` (built here when None).

        See :mod:`models.federation`; with ``federated=True`` only this changes the model that
        predicts, so every worker predicts with the same global version.
        """
        self._global_shards = shards
        self.version = version
        self.predictor = predictor or self._build_predictor()
        self._route_orphans()

    def _route_orphans(self) -> None:
        """Route, at once, keys whose shard does not exist (new keys, retired shards).

        Other keys move only through the hysteresis of their next decisions; these would
        otherwise wait for their next event with no route at all.
        """
        shards = self.shards
        live = set(shards.ids)
        if not live:
            return
        for key, rec in self.keys:
            orphan = rec[SHARD] not in live and not rec[QUARANTINED]
            if orphan and self.router.decide(rec, shards, self.scale):
                self._changed[key] = self._entry(key, rec, rec[LAST_TS])

    # -- internals ------------------------------------------------------------------------
    def _route(self, rec: list | None) -> Route | None:
        if rec is None or (rec[SHARD] == NO_SHARD and not rec[QUARANTINED]):
            return None
        if rec[QUARANTINED]:
            return Route(self.quarantine_shard, 1.0, True)
        return Route(rec[SHARD], rec[CONFIDENCE], False)

    def _confidence_moved(self, rec: list) -> bool:
        """Whether gateways should hear of the key's confidence: it crossed the lookup
        threshold, or moved by ``republish_confidence`` since the key's last entry."""
        if rec[SHARD] == NO_SHARD:
            return False
        now, then = rec[CONFIDENCE], rec[PUBLISHED_CONFIDENCE]
        threshold = self.config.lookup_confidence
        crossed = (now >= threshold) != (then >= threshold)
        return crossed or abs(now - then) >= self.config.republish_confidence

    def _entry(self, key: str, rec: list, ts: float) -> RoutingEntry:
        route = self._route(rec)
        assert route is not None
        rec[PUBLISHED_CONFIDENCE] = rec[CONFIDENCE]
        return RoutingEntry(
            service=self.service,
            key=key[:128],
            shard_id=route.shard_id,
            snapshot_version=self.version,
            confidence=min(max(route.confidence, 0.0), 1.0),
            anomalous=route.anomalous,
            updated_ts=ts,
        )

    def _build_predictor(self) -> ShardPredictor:
        shards = self.shards
        profiles = [
            ShardProfile(
                shard_id=shard,
                summary=self.describer.summary(shard, c[0], c[1]),
                weight=float(w),
                latency_ms_p50=float(np.expm1(c[0])),
                error_rate=float(min(max(c[1], 0.0), 1.0)),
            )
            for shard, c, w in zip(
                shards.ids, shards.centroids.tolist(), shards.weights, strict=True
            )
        ]
        profiles.append(
            ShardProfile(shard_id=self.quarantine_shard, summary="quarantine", quarantine=True)
        )
        return ShardPredictor(
            self.space,
            self.regressor.coef,
            shards.centroids,
            shards.ids,
            self.scale,
            default_shard=shards.ids[int(np.argmax(shards.weights))] if shards.ids else 0,
            quarantine_shard=self.quarantine_shard,
            lookup_confidence=self.config.lookup_confidence,
            profiles=profiles,
            spread=shards.spread,
        )
