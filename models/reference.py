"""An offline reference for the profiles: a gradient-boosted regressor of log latency.

``shardshape evaluate profiles --reference gbr`` fits scikit-learn's
``HistGradientBoostingRegressor`` once, on the training events, to the log latency from the
arrival information alone (request type, payload, the mapping's numeric and categorical
attributes, and the user, its 254 most frequent values as categories), then predicts the
scored events. Its eta2 is reported unbinned (the share of variance its predictions explain,
``1 - SSE / SST``) and cut into as many groups as there are shards (the training predictions'
quantiles as edges): what an offline model that knew the whole training part would give a
planner with the same number of groups. scikit-learn is not a dependency of the workers: it
comes with the ``dev`` and ``report`` extras.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from shardshape.core.contracts import RequestEvent

KINDS = ("gbr",)
_MAX_CATEGORIES = 254  # HistGradientBoostingRegressor takes at most 255 (one for "other")

Predict = Callable[[Sequence[RequestEvent]], np.ndarray]


def fit_reference(kind: str, train: Sequence[RequestEvent], seed: int = 0) -> Predict:
    """Fit the reference ``kind`` on ``train`` (events with a latency); returns a function
    predicting the log latency (ms) of events. Raises ValueError (unknown kind, too few
    events) or ImportError naming the extra to install."""
    if kind not in KINDS:
        raise ValueError(f"unknown reference {kind!r}; choose from {', '.join(KINDS)}")
    if len(train) < 20:
        raise ValueError(f"the reference needs at least 20 training events, got {len(train)}")
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor
    except ImportError:
        raise ImportError(
            "--reference gbr needs scikit-learn: pip install 'shardshape[report]' (or the dev "
            "extra)"
        ) from None
    encode = _Encoder(train)
    model = HistGradientBoostingRegressor(
        categorical_features=encode.categorical, random_state=seed
    )
    y = np.array([math.log(max(e.latency_ms or 0.0, 1e-3)) for e in train])
    model.fit(encode(train), y)
    return lambda events: model.predict(encode(events))


class _Encoder:
    """Arrival information as a dense matrix; categories coded by the training events."""

    def __init__(self, train: Sequence[RequestEvent]) -> None:
        numeric: set[str] = set()
        categorical: set[str] = set()
        for e in train:
            for name, value in e.attributes.items():
                is_number = isinstance(value, int | float) and not isinstance(value, bool)
                (numeric if is_number else categorical).add(name)
        self.numeric = sorted(numeric)
        self.columns = ["request_type", "user_id", *sorted(categorical - numeric)]
        self.codes = []
        for column in self.columns:
            counts: dict[str, int] = {}
            for e in train:
                value = str(_value(e, column))
                counts[value] = counts.get(value, 0) + 1
            top = sorted(counts, key=lambda v: (-counts[v], v))[:_MAX_CATEGORIES]
            self.codes.append({v: i for i, v in enumerate(top)})
        self.categorical = [True] * len(self.columns) + [False] * (1 + len(self.numeric))

    def __call__(self, events: Sequence[RequestEvent]) -> np.ndarray:
        x = np.full((len(events), len(self.categorical)), np.nan)
        for row, e in enumerate(events):
            for c, (column, codes) in enumerate(zip(self.columns, self.codes, strict=True)):
                x[row, c] = codes.get(str(_value(e, column)), _MAX_CATEGORIES)
            base = len(self.columns)
            x[row, base] = math.log1p(max(e.payload_bytes, 0.0))
            for k, name in enumerate(self.numeric, start=base + 1):
                value = e.attributes.get(name)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    x[row, k] = float(value)
        return x


def _value(event: RequestEvent, column: str) -> object:
    if column in ("request_type", "user_id"):
        return getattr(event, column)
    return event.attributes.get(column)


def cut_edges(train_predictions: np.ndarray, groups: int) -> np.ndarray:
    """Inner edges cutting predictions into ``groups`` groups of equal training frequency.

    >>> cut_edges(np.arange(8.0), 4).tolist()
    [1.75, 3.5, 5.25]
    """
    return np.quantile(train_predictions, np.linspace(0, 1, groups + 1)[1:-1])
