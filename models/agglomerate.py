"""Macro shards from weighted micro-clusters: Ward agglomeration with a data-driven cut.

Each micro-cluster is a centroid, a weight and its within sum of squares. Ward's method merges
the pair whose union adds the least within-cluster sum of squares ``W``. The number of shards
is the smallest ``k <= max_k`` for which one more shard would lower ``W`` by less than
``min_gain`` of ``W(1)`` (the stream's whole spread): well-separated profiles each pay for
their own shard, a continuum is cut into a few bands.

>>> import numpy as np
>>> centers = np.array([[0.0], [0.1], [5.0], [5.1], [10.0]])
>>> labels, k = ward_cut(centers, np.ones(5), np.zeros(5), max_k=4, min_gain=0.02)
>>> k, labels.tolist()
(3, [0, 0, 1, 1, 2])
"""

from __future__ import annotations

import numpy as np


def ward_cut(
    centers: np.ndarray,
    weights: np.ndarray,
    within: np.ndarray,
    *,
    max_k: int,
    min_gain: float = 0.02,
) -> tuple[np.ndarray, int]:
    """Label each micro-cluster with a macro cluster ``0..k-1`` (numbered by first member).

    ``centers`` is ``(m, d)`` (already scaled), ``weights`` and ``within`` are ``(m,)``;
    micro-clusters with zero weight are labelled ``-1``.
    """
    live = np.flatnonzero(weights > 0)
    labels = np.full(len(centers), -1)
    if len(live) == 0:
        return labels, 0
    c = centers[live].astype(float)
    w = weights[live].astype(float)
    members = [[i] for i in range(len(live))]
    total_within = float(within[live].sum())
    # Merge history: cost[j] is the SSE added by the merge that left len(live) - j - 1 clusters.
    costs: list[float] = []
    snapshots: dict[int, list[list[int]]] = {len(live): [list(m) for m in members]}
    active = list(range(len(live)))
    while len(active) > 1:
        ca, wa = c[active], w[active]
        diff = ca[:, None, :] - ca[None, :, :]
        d2 = (diff**2).sum(axis=2)
        ward = (wa[:, None] * wa[None, :]) / (wa[:, None] + wa[None, :]) * d2
        np.fill_diagonal(ward, np.inf)
        i, j = np.unravel_index(np.argmin(ward), ward.shape)
        a, b = active[i], active[j]
        costs.append(float(ward[i, j]))
        c[a] = (w[a] * c[a] + w[b] * c[b]) / (w[a] + w[b])
        w[a] += w[b]
        members[a] += members[b]
        active.remove(b)
        if len(active) <= max_k:
            snapshots[len(active)] = [list(members[x]) for x in active]
    # W(k) = within + sum of the costs of the merges that produced k clusters.
    n = len(live)
    w_of = {n - step: total_within + sum(costs[:step]) for step in range(len(costs) + 1)}
    w1 = w_of[1] or 1.0
    k = min(max_k, n)
    for candidate in range(1, min(max_k, n)):
        if w_of[candidate] - w_of[candidate + 1] < min_gain * w1:
            k = candidate
            break
    groups = sorted(snapshots[k], key=min)
    for label, group in enumerate(groups):
        labels[live[group]] = label
    return labels, k
