"""The profiler: per-batch prediction and learning for one service's request stream.

Per batch of events (the Faust agent calls :meth:`Profiler.process_batch` per decoded batch):

1. **predict at arrival**, vectorised, with the current
   :class:`~shardshape.models.predictor.ShardPredictor` and each key's route as it stood
   before the batch, exactly as a gateway would;
2. **per event, O(1)**: fold the completed event into its key's running statistics
   (:mod:`shardshape.models.keystats`) and the key's confidence in its shard;
3. **per key, on a cadence**: re-decide the key's shard with hysteresis every
   ``decide_every`` of its events, check it for anomalies every ``anomaly_every``;
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
from shardshape.models.features import N_BEHAVIOUR, N_FIXED, FeatureSpace
from shardshape.models.keystats import (
    ANOMALY_STREAK,
    BEHAVIOUR_SLICE,
    CALM_STREAK,
    CONFIDENCE,
    GAP,
    LAST_TS,
    NO_SHARD,
    PENDING,
    PUBLISHED_CONFIDENCE,
    QUARANTINED,
    SHARD,
    STREAK,
    KeyTable,
    N,
    new_record,
)
from shardshape.models.predictor import Route, ShardPredictor
from shardshape.models.regression import BehaviourRegressor
from shardshape.models.routing import KeyRouter
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
    # against shared-reactive's 373, where 25% fewer needs <= 279; tests/test_simulate.py).
    retire_after: int = 1
    regression_halflife: float = 1_500
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
    # OpenBLAS threads of the thread running ``process_batch`` (None: leave as configured).
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

# Occurrence ranks with at most this many keys left are folded in event by event.
_FEW_KEYS = 8


def _fold_in_order(
    rows: list[list[float]],
    events: list[list[int]],
    ts: np.ndarray,
    b: np.ndarray,
    min_alpha: float,
    n_after: np.ndarray,
    mean_after: np.ndarray,
    gap_after: np.ndarray,
) -> list[list[float]]:
    """Fold events into key records one at a time, with :meth:`KeyTable.update`'s float steps.

    ``rows[g]`` is a key's record (a list of floats), ``events[g]`` the completed events
    (indices into ``ts`` and ``b``) to fold into it in order, padded with -1. Each event's
    count, means and mean gap after it go to ``n_after``, ``mean_after`` and ``gap_after``;
    the updated records are returned.
    """
    flat = [j for row in events for j in row if j >= 0]
    ts_of, b_of = ts[flat].tolist(), b[flat].tolist()
    n_out, mean_out, gap_out = [], [], []
    k = 0
    for row, todo in zip(rows, events, strict=True):
        n, last, gap_mean = row[N], row[LAST_TS], row[GAP]
        lat, err, pay, resp = row[BEHAVIOUR_SLICE]
        for j in todo:
            if j < 0:
                break
            n += 1.0
            if n > 1:
                t = ts_of[k]
                a = max(1.0 / n, min_alpha)
                gap_mean += max(1.0 / (n - 1.0), min_alpha) * (max(t - last, 0.0) - gap_mean)
                last = max(t, last)
                b_lat, b_err, b_pay, b_resp = b_of[k]
                lat += a * (b_lat - lat)
                err += a * (b_err - err)
                pay += a * (b_pay - pay)
                resp += a * (b_resp - resp)
            k += 1
            n_out.append(n)
            mean_out.append((lat, err, pay, resp))
            gap_out.append(gap_mean)
        row[N], row[LAST_TS], row[GAP] = n, last, gap_mean
        row[BEHAVIOUR_SLICE] = lat, err, pay, resp
    n_after[flat] = n_out
    mean_after[flat] = mean_out
    gap_after[flat] = gap_out
    return rows


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
        self.router = KeyRouter(cfg.margin, cfg.patience, cfg.quarantine_after, cfg.release_after)
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

        Each event is read once. Key statistics are folded in per occurrence rank (all keys'
        first events of the batch, then all second ones, ...) with the same floating-point
        steps as :meth:`KeyTable.update`; the routing state machine (confidence, shard
        decisions, quarantine) then runs over the events in order with plain floats, its
        nearest-shard distances computed for all due decisions at once.
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
        payload = np.asarray(payloads, dtype=float)
        x[:, 1] = np.log1p(payload)
        keyed, key_rows, key_weights = self.predictor.key_block(route_shard, route_conf, has_route)
        x[keyed, 2] = key_weights
        x[keyed, 3:N_FIXED] = key_rows * key_weights[:, None]
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
        self._learn_keys(keys, slot, done, done_list, ts, ts_done, b, observed)
        last = float(ts_done.max())
        if last > self._last_ts:
            self._last_ts = last

        # 4. Models.
        used = np.flatnonzero(space.row_matrix[sigs].any(axis=0))
        cols = np.union1d(np.arange(N_FIXED), used)
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
        slot: np.ndarray,
        done: np.ndarray,
        done_list: list[int],
        ts: Sequence[float],
        ts_arr: np.ndarray,
        b: np.ndarray,
        observed: np.ndarray,
    ) -> None:
        cfg = self.config
        table = self.keys
        nd = len(done)
        # New keys get rows, in the order of their first completed event.
        dslot = slot[done]
        if (dslot < 0).any():
            fresh: dict[str, int] = {}
            for j in np.flatnonzero(dslot < 0).tolist():
                fresh.setdefault(keys[done_list[j]], j)
            rows = table.allocate(list(fresh), keep=[keys[i] for i in done_list])
            table.data[rows] = [new_record(ts[done_list[j]], b[j].tolist()) for j in fresh.values()]
            # An eviction may have moved rows: look every key up again.
            dslot = table.rows_of([keys[i] for i in done_list])

        # Group the completed events by key: group g, occurrence rank q within the batch.
        order = np.argsort(dslot, kind="stable")
        sorted_slots = dslot[order]
        first = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
        counts = np.diff(np.r_[first, nd])
        n_groups = len(first)
        group_sorted = np.repeat(np.arange(n_groups), counts)
        rank_sorted = np.arange(nd) - first[group_sorted]
        group = np.empty(nd, dtype=np.intp)
        group[order] = group_sorted
        rank = np.empty(nd, dtype=np.intp)
        rank[order] = rank_sorted
        gslots = sorted_slots[first]
        state = table.data[gslots]  # (groups, RECORD_LENGTH), written back at the end

        # Statistics, one occurrence rank at a time (the same float steps as KeyTable.update);
        # groups sorted by count so the groups with a q-th event are a prefix.
        by_count = np.argsort(-counts, kind="stable")
        inv = np.empty(n_groups, dtype=np.intp)
        inv[by_count] = np.arange(n_groups)
        srt = state[by_count]
        cell = np.full((n_groups, int(counts.max())), -1, dtype=np.intp)
        cell[inv[group], rank] = np.arange(nd)
        n_after = np.empty(nd)
        mean_after = np.empty((nd, N_BEHAVIOUR))
        gap_after = np.empty(nd)
        active = np.searchsorted(
            -counts[by_count], -np.arange(1, cell.shape[1] + 1), "right"
        ).tolist()
        min_alpha = table.min_alpha
        # The last ranks hold a few busy keys' events: a numpy step per rank would cost more
        # than folding those events in one by one with plain floats (the same float steps).
        tail = next((q for q, m in enumerate(active) if m <= _FEW_KEYS), len(active))
        for q, m in enumerate(active[:tail]):
            j = cell[:m, q]
            st = srt[:m]
            nn = st[:, N] + 1.0
            st[:, N] = nn
            a = np.maximum(1.0 / nn, min_alpha)
            upd = nn > 1
            if not upd.all():
                j_u, st_u, a_u, nn_u = j[upd], st[upd], a[upd], nn[upd]
            else:
                j_u, st_u, a_u, nn_u = j, st, a, nn
            t = ts_arr[j_u]
            gap = np.maximum(t - st_u[:, LAST_TS], 0.0)
            g = np.maximum(1.0 / (nn_u - 1.0), min_alpha)
            st_u[:, GAP] += g * (gap - st_u[:, GAP])
            st_u[:, LAST_TS] = np.maximum(t, st_u[:, LAST_TS])
            st_u[:, BEHAVIOUR_SLICE] += a_u[:, None] * (b[j_u] - st_u[:, BEHAVIOUR_SLICE])
            if st_u is not st:
                st[upd] = st_u
            n_after[j] = nn
            mean_after[j] = st[:, BEHAVIOUR_SLICE]
            gap_after[j] = st[:, GAP]
        if tail < len(active):
            groups = active[tail]
            done_at = cell[:groups, tail:].tolist()
            srt[:groups] = _fold_in_order(
                srt[:groups].tolist(), done_at, ts_arr, b, min_alpha, n_after, mean_after, gap_after
            )
        state = srt[inv]
        n_int = n_after.astype(np.int64)

        # Anomaly checks in event order (river learns sequentially): scores need only the
        # statistics, not the routing state.
        due_anomaly = np.flatnonzero(n_int % cfg.anomaly_every == 0)
        flags: dict[int, bool] = {}
        if len(due_anomaly):
            gap, count = gap_after[due_anomaly], n_after[due_anomaly]
            with np.errstate(divide="ignore"):
                rate = np.where(gap > 0, 1.0 / gap, np.where(count < 2, 0.0, 1e6))
            due_keys = [keys[done_list[j]] for j in due_anomaly.tolist()]
            flagged = self.detector.check_keys(due_keys, rate, mean_after[due_anomaly, 1])
            flags = dict(zip(due_anomaly.tolist(), flagged.tolist(), strict=True))

        # Shard decisions: distances of every due key mean to every shard, at once.
        due_decide = (n_int % cfg.decide_every == 1) | (cfg.decide_every == 1)
        shards = self.shards
        decisions: dict[int, tuple[int, float, list[float]]] = {}
        if shards.ids and due_decide.any():
            jd = np.flatnonzero(due_decide)
            diff = shards.centroids[None, :, :] - mean_after[jd][:, None, :]
            dd = np.sqrt((diff**2 * self.scale).sum(axis=2))
            best = dd.argmin(axis=1)
            best_id = np.asarray(shards.ids)[best].tolist()
            best_d = dd[np.arange(len(jd)), best].tolist()
            choices = zip(best_id, best_d, dd.tolist(), strict=True)
            decisions = dict(zip(jd.tolist(), choices, strict=True))
        elif due_decide.any():
            decisions = dict.fromkeys(np.flatnonzero(due_decide).tolist())

        # The routing state machine, event by event, on plain Python lists.
        g_shard = state[:, SHARD].astype(np.int64).tolist()
        g_pending = state[:, PENDING].astype(np.int64).tolist()
        g_streak = state[:, STREAK].astype(np.int64).tolist()
        g_conf = state[:, CONFIDENCE].tolist()
        g_astreak = state[:, ANOMALY_STREAK].astype(np.int64).tolist()
        g_cstreak = state[:, CALM_STREAK].astype(np.int64).tolist()
        g_quar = (state[:, QUARANTINED] > 0).tolist()
        g_pub = state[:, PUBLISHED_CONFIDENCE].tolist()
        row_of = {shard: row for row, shard in enumerate(shards.ids)}
        margin, patience = self.router.margin, self.router.patience
        quarantine_after, release_after = self.router.quarantine_after, self.router.release_after
        conf_a = cfg.confidence_alpha
        threshold, republish = cfg.lookup_confidence, cfg.republish_confidence
        entries: list[tuple[int, int, int, float, bool]] = []  # (event, group, shard, conf, q)
        obs = observed[done].tolist()
        group_list = group.tolist()
        for j in range(nd):
            gi = group_list[j]
            cur = g_shard[gi]
            conf = g_conf[gi]
            conf += conf_a * ((obs[j] == cur) - conf)
            g_conf[gi] = conf
            if j in decisions:
                changed = False
                decision = decisions[j]
                if decision is not None:
                    best_id, best_d, dists = decision
                    if cur == best_id:
                        g_pending[gi], g_streak[gi] = best_id, 0
                    elif cur not in row_of:
                        changed = True
                    elif best_d + margin >= dists[row_of[cur]]:
                        g_pending[gi], g_streak[gi] = cur, 0
                    else:
                        streak = g_streak[gi] + 1 if g_pending[gi] == best_id else 1
                        g_pending[gi], g_streak[gi] = best_id, streak
                        changed = streak >= patience
                    if changed:
                        cur = g_shard[gi] = g_pending[gi] = best_id
                        g_streak[gi] = 0
                        conf = g_conf[gi] = 0.5
                if not changed and cur != NO_SHARD:
                    then = g_pub[gi]
                    crossed = (conf >= threshold) != (then >= threshold)
                    changed = crossed or abs(conf - then) >= republish
                if changed:
                    entries.append((j, gi, cur, conf, g_quar[gi]))
                    g_pub[gi] = conf
            if j in flags:
                if flags[j]:
                    g_astreak[gi] += 1
                    g_cstreak[gi] = 0
                else:
                    g_cstreak[gi] += 1
                    g_astreak[gi] = 0
                quarantined = g_quar[gi]
                flipped = (not quarantined and g_astreak[gi] >= quarantine_after) or (
                    quarantined and g_cstreak[gi] >= release_after
                )
                if flipped:
                    g_quar[gi] = not quarantined
                    if cur != NO_SHARD or not quarantined:  # a released key needs a shard
                        entries.append((j, gi, cur, conf, not quarantined))
                        g_pub[gi] = conf
        state[:, SHARD] = g_shard
        state[:, PENDING] = g_pending
        state[:, STREAK] = g_streak
        state[:, CONFIDENCE] = g_conf
        state[:, ANOMALY_STREAK] = g_astreak
        state[:, CALM_STREAK] = g_cstreak
        state[:, QUARANTINED] = g_quar
        state[:, PUBLISHED_CONFIDENCE] = g_pub
        table.data[gslots] = state

        # Routing entries: the latest per key, in the order keys first changed.
        if entries:
            latest: dict[str, tuple[int, int, int, float, bool]] = {}
            for entry in entries:
                key = keys[done_list[entry[0]]]
                if key not in latest:
                    self._changed.setdefault(key, None)  # type: ignore[arg-type]
                latest[key] = entry
            for key, (j, _, shard, conf, quarantined) in latest.items():
                self._changed[key] = self._entry_of(key, shard, conf, quarantined, ts[done_list[j]])

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
        live = set(shards.ids)
        if not live:
            return
        table = self.keys
        count = len(table)
        shard = table.data[:count, SHARD]
        orphan = ~np.isin(shard, list(live)) & (table.data[:count, QUARANTINED] == 0)
        keys = list(table.slots)
        for slot in np.flatnonzero(orphan).tolist():
            key = keys[slot]
            rec = table.get(key)
            assert rec is not None
            if self.router.decide(rec, shards, self.scale):
                self._changed[key] = self._entry(key, rec, rec[LAST_TS])
            table.put(key, rec)

    # -- internals ------------------------------------------------------------------------
    def _route(self, rec: list | None) -> Route | None:
        if rec is None or (rec[SHARD] == NO_SHARD and not rec[QUARANTINED]):
            return None
        if rec[QUARANTINED]:
            return Route(self.quarantine_shard, 1.0, True)
        return Route(rec[SHARD], rec[CONFIDENCE], False)

    def _entry(self, key: str, rec: list, ts: float) -> RoutingEntry:
        rec[PUBLISHED_CONFIDENCE] = rec[CONFIDENCE]
        return self._entry_of(key, rec[SHARD], rec[CONFIDENCE], rec[QUARANTINED], ts)

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
