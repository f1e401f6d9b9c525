"""Per-shard demand forecasts: river time-series models, chosen online, with an upper quantile.

A :class:`DemandForecaster` follows river's forecaster protocol (``learn_one(y)`` once per
bin, ``forecast(horizon)``) and adds :meth:`DemandForecaster.forecast_quantile`, so a plan can
provision for a high quantile of demand rather than its mean. ``y`` is a non-negative demand
per bin: a request count, or a rate.

Candidates, each scored by its own prequential one-step error:

* ``profile`` (:class:`SeasonalProfile`): an exponentially weighted mean per position in the
  season (hour of day) times a level ratio (actual over profile in the last half season). It
  anticipates the daily shape and follows growth and shrinkage through the ratio;
* ``holt_winters``: river's additive :class:`~river.time_series.HoltWinters` (level, trend,
  season) on the square root of demand (which steadies the variance of counts);
* ``snarimax``: river's :class:`~river.time_series.SNARIMAX` (one lag, two seasonal lags,
  standardised online linear regression), on the square root too;
* ``ewm`` (:class:`EWMean`): exponentially weighted mean, the robust fallback.

The forecast comes from the candidate with the lowest exponentially weighted absolute
one-step error (half-life a quarter season). Until a candidate has been scored on a few bins it
is not eligible; during a cold start the seasonal profile (which falls back to the overall mean
for positions not seen yet) forecasts.

>>> f = DemandForecaster(season_bins=4)
>>> for y in [0, 10, 20, 10] * 6 + [0, 20, 40, 20] * 2:  # demand doubles
...     f.learn_one(y)
>>> [round(v) for v in f.forecast(4)], f.selected
([0, 21, 42, 21], 'profile')
>>> all(u >= m for u, m in zip(f.forecast_quantile(4, 0.95), f.forecast(4)))
True
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from statistics import NormalDist

import numpy as np
from river import linear_model, preprocessing, time_series
from river.time_series.base import Forecaster

__all__ = [
    "DemandForecaster",
    "EWMean",
    "SeasonalProfile",
    "SqrtScaled",
    "default_candidates",
]


class SeasonalProfile(Forecaster):
    """Exponentially weighted mean per season position, times a recent level ratio.

    Forecast for position ``i``: ``ratio * profile[i]``, where ``profile[i]`` is the EW mean
    (weight ``alpha``) of the values seen at that position and ``ratio`` is the sum of the last
    ``level_window`` values over the sum of what the profile expected for them, shrunk towards
    1 by one bin's worth of average profile. A position not seen yet uses the mean of the seen
    ones. Zeros are fine: the ratio never divides by zero.

    Parameters
    ----------
    season_bins
        Bins in one season (24 for hourly bins and a daily season); 1 for no season.
    alpha
        Weight of a new value in its position's mean.
    level_window
        Bins in the level ratio; default half a season (at least 1).
    max_ratio
        Upper bound of the level ratio, so a burst after a silent stretch cannot multiply
        the whole profile without limit.

    Examples
    --------
    >>> m = SeasonalProfile(season_bins=3)
    >>> for y in [1, 5, 9] * 4 + [2, 10]:  # the level rises by half
    ...     m.learn_one(y)
    >>> [round(v, 1) for v in m.forecast(3)]
    [13.5, 1.9, 9.7]
    """

    def __init__(
        self,
        season_bins: int = 24,
        alpha: float = 0.3,
        level_window: int | None = None,
        max_ratio: float = 10.0,
    ) -> None:
        self.season_bins = max(int(season_bins), 1)
        self.alpha = alpha
        self.level_window = level_window
        self.max_ratio = max_ratio
        self._profile = np.zeros(self.season_bins)
        self._seen = np.zeros(self.season_bins, dtype=bool)
        window = level_window if level_window else max(self.season_bins // 2, 1)
        self._recent: deque[tuple[float, float]] = deque(maxlen=window)
        self._ratio = 1.0
        self._t = 0

    def _expected(self, i: int) -> float:
        if self._seen[i]:
            return float(self._profile[i])
        return float(self._profile[self._seen].mean()) if self._seen.any() else 0.0

    def learn_one(self, y: float, x: dict | None = None) -> None:
        i = self._t % self.season_bins
        if self._seen.any():
            self._recent.append((y, self._expected(i)))
            actual = sum(a for a, _ in self._recent)
            expected = sum(e for _, e in self._recent)
            prior = float(self._profile[self._seen].mean())
            ratio = (actual + prior) / (expected + prior) if expected + prior > 0 else 1.0
            self._ratio = min(ratio, self.max_ratio)
        if self._seen[i]:
            self._profile[i] += self.alpha * (y - self._profile[i])
        else:
            self._profile[i] = y
            self._seen[i] = True
        self._t += 1

    def forecast(self, horizon: int, xs: list[dict] | None = None) -> list[float]:
        return [
            self._ratio * self._expected((self._t + h) % self.season_bins) for h in range(horizon)
        ]


class EWMean(Forecaster):
    """Exponentially weighted mean: the same value for every step (0 before any data).

    >>> m = EWMean(alpha=0.5)
    >>> for y in [4, 0, 8]:
    ...     m.learn_one(y)
    >>> m.forecast(2)
    [5.0, 5.0]
    """

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self._mean: float | None = None

    def learn_one(self, y: float, x: dict | None = None) -> None:
        self._mean = float(y) if self._mean is None else self._mean + self.alpha * (y - self._mean)

    def forecast(self, horizon: int, xs: list[dict] | None = None) -> list[float]:
        return [self._mean or 0.0] * horizon


class SqrtScaled(Forecaster):
    """A river forecaster fitted to ``sqrt(y)``; forecasts are squared back, never negative.

    ``warmup`` is how many values the inner model needs before it can forecast (river's
    Holt-Winters raises before one season); until then the forecast is 0.

    >>> m = SqrtScaled(time_series.HoltWinters(alpha=0.5), warmup=2)
    >>> m.forecast(1)
    [0.0]
    >>> for y in [4, 4, 4]:
    ...     m.learn_one(y)
    >>> m.forecast(1)
    [4.0]
    """

    def __init__(self, model: Forecaster, warmup: int = 1) -> None:
        self.model = model
        self.warmup = warmup
        self._n = 0

    @property
    def ready(self) -> bool:
        return self._n >= self.warmup

    def learn_one(self, y: float, x: dict | None = None) -> None:
        self.model.learn_one(math.sqrt(max(y, 0.0)))
        self._n += 1

    def forecast(self, horizon: int, xs: list[dict] | None = None) -> list[float]:
        if not self.ready:
            return [0.0] * horizon
        return [max(float(v), 0.0) ** 2 for v in self.model.forecast(horizon)]


def default_candidates(season_bins: int) -> dict[str, Callable[[], Forecaster]]:
    """Factories of the default candidates for a season of ``season_bins`` (1: no season)."""
    m = max(int(season_bins), 1)
    seasonal = m >= 2

    def holt_winters() -> Forecaster:
        if seasonal:
            return SqrtScaled(time_series.HoltWinters(0.3, 0.01, 0.3, seasonality=m), warmup=m)
        return SqrtScaled(time_series.HoltWinters(0.3, 0.01), warmup=2)

    def snarimax() -> Forecaster:
        regressor = preprocessing.StandardScaler() | linear_model.LinearRegression()
        if seasonal:
            return SqrtScaled(time_series.SNARIMAX(1, 0, 0, m=m, sp=2, regressor=regressor), m)
        return SqrtScaled(time_series.SNARIMAX(2, 0, 0, regressor=regressor), warmup=2)

    return {
        "profile": lambda: SeasonalProfile(season_bins=m),
        "holt_winters": holt_winters,
        "snarimax": snarimax,
        "ewm": EWMean,
    }


class DemandForecaster(Forecaster):
    """Online choice among candidate forecasters by recent one-step error, with quantiles.

    Parameters
    ----------
    season_bins
        Bins in one season (e.g. 24 for hourly bins, daily season); ``None`` or 1: no season.
    selection_half_life
        Half-life, in bins, of the weighted absolute error that ranks the candidates; default
        a quarter season (at least 2 bins).
    residual_window
        How many recent residuals (per lead) the quantile is taken from.
    min_residuals
        Below this many residuals the quantile assumes Poisson-like noise with twice its
        standard deviation.
    leads
        Leads (steps ahead) whose residuals are measured: the forecasts made 1, 2, ...
        ``leads`` bins before a bin are each compared with what it brought.
    candidates
        Factories of the candidate models by name; default :func:`default_candidates`.

    Notes
    -----
    Residuals are normalised as ``(y - f) / sqrt(f + level)``, where ``f`` is the forecast
    and ``level`` the recent mean demand (for counts this is a Pearson residual with a floor,
    so quiet hours do not inherit the spread of busy ones). For step ``h`` of the horizon the
    ``q`` quantile ``z`` (at least 0) of the residuals of the forecasts made ``h`` bins ahead
    gives ``forecast + z * sqrt(forecast + level)``: the spread of each lead is measured, not
    assumed (a random walk's ``sqrt(h)`` growth would double-count the noise a level model
    already averages out). Beyond ``leads`` the last measured lead's spread grows like
    ``sqrt(h)``, on the safe side.

    Examples
    --------
    >>> f = DemandForecaster(season_bins=24)
    >>> f.forecast(2), f.forecast_quantile(2, 0.9)  # nothing seen yet
    ([0.0, 0.0], [0.0, 0.0])
    >>> f.learn_one(0.0)
    >>> f.forecast(1)
    [0.0]
    """

    def __init__(
        self,
        season_bins: int | None = 24,
        *,
        selection_half_life: float | None = None,
        residual_window: int = 168,
        min_residuals: int = 8,
        leads: int = 4,
        candidates: dict[str, Callable[[], Forecaster]] | None = None,
    ) -> None:
        self.season_bins = season_bins
        self.selection_half_life = selection_half_life
        self.residual_window = residual_window
        self.min_residuals = min_residuals
        self.candidates = candidates
        m = max(int(season_bins or 1), 1)
        factories = candidates if candidates is not None else default_candidates(m)
        self._models = {name: make() for name, make in factories.items()}
        half_life = selection_half_life if selection_half_life else max(m / 4, 2.0)
        self._decay = 1.0 - 0.5 ** (1.0 / half_life)
        # Eligible after a few scored bins, not a quarter season: with one-minute bins that
        # would leave a new shard's forecast to its first-season profile for six hours.
        self._min_scored = min(math.ceil(half_life), 24)
        self._error = dict.fromkeys(self._models, 0.0)
        self._scored = dict.fromkeys(self._models, 0)
        self.leads = max(int(leads), 1)
        # Per lead h (index h - 1): the normalised residuals of the forecasts made h bins ahead.
        self._residuals: list[deque[float]] = [
            deque(maxlen=residual_window) for _ in range(self.leads)
        ]
        # The forecasts made after each of the last ``leads`` bins, newest last.
        self._made: deque[list[float]] = deque(maxlen=self.leads)
        self._level = EWMean(alpha=1.0 / max(m, 2))
        self._n = 0
        self.selected = next(iter(self._models))

    @property
    def n_seen(self) -> int:
        """Bins learned so far."""
        return self._n

    @property
    def errors(self) -> dict[str, float]:
        """Weighted mean absolute one-step error of each candidate scored so far."""
        return {k: e for k, e in self._error.items() if self._scored[k]}

    def _choose(self) -> str:
        eligible = [k for k, n in self._scored.items() if n >= self._min_scored]
        if not eligible:
            return next(iter(self._models))
        return min(eligible, key=self._error.__getitem__)

    def learn_one(self, y: float, x: dict | None = None) -> None:
        """Learn the demand of the bin that just ended (negative values count as 0)."""
        y = float(y)
        if not math.isfinite(y):
            raise ValueError(f"demand must be finite, got {y!r}")
        y = max(y, 0.0)
        level = self._level.forecast(1)[0]
        for h, made in enumerate(reversed(self._made)):  # made h + 1 bins ago
            f = made[h]
            self._residuals[h].append((y - f) / (math.sqrt(f + level) or 1.0))
        if self._n:
            for name, model in self._models.items():
                if getattr(model, "ready", True):
                    f = max(float(model.forecast(1)[0]), 0.0)
                    e = abs(y - f)
                    n = self._scored[name]
                    # Bias-corrected weighted mean: the first errors count fully.
                    w = max(self._decay, 1.0 / (n + 1))
                    self._error[name] += w * (e - self._error[name])
                    self._scored[name] = n + 1
        for model in self._models.values():
            model.learn_one(y)
        self._level.learn_one(y)
        self._n += 1
        self.selected = self._choose()
        self._made.append(self.forecast(self.leads))

    def forecast(self, horizon: int, xs: list[dict] | None = None) -> list[float]:
        """Mean demand for each of the next ``horizon`` bins (0 before any data)."""
        if not self._n:
            return [0.0] * horizon
        values = self._models[self.selected].forecast(horizon)
        return [max(float(v), 0.0) for v in values]

    def forecast_quantile(self, horizon: int, q: float = 0.95) -> list[float]:
        """Upper ``q`` quantile of demand for each of the next ``horizon`` bins.

        Never below :meth:`forecast`; see the class notes for how it is formed.
        """
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must be in (0, 1), got {q!r}")
        mean = self.forecast(horizon)
        if not self._n:
            return mean
        spread = [self._lead_quantile(h, q) for h in range(min(horizon, self.leads))]
        for h in range(len(spread), horizon):  # beyond the measured leads
            spread.append(spread[self.leads - 1] * math.sqrt((h + 1) / self.leads))
        level = self._level.forecast(1)[0]
        return [f + z * math.sqrt(f + level) for f, z in zip(mean, spread, strict=True)]

    def _lead_quantile(self, h: int, q: float) -> float:
        """The ``q`` quantile (at least 0) of the residuals of lead ``h + 1``."""
        residuals = self._residuals[h]
        if len(residuals) < self.min_residuals:
            return 2.0 * NormalDist().inv_cdf(q) * math.sqrt(h + 1)
        return max(float(np.quantile(np.fromiter(residuals, float), q)), 0.0)
