"""Predict a request's shard at arrival from a snapshot: numpy and plain floats only.

This is what a gateway runs (and what the profiler itself uses to predict, so the two never
disagree). For each request, in order:

1. a key in quarantine (its route is ``anomalous``) goes to the quarantine shard;
2. a key whose route is confident (``confidence >= lookup_confidence``) goes to its routed
   shard: a dictionary lookup;
3. otherwise the linear model predicts the request's behaviour from its arrival vector (see
   :mod:`shardshape.models.features`; a known key contributes its routed shard's centroid times its
   key weight ``clip(confidence, 0, 1) ** key_power``; a request shape the snapshot remembers
   contributes its weight and weighted mean log latency, :mod:`shardshape.models.shapes`) and
   the request goes to the nearest shard centroid.

The shape memory is what lets a linear model predict what a *combination* of attribute
values does (gold tier slow with 10 steps, fast with 50): a lookup of the request's shape id
(CRC-32 of its type and attributes, :func:`shardshape.models.features.shape_id`) in the
snapshot's table, two more numbers in the dot product.

Why the square (``key_power = 2``): a key that splits its requests between shards (a user's
renders, half small, half large: confidence about 0.5) says little about its next request,
yet its routed shard's centroid would pull every one of its requests towards that shard by
the key coefficient the regression learns from one-shard keys. Squaring leaves a confident
key's pull almost whole (0.9 -> 0.81) and halves a mixed key's again (0.5 -> 0.25); on the
synthetic stream this alone halves the shard flips of requests whose behaviour did not change.

The snapshot's ``model`` map holds ``format``, ``hash`` (``crc32``), ``n_buckets``,
``numeric_bins`` (1.0: numeric attributes also hash a bin token), ``key_power``, ``coef``
(``n_features x n_behaviour``), ``scale`` (squared-distance weight per behaviour coordinate) and
``lookup_confidence``, and (format ``/3``) ``shapes``: rows ``(shape id, weight, weight x
mean log latency)`` sorted by id, the two shape slots of a request of that shape (zeros for a
shape not in it); centroids and ids are the non-quarantine ``shards``. Format ``/2`` snapshots
(no shape memory) and ``/1`` (no bins either, key weight = confidence) still load.

>>> import numpy as np
>>> from shardshape.models.features import FeatureSpace
>>> space = FeatureSpace(n_buckets=4)
>>> coef = np.zeros((space.n_features, 4))
>>> coef[0, 0] = 3.0                             # bias: log latency 3 ...
>>> coef[space.slot("t=export"), 0] = 5.0        # ... plus 5 for exports
>>> predictor = ShardPredictor(space, coef, np.array([[3.0, 0, 0, 0], [8.0, 0, 0, 0]]), [0, 1],
...                            np.array([1.0, 1.0, 0.0, 0.0]), quarantine_shard=2)
>>> predictor.predict_one("read", 10.0, {}), predictor.predict_one("export", 10.0, {})
(0, 1)
>>> predictor.predict_one("read", 10.0, {}, Route(1, 0.95, False))  # confident key: lookup
1
>>> snapshot = predictor.to_snapshot("api", version=7)
>>> ShardPredictor.from_snapshot(snapshot).predict_many(
...     [Request("export", 10.0, {}), Request("read", 1.0, {})], [None, Route(1, 0.2, True)])
array([1, 2])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import numpy as np

from shardshape.core.contracts import ShardProfile, ShardSnapshot
from shardshape.models.features import (
    BEHAVIOUR_NAMES,
    KEY_SLICE,
    N_BEHAVIOUR,
    SHAPE_LATENCY,
    SHAPE_WEIGHT,
    ArrivalLike,
    FeatureSpace,
    shape_id,
)
from shardshape.models.shapes import ShapeTable

MODEL_FORMAT = "linear-nearest-centroid/3"
# Distinct request shapes (request type and attributes) whose prediction predict_one keeps.
_SHAPE_CACHE_LIMIT = 4_096
if N_BEHAVIOUR != 4:  # predict_one spells the coordinates out: one Python loop less per shard
    raise RuntimeError("ShardPredictor.predict_one assumes 4 behaviour coordinates: update it")
# Formats a gateway reads, with the feature settings a snapshot of that format implies.
_FORMATS = {
    MODEL_FORMAT: {"numeric_bins": 1.0, "key_power": 2.0, "shape_features": 1.0},
    "linear-nearest-centroid/2": {"numeric_bins": 1.0, "key_power": 2.0, "shape_features": 0.0},
    "linear-nearest-centroid/1": {"numeric_bins": 0.0, "key_power": 1.0, "shape_features": 0.0},
}
_SHAPES = slice(SHAPE_WEIGHT, SHAPE_LATENCY + 1)


class RouteLike(Protocol):
    """A key's route as the gateway holds it (a ``RoutingEntry`` fits)."""

    shard_id: int
    confidence: float
    anomalous: bool


class Route(NamedTuple):
    shard_id: int
    confidence: float = 1.0
    anomalous: bool = False


class Request(NamedTuple):
    """Arrival information of a request, when there is no ``RequestEvent`` yet."""

    request_type: str
    payload_bytes: float
    attributes: Mapping[str, float | bool | str]


class ShardPredictor:
    """Shard at arrival from a linear behaviour model and shard centroids.

    Parameters
    ----------
    space
        The arrival feature space (same ``n_buckets`` as the model).
    coef
        ``(space.n_features, N_BEHAVIOUR)`` linear model of behaviour.
    centroids, ids
        Shard centroids ``(k, N_BEHAVIOUR)`` in raw behaviour units, and their ids.
    scale
        Squared-distance weight of each behaviour coordinate.
    default_shard, quarantine_shard, lookup_confidence, key_power
        See the module docstring; ``default_shard`` serves when there are no shards yet.
    profiles
        Extra shard descriptions (summaries, weights) carried into :meth:`to_snapshot`.
    """

    def __init__(
        self,
        space: FeatureSpace,
        coef: np.ndarray,
        centroids: np.ndarray,
        ids: Sequence[int],
        scale: np.ndarray,
        *,
        default_shard: int = 0,
        quarantine_shard: int | None = None,
        lookup_confidence: float = 0.9,
        key_power: float = 2.0,
        profiles: Sequence[ShardProfile] = (),
        spread: Sequence[float] | None = None,
        shapes: np.ndarray | None = None,
    ) -> None:
        self.space = space
        self.coef = np.asarray(coef, dtype=float)
        self.centroids = np.asarray(centroids, dtype=float).reshape(-1, N_BEHAVIOUR)
        self.ids = [int(i) for i in ids]
        self.scale = np.asarray(scale, dtype=float)
        self.default_shard = default_shard
        self.quarantine_shard = quarantine_shard
        self.lookup_confidence = lookup_confidence
        self.key_power = key_power
        self.profiles = list(profiles)
        # Each shard's spread (scaled RMS distance to its centroid), carried for the workers.
        self.spread = np.ones(len(self.ids)) if spread is None else np.asarray(spread, dtype=float)
        self._row_of = {shard: row for row, shard in enumerate(self.ids)}
        # One request at a time (predict_one): plain floats beat numpy's per-call overhead, and
        # the arrival vector is linear, so its parts' predictions are summed, not rebuilt: the
        # request shape's (bias and hashed slots, cached), the payload's and the key's.
        self._payload_coef = tuple(self.coef[1].tolist())
        # Per shard row: the key block's prediction at weight 1 (key flag + centroid).
        self._key_preds = [
            tuple(row) for row in (self.coef[2] + self.centroids @ self.coef[KEY_SLICE]).tolist()
        ]
        # The shape memory as the snapshot carries it: rows (id, weight, weight x mean), by id
        # (shardshape.models.shapes); empty for a space without shape features.
        table = np.zeros((0, 3)) if shapes is None else np.asarray(shapes, dtype=float)
        self.shapes = table[np.argsort(table[:, 0], kind="stable")] if space.shapes else table[:0]
        self._shape_rows: dict[int, tuple[float, float]] | None = None  # built by predict_one
        self._centroid_rows = [tuple(row) for row in self.centroids.tolist()]
        self._scale_tuple = tuple(self.scale.tolist())
        self._shape_preds: dict[object, tuple[float, ...]] = {}
        # Shard id -> centroid row (-1: none), for the vectorised key block.
        self._row_lut = np.full(max(self.ids, default=-1) + 2, -1, dtype=np.intp)
        self._row_lut[self.ids] = np.arange(len(self.ids))
        self._ids_arr = np.asarray(self.ids, dtype=np.int64)

    # -- one request ----------------------------------------------------------------------
    def predict_one(
        self,
        request_type: str,
        payload_bytes: float,
        attributes: Mapping[str, float | bool | str],
        route: RouteLike | None = None,
    ) -> int:
        """Shard of one arriving request; ``route`` is its key's route, if any."""
        key_row = None
        if route is not None:
            if route.anomalous and self.quarantine_shard is not None:
                return self.quarantine_shard
            if route.confidence >= self.lookup_confidence:
                return route.shard_id
            key_row = self._row_of.get(route.shard_id)
            key_weight = min(max(route.confidence, 0.0), 1.0) ** self.key_power
        if not self.ids:
            return self.default_shard
        shape = (request_type, tuple(attributes.items())) if attributes else request_type
        base = self._shape_preds.get(shape) or self._shape_pred(shape, request_type, attributes)
        x = math.log1p(payload_bytes)
        b0, b1, b2, b3 = base
        q0, q1, q2, q3 = self._payload_coef
        p0, p1, p2, p3 = b0 + x * q0, b1 + x * q1, b2 + x * q2, b3 + x * q3
        if key_row is not None:
            k0, k1, k2, k3 = self._key_preds[key_row]
            p0 += key_weight * k0
            p1 += key_weight * k1
            p2 += key_weight * k2
            p3 += key_weight * k3
        # The nearest centroid under the scaled squared distance (the first of equals wins,
        # as argmin does in predict_matrix).
        s0, s1, s2, s3 = self._scale_tuple
        best, best_d = 0, math.inf
        for row, (c0, c1, c2, c3) in enumerate(self._centroid_rows):
            d0, d1, d2, d3 = p0 - c0, p1 - c1, p2 - c2, p3 - c3
            d = s0 * d0 * d0 + s1 * d1 * d1 + s2 * d2 * d2 + s3 * d3 * d3
            if d < best_d:
                best, best_d = row, d
        return self.ids[best]

    def _shape_pred(
        self, shape: object, request_type: str, attributes: Mapping[str, float | bool | str]
    ) -> tuple[float, ...]:
        """Predicted behaviour of a request shape's bias and hashed slots (no payload, no key)."""
        idx, val = self.space.arrival_sparse(request_type, 0.0, attributes)
        if self.space.shapes:
            if self._shape_rows is None:
                self._shape_rows = {int(r[0]): (r[1], r[2]) for r in self.shapes.tolist()}
            seen = self._shape_rows.get(shape_id(request_type, attributes))
            if seen is not None:
                idx = [*idx, SHAPE_WEIGHT, SHAPE_LATENCY]
                val = [*val, *seen]
        pred = [0.0] * N_BEHAVIOUR
        coef = self.coef
        for i, v in zip(idx, val, strict=True):
            if i != 1:  # the payload slot: added per request
                pred = [p + c * v for p, c in zip(pred, coef[i].tolist(), strict=True)]
        out = tuple(pred)
        if len(self._shape_preds) >= _SHAPE_CACHE_LIMIT:
            self._shape_preds.clear()
        self._shape_preds[shape] = out
        return out

    # -- many requests --------------------------------------------------------------------
    def key_rows(self, routes: Sequence[RouteLike | None]) -> tuple[np.ndarray, np.ndarray]:
        """Each route's shard centroid (NaN without a route or a known shard) and key weight."""
        rows = np.full((len(routes), N_BEHAVIOUR), np.nan)
        weights = np.zeros(len(routes))
        for n, route in enumerate(routes):
            if route is not None:
                row = self._row_of.get(route.shard_id)
                if row is not None:
                    rows[n] = self.centroids[row]
                    weights[n] = min(max(route.confidence, 0.0), 1.0) ** self.key_power
        return rows, weights

    def predict_many(
        self, requests: Sequence[ArrivalLike | Request], routes: Sequence[RouteLike | None]
    ) -> np.ndarray:
        """Shards of many arriving requests (``routes[i]`` is request ``i``'s key route)."""
        x = self.space.arrival_matrix(requests, *self.key_rows(routes))
        if self.space.shapes:
            space = self.space
            rows, _ = space.hashed_rows(
                [r.request_type for r in requests], [r.attributes for r in requests]
            )
            x[:, _SHAPES] = self.shape_features(space.row_shape_ids[rows])
        return self.predict_matrix(x, routes)

    def shape_features(self, ids: np.ndarray) -> np.ndarray:
        """``(n, 2)`` shape-memory features of requests by shape id (zeros: shape unknown)."""
        return ShapeTable.lookup(self.shapes, ids)

    def predict_matrix(self, x: np.ndarray, routes: Sequence[RouteLike | None]) -> np.ndarray:
        """Shards for prebuilt arrival vectors ``x`` (see :meth:`FeatureSpace.arrival_matrix`)."""
        n = len(x)
        if self.ids:
            pred = x @ self.coef
            d2 = (((pred[:, None, :] - self.centroids[None, :, :]) ** 2) * self.scale).sum(axis=2)
            out = np.asarray(self.ids)[d2.argmin(axis=1)]
        else:
            out = np.full(n, self.default_shard)
        for i, route in enumerate(routes):
            if route is None:
                continue
            if route.anomalous and self.quarantine_shard is not None:
                out[i] = self.quarantine_shard
            elif route.confidence >= self.lookup_confidence:
                out[i] = route.shard_id
        return out

    # -- many requests, routes as arrays (the profiler's batch path) ----------------------
    def key_block(
        self, shard: np.ndarray, confidence: np.ndarray, known: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised :meth:`key_rows` for routes given as arrays (``known``: has a route).

        Returns the mask of requests whose route's shard has a centroid, their centroid rows
        and their key weights.
        """
        lut = self._row_lut
        inside = known & (shard >= 0) & (shard < len(lut) - 1)
        rows = np.full(len(shard), -1, dtype=np.intp)
        rows[inside] = lut[shard[inside]]
        has = rows >= 0
        weights = np.clip(confidence[has], 0.0, 1.0) ** self.key_power
        return has, self.centroids[rows[has]], weights

    def predict_arrays(
        self,
        x: np.ndarray,
        shard: np.ndarray,
        confidence: np.ndarray,
        anomalous: np.ndarray,
        known: np.ndarray,
    ) -> np.ndarray:
        """:meth:`predict_matrix` with routes as arrays (``known``: the request has a route)."""
        if self.ids:
            pred = x @ self.coef
            d2 = (((pred[:, None, :] - self.centroids[None, :, :]) ** 2) * self.scale).sum(axis=2)
            out = self._ids_arr[d2.argmin(axis=1)]
        else:
            out = np.full(len(x), self.default_shard, dtype=np.int64)
        quarantined = known & anomalous
        if self.quarantine_shard is not None:
            out[quarantined] = self.quarantine_shard
        else:
            quarantined = np.zeros_like(known)
        lookup = known & ~quarantined & (confidence >= self.lookup_confidence)
        out[lookup] = shard[lookup]
        return out

    # -- snapshot -------------------------------------------------------------------------
    def model_dict(self) -> dict[str, list[float] | list[list[float]] | float | str]:
        space = self.space
        fmt = (
            MODEL_FORMAT
            if space.shapes
            else f"linear-nearest-centroid/{2 if space.numeric_bins else 1}"
        )
        return {
            "format": fmt,
            "hash": "crc32",
            "n_buckets": float(self.space.n_buckets),
            "numeric_bins": float(self.space.numeric_bins),
            "key_power": float(self.key_power),
            "coef": self.coef.tolist(),
            "scale": self.scale.tolist(),
            "behaviour": ",".join(BEHAVIOUR_NAMES),
            "lookup_confidence": float(self.lookup_confidence),
            "spread": self.spread.tolist(),
            **({"shapes": self.shapes.tolist()} if space.shapes else {}),
        }

    def to_snapshot(self, service: str, version: int, created_ts: float = 0.0) -> ShardSnapshot:
        """The snapshot a gateway needs; shard profiles come from ``profiles`` where given."""
        described = {p.shard_id: p for p in self.profiles}
        shards = []
        for shard, centroid in zip(self.ids, self.centroids.tolist(), strict=True):
            base = described.get(shard, ShardProfile(shard_id=shard))
            shards.append(base.model_copy(update={"centroid": centroid}))
        if self.quarantine_shard is not None:
            shards.append(
                described.get(
                    self.quarantine_shard,
                    ShardProfile(
                        shard_id=self.quarantine_shard, summary="quarantine", quarantine=True
                    ),
                )
            )
        return ShardSnapshot(
            service=service,
            version=version,
            created_ts=created_ts,
            feature_names=self.space.names,
            shards=shards,
            default_shard=self.default_shard,
            quarantine_shard=self.quarantine_shard,
            model=self.model_dict(),
        )

    @classmethod
    def from_snapshot(cls, snapshot: ShardSnapshot) -> ShardPredictor:
        """Rebuild the predictor from a snapshot's plain numbers."""
        model = snapshot.model
        fmt = model.get("format")
        if not isinstance(fmt, str) or fmt not in _FORMATS:
            raise ValueError(f"unsupported snapshot model format {fmt!r}")
        model = {**_FORMATS[fmt], **model}
        space = FeatureSpace(
            n_buckets=int(model["n_buckets"]),
            numeric_bins=bool(model["numeric_bins"]),
            shapes=bool(model["shape_features"]),
        )
        coef = np.asarray(model["coef"], dtype=float)
        if coef.shape != (space.n_features, N_BEHAVIOUR):
            raise ValueError(
                f"snapshot coef has shape {coef.shape}, expected {(space.n_features, N_BEHAVIOUR)}"
            )
        live = [s for s in snapshot.shards if not s.quarantine]
        return cls(
            space,
            coef,
            np.array([s.centroid for s in live], dtype=float).reshape(-1, N_BEHAVIOUR),
            [s.shard_id for s in live],
            np.asarray(model["scale"], dtype=float),
            default_shard=snapshot.default_shard,
            quarantine_shard=snapshot.quarantine_shard,
            lookup_confidence=float(model["lookup_confidence"]),
            key_power=float(model["key_power"]),
            profiles=snapshot.shards,
            spread=model.get("spread") if isinstance(model.get("spread"), list) else None,
            shapes=np.asarray(model.get("shapes") or [], dtype=float).reshape(-1, 3),
        )
