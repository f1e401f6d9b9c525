"""The profiler: per-batch prediction and learning for one service's request stream.

It stays one module of about 540 lines: every step below reads and changes the same per-batch
state (key table, router, shard model), while the rules themselves live in
:mod:`~shardshape.models.keystats` and :mod:`~shardshape.models.routing`.

Per batch of events (:meth:`Profiler.process_many`, on columns: the profile agent calls it
through :meth:`shardshape.streams.profiling.ProfilingWorker.process`, with one gateway batch
or several queued ones merged; :meth:`Profiler.process_batch` is the same for a list of
events):

1. **predict at arrival**, vectorised, with the current
   :class:`~shardshape.models.predictor.ShardPredictor` and each key's route as it stood
   before the batch, exactly as a gateway would;
2. **per event, O(1)**: fold the completed event into its key's running statistics
   (:meth:`KeyTable.fold_many <shardshape.models.keystats.KeyTable.fold_many>`) and the key's
   confidence in its shard;
3. **per key, on a cadence**: re-decide the key's shard with hysteresis every
   ``decide_every`` of its events, check it for anomalies every ``anomaly_every``
   (the rules: :class:`~shardshape.models.routing.KeyRouter`);
4. **per batch**: add the batch to the behaviour regressor's sufficient statistics (one matrix
   product); feed every ``sample_every``-th event to the river clusterer, at most
   ``max_samples_per_batch`` per batch (river's ``learn_one`` costs ~100 us).

Changed key routes accumulate for :meth:`Profiler.routing_changes`; :meth:`Profiler.snapshot`
returns the current model as a :class:`~shardshape.core.contracts.ShardSnapshot`.

>>> from shardshape.models.synthetic import SyntheticStream
>>> profiler = Profiler("shop", ProfilerConfig(max_shards=8))
>>> events = list(SyntheticStream(seed=1).events(3_000))
>>> assignments = [a for i in range(0, 3_000, 500) for a in profiler.process_batch(events[i:i+500])]
>>> len(assignments), 2 <= len(profiler.snapshot().shards) <= 9
(3000, True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from shardshape.core.columns import EventColumns, columns_of, zeros_for_none
from shardshape.core.contracts import RequestEvent, RoutingEntry, ShardProfile, ShardSnapshot
from shardshape.models.anomaly import KeyAnomalyDetector
from shardshape.models.blas import blas_threads
from shardshape.models.clustering import BehaviourClusterer
from shardshape.models.describe import ShardDescriber
from shardshape.models.features import (
    KEY_SLICE,
    N_BEHAVIOUR,
    SHAPE_LATENCY,
    SHAPE_WEIGHT,
    FeatureSpace,
)
from shardshape.models.keystats import (
    BEHAVIOUR_SLICE,
    CONFIDENCE,
    ERROR,
    LAST_TS,
    LATENCY,
    NO_SHARD,
    QUARANTINED,
    SHARD,
    Folded,
    KeyTable,
    rates_per_s,
)
from shardshape.models.predictor import Route, ShardPredictor
from shardshape.models.regression import BehaviourRegressor
from shardshape.models.routing import (
    Change,
    KeyRouter,
    Nearest,
    nearest_shards,
    routing_columns,
    shard_rows,
    store_columns,
)
from shardshape.models.shapes import ShapeTable
from shardshape.models.shards import Shards


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
    # Cuts in a row that must leave a shard out before it is retired (BehaviourClusterer). 1,
    # as before the hysteresis: 3 and 10 cost the mixed day's equal-target line (284 block-hours
    # against shared-reactive's 373, where 25% fewer needs <= 279;
    # tests/allocator/test_simulate.py).
    retire_after: int = 1
    regression_halflife: float = 1_500
    # The request-shape memory (shardshape.models.shapes): a shape seen n times weighs
    # n / (n + shape_prior) in the arrival vector; a snapshot carries the most used
    # ``snapshot_shapes`` shapes. ``shape_features=False``: no shape memory (format /2).
    # A shape's mean follows about its last 1 / shape_min_alpha requests, slower than a key's
    # (1 / key_min_alpha): many callers send one shape, and a congested minute (latencies
    # include queueing) should not move it. At 0.05 it followed the mixed day's queues and
    # routed exports and downloads to the batch tenant's shard (280.6 block-hours at the
    # equal target instead of 278.0).
    shape_features: bool = True
    shape_prior: float = 2.0
    shape_min_alpha: float = 0.01
    snapshot_shapes: int = 1_024
    # Event time (s) after which a learning profiler re-solves and rebuilds its predictor
    # even if nothing else asked for it (None: only on the regression's and the clusterer's
    # cadence). Workers publish a merged snapshot every ``snapshot_interval_s`` (5 s).
    refresh_s: float | None = 5.0
    key_min_alpha: float = 0.05
    # Most keys held (``max_keys``); the least recently seen are evicted
    # (shardshape.models.keystats).
    max_keys: int = 1_000_000
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
    # A key is anomalous where the keys around it are this much sparser than around a typical
    # key (KeyAnomalyDetector.check_keys).
    anomaly_density_ratio: float = 0.05
    quarantine_after: int = 3
    release_after: int = 5
    seed: int = 0
    # One of several workers: predict and route only with the adopted global snapshot.
    federated: bool = False
    # OpenBLAS threads of the thread running ``process_many`` (None: leave as configured).
    # One: the matrices are small, and spinning BLAS threads next to other busy processes
    # turn a 0.15 ms ridge solve into 100+ ms (see models.blas).
    blas_threads: int | None = 1


class Assignment(NamedTuple):
    """One event's outcome: its key, shard predicted at arrival, shard of its behaviour."""

    key: str
    predicted: int
    observed: int
    anomalous: bool


class BatchResult(NamedTuple):
    """A batch's outcomes as columns, event ``i`` at index ``i`` (see :class:`Assignment`)."""

    keys: list[str]
    predicted: list[int]
    observed: list[int]
    anomalous: list[bool]


Recover = Callable[[str], list | None]


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
        self.space = FeatureSpace(cfg.n_buckets, shapes=cfg.shape_features)
        self.shapes = ShapeTable(prior=cfg.shape_prior, min_alpha=cfg.shape_min_alpha)
        self.keys = KeyTable(min_alpha=cfg.key_min_alpha, max_keys=cfg.max_keys)
        self.clusterer = BehaviourClusterer(
            max_shards=cfg.max_shards,
            n_micro=cfg.n_micro,
            recluster_every=cfg.recluster_every,
            min_gain=cfg.min_gain,
            scale=cfg.behaviour_scale,
            seed=cfg.seed,
            retire_after=cfg.retire_after,
        )
        self.scale = self.clusterer.scale_vector
        self.regressor = BehaviourRegressor(
            self.space.n_features, N_BEHAVIOUR, halflife=cfg.regression_halflife
        )
        self.router = KeyRouter(
            cfg.margin,
            cfg.patience,
            cfg.quarantine_after,
            cfg.release_after,
            cfg.confidence_alpha,
            cfg.lookup_confidence,
            cfg.republish_confidence,
        )
        self.detector = KeyAnomalyDetector(
            threshold=cfg.anomaly_threshold,
            density_ratio=cfg.anomaly_density_ratio,
            seed=cfg.seed,
        )
        self.describer = ShardDescriber()
        self._global_shards = Shards([], np.zeros((0, N_BEHAVIOUR)), np.zeros(0), np.zeros(0))
        self.version = 0
        self.predictor = self._build_predictor()
        self._changed: dict[str, RoutingEntry] = {}
        self._n_events = 0
        self._last_ts = 0.0
        self._built_ts = 0.0

    # -- the batch path -------------------------------------------------------------------
    def process_batch(self, events: Sequence[RequestEvent]) -> list[Assignment]:
        """Predict every event's shard at arrival, then learn from the completed ones."""
        return list(map(Assignment, *self.process_many(events)))

    def process_many(
        self,
        events: Sequence[RequestEvent] | EventColumns,
        recover: Recover | None = None,
        batches: int = 1,
    ) -> BatchResult:
        """:meth:`process_batch` with the events and outcomes as columns (the agent's path).

        ``recover(key)`` gives the stored record of a key this profiler does not know (it
        moved here from another worker), or None for a new key. ``batches``: how many
        gateway batches ``events`` joins (the agent merges queued ones); each counts as a
        batch for ``max_samples_per_batch``, so merging does not slow the clusterer down.
        """
        if not len(events):
            return BatchResult([], [], [], [])
        with blas_threads(self.config.blas_threads):
            return self._process(columns_of(events), recover, batches)

    def predict_many(self, events: Sequence[RequestEvent] | EventColumns) -> list[int]:
        """The shards a gateway predicts for ``events`` now, learning nothing from them (their
        outcomes, if any, are ignored)."""
        if not len(events):
            return []
        batch = columns_of(events)
        nones = [None] * len(batch)
        batch = dataclasses.replace(batch, latency_ms=nones)  # type: ignore[arg-type]
        seen = self._n_events
        with blas_threads(self.config.blas_threads):
            predicted = self._process(batch, None).predicted
        self._n_events = seen
        return predicted

    def _process(
        self, batch: EventColumns, recover: Recover | None, batches: int = 1
    ) -> BatchResult:
        """The batch path, vectorised over the batch (see the module docstring).

        Each event is read once. The completed events are then learned into their keys'
        statistics and routes (:meth:`_learn_keys`) and into the models (:meth:`_learn_models`).
        """
        n = len(batch)
        services, types, users, ts = batch.service, batch.request_type, batch.user_id, batch.ts
        payloads, latencies, responses = batch.payload_bytes, batch.latency_ms, batch.response_bytes
        statuses, attrs = batch.status, batch.attributes
        keys = [f"{s}|{t}|{u}" for s, t, u in zip(services, types, users, strict=True)]
        table = self.keys
        slot = table.rows_of(keys)
        if recover is not None and (slot < 0).any() and self._recover(keys, slot, recover):
            slot = table.rows_of(keys)

        # 1. Predict at arrival with each key's route as it stood before the batch.
        known = slot >= 0
        before = table.data[slot[known]]
        route_shard = np.full(n, NO_SHARD, dtype=np.int64)
        route_conf = np.zeros(n)
        route_quar = np.zeros(n, dtype=bool)
        route_shard[known] = before[:, SHARD]
        route_conf[known] = before[:, CONFIDENCE]
        route_quar[known] = before[:, QUARANTINED] > 0
        has_route = known & ((route_shard != NO_SHARD) | route_quar)
        route_shard[route_quar] = self.quarantine_shard
        route_conf[route_quar] = 1.0
        space = self.space
        sig_rows, sigs = space.hashed_rows(types, attrs)
        x = space.row_matrix[sig_rows]
        if space.shapes:
            shape_ids = space.row_shape_ids[sig_rows]
            x[:, SHAPE_WEIGHT : SHAPE_LATENCY + 1] = self.predictor.shape_features(shape_ids)
        payload = np.asarray(payloads, dtype=float)
        x[:, 1] = np.log1p(payload)
        keyed, key_rows, key_weights = self.predictor.key_block(route_shard, route_conf, has_route)
        x[keyed, 2] = key_weights
        x[keyed, KEY_SLICE] = key_rows * key_weights[:, None]
        predicted = self.predictor.predict_arrays(
            x, route_shard, route_conf, route_quar, has_route
        ).tolist()

        # 2. The completed events' behaviour and observed shard.
        latency = np.array(latencies, dtype=float)  # None -> NaN
        done_mask = ~np.isnan(latency)
        done = np.flatnonzero(done_mask)
        nd = len(done)
        observed = np.full(n, NO_SHARD, dtype=np.int64)
        anomalous = np.zeros(n, dtype=bool)
        if nd == 0:
            self._n_events += n
            return BatchResult(keys, predicted, [NO_SHARD] * n, [False] * n)
        done_list = done.tolist()
        b = np.empty((nd, N_BEHAVIOUR))
        b[:, 0] = np.log1p(latency[done])
        b[:, 1] = np.fromiter(map("ok".__ne__, statuses), dtype=bool, count=n)[done]
        b[:, 2] = np.log1p(payload[done])
        b[:, 3] = np.log1p(zeros_for_none(responses)[done])
        shards = self.shards
        if shards.ids:
            diff = b[:, None, :] - shards.centroids[None, :, :]
            d2 = (diff**2 * self.scale).sum(axis=2)
            best = d2.argmin(axis=1)
            observed[done] = np.asarray(shards.ids)[best]
            dist = np.sqrt(d2[np.arange(nd), best])
            anomalous[done] = dist > 4.0 * np.asarray(shards.spread)[best] + 0.5
        observed_list = observed.tolist()

        # 3. Key statistics and routing.
        ts_done = np.array(ts, dtype=float)[done]
        done_keys = [keys[i] for i in done_list]
        callers = self._learn_keys(done_keys, slot[done], ts_done, b, observed[done].tolist())
        last = float(ts_done.max())
        if last > self._last_ts:
            self._last_ts = last
        if space.shapes:
            # A key's requests of one shape count once per batch: one caller's burst does not
            # speak for everyone who sends that shape (the batch tenant bursting the
            # interactive requests' shape, on the mixed day).
            self.shapes.learn(shape_ids[done], b[:, 0], self._last_ts, callers)

        # 4. Models.
        used = np.flatnonzero(space.row_matrix[sigs].any(axis=0))
        cols = np.union1d(np.arange(space.n_fixed), used)
        self._learn_models(types, attrs, done_list, x[done], b, cols, batches)
        self._n_events += n
        return BatchResult(keys, predicted, observed_list, anomalous.tolist())

    def _recover(self, keys: list[str], slot: np.ndarray, recover: Recover) -> bool:
        """Store the records ``recover`` has for the batch's unknown keys; True if any."""
        found = False
        for key in dict.fromkeys(keys[i] for i in np.flatnonzero(slot < 0).tolist()):
            stored = recover(key)
            if stored is not None:
                self.keys.records[key] = list(stored)
                found = True
        return found

    def _learn_keys(
        self,
        keys: list[str],
        rows: np.ndarray,
        ts: np.ndarray,
        b: np.ndarray,
        observed: list[int],
    ) -> np.ndarray:
        """Learn the batch's completed events into their keys' statistics and routes;
        returns each completed event's key row (for the shape memory's count per caller).

        Completed event ``j`` is of key ``keys[j]`` (table row ``rows[j]`` before the batch, -1
        for a key not held), at ``ts[j]``, with behaviour ``b[j]`` and observed shard
        ``observed[j]``. In steps:

        1. its key's statistics (:meth:`KeyTable.rows_for`, :meth:`KeyTable.fold_many`);
        2. the anomaly checks and shard decisions due after it, from those statistics
           (:meth:`_check_anomalies`, :meth:`_decisions`), each step for the whole batch;
        3. the routing rules, event by event (:meth:`KeyRouter.route_events`);
        4. the routes that changed, for :meth:`routing_changes` (:meth:`_note_changes`).
        """
        table = self.keys
        folded = table.fold_many(table.rows_for(keys, ts, b, rows), ts, b)
        checks = self._check_anomalies(keys, folded)
        decisions = self._decisions(folded)
        cols = routing_columns(folded.records)
        changes = self.router.route_events(
            cols, folded.group.tolist(), observed, decisions, checks, shard_rows(self.shards)
        )
        store_columns(folded.records, cols)
        table.data[folded.slots] = folded.records
        self._note_changes(keys, ts, changes)
        return folded.slots[folded.group]

    def _check_anomalies(self, keys: list[str], folded: Folded) -> dict[int, bool]:
        """Event -> whether its key is anomalous, for the events after which a key's check is
        due (every ``anomaly_every`` of its events), checked in event order (river learns
        sequentially)."""
        due = np.flatnonzero(folded.count.astype(np.int64) % self.config.anomaly_every == 0)
        if not len(due):
            return {}
        rate = rates_per_s(folded.count[due], folded.gap[due])
        error_rate = folded.mean[due, ERROR - LATENCY]
        flagged = self.detector.check_keys([keys[j] for j in due.tolist()], rate, error_rate)
        return dict(zip(due.tolist(), flagged.tolist(), strict=True))

    def _decisions(self, folded: Folded) -> dict[int, Nearest | None]:
        """Event -> its key's nearest shard (None without shards), for the events after which
        a key's shard is due to be decided (its first, then every ``decide_every``-th event);
        the distances of every due key mean to every shard at once."""
        every = self.config.decide_every
        due = np.flatnonzero((folded.count.astype(np.int64) % every == 1) | (every == 1))
        if not len(due):
            return {}
        if not self.shards.ids:
            return dict.fromkeys(due.tolist())
        nearest = nearest_shards(self.shards, folded.mean[due], self.scale)
        return dict(zip(due.tolist(), nearest, strict=True))

    def _note_changes(self, keys: list[str], ts: np.ndarray, changes: list[Change]) -> None:
        """Note changed routes for :meth:`routing_changes`: per key the latest, keys in the
        order they first changed."""
        latest: dict[str, Change] = {}
        for change in changes:
            key = keys[change[0]]
            if key not in latest:
                self._changed.setdefault(key, None)  # type: ignore[arg-type]
            latest[key] = change
        for key, (j, shard, conf, quarantined) in latest.items():
            self._changed[key] = self._entry_of(key, shard, conf, quarantined, float(ts[j]))

    def _learn_models(
        self,
        types: Sequence[str],
        attrs: Sequence[Mapping],
        done: list[int],
        x: np.ndarray,
        b: np.ndarray,
        cols: np.ndarray | None = None,
        batches: int = 1,
    ) -> None:
        # A federated worker predicts with the merged model: its own coefficients go unused.
        refresh = self.regressor.learn_many(x, b, cols, solve=not self.config.federated)
        # Sample by global position so the cadence does not depend on batch sizes.
        start = self._n_events
        every = self.config.sample_every
        picked = [row for row, i in enumerate(done) if (start + i) % every == 0]
        budget = self.config.max_samples_per_batch * batches
        if len(picked) > budget:
            # Big batches (high load): a fixed number of river updates per batch.
            picked = picked[:: -(-len(picked) // budget)]
        if picked:
            refresh |= self.clusterer.learn_many(b[picked])
            # Described by this profiler's own shards; a federation maps them to global ids.
            local, _ = self.clusterer.predict_many(b[picked])
            for row, shard in zip(picked, local.tolist(), strict=True):
                i = done[row]
                self.describer.learn_one(shard, types[i], attrs[i])
        cfg = self.config
        if cfg.federated:
            return
        if refresh:
            self.version += 1
            self._built_ts = self._last_ts
            self.predictor = self._build_predictor()
        elif cfg.refresh_s is not None and self._last_ts - self._built_ts >= cfg.refresh_s:
            # The shape memory and the regression move with every completion: a new
            # snapshot at least every ``refresh_s`` of event time, as the workers' merges
            # publish one. The shards have not changed: their descriptions are kept.
            self.regressor.solve()
            self.version += 1
            self._built_ts = self._last_ts
            self.predictor = self._build_predictor(self.predictor.profiles)

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

        See :mod:`shardshape.models.federation`; with ``federated=True`` only this changes the
        model that predicts, so every worker predicts with the same global version.
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
        if not shards.ids:
            return
        table = self.keys
        records = table.data[: len(table)]
        live = np.isin(records[:, SHARD], shards.ids)
        slots = np.flatnonzero(~live & (records[:, QUARANTINED] == 0))
        if not len(slots):
            return
        state = records[slots]
        cols = routing_columns(state)
        nearest = nearest_shards(shards, state[:, BEHAVIOUR_SLICE], self.scale)
        changes = self.router.settle_all(cols, nearest, shard_rows(shards))
        store_columns(state, cols)
        table.data[slots] = state
        keys = list(table.slots)
        self._note_changes([keys[slot] for slot in slots.tolist()], state[:, LAST_TS], changes)

    # -- internals ------------------------------------------------------------------------
    def _route(self, rec: list | None) -> Route | None:
        if rec is None or (rec[SHARD] == NO_SHARD and not rec[QUARANTINED]):
            return None
        if rec[QUARANTINED]:
            return Route(self.quarantine_shard, 1.0, True)
        return Route(rec[SHARD], rec[CONFIDENCE], False)

    def _entry_of(
        self, key: str, shard: int, confidence: float, quarantined: bool, ts: float
    ) -> RoutingEntry:
        if quarantined:
            shard, confidence = self.quarantine_shard, 1.0
        assert shard != NO_SHARD
        return RoutingEntry(
            service=self.service,
            key=key[:128],
            shard_id=shard,
            snapshot_version=self.version,
            confidence=min(max(confidence, 0.0), 1.0),
            anomalous=quarantined,
            updated_ts=ts,
        )

    def _build_predictor(self, profiles: list[ShardProfile] | None = None) -> ShardPredictor:
        """The predictor of the current model; ``profiles`` (the shards' descriptions) are
        made afresh unless given."""
        shards = self.shards
        profiles = (
            list(profiles)
            if profiles
            else [
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
        )
        if not any(p.quarantine for p in profiles):
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
            shapes=self.shapes.export(self.config.snapshot_shapes),
        )
