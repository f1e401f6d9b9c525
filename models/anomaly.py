"""Anomalous keys: river Half-Space Trees over a key's rate and error rate.

What marks a misbehaving key (a scraper, a runaway client, a bursting tenant) is how often it
calls and how often it fails, not how slow its requests are (slow but regular users have their
own shard). The detector scores a key's ``(log rate, error rate)`` against the mass of keys it
has learned, and only learns from keys it finds normal, so a persistent offender never becomes
"normal" by repetition. Keys are scored on a cadence (see :class:`models.profiler.Profiler`),
not per event.

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

from river import anomaly, base

# log1p of events per minute: 0 .. about 1e6 per minute.
_LIMITS = {"log_rate": (0.0, 14.0), "error_rate": (0.0, 1.0)}


class KeyAnomalyDetector(base.Estimator):
    """Half-Space Trees on key-level features, with a score threshold.

    Parameters
    ----------
    threshold
        Scores at or above it are anomalous (HST scores lie in ``[0, 1]``).
    n_trees, height, window_size, seed
        River :class:`~river.anomaly.HalfSpaceTrees` parameters.
    """

    def __init__(
        self,
        threshold: float = 0.8,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 0,
    ) -> None:
        self.threshold = threshold
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self._trees = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, limits=_LIMITS, seed=seed
        )

    @staticmethod
    def features(rate_per_s: float, error_rate: float) -> dict[str, float]:
        return {"log_rate": math.log1p(rate_per_s * 60.0), "error_rate": error_rate}

    def learn_one(self, x: dict[str, float]) -> None:
        self._trees.learn_one(x)

    def score_one(self, x: dict[str, float]) -> float:
        return self._trees.score_one(x)

    def is_anomalous(self, rate_per_s: float, error_rate: float) -> bool:
        return self.score_one(self.features(rate_per_s, error_rate)) >= self.threshold

    def score_and_learn(self, rate_per_s: float, error_rate: float) -> float:
        """Score a key, then learn it unless it is anomalous."""
        x = self.features(rate_per_s, error_rate)
        score = self._trees.score_one(x)
        if score < self.threshold:
            self._trees.learn_one(x)
        return score
