"""Online clustering of request behaviour into at most ``max_shards`` shards with stable ids.

Two levels, as in CluStream:

* **micro**: river's :class:`~river.cluster.KMeans` with ``n_micro`` centres. Its ``halflife``
  moves the nearest centre a fixed fraction towards each sample, so old behaviour fades and
  drift is followed. Two known weaknesses are handled here: centres are seeded from data (not
  river's random Gaussian start), and centres that lost their mass are re-seeded on the worst
  fitted recent sample, which is how a new behaviour gets a centre after drift. Each centre
  also carries a decayed weight and a decayed mean squared distance of its samples.
* **macro**: every ``recluster_every`` samples the micro-clusters are cut into shards by Ward
  agglomeration (:mod:`shardshape.models.agglomerate`) and the shards' ids are matched to the
  previous ones (:mod:`shardshape.models.matching`). A shard the cut no longer has is kept
  as it was (centroid, weight, spread) until ``retire_after`` cuts in a row have left it
  out, while the shards stay within ``max_shards``
  (:func:`shardshape.models.shards.keep_left_out`): the cut's number of shards wavers where two
  behaviours are close, and each retirement costs the planner the shard's forecast,
  calibration and blocks (a shard born and retired within seconds can never be planned for).

Why not river's other clusterers: KMeans and STREAMKMeans fix ``k``; CluStream's macro step is
a KMeans with a fixed ``k`` too; DenStream and DBSTREAM find ``k`` but their radius parameters
are unit-dependent and they cost several times more per sample. Over-provisioned KMeans
micro-centres plus a Ward cut find ``k`` from the data at O(``n_micro``) per sample.

>>> clusterer = BehaviourClusterer(max_shards=4, n_micro=8, recluster_every=50, seed=1)
>>> for i in range(400):
...     clusterer.learn_one({"log_latency_ms": 2.0 + 0.01 * (i % 7), "error": 0.0})
...     clusterer.learn_one({"log_latency_ms": 7.0 + 0.01 * (i % 5), "error": 0.0})
>>> clusterer.predict_one({"log_latency_ms": 2.1, "error": 0.0}) != clusterer.predict_one(
...     {"log_latency_ms": 6.9, "error": 0.0})
True
>>> len(clusterer.shards.ids)
2
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from river import base, cluster

from shardshape.models.features import BEHAVIOUR_NAMES
from shardshape.models.shards import MicroSummary, Shards, keep_left_out, shards_from_micro

_FAR = 1e9  # coordinate of a centre not seeded yet: never the nearest


class BehaviourClusterer(base.Clusterer):
    """Behaviour vectors (dicts by name, or numpy rows via :meth:`learn_many`) into shards.

    Parameters
    ----------
    max_shards
        Upper bound on shards; ids are ``0 .. max_shards - 1``.
    n_micro
        Micro-centres (river KMeans ``n_clusters``).
    halflife
        River KMeans step towards each sample (0.02: a centre forgets in about 50 of its samples).
    weight_halflife
        Samples after which a micro-centre's weight halves.
    recluster_every
        Samples between two macro cuts (earlier while young).
    min_gain
        Ward cut: stop adding shards when one more lowers the within spread by less than this
        share of the total.
    max_id_jump
        A shard whose centroid moved farther than this (scaled units) gets a new id.
    retire_after
        Cuts in a row that must leave a shard out before it is retired (1: at once).
    scale
        Weight of each behaviour coordinate in squared distances, by name; missing names count 0.
    seed
        River KMeans seed.
    """

    def __init__(
        self,
        max_shards: int = 8,
        n_micro: int = 32,
        halflife: float = 0.02,
        weight_halflife: float = 1_000,
        recluster_every: int = 250,
        min_gain: float = 0.02,
        max_id_jump: float = 1.0,
        scale: dict[str, float] | None = None,
        seed: int = 0,
        retire_after: int = 1,
    ) -> None:
        self.max_shards = max_shards
        self.n_micro = n_micro
        self.halflife = halflife
        self.weight_halflife = weight_halflife
        self.recluster_every = recluster_every
        self.min_gain = min_gain
        self.max_id_jump = max_id_jump
        self.scale = scale
        self.seed = seed
        self.retire_after = retire_after
        self._missing: dict[int, int] = {}  # shard id -> cuts in a row that left it out
        weights = scale or {"log_latency_ms": 1.0, "error": 1.0}
        self.scale_vector = np.array([weights.get(name, 0.0) for name in BEHAVIOUR_NAMES])
        self._root = np.sqrt(self.scale_vector)
        self._kmeans = cluster.KMeans(n_clusters=n_micro, halflife=halflife, seed=seed)
        # River's KMeans holds the centres; this array mirrors them so that the nearest centre
        # is one numpy expression (river's dict distances cost ~100 us a sample).
        self._centers = np.full((n_micro, len(BEHAVIOUR_NAMES)), _FAR)
        for i in range(n_micro):
            self._set_center(i, self._centers[i])
        self._seeded = 0
        self._weight_decay = 0.5 ** (1.0 / weight_halflife)
        self._weights = np.zeros(n_micro)
        self._msd = np.zeros(n_micro)  # decayed mean squared distance of a centre's samples
        self._worst: tuple[float, np.ndarray] = (-1.0, self._centers[0])
        self.n_samples = 0
        self.shards = Shards([], np.zeros((0, len(BEHAVIOUR_NAMES))), np.zeros(0), np.zeros(0))
        self.version = 0

    # -- river protocol -------------------------------------------------------------------
    def learn_one(self, x: dict[str, float]) -> None:
        self.learn_many(np.array([[x.get(name, 0.0) for name in BEHAVIOUR_NAMES]]))

    def predict_one(self, x: dict[str, float]) -> int:
        if not self.shards.ids:
            return 0
        row = np.array([[x.get(name, 0.0) for name in BEHAVIOUR_NAMES]])
        return int(self.shards.nearest(row, self.scale_vector)[0][0])

    # -- batch API ------------------------------------------------------------------------
    def learn_many(self, rows: np.ndarray) -> bool:
        """Learn behaviour rows ``(n, N_BEHAVIOUR)`` (already sampled); True when shards changed."""
        changed = False
        for row in rows * self._root:
            self._learn_scaled(row)
            self.n_samples += 1
            if self._recluster_due():
                self.recluster()
                changed = True
        return changed

    def predict_many(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shard id and scaled distance to it, for behaviour rows (shard 0 before any cut)."""
        if not self.shards.ids:
            return np.zeros(len(rows), dtype=int), np.zeros(len(rows))
        return self.shards.nearest(rows, self.scale_vector)

    def summary(self) -> MicroSummary:
        """The micro-clusters in raw units, for :func:`shardshape.models.merge.merge_summaries`."""
        live = np.flatnonzero(self._weights > 0)
        centers = np.array([self._center(i) for i in live]).reshape(len(live), -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = np.where(self._root > 0, centers / self._root, 0.0)
        return MicroSummary(raw, self._weights[live].copy(), (self._weights * self._msd)[live])

    def recluster(self) -> None:
        """Re-seed dead micro-centres, then cut shards and match their ids."""
        self._reseed_dead()
        micro = self.summary()
        if not len(micro.weights):
            return
        previous = self.shards if self.shards.ids else None
        cut = shards_from_micro(
            micro,
            self.scale_vector,
            max_shards=self.max_shards,
            previous=previous,
            min_gain=self.min_gain,
            max_id_jump=self.max_id_jump,
        )
        self.shards = keep_left_out(
            previous, cut, self._missing, self.retire_after, self.max_shards
        )
        self.version += 1

    # -- internals ------------------------------------------------------------------------
    def _learn_scaled(self, x: np.ndarray) -> None:
        d2_all = ((self._centers - x) ** 2).sum(axis=1)
        # A new seed only where no seeded centre already sits (tolerance in scaled units).
        if self._seeded < self.n_micro and (d2_all[: self._seeded] > 0.01).all():
            closest = self._seeded
            self._set_center(closest, x)
            self._seeded += 1
        else:
            # River's KMeans step: the nearest centre moves ``halflife`` of the way to x.
            closest = int(d2_all.argmin())
            center = self._centers[closest]
            self._set_center(closest, center + self.halflife * (x - center))
        d2 = float(((x - self._centers[closest]) ** 2).sum())
        self._weights *= self._weight_decay
        self._weights[closest] += 1.0
        self._msd[closest] += 0.05 * (d2 - self._msd[closest])
        if d2 > self._worst[0]:
            self._worst = (d2, x)

    def _set_center(self, i: int, values: np.ndarray) -> None:
        self._centers[i] = values
        self._kmeans.centers[i].update(enumerate(values.tolist()))

    def _reseed_dead(self) -> None:
        if self._seeded < self.n_micro or self._worst[0] <= 0:
            return
        total = self._weights.sum()
        dead = np.flatnonzero(self._weights < 1e-3 * total)
        if len(dead):
            self._set_center(int(dead[0]), self._worst[1])
            self._weights[dead[0]] = 1.0
            self._msd[dead[0]] = 0.0
        self._worst = (-1.0, self._centers[0])

    def _center(self, i: int) -> list[float]:
        center = self._kmeans.centers[i]
        return [center[j] for j in range(len(BEHAVIOUR_NAMES))]

    def _recluster_due(self) -> bool:
        n = self.n_samples
        if n < self.recluster_every:
            return n in (16, 32, 64, 128)
        return n % self.recluster_every == 0

    @classmethod
    def _unit_test_params(cls) -> Sequence[dict]:
        yield {"max_shards": 4, "n_micro": 8}
