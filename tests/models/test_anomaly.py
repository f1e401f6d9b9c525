"""The array-based Half-Space Trees score exactly as river's, batch by batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from river import anomaly

from shardshape.models.anomaly import _LIMITS, KeyAnomalyDetector


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


def _population(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A spread population: rates over three orders of magnitude, a few percent errors."""
    return np.exp(rng.normal(-4.0, 1.2, n)), rng.beta(0.5, 30.0, n)


def test_a_stationary_population_stays_normal_over_hundreds_of_windows() -> None:
    # 2,000 keys checked at random, a scraper checked far more often than any of them:
    # 300 windows of 250 checks. The normal region must neither shrink nor drift.
    rng = np.random.default_rng(7)
    rates, errors = _population(rng, 2_000)
    detector = KeyAnomalyDetector(seed=1)
    flagged_keys, scraper_flags, shares = [], [], []
    for _ in range(300):
        keys = rng.integers(0, 2_000, 250)
        scraper = rng.random(250) < 0.2  # a fifth of all checks
        r = np.where(scraper, 8.0 + rng.random(250), rates[keys])
        e = np.where(scraper, 0.8, errors[keys])
        names = np.where(scraper, -1, keys).tolist()
        flags = detector.check_keys(names, r, e)
        shares.append(flags[~scraper].mean())
        flagged_keys.append(set(keys[flags & ~scraper].tolist()))
        scraper_flags.append(flags[scraper].mean())
    early, late = np.mean(shares[10:60]), np.mean(shares[-50:])
    assert late < 0.01 and early < 0.01, (early, late)
    assert len(set().union(*flagged_keys[-50:])) < 0.02 * 2_000
    assert min(scraper_flags[5:]) > 0.9  # never learned into normality


def test_one_key_checked_a_thousand_times_does_not_become_normal() -> None:
    rng = np.random.default_rng(3)
    rates, errors = _population(rng, 500)
    detector = KeyAnomalyDetector(window_size=100, seed=2)
    for _ in range(50):
        keys = rng.integers(0, 500, 80)
        names = [*keys.tolist(), *["busy"] * 20]
        r = np.r_[rates[keys], np.full(20, 5.0)]
        e = np.r_[errors[keys], np.full(20, 0.5)]
        flags = detector.check_keys(names, r, e)
    assert flags[-20:].all()
    assert flags[:80].mean() < 0.05
