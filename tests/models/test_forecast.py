"""Demand forecasts: growth and shrinkage, quantiles, zeros, cold start, and the GenAI trace.

Protocol for the trace: request count per 1 h bin (epoch-aligned), one-step-ahead forecasts
made prequentially from 2024-11-15 on, scored on bins starting at or after 2024-11-22 23:39:26
UTC; MASE = model MAE / baseline MAE over those bins (see docs/forecasting.md).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from shardshape.core.contracts import RequestEvent
from shardshape.core.trace import TraceReport, load_mapping, read_trace
from shardshape.models.forecast import DemandForecaster, EWMean, SeasonalProfile
from shardshape.models.forecast_eval import bin_counts, evaluate_forecast, parse_duration
from tests.support.trace import GENAI_MAPPING, GENAI_TRACE, needs_genai_trace

TRACE, MAPPING = GENAI_TRACE, GENAI_MAPPING
SEASON = 24


def _shape(t: np.ndarray) -> np.ndarray:
    """Daily shape: quiet nights, a busy evening."""
    return 1.0 + np.sin(2 * math.pi * (t % SEASON) / SEASON - math.pi / 2)


def _series(days: int, slope: float, seed: int = 0) -> np.ndarray:
    t = np.arange(days * SEASON)
    level = np.maximum(100.0 + slope * t, 1.0)
    return np.random.default_rng(seed).poisson(level * _shape(t)).astype(float)


def _fitted(values: np.ndarray, season: int | None = SEASON) -> DemandForecaster:
    f = DemandForecaster(season_bins=season)
    for y in values:
        f.learn_one(y)
    return f


@pytest.mark.parametrize("slope", [0.4, -0.3])
def test_anticipates_growth_and_shrinkage(slope: float) -> None:
    days = 10
    f = _fitted(_series(days, slope))
    forecast = np.array(f.forecast(SEASON))
    t_next = np.arange(days * SEASON, (days + 1) * SEASON)
    truth = np.maximum(100.0 + slope * t_next, 1.0) * _shape(t_next)
    last_day = _series(days, slope)[-SEASON:]
    # Beyond the last day's level, in the direction of the trend ...
    assert (forecast.sum() - last_day.sum()) * slope > 0
    # ... and closer to the expected next day than repeating the last one.
    assert np.abs(forecast - truth).mean() < np.abs(last_day - truth).mean()
    # The daily shape is kept: the evening peak is forecast above the night.
    assert forecast[SEASON // 2] > 3 * forecast[0] + 1


def test_quantile_is_upper_and_widens_with_horizon() -> None:
    f = _fitted(_series(6, 0.0, seed=1))
    mean = f.forecast(48)
    for q in (0.5, 0.9, 0.99):
        upper = f.forecast_quantile(48, q)
        assert all(u >= m for u, m in zip(upper, mean, strict=True))
    lo, hi = f.forecast_quantile(48, 0.8), f.forecast_quantile(48, 0.99)
    assert all(b >= a for a, b in zip(lo, hi, strict=True))
    gaps = [u - m for u, m in zip(hi, mean, strict=True)]
    assert gaps[SEASON] > gaps[0]  # same time of day, one season further: wider
    with pytest.raises(ValueError):
        f.forecast_quantile(1, 1.0)


def test_each_leads_spread_is_measured_not_assumed_to_grow() -> None:
    # Steady Poisson demand: the forecast two bins ahead is as good as one bin ahead, so
    # its band must not be sqrt(2) wider (a random walk's growth, on top of the max over
    # the horizon that a plan takes, stacked a second margin).
    rng = np.random.default_rng(4)
    f = _fitted(rng.poisson(200.0, 600).astype(float), season=1_440)
    mean = f.forecast(2)
    gaps = [u - m for u, m in zip(f.forecast_quantile(2, 0.9), mean, strict=True)]
    assert 0 < gaps[1] < 1.2 * gaps[0]
    # Coverage of the 0.9 quantile of the next bins, made ahead as a plan would use them.
    covered = []
    for y in rng.poisson(200.0, 300).astype(float):
        covered.append(y <= f.forecast_quantile(2, 0.9)[0])
        f.learn_one(y)
    assert 0.85 <= np.mean(covered) <= 0.97


def test_a_new_series_forecasts_from_its_best_candidate_within_minutes() -> None:
    # One-minute bins (a day is 1,440): the level model must be chosen once it is clearly
    # better, not after a quarter season of the first-season profile.
    f = DemandForecaster(season_bins=1_440)
    for y in [1.0] * 30 + [10.0] * 40:  # a step up, as a new shard's demand settles
        f.learn_one(y)
    assert f.forecast(1)[0] == pytest.approx(10.0, rel=0.05)


def test_zeros_sparse_bursts_and_cold_start() -> None:
    f = DemandForecaster(season_bins=SEASON)
    assert f.forecast(3) == [0.0, 0.0, 0.0]
    assert f.forecast_quantile(3, 0.95) == [0.0, 0.0, 0.0]
    f.learn_one(12)
    assert f.forecast(2) == pytest.approx([12.0, 12.0])  # one bin: the best guess is that bin
    assert f.forecast_quantile(1, 0.95)[0] > 12.0
    for _ in range(200):
        f.learn_one(0)
    assert f.forecast(SEASON) == pytest.approx([0.0] * SEASON, abs=1e-6)
    rng = np.random.default_rng(2)
    for y in rng.choice([0.0, 0.0, 0.0, 0.0, 50.0], size=300):
        f.learn_one(y)
        values = f.forecast(SEASON) + f.forecast_quantile(SEASON, 0.99)
        assert all(math.isfinite(v) and v >= 0 for v in values)
    f.learn_one(-3)  # negative demand counts as none
    with pytest.raises(ValueError):
        f.learn_one(float("nan"))


@pytest.mark.parametrize("season", [None, 1, 7])
def test_other_seasons(season: int | None) -> None:
    f = _fitted(_series(4, 0.1), season=season)
    assert len(f.forecast(5)) == 5
    assert all(v >= 0 for v in f.forecast_quantile(5, 0.9))


def test_parts() -> None:
    m = SeasonalProfile(season_bins=2)
    for y in [0, 10] * 5:
        m.learn_one(y)
    assert m.forecast(2) == pytest.approx([0.0, 10.0], abs=1e-3)
    e = EWMean(alpha=1.0)
    e.learn_one(3)
    assert e.forecast(1) == [3.0]


def _events(hour_counts: list[int]) -> list[RequestEvent]:
    return [
        RequestEvent(
            request_id=f"r{h}-{i}", ts=3600.0 * (1000 + h) + i, service="s", request_type="t"
        )
        for h, n in enumerate(hour_counts)
        for i in range(n)
    ]


def test_evaluate_forecast_definitions() -> None:
    counts = [1, 2, 0, 4, 1, 2, 0, 4]
    events = _events(counts)
    binned, first = bin_counts(events, 3600)
    assert binned.tolist() == counts and first == 3600.0 * 1000
    r = evaluate_forecast(events, evaluate_after_ts=3600.0 * 1004, bin_s=3600, season_bins=4)
    assert r["bins"] == 4 and r["bins_total"] == 8 and r["season_bins"] == 4
    assert r["mae_last_value"] == pytest.approx(2.5)  # (|1-4| + |2-1| + |0-2| + |4-0|) / 4
    assert r["mae_seasonal_naive"] == pytest.approx(0.0)
    assert r["mase_vs_seasonal_naive"] is None  # a perfect baseline: MASE undefined
    assert r["mase_vs_last_value"] == pytest.approx(r["mae"] / 2.5)
    assert set(r["selected"]) <= {"profile", "holt_winters", "snarimax", "ewm"}


def test_parse_duration() -> None:
    assert parse_duration("1h") == 3600.0 and parse_duration("30m") == 1800.0
    for bad in ("", "h", "0", "-1h", "1x"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@needs_genai_trace
def test_genai_trace_beats_both_naive_baselines() -> None:
    report = TraceReport()
    events = list(read_trace(TRACE, load_mapping(MAPPING), report))
    assert report.events == 9_930
    after = datetime(2024, 11, 22, 23, 39, 26, tzinfo=UTC).timestamp()
    result = evaluate_forecast(events, after, bin_s=3600)
    assert result["bins"] == 96 and result["season_bins"] == 24
    assert result["mase_vs_seasonal_naive"] < 1.0
    assert result["mase_vs_last_value"] < 1.0
    assert result["coverage"] >= 0.9  # the 95% quantile covers most evaluated hours
