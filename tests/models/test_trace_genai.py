"""On the real GenAI trace, predicted shards explain a large share of log latency variance."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models.evaluate import evaluate_profiles
from streams.trace import TraceReport, load_mapping, read_trace

REPO = Path(__file__).resolve().parents[2]
TRACE_DIR = Path(os.environ.get("SHARDSHAPE_TRACE_DIR", REPO.parent / "shared" / "data"))
TRACE = TRACE_DIR / "genai-requests-2024-11-15_to_26.csv"
MAPPING = REPO / "examples" / "traces" / "genai.toml"


@pytest.mark.skipif(not TRACE.exists(), reason=f"trace not found at {TRACE} (SHARDSHAPE_TRACE_DIR)")
def test_predicted_shards_explain_latency() -> None:
    report = TraceReport()
    events = list(read_trace(TRACE, load_mapping(MAPPING), report))
    assert report.events == report.rows == 9_930
    after = datetime(2024, 11, 22, 23, 39, 26, tzinfo=UTC).timestamp()
    result = evaluate_profiles(events, after, max_shards=8)
    assert result["shards"] <= 9
    assert result["eta2_request_type"] < 0.05
    assert result["eta2_predicted_shard"] >= 0.40
