"""What the experiment tests read from the metrics: cache hits per arm out of real events, and
log-latency moments and threshold counts out of the latency sketch."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from shardshape.core.contracts import RequestEvent
from shardshape.core.metrics import CACHE_HIT_ATTRIBUTE, ShardStats, aggregate, metric_key
from shardshape.core.sketch import LatencySketch


def _event(i: int, arm: str | None, hit: object) -> RequestEvent:
    attributes = {} if hit is None else {CACHE_HIT_ATTRIBUTE: hit}
    return RequestEvent(request_id=f"r{i}", ts=0, service="shop", request_type="GET /item",
                        latency_ms=2.0 if hit is True else 20.0, shard_id=1, arm=arm,
                        attributes=attributes)  # fmt: skip


def test_cache_hits_are_counted_per_arm_from_the_cache_hit_attribute() -> None:
    events = (
        [_event(i, "control", i % 4 == 0) for i in range(40)]  # 10 hits of 40
        + [_event(100 + i, "lfu", i % 2 == 0) for i in range(40)]  # 20 of 40
        + [_event(200 + i, "lfu", None) for i in range(10)]  # no lookup reported
        + [_event(300 + i, "lfu", 1.0) for i in range(5)]  # not a bool: not a report
    )
    series = aggregate(events, [0] * len(events))
    control, lfu = series[metric_key("shop", 1, "control")], series[metric_key("shop", 1, "lfu")]
    assert (control.cache_hits, control.cache_reported) == (10, 40)
    assert (lfu.cache_hits, lfu.cache_reported, lfu.count) == (20, 40, 55)
    assert lfu.summary(10)["cache_hit_rate"] == 0.5
    merged = ShardStats().merge(control).merge(lfu)
    assert (merged.cache_hits, merged.cache_reported) == (30, 80)
    restored = ShardStats.from_bytes(lfu.to_bytes())
    assert (restored.cache_hits, restored.cache_reported) == (20, 40)


def test_windows_stored_before_the_cache_counters_read_as_no_reports() -> None:
    stats = aggregate([_event(1, None, True)], [1])[metric_key("shop", 1, None)]
    raw = orjson.loads(stats.to_bytes())
    del raw["cache_hits"], raw["cache_reported"]
    old = ShardStats.from_bytes(orjson.dumps(raw))
    assert (old.cache_hits, old.cache_reported, old.count) == (0, 0, 1)
    assert old.summary(10)["cache_hit_rate"] is None


def test_log_moments_and_counts_above_a_threshold_match_the_raw_values() -> None:
    rng = np.random.default_rng(3)
    latency = rng.lognormal(math.log(25.0), 0.7, 20_000)
    sketch = LatencySketch()
    sketch.add_many(latency)
    n, total, squares = sketch.log_moments()
    logs = np.log(latency)
    assert n == latency.size
    assert total / n == pytest.approx(logs.mean(), abs=0.01)  # within the bucket width
    assert squares / n - (total / n) ** 2 == pytest.approx(logs.var(), rel=0.01)
    for q in (0.5, 0.95, 0.99):
        threshold = sketch.quantile(q)
        assert threshold is not None
        # Values in the threshold's own bucket are not above it: the bucket ends at
        # threshold * (1 + gamma) / 2, gamma = 1.01 / 0.99 (1% relative accuracy).
        upper_edge = threshold * (1 + 1.01 / 0.99) / 2
        share = sketch.count_above(threshold) / n
        assert share == pytest.approx((latency > upper_edge).mean(), abs=1e-3)
        assert share == pytest.approx(1 - q, abs=0.02)
    assert LatencySketch().log_moments() == (0, 0.0, 0.0)
