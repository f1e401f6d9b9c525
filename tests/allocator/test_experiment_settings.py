"""The ``experiments_*`` settings: they reach the planner's ExperimentPolicy, their defaults are
the policy's, and a bad value stops the worker at start naming the variable."""

from __future__ import annotations

import subprocess

import pytest

from shardshape.allocator.experiments import ExperimentPolicy
from shardshape.allocator.planning import experiment_policy
from shardshape.allocator.sequential import TestDesign
from shardshape.core.settings import SettingsError, load_settings
from tests.support.processes import settings_env, shardshape_command
from tests.support.settings_errors import assert_refused


def test_the_defaults_are_the_policy_defaults() -> None:
    assert experiment_policy(load_settings()) == ExperimentPolicy()


def test_each_setting_reaches_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in {
        "ENABLED": "false",
        "BUDGET": "0.4",
        "VARIANT_WEIGHT": "0.3",
        "MIN_VARIANT_WEIGHT": "0.1",
        "TRIGGER_WINDOWS": "1",
        "MIN_WINDOW_REQUESTS": "50",
        "LOW_HIT_RATE": "0.7",
        "CACHE_SIZE": "2048",
        "MIN_REQUESTS": "150",
        "MAX_DURATION_S": "600",
        "COOLDOWN_S": "30",
    }.items():
        monkeypatch.setenv(f"SHARDSHAPE_EXPERIMENTS_{variable}", value)
    policy = experiment_policy(load_settings())
    assert policy == ExperimentPolicy(
        enabled=False,
        budget=0.4,
        variant_weight=0.3,
        min_variant_weight=0.1,
        trigger_windows=1,
        min_window_requests=50,
        low_hit_rate=0.7,
        cache_size=2048,
        max_duration_s=600.0,
        cooldown_s=30.0,
        design=TestDesign(min_requests=150),
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SHARDSHAPE_EXPERIMENTS_BUDGET", "1.5", "less than or equal to 1"),
        ("SHARDSHAPE_EXPERIMENTS_VARIANT_WEIGHT", "1", "less than 1"),
        ("SHARDSHAPE_EXPERIMENTS_TRIGGER_WINDOWS", "0", "greater than or equal to 1"),
        ("SHARDSHAPE_EXPERIMENTS_MIN_REQUESTS", "5", "greater than or equal to 10"),
        ("SHARDSHAPE_EXPERIMENTS_MAX_DURATION_S", "0", "greater than 0"),
        ("SHARDSHAPE_EXPERIMENTS_ENABLED", "maybe", "valid boolean"),
    ],
)
def test_a_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    assert_refused(monkeypatch, variable, value, expected)


def test_a_minimum_weight_above_the_weight_says_which_to_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHARDSHAPE_EXPERIMENTS_VARIANT_WEIGHT", "0.1")
    monkeypatch.setenv("SHARDSHAPE_EXPERIMENTS_MIN_VARIANT_WEIGHT", "0.2")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "SHARDSHAPE_EXPERIMENTS_MIN_VARIANT_WEIGHT=0.2" in message
    assert "SHARDSHAPE_EXPERIMENTS_VARIANT_WEIGHT=0.1" in message


def test_the_worker_stops_at_start_on_a_bad_value() -> None:
    env = settings_env(load_settings(kafka_bootstrap="127.0.0.1:1"))
    env["SHARDSHAPE_EXPERIMENTS_BUDGET"] = "-0.1"
    done = subprocess.run(
        shardshape_command("worker"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "SHARDSHAPE_EXPERIMENTS_BUDGET=-0.1" in done.stderr + done.stdout
