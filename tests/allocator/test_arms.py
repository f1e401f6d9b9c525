"""Arm assignment: sticky across processes and restarts, faithful to the weights, independent
across experiments."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shardshape.allocator.arms import ArmAssigner, arm_point, assign_arm
from shardshape.core.contracts import Arm, Experiment

KEYS = [f"user-{i}" for i in range(10_000)]


def test_the_same_key_gets_the_same_arm_in_another_process_with_another_hash_seed() -> None:
    weights = [0.5, 0.3, 0.2]
    here = [assign_arm("shop:3:lfu-1024:1700000000", key, weights) for key in KEYS[:2_000]]
    script = (
        "import json, sys\n"
        "from shardshape.allocator.arms import assign_arm\n"
        "keys = [f'user-{i}' for i in range(2000)]\n"
        "print(json.dumps([assign_arm('shop:3:lfu-1024:1700000000', k, [0.5, 0.3, 0.2])"
        " for k in keys]))\n"
    )
    for seed in ("1", "12345"):  # Python's own str hash differs per seed; ours must not
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == here
    assert len(set(here)) == 3


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.8, 0.2], [0.7, 0.2, 0.1], [3.0, 1.0]])
def test_shares_of_10k_keys_are_within_5_points_of_the_weights(weights: list[float]) -> None:
    counts = [0] * len(weights)
    for key in KEYS:
        counts[assign_arm("exp-weights", key, weights)] += 1
    total = sum(weights)
    for count, weight in zip(counts, weights, strict=True):
        assert abs(count / len(KEYS) - weight / total) <= 0.05, (counts, weights)


def test_points_are_uniform_and_experiments_split_independently() -> None:
    a = [arm_point("exp-a", key) for key in KEYS]
    b = [arm_point("exp-b", key) for key in KEYS]
    assert all(0.0 <= p < 1.0 for p in a)
    deciles = [sum(int(p * 10) == d for p in a) for d in range(10)]
    assert min(deciles) > 850 and max(deciles) < 1_150, deciles
    both = sum(pa >= 0.5 and pb >= 0.5 for pa, pb in zip(a, b, strict=True)) / len(KEYS)
    assert abs(both - 0.25) < 0.03, "being in one variant says nothing about the other"


def test_raising_a_variant_weight_only_moves_users_from_control_into_it() -> None:
    before = [assign_arm("ramp", key, [0.9, 0.1]) for key in KEYS]
    after = [assign_arm("ramp", key, [0.7, 0.3]) for key in KEYS]
    assert all(a == 1 for b, a in zip(before, after, strict=True) if b == 1)
    moved = sum(b == 0 and a == 1 for b, a in zip(before, after, strict=True))
    assert 0.15 <= moved / len(KEYS) <= 0.25


def test_zero_weights_and_the_assigner_agree_with_assign_arm() -> None:
    assert {assign_arm("e", key, [1.0, 0.0]) for key in KEYS[:500]} == {0}
    assert {assign_arm("e", key, [0.0, 1.0]) for key in KEYS[:500]} == {1}
    assert {assign_arm("e", key, [0.0, 0.0]) for key in KEYS[:500]} == {0, 1}  # equal shares
    experiment = Experiment(
        experiment_id="shop:1:lfu",
        shard_id=1,
        arms=[Arm(name="control", weight=0.6), Arm(name="lfu", weight=0.4)],
    )
    assigner = ArmAssigner(experiment)
    for key in KEYS[:1_000]:
        assert assigner.pick(key) == ["control", "lfu"][assign_arm("shop:1:lfu", key, [0.6, 0.4])]


def test_bad_input_fails_with_the_fix() -> None:
    with pytest.raises(ValueError, match="request id"):
        arm_point("e", "")
    with pytest.raises(ValueError, match="finite and >= 0"):
        assign_arm("e", "k", [0.5, -0.1])
    with pytest.raises(ValueError, match="finite and >= 0"):
        assign_arm("e", "k", [float("nan"), 1.0])
    with pytest.raises(ValueError, match="at least one arm"):
        assign_arm("e", "k", [])
