"""Planted profiles are recovered, re-learned after drift, and keep their shard ids.

Protocol: the synthetic stream is replayed one event at a time through the profiler (predict
at arrival, then learn). ARI compares the shard predicted at arrival with the planted profile
over a 2,000-event window.
"""

from __future__ import annotations

import pytest

from shardshape.models.evaluate import evaluate_synthetic


@pytest.fixture(scope="module")
def plain() -> dict:
    return evaluate_synthetic(30_000, [(20_000, 22_000), (28_000, 30_000)], seed=0)


@pytest.fixture(scope="module")
def drifted() -> dict:
    windows = [(18_000, 20_000), (20_000, 22_000), (28_000, 30_000)]
    return evaluate_synthetic(30_000, windows, seed=0, drift_at=20_000)


def test_planted_profiles_recovered_within_20000_events(plain: dict) -> None:
    assert plain["ari"][(20_000, 22_000)] >= 0.9


def test_recovers_within_10000_events_after_drift(drifted: dict) -> None:
    assert drifted["ari"][(18_000, 20_000)] >= 0.9
    assert drifted["ari"][(20_000, 22_000)] < drifted["ari"][(28_000, 30_000)]
    assert drifted["ari"][(28_000, 30_000)] >= 0.9


def test_shard_ids_stable_after_convergence(plain: dict) -> None:
    assert plain["flips"] < 0.01


def test_shard_ids_do_not_churn_wholesale(plain: dict) -> None:
    assert plain["flips"] < 0.03
