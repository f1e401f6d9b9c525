"""The array-based Half-Space Trees score exactly as river's, batch by batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from river import anomaly

from models.anomaly import _LIMITS, KeyAnomalyDetector


@pytest.mark.parametrize("window_size", [50, 250])
def test_batched_scores_equal_rivers_one_at_a_time(window_size: int) -> None:
    rng = np.random.default_rng(0)
    rates = np.exp(rng.normal(-3.0, 1.5, 3_000))
    errors = rng.beta(0.5, 10.0, 3_000)
    rates[::37], errors[::37] = 500.0, 0.9  # scrapers: scored, never learned
    ours = KeyAnomalyDetector(window_size=window_size, seed=3)
    theirs = anomaly.HalfSpaceTrees(
        n_trees=10, height=8, window_size=window_size, limits=_LIMITS, seed=3
    )
    batched = np.concatenate(
        [
            ours.score_and_learn_many(rates[i : i + 25], errors[i : i + 25])
            for i in range(0, 3_000, 25)
        ]
    )
    one_by_one = []
    for rate, error in zip(rates, errors, strict=True):
        x = {"log_rate": math.log1p(rate * 60.0), "error_rate": error}
        score = theirs.score_one(x)
        if score < 0.8:
            theirs.learn_one(x)
        one_by_one.append(score)
    assert np.array_equal(batched, np.array(one_by_one))
    assert (batched >= 0.8).sum() >= 50  # the scrapers were flagged, so the test can fail
