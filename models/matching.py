"""Stable shard ids: match a new set of centroids to the previous one.

Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on weighted Euclidean
distances; a new centroid farther than ``max_distance`` from every old one is a new shard and
takes a free id, preferring ids that were not in use before (so a retired id is not recycled
while a gateway may still hold it, unless ids run out).

>>> import numpy as np
>>> old = np.array([[0.0, 0.0], [5.0, 0.0]])
>>> new = np.array([[5.2, 0.0], [9.0, 9.0], [0.1, 0.0]])
>>> match_ids(old, [3, 7], new, max_ids=8, max_distance=2.0)
[7, 0, 3]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment


def match_ids(
    old_centroids: np.ndarray,
    old_ids: Sequence[int],
    new_centroids: np.ndarray,
    *,
    max_ids: int,
    max_distance: float = np.inf,
    scale: np.ndarray | None = None,
) -> list[int]:
    """Ids for ``new_centroids`` that keep ``old_ids`` where a centroid stayed close.

    ``scale`` weights each coordinate (squared-distance weights); ``max_ids`` bounds ids to
    ``range(max_ids)``, which must hold at least ``len(new_centroids)`` ids.
    """
    k = len(new_centroids)
    if k > max_ids:
        raise ValueError(f"{k} centroids do not fit in {max_ids} ids")
    ids: list[int | None] = [None] * k
    if len(old_centroids) and k:
        w = np.ones(new_centroids.shape[1]) if scale is None else scale
        diff = new_centroids[:, None, :] - old_centroids[None, :, :]
        cost = np.sqrt((diff**2 * w).sum(axis=2))
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols, strict=True):
            if cost[r, c] <= max_distance:
                ids[r] = int(old_ids[c])
    taken = {i for i in ids if i is not None}
    previously_used = set(old_ids)
    free = [i for i in range(max_ids) if i not in taken and i not in previously_used]
    free += [i for i in range(max_ids) if i not in taken and i in previously_used]
    free_iter = iter(free)
    return [i if i is not None else next(free_iter) for i in ids]
