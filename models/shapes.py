"""Memory of request shapes: the mean log latency of each shape seen, as an arrival feature.

A request's *shape* is its type and every attribute with its exact value
(:func:`shardshape.models.features.shape_id`): two requests of one shape differ only in
payload size and in who sent them. The linear arrival model adds up one weight per token, so
it cannot learn what a *combination* of attribute values does (``tier`` gold is slow with 10
steps and fast with 50, basic the other way round: each token alone says nothing). The shape
memory remembers the combination: each shape's running mean log latency, learned from its
completed requests, enters the arrival vector as two numbers (its weight ``n / (n +
prior)``, and the weight times the mean), and the regression learns how far to trust them
beside the tokens and the key's history. An unseen shape has weight 0: the tokens alone.

A shape's mean is exact while it is young and exponentially weighted later (``alpha =
max(1 / n, min_alpha)`` per request: about its last hundred by default; a batch's requests
of one shape are folded in together, a caller's counting once), so its old latency fades.
The table holds at most ``max_shapes`` shapes (the ones completed longest ago go first); a
snapshot carries the ``limit`` most used of them (:meth:`ShapeTable.export`), which is all
a gateway needs: a lookup of plain numbers.

>>> table = ShapeTable(prior=1.0)
>>> table.learn(np.array([7, 7, 9]), np.array([2.0, 4.0, 8.0]), now=1.0)
>>> table.features(np.array([7, 9, 5])).round(3).tolist()
[[0.667, 2.0], [0.5, 4.0], [0.0, 0.0]]
>>> exported = table.export(10)
>>> ShapeTable.lookup(exported, np.array([9, 5])).round(3).tolist()
[[0.5, 4.0], [0.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Columns of an exported table (a snapshot's ``shapes``): shape id, weight, weight x mean.
ID, WEIGHT, WEIGHTED_MEAN = range(3)


class ShapeTable:
    """Running mean log latency per request shape.

    Parameters
    ----------
    prior
        Pseudo-count: a shape seen ``n`` times weighs ``n / (n + prior)``.
    min_alpha
        Floor of the EWMA step of a shape's mean.
    max_shapes
        Most shapes held; beyond, the least recently completed tenth is dropped.
    """

    def __init__(
        self, prior: float = 2.0, min_alpha: float = 0.01, max_shapes: int = 20_000
    ) -> None:
        self.prior = prior
        self.min_alpha = min_alpha
        self.max_shapes = max_shapes
        self._slot: dict[int, int] = {}  # shape id -> row of the arrays
        self._ids = np.zeros(64, dtype=np.int64)
        self._n = np.zeros(64)
        self._mean = np.zeros(64)
        self._last = np.zeros(64)

    def __len__(self) -> int:
        return len(self._slot)

    def learn(
        self,
        ids: np.ndarray,
        log_latency: np.ndarray,
        now: float,
        callers: np.ndarray | None = None,
    ) -> None:
        """Fold completed requests (their shape ids and log latencies) in.

        Each shape's requests in the call count as ``k`` steps at once: their mean moves
        the shape's by ``1 - prod(1 - alpha_i)`` of the way (exact while every step is
        ``1 / n``, the same as one at a time when ``alpha`` is at its floor). With
        ``callers`` (who sent each request, as integers), a caller's requests of a shape in
        the call count once, at their mean: one caller's burst does not speak for everyone
        who sends that shape.
        """
        if not len(ids):
            return
        if callers is not None:
            # One integer per (shape, caller): a shape id is a CRC-32 (< 2**32), a caller a
            # key's row (< 2**31), so the pair fits a signed 64-bit integer.
            pair = (np.asarray(ids, dtype=np.int64) << 31) | np.asarray(callers, dtype=np.int64)
            pairs, pair_of = np.unique(pair, return_inverse=True)
            log_latency = np.bincount(pair_of, weights=log_latency) / np.bincount(pair_of)
            ids = pairs >> 31  # sorted, as the pairs are
            new_shape = np.r_[True, ids[1:] != ids[:-1]]
            uniq, inv = ids[new_shape], np.cumsum(new_shape) - 1
        else:
            uniq, inv = np.unique(ids, return_inverse=True)
        k = np.bincount(inv).astype(float)
        batch_mean = np.bincount(inv, weights=log_latency) / k
        rows = self._rows(uniq.tolist(), now)
        n0 = self._n[rows]
        n1 = n0 + k
        # 1 - prod over the k steps of (1 - max(1/n, a)): exact counts up to 1/a, a beyond.
        floor = 1.0 / self.min_alpha
        young = np.minimum(n1, floor)
        kept = np.where(n0 < floor, np.minimum(n0, floor) / np.maximum(young, 1e-300), 1.0)
        kept *= (1.0 - self.min_alpha) ** np.maximum(n1 - np.maximum(n0, floor), 0.0)
        step = 1.0 - kept
        self._mean[rows] += step * (batch_mean - self._mean[rows])
        self._n[rows] = n1
        self._last[rows] = now
        if len(self._slot) > self.max_shapes:
            self._evict()

    def features(self, ids: np.ndarray) -> np.ndarray:
        """``(n, 2)``: each shape's weight and weight x mean log latency (zeros if unseen)."""
        out = np.zeros((len(ids), 2))
        get = self._slot.get
        rows = np.fromiter((get(s, -1) for s in ids.tolist()), dtype=np.intp, count=len(ids))
        hit = rows >= 0
        n = self._n[rows[hit]]
        w = n / (n + self.prior)
        out[hit, 0] = w
        out[hit, 1] = w * self._mean[rows[hit]]
        return out

    def export(self, limit: int) -> np.ndarray:
        """The ``limit`` most used shapes as rows ``(id, weight, weight x mean)``, by id."""
        count = len(self._slot)
        if not count:
            return np.zeros((0, 3))
        n, last, ids = self._n[:count], self._last[:count], self._ids[:count]
        kept = np.lexsort((ids, -last, -n))[:limit]
        kept = kept[np.argsort(ids[kept], kind="stable")]
        w = n[kept] / (n[kept] + self.prior)
        return np.column_stack([ids[kept].astype(float), w, w * self._mean[kept]])

    @staticmethod
    def lookup(exported: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """:meth:`features` from an exported table (rows sorted by id)."""
        out = np.zeros((len(ids), 2))
        if not len(exported) or not len(ids):
            return out
        at = np.minimum(np.searchsorted(exported[:, ID], ids), len(exported) - 1)
        hit = exported[at, ID] == ids
        out[hit] = exported[at[hit]][:, [WEIGHT, WEIGHTED_MEAN]]
        return out

    # -- several workers ------------------------------------------------------------------
    def state(self, limit: int) -> list[list[float]]:
        """The ``limit`` most used shapes as plain rows ``(id, count, mean, last)``, for a
        worker summary."""
        count = len(self._slot)
        n, last, ids = self._n[:count], self._last[:count], self._ids[:count]
        kept = np.lexsort((ids, -last, -n))[:limit]
        return np.column_stack(
            [ids[kept].astype(float), n[kept], self._mean[kept], last[kept]]
        ).tolist()

    @classmethod
    def merged(cls, states: Sequence[Sequence[Sequence[float]]], **options: float) -> ShapeTable:
        """One table from several workers' :meth:`state`: counts add up, means are weighted
        by count, the latest completion stays."""
        table = cls(**options)  # type: ignore[arg-type]
        rows = [row for state in states for row in state]
        if not rows:
            return table
        data = np.asarray(rows, dtype=float).reshape(-1, 4)
        uniq, inv = np.unique(data[:, 0].astype(np.int64), return_inverse=True)
        n = np.bincount(inv, weights=data[:, 1])
        total = np.bincount(inv, weights=data[:, 1] * data[:, 2])
        last = np.full(len(uniq), -np.inf)
        np.maximum.at(last, inv, data[:, 3])
        slots = table._rows(uniq.tolist(), 0.0)
        table._n[slots] = n
        table._mean[slots] = np.where(n > 0, total / np.where(n > 0, n, 1.0), 0.0)
        table._last[slots] = last
        return table

    # -- internals ------------------------------------------------------------------------
    def _rows(self, ids: list[int], now: float) -> np.ndarray:
        """Rows of ``ids``, new shapes added (count 0, mean 0, last ``now``)."""
        slot = self._slot
        missing = [s for s in ids if s not in slot]
        if missing:
            start = len(slot)
            end = start + len(missing)
            if end > len(self._ids):
                size = max(2 * len(self._ids), end)
                for name in ("_ids", "_n", "_mean", "_last"):
                    old = getattr(self, name)
                    grown = np.zeros(size, dtype=old.dtype)
                    grown[:start] = old[:start]
                    setattr(self, name, grown)
            for row, shape in enumerate(missing, start):
                slot[shape] = row
            new = slice(start, end)
            self._ids[new] = missing
            self._n[new] = 0.0
            self._mean[new] = 0.0
            self._last[new] = now
        return np.fromiter((slot[s] for s in ids), dtype=np.intp, count=len(ids))

    def _evict(self) -> None:
        """Drop the least recently completed tenth (at least down to ``max_shapes``)."""
        count = len(self._slot)
        drop = max(count - self.max_shapes, count // 10)
        keep = np.sort(np.argsort(self._last[:count], kind="stable")[drop:])
        ids = self._ids[keep].copy()
        n, mean, last = self._n[keep].copy(), self._mean[keep].copy(), self._last[keep].copy()
        size = len(self._ids)
        self._ids, self._n = np.zeros(size, dtype=np.int64), np.zeros(size)
        self._mean, self._last = np.zeros(size), np.zeros(size)
        kept = len(keep)
        self._ids[:kept], self._n[:kept], self._mean[:kept], self._last[:kept] = ids, n, mean, last
        self._slot = {int(s): row for row, s in enumerate(ids.tolist())}
