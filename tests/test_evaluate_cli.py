"""`shardshape evaluate` as a user runs it, on the shared request trace."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import shardshape_command
from tests.trace_data import GENAI_MAPPING, GENAI_TRACE, needs_genai_trace

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
