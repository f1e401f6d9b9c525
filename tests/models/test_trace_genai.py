"""On the real GenAI trace, predicted shards explain a large share of log latency variance."""

from __future__ import annotations

from datetime import UTC, datetime

from shardshape.core.trace import TraceReport, load_mapping, read_trace
from shardshape.models.evaluate import evaluate_profiles
from tests.support.trace import GENAI_MAPPING, GENAI_TRACE, needs_genai_trace


@needs_genai_trace
def test_predicted_shards_explain_latency() -> None:
    report = TraceReport()
    events = list(read_trace(GENAI_TRACE, load_mapping(GENAI_MAPPING), report))
    assert report.events == report.rows == 9_930
    assert report.unfinished == 3  # PENDING when the trace was written: no response time
    after = datetime(2024, 11, 22, 23, 39, 26, tzinfo=UTC).timestamp()
    result = evaluate_profiles(events, after, max_shards=8)
    assert result["shards"] <= 9
    assert result["eta2_request_type"] < 0.05
    assert result["eta2_predicted_shard"] >= 0.40
