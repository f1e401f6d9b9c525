"""Merge per-worker clusterer summaries into one global set of shards with stable ids.

Each worker learns on its own partitions; the leader concatenates their micro-clusters and cuts
them exactly as a single worker would (:func:`shardshape.models.shards.shards_from_micro`),
matching ids to the previous global shards.

>>> import numpy as np
>>> a = MicroSummary(np.array([[1.0], [6.0]]), np.array([4.0, 1.0]), np.zeros(2))
>>> b = MicroSummary(np.array([[1.2], [6.2]]), np.array([4.0, 3.0]), np.zeros(2))
>>> merged = merge_summaries([a, b], np.ones(1), max_shards=8)
>>> merged.ids, merged.centroids.round(2).ravel().tolist(), merged.weights.tolist()
([0, 1], [1.1, 6.15], [8.0, 4.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shardshape.models.shards import MicroSummary, Shards, shards_from_micro


def merge_summaries(
    summaries: Sequence[MicroSummary],
    scale: np.ndarray,
    *,
    max_shards: int,
    previous: Shards | None = None,
    min_gain: float = 0.02,
    max_id_jump: float = np.inf,
) -> Shards:
    """One global :class:`Shards` from many workers' micro-clusters (empty ones are skipped)."""
    parts = [s for s in summaries if len(s.weights)]
    if not parts:
        raise ValueError("no micro-clusters to merge")
    merged = MicroSummary(
        np.vstack([s.centers for s in parts]),
        np.concatenate([s.weights for s in parts]),
        np.concatenate([s.within for s in parts]),
    )
    return shards_from_micro(
        merged,
        scale,
        max_shards=max_shards,
        previous=previous,
        min_gain=min_gain,
        max_id_jump=max_id_jump,
    )
