"""Anomalous keys: Half-Space Trees over a key's rate and error rate, scored many at a time.

What marks a misbehaving key (a scraper, a runaway client, a bursting tenant) is how often it
calls and how often it fails, not how slow its requests are (slow but regular users have their
own shard). The detector scores a key's ``(log rate, error rate)`` against the mass of keys it
has learned. Keys are scored on a cadence (see :class:`shardshape.models.profiler.Profiler`), not
per event.

The profiler uses :meth:`KeyAnomalyDetector.check_keys`: every key checked is learned, but at
most ``key_share`` of a window's walks come from one key, so the reference is the population
of keys (a busy key cannot make itself normal by repetition), and a key is anomalous where the
mass around it is under ``density_ratio`` of the mass around the window's typical key. Both
are relative to the keys seen, so the normal region neither shrinks nor grows over time.
(Learning only from keys found normal against a fixed score threshold, as river does, never
learns the edge of the normal region: over a few hundred windows it contracted until nearly
every key of a spread population was anomalous.)

The trees are drawn as river's :class:`river.anomaly.HalfSpaceTrees` draws them (the same
random draws in the same order, :func:`_tree_arrays`; river's ``make_padded_tree`` is not part
of its public API, so the few lines are ours), laid out as arrays so that a batch's due keys are
walked down all trees at once: about 3 us a key instead of river's 50 us, with the same scores
and window pivots as river's one-at-a-time ``score_one``/``learn_one``.

>>> detector = KeyAnomalyDetector(window_size=50, seed=3)
>>> for i in range(300):
...     _ = detector.score_and_learn(rate_per_s=0.02 + 0.001 * (i % 10), error_rate=0.01)
>>> detector.is_anomalous(rate_per_s=0.025, error_rate=0.01)
False
>>> detector.is_anomalous(rate_per_s=200.0, error_rate=0.9)
True
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence

import numpy as np
from river import base

# log1p of events per minute: 0 .. about 1e6 per minute.
_LIMITS = {"log_rate": (0.0, 14.0), "error_rate": (0.0, 1.0)}
_FEATURES = list(_LIMITS)


class KeyAnomalyDetector(base.Estimator):
    """Half-Space Trees on key-level features, with a score threshold.

    Parameters
    ----------
    threshold
        Scores at or above it are anomalous (scores lie in ``[0, 1]``); for
        :meth:`check_keys`, a floor under the calibrated :attr:`cutoff`.
    n_trees, height, window_size, seed
        As river's :class:`~river.anomaly.HalfSpaceTrees`.
    density_ratio
        :meth:`check_keys`: anomalous where the mass-weighted depth a key's walks reach is
        under this share of what the window's median key reaches.
    key_share
        :meth:`check_keys`: the most of one window's walks a single key may add.
    """

    def __init__(
        self,
        threshold: float = 0.8,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 0,
        density_ratio: float = 0.05,
        key_share: float = 0.02,
    ) -> None:
        if not 0 < density_ratio < 1:
            raise ValueError(f"density_ratio={density_ratio}: must be in (0, 1), e.g. 0.05")
        if not 0 < key_share < 0.1:
            raise ValueError(f"key_share={key_share}: must be in (0, 0.1), e.g. 0.02")
        self.threshold = threshold
        self.density_ratio = density_ratio
        self.key_share = key_share
        # check_keys: walks one key may add to a window; under the size limit (a tenth of
        # the window), so one key alone never makes its region dense.
        self._per_key = max(1, math.floor(key_share * window_size))
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self._feature, self._threshold = _tree_arrays(n_trees, height, random.Random(seed))
        n_nodes = 2 ** (height + 1) - 1
        self._l_mass = np.zeros((n_trees, n_nodes))  # mass of the window being filled
        self._r_mass = np.zeros((n_trees, n_nodes))  # mass of the last complete window
        self._counter = 0
        self._r_count = float(window_size)  # walks in the last complete window's mass
        self._first_window = True
        # check_keys: keys learned into the window being filled, their walks, and the cutoff
        # calibrated on the last complete window.
        self._window_keys: dict[Hashable, int] = {}
        self._window_paths: list[np.ndarray] = []
        self.cutoff = 1.0
        self.reference_scores = np.zeros(0)

    @staticmethod
    def features(rate_per_s: float, error_rate: float) -> dict[str, float]:
        return {"log_rate": float(np.log1p(rate_per_s * 60.0)), "error_rate": error_rate}

    # -- river's protocol -------------------------------------------------------------------
    def learn_one(self, x: dict[str, float]) -> None:
        self._learn(self._paths(np.array([[x[name] for name in _FEATURES]])))

    def score_one(self, x: dict[str, float]) -> float:
        return float(self._score(self._paths(np.array([[x[name] for name in _FEATURES]])))[0])

    # -- keys -------------------------------------------------------------------------------
    def is_anomalous(self, rate_per_s: float, error_rate: float) -> bool:
        return self.score_one(self.features(rate_per_s, error_rate)) >= self.threshold

    def score_and_learn(self, rate_per_s: float, error_rate: float) -> float:
        """Score a key, then learn it unless it is anomalous."""
        return float(self.score_and_learn_many(np.array([rate_per_s]), np.array([error_rate]))[0])

    def score_and_learn_many(self, rates_per_s: np.ndarray, error_rates: np.ndarray) -> np.ndarray:
        """Score keys in order, learning each normal one before the next is scored.

        Equivalent to :meth:`score_and_learn` key by key: within a window the scores read only
        the last complete window's mass, so the keys are scored together and learned together,
        split where a window completes.
        """
        x = np.column_stack([np.log1p(np.asarray(rates_per_s) * 60.0), error_rates])
        paths = self._paths(x)
        scores = np.empty(len(x))
        start = 0
        while start < len(x):
            # Keys up to the one whose learning completes the window share one scoring.
            normal_needed = self.window_size - self._counter
            chunk_scores = self._score(paths[:, start:])
            normal = np.flatnonzero(chunk_scores < self.threshold)
            end = len(x) if len(normal) < normal_needed else start + normal[normal_needed - 1] + 1
            scores[start:end] = chunk_scores[: end - start]
            learned = normal[normal < end - start] + start
            self._learn(paths[:, learned])
            start = end
        return scores

    def check_keys(
        self, keys: Sequence[Hashable], rates_per_s: np.ndarray, error_rates: np.ndarray
    ) -> np.ndarray:
        """Whether each key is anomalous; every key is learned, at most once per window.

        A window completes after ``window_size`` checks; its mass holds the walks of every
        key checked in it, each key's at most ``key_share`` of the window however often it
        was checked. That is under the size limit below which a region counts as sparse (a
        tenth of the window), so no key alone makes its region normal, while the edge of
        the normal region is learned like its middle. A key is anomalous when its score
        reaches :attr:`cutoff`, calibrated on the walks of the last complete window
        (:meth:`_calibrate`), and at least ``threshold``. Keys are taken in order; those
        checked after a window completes are scored against the new one.

        Not to be mixed with :meth:`score_and_learn_many` on one detector.
        """
        x = np.column_stack([np.log1p(np.asarray(rates_per_s) * 60.0), error_rates])
        paths = self._paths(x)
        flags = np.zeros(len(x), dtype=bool)
        start = 0
        while start < len(x):
            end = min(len(x), start + self.window_size - self._counter)
            if not self._first_window:
                scores = self._score(paths[:, start:end])
                flags[start:end] = scores >= max(self.cutoff, self.threshold)
            fresh = []
            held = self._window_keys
            for i in range(start, end):
                if held.get(keys[i], 0) < self._per_key:
                    held[keys[i]] = held.get(keys[i], 0) + 1
                    fresh.append(i)
            self._window_paths.append(paths[:, fresh])
            if self._learn(paths[:, fresh], checks=end - start):
                self._calibrate(np.concatenate(self._window_paths, axis=1))
                self._window_paths, self._window_keys = [], {}
            start = end
        return flags

    # -- internals --------------------------------------------------------------------------
    def _calibrate(self, paths: np.ndarray) -> None:
        """Set :attr:`cutoff` from the window's own walks, each scored without itself.

        ``1 - score`` is the mass-weighted depth a walk reaches (how crowded its region is);
        the cutoff is where that falls under ``density_ratio`` of the median walk's. Relative
        to the window, it is calibrated for any number and spread of keys, where a fixed
        score threshold flags half of a spread population and none of a tight one.
        """
        mass = self._r_mass[np.arange(self.n_trees)[:, None, None], paths] - 1.0
        self.reference_scores = self._walk_scores(mass, self._r_count - 1.0)
        typical = 1.0 - float(np.median(self.reference_scores))
        self.cutoff = 1.0 - self.density_ratio * typical

    def _walk_scores(self, mass: np.ndarray, count: float) -> np.ndarray:
        """River's score of walks with ``mass`` ``(trees, keys, depth)`` on their nodes, for a
        window of ``count`` walks: the mass-weighted depth reached, from 1 (none) to 0."""
        below = mass < 0.1 * count
        # A walk stops after the first node whose mass is under the size limit.
        stopped_before = np.cumsum(below, axis=-1) - below > 0
        weights = 2.0 ** np.arange(self.height + 1)
        walk = (np.where(stopped_before, 0.0, mass) * weights).sum(axis=-1).sum(axis=0)
        return 1.0 - walk / (self.n_trees * max(count, 1.0) * (2 ** (self.height + 1) - 1))

    def _paths(self, x: np.ndarray) -> np.ndarray:
        """``(n_trees, n_keys, height + 1)`` node indices of each key's walk down each tree."""
        n_trees, height = self.n_trees, self.height
        paths = np.zeros((n_trees, len(x), height + 1), dtype=np.intp)
        # Flat indices: tree t's node i is t * n_nodes + i; key k's feature f is k * 2 + f.
        n_nodes = self._feature.shape[1]
        base = (np.arange(n_trees) * n_nodes)[:, None]
        feature, threshold = self._feature.ravel(), self._threshold.ravel()
        values = x.ravel()
        offsets = (np.arange(len(x)) * x.shape[1])[None, :]
        node = paths[:, :, 0]
        for depth in range(height):
            flat = base + node
            right = values[offsets + feature[flat]] >= threshold[flat]
            node = 2 * node + 1 + right
            paths[:, :, depth + 1] = node
        return paths

    def _score(self, paths: np.ndarray) -> np.ndarray:
        if self._first_window:
            return np.zeros(paths.shape[1])
        # A walk's score depends only on its leaf: the sum is looked up, per tree.
        leaves = paths[:, :, -1] - (2**self.height - 1)
        score = self._leaf_score[np.arange(self.n_trees)[:, None], leaves].sum(axis=0)
        max_score = self.n_trees * self._r_count * (2 ** (self.height + 1) - 1)
        return 1.0 - score / max_score

    def _score_leaves(self) -> None:
        """Each leaf's walk score under the last complete window, as river sums it."""
        height = self.height
        depth = np.arange(height + 1)
        leaves = np.arange(2**height - 1, 2 ** (height + 1) - 1)
        ancestors = ((leaves + 1)[None, :] >> (height - depth)[:, None]) - 1  # (depth, leaves)
        mass = self._r_mass[:, ancestors]  # (trees, depth, leaves)
        # A walk stops after the first node whose mass is under the size limit.
        below = mass < 0.1 * self._r_count
        stopped_before = np.cumsum(below, axis=1) - below > 0
        weights = (2.0**depth)[None, :, None]
        self._leaf_score = (np.where(stopped_before, 0.0, mass) * weights).sum(axis=1)

    def _learn(self, paths: np.ndarray, checks: int | None = None) -> bool:
        """Add the walks of keys to the mass and count ``checks`` of the window's (default:
        one per walk, no more than the window's remaining room); True when that completed
        the window. The size limit and the scores scale with the walks a window holds
        (``window_size`` when every check adds one, as in river)."""
        n = paths.shape[1]
        if n:
            n_nodes = self._l_mass.shape[1]
            flat = (paths + (np.arange(self.n_trees) * n_nodes)[:, None, None]).ravel()
            mass = np.bincount(flat, minlength=self._l_mass.size)
            self._l_mass += mass.reshape(self._l_mass.shape)
        self._counter += n if checks is None else checks
        if self._counter < self.window_size:
            return False
        self._r_mass, self._l_mass = self._l_mass, np.zeros_like(self._l_mass)
        self._r_count = max(float(self._r_mass[0, 0]), 1.0)
        self._score_leaves()
        self._first_window = False
        self._counter = 0
        return True


def _tree_arrays(n_trees: int, height: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """Split feature and threshold of every internal node (heap order) of each tree.

    Draws as river's ``make_padded_tree`` (padding 0.15): a feature weighted by the width of its
    current range, a threshold uniform within the range's padded middle, then the left subtree
    before the right one, so a seed gives river's trees.
    """
    n_internal = 2**height - 1
    feature = np.zeros((n_trees, n_internal + 2**height), dtype=np.intp)
    threshold = np.zeros((n_trees, n_internal + 2**height))
    padding = 0.15

    def split(tree: int, index: int, depth: int, limits: dict[str, tuple[float, float]]) -> None:
        if depth == 0:
            return
        widths = [hi - lo for lo, hi in limits.values()]
        on = rng.choices(population=list(limits), weights=widths)[0]
        lo, hi = limits[on]
        at = rng.uniform(lo + padding * (hi - lo), hi - padding * (hi - lo))
        feature[tree, index] = _FEATURES.index(on)
        threshold[tree, index] = at
        split(tree, 2 * index + 1, depth - 1, {**limits, on: (lo, at)})
        split(tree, 2 * index + 2, depth - 1, {**limits, on: (at, hi)})

    for tree in range(n_trees):
        split(tree, 0, height, {name: _LIMITS[name] for name in sorted(_LIMITS)})  # river's order
    return feature, threshold
