"""Shards as plain numbers, and how they are built from weighted micro-clusters.

A :class:`MicroSummary` is what one worker's clusterer knows (centres, weights, within sum of
squares); :func:`shards_from_micro` turns one or many of them into :class:`Shards` (Ward cut,
then ids matched to the previous shards so they stay stable). Centres are in raw behaviour
units; ``scale`` gives each coordinate's weight in squared distances.

>>> import numpy as np
>>> micro = MicroSummary(np.array([[1.0], [1.1], [6.0]]), np.array([5.0, 5.0, 2.0]), np.zeros(3))
>>> shards = shards_from_micro(micro, np.ones(1), max_shards=4)
>>> shards.ids, shards.centroids.round(2).tolist(), shards.weights.tolist()
([0, 1], [[1.05], [6.0]], [10.0, 2.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shardshape.models.agglomerate import ward_cut
from shardshape.models.matching import match_ids


@dataclass(frozen=True)
class MicroSummary:
    """Weighted micro-clusters: ``centers`` (m, d) raw units, ``weights`` and ``within`` (m,)."""

    centers: np.ndarray
    weights: np.ndarray
    within: np.ndarray

    def to_dict(self) -> dict[str, list]:
        """Plain lists, for a changelog table or the wire."""
        return {
            "centers": self.centers.tolist(),
            "weights": self.weights.tolist(),
            "within": self.within.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, list]) -> MicroSummary:
        centers = np.asarray(data["centers"], dtype=float)
        return cls(
            centers.reshape(len(centers), -1),
            np.asarray(data["weights"], dtype=float),
            np.asarray(data["within"], dtype=float),
        )


@dataclass(frozen=True)
class Shards:
    """Macro shards: ``ids`` (k,), ``centroids`` (k, d) raw units, ``weights`` and ``spread``.

    ``spread`` is each shard's root mean squared scaled distance of its mass to its centroid.
    """

    ids: list[int]
    centroids: np.ndarray
    weights: np.ndarray
    spread: np.ndarray

    def distances(self, points: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """``(points, shards)`` scaled distances of rows of ``points`` to each centroid."""
        diff = self.centroids[None, :, :] - points[:, None, :]
        return np.sqrt((diff**2 * scale).sum(axis=2))

    def nearest(self, points: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shard id and scaled distance of the nearest centroid, for rows of ``points``."""
        diff = points[:, None, :] - self.centroids[None, :, :]
        d2 = (diff**2 * scale).sum(axis=2)
        best = d2.argmin(axis=1)
        return np.asarray(self.ids)[best], np.sqrt(d2[np.arange(len(points)), best])


def shards_from_micro(
    micro: MicroSummary,
    scale: np.ndarray,
    *,
    max_shards: int,
    previous: Shards | None = None,
    min_gain: float = 0.02,
    max_id_jump: float = np.inf,
) -> Shards:
    """Cut micro-clusters into at most ``max_shards`` shards with ids stable w.r.t. ``previous``."""
    root = np.sqrt(scale)
    labels, k = ward_cut(
        micro.centers * root, micro.weights, micro.within, max_k=max_shards, min_gain=min_gain
    )
    d = micro.centers.shape[1]
    centroids = np.zeros((k, d))
    weights = np.zeros(k)
    spread = np.zeros(k)
    for label in range(k):
        member = labels == label
        w = micro.weights[member]
        centroids[label] = w @ micro.centers[member] / w.sum()
        weights[label] = w.sum()
        between = (w * (((micro.centers[member] - centroids[label]) * root) ** 2).sum(1)).sum()
        spread[label] = np.sqrt((between + micro.within[member].sum()) / w.sum())
    if previous is None:
        ids = list(range(k))
    else:
        ids = match_ids(
            previous.centroids,
            previous.ids,
            centroids,
            max_ids=max_shards,
            max_distance=max_id_jump,
            scale=scale,
        )
    return Shards(ids, centroids, weights, spread)


def keep_left_out(
    previous: Shards | None,
    cut: Shards,
    missing: dict[int, int],
    retire_after: int,
    max_shards: int,
) -> Shards:
    """``cut`` plus the ``previous`` shards it left out fewer than ``retire_after`` cuts in a
    row, as they were, while there is room under ``max_shards``. ``missing`` (shard id ->
    cuts in a row that left it out) is the caller's and is updated here.

    >>> one = lambda ids: Shards(ids, np.array([[float(i)] for i in ids]), np.ones(len(ids)),
    ...                          np.ones(len(ids)))
    >>> missing = {}
    >>> keep_left_out(one([0, 1]), one([0]), missing, 2, 8).ids, missing
    ([0, 1], {1: 1})
    >>> keep_left_out(one([0, 1]), one([0]), missing, 2, 8).ids, missing
    ([0], {})
    """
    if previous is None:
        return cut
    ids, rows = list(cut.ids), []
    for row, shard in enumerate(previous.ids):
        if shard in cut.ids:
            missing.pop(shard, None)
            continue
        misses = missing.get(shard, 0) + 1
        if misses >= retire_after or len(ids) >= max_shards:
            missing.pop(shard, None)
            continue
        missing[shard] = misses
        ids.append(shard)
        rows.append(row)
    if not rows:
        return cut
    return Shards(
        ids,
        np.vstack([cut.centroids, previous.centroids[rows]]),
        np.concatenate([cut.weights, previous.weights[rows]]),
        np.concatenate([cut.spread, previous.spread[rows]]),
    )
