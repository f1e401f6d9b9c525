"""`shardshape evaluate` as a user runs it, on the shared request trace."""

from __future__ import annotations

import json
import subprocess

from tests.support.processes import shardshape_command
from tests.support.trace import GENAI_MAPPING, GENAI_TRACE, needs_genai_trace

TRACE, MAPPING = GENAI_TRACE, GENAI_MAPPING
AFTER = "2024-11-22 23:39:26"

pytestmark = needs_genai_trace


def _evaluate(*args: str) -> dict:
    done = subprocess.run(
        shardshape_command("evaluate", *args, str(TRACE), "--mapping", str(MAPPING),
                           "--evaluate-after", AFTER, "--json"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_evaluate_profiles_beats_grouping_by_request_type() -> None:
    result = _evaluate("profiles", "--max-shards", "8")
    assert result["events"] == 9_930
    assert 1 < result["shards"] <= 9
    assert result["eta2_predicted_shard"] >= 0.40
    assert result["eta2_request_type"] < 0.05
    assert 0 < result["unseen_users_share"] < 1


def test_evaluate_forecast_beats_both_naive_baselines() -> None:
    result = _evaluate("forecast", "--bin", "1h")
    assert result["bins"] == 96
    assert result["mase_vs_seasonal_naive"] < 1.0
    assert result["mase_vs_last_value"] < 1.0


def test_evaluate_profiles_rolling_and_the_reference_in_one_run() -> None:
    result = _evaluate("profiles", "--max-shards", "8", "--rolling", "--reference", "gbr")
    rolling, reference = result["rolling"], result["reference"]
    assert list(rolling["days"]) == ["2024-11-23", "2024-11-24", "2024-11-25", "2024-11-26"]
    values = [day["eta2_predicted_shard"] for day in rolling["days"].values()]
    assert rolling["worst_eta2_predicted_shard"] == min(values)
    # Each day's reference was fitted on the days before it only.
    trained = [day["reference"]["train_events"] for day in rolling["days"].values()]
    assert trained == sorted(trained) and trained[0] > reference["train_events"]
    assert reference["groups"] == result["shards"]
    assert 0 < reference["eta2_groups"] <= 1 and reference["eta2_unbinned"] <= 1
    # The shards explain at least what the offline reference does cut into as many groups.
    assert result["eta2_predicted_shard"] >= reference["eta2_groups"]
    assert set(result["shard_churn"]) >= {"births_per_hour", "retirements_per_hour"}
