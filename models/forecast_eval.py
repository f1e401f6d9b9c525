"""Prequential evaluation of demand forecasts: request count per bin, one step ahead.

Events are counted into bins aligned to multiples of ``bin_s`` since the Unix epoch (1 h bins
start on the hour, UTC), from the first event's bin to the last event's; bins without events
count 0, and so does every bin before the first. For each bin the forecaster predicts the
count from the bins before it, then learns the bin's count. Only bins starting at or after
``evaluate_after_ts`` are scored.

MASE here is the model's mean absolute error divided by a baseline's mean absolute error over
the same evaluated bins (below 1: better than the baseline):

* seasonal naive: the count one season earlier (default one day, ``86400 / bin_s`` bins);
* last value: the count of the previous bin.

>>> from shardshape.core.contracts import RequestEvent
>>> events = [
...     RequestEvent(request_id=f"r{i}", ts=3600.0 * h + i, service="s", request_type="t")
...     for h in range(24 * 4)
...     for i in range(10 if h % 24 >= 12 else 1)
... ]
>>> bin_counts(events, 3600.0)[0][10:14].tolist()
[1.0, 1.0, 10.0, 10.0]
>>> r = evaluate_forecast(events, evaluate_after_ts=3 * 86400, bin_s=3600)
>>> r["bins"], r["mae"] < r["mae_last_value"]
(24, True)
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable

import numpy as np

from shardshape.core.contracts import RequestEvent
from shardshape.models.forecast import DemandForecaster

DAY_S = 86_400.0
_UNIT_S = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3_600.0, "d": DAY_S}


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"15min"``, ``"1h"`` or ``"1d"``.

    >>> parse_duration("1h"), parse_duration("15m"), parse_duration("90")
    (3600.0, 900.0, 90.0)
    """
    value = text.strip().lower()
    unit = value.lstrip("0123456789.")
    try:
        seconds = float(value[: len(value) - len(unit)]) * _UNIT_S[unit or "s"]
    except (KeyError, ValueError):
        raise ValueError(f"{text!r}: expected a duration such as 30m, 1h or 3600") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{text!r}: a duration must be positive")
    return seconds


def bin_counts(events: Iterable[RequestEvent], bin_s: float) -> tuple[np.ndarray, float]:
    """Request count per ``bin_s`` bin (epoch-aligned) and the start time of the first bin."""
    if not bin_s > 0:
        raise ValueError(f"bin_s must be positive, got {bin_s!r}")
    index = np.array([math.floor(e.ts / bin_s) for e in events], dtype=np.int64)
    if not index.size:
        return np.zeros(0), 0.0
    first = int(index.min())
    return np.bincount(index - first).astype(float), first * bin_s


def default_season_bins(bin_s: float) -> int:
    """Bins in one day, or 1 (no season) when a day is not a whole number (>= 2) of bins."""
    bins = DAY_S / bin_s
    return round(bins) if bins >= 2 and abs(bins - round(bins)) < 1e-9 else 1


def evaluate_forecast(
    events: Iterable[RequestEvent],
    evaluate_after_ts: float,
    bin_s: float,
    season_bins: int | None = None,
    quantile: float = 0.95,
    forecaster: DemandForecaster | None = None,
) -> dict:
    """Forecast each bin's request count one step ahead, prequentially, and score later bins.

    Parameters
    ----------
    events
        Request events (any order; only ``ts`` is used).
    evaluate_after_ts
        Bins starting at or after this time (epoch seconds) are scored.
    bin_s
        Bin width in seconds.
    season_bins
        Season of the forecaster and of the seasonal-naive baseline; default one day.
    quantile
        Quantile whose coverage (share of evaluated bins at or below it) is reported.
    forecaster
        A fresh forecaster to evaluate; default ``DemandForecaster(season_bins)``.

    Returns
    -------
    dict
        ``model`` (forecaster class), ``bins`` (evaluated bins), ``bins_total``, ``bin_s``,
        ``season_bins``, ``events``, ``evaluated_from`` (start of the first evaluated bin),
        ``mae``, ``mae_seasonal_naive``, ``mae_last_value``, ``mase_vs_seasonal_naive``,
        ``mase_vs_last_value`` (``None`` when a baseline's error is 0), ``quantile``,
        ``coverage`` (share of evaluated bins whose count is at or below the quantile
        forecast), ``pinball_loss`` (of the quantile forecast), ``mean_count``,
        ``mean_forecast``, ``mean_upper`` (mean quantile forecast), ``selected`` (evaluated
        bins per candidate that made the forecast), ``seconds`` and ``us_per_bin`` (forecast
        plus learn).
    """
    started = time.perf_counter()
    events = list(events)
    counts, first_ts = bin_counts(events, bin_s)
    m = season_bins if season_bins else default_season_bins(bin_s)
    forecaster = forecaster if forecaster is not None else DemandForecaster(season_bins=m)
    n = counts.size
    mean = np.zeros(n)
    upper = np.zeros(n)
    chosen: list[str] = []
    for t in range(n):
        mean[t] = forecaster.forecast(1)[0]
        upper[t] = forecaster.forecast_quantile(1, quantile)[0]
        chosen.append(forecaster.selected)
        forecaster.learn_one(counts[t])
    learn_s = time.perf_counter() - started
    padded = np.concatenate([np.zeros(m), counts])
    seasonal = padded[:n]
    last = padded[m - 1 : m - 1 + n]
    starts = first_ts + bin_s * np.arange(n)
    scored = starts >= evaluate_after_ts
    y = counts[scored]

    def mae(pred: np.ndarray) -> float | None:
        return float(np.abs(pred[scored] - y).mean()) if y.size else None

    model_mae, sn_mae, lv_mae = mae(mean), mae(seasonal), mae(last)

    def mase(base: float | None) -> float | None:
        return model_mae / base if model_mae is not None and base else None

    return {
        "model": type(forecaster).__name__,
        "bins": int(scored.sum()),
        "bins_total": int(n),
        "bin_s": float(bin_s),
        "season_bins": int(m),
        "events": len(events),
        "evaluated_from": float(starts[scored][0]) if y.size else None,
        "mae": model_mae,
        "mae_seasonal_naive": sn_mae,
        "mae_last_value": lv_mae,
        "mase_vs_seasonal_naive": mase(sn_mae),
        "mase_vs_last_value": mase(lv_mae),
        "quantile": quantile,
        "coverage": float((y <= upper[scored]).mean()) if y.size else None,
        "pinball_loss": _pinball(y, upper[scored], quantile) if y.size else None,
        "mean_count": float(y.mean()) if y.size else None,
        "mean_forecast": float(mean[scored].mean()) if y.size else None,
        "mean_upper": float(upper[scored].mean()) if y.size else None,
        "selected": dict(Counter(c for c, s in zip(chosen, scored, strict=True) if s)),
        "seconds": time.perf_counter() - started,
        "us_per_bin": 1e6 * learn_s / max(n, 1),
    }


def _pinball(y: np.ndarray, upper: np.ndarray, q: float) -> float:
    diff = y - upper
    return float(np.maximum(q * diff, (q - 1) * diff).mean())
