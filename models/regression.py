"""Expected behaviour at arrival: ridge least squares with exponential forgetting.

The regressor keeps decayed sufficient statistics ``X'X`` and ``X'Y`` (numpy, updated for a
whole batch at once) and re-solves the ridge system every ``solve_every`` events. Forgetting
(``halflife`` events) lets it follow drift; the closed-form solve has no learning rate to tune.
Targets are behaviour vectors, not shard labels, so reclustering never invalidates it.

>>> reg = BehaviourRegressor(n_features=2, n_targets=1, ridge=1e-6, solve_every=1)
>>> for x in range(5):
...     reg.learn_one({0: 1.0, 1: float(x)}, [3.0 + 2.0 * x])
>>> [round(v, 3) for v in reg.predict_one({0: 1.0, 1: 10.0})]
[23.0]
"""

from __future__ import annotations

import numpy as np


class BehaviourRegressor:
    """Multi-output linear model of behaviour on arrival features.

    Parameters
    ----------
    n_features
        Length of the arrival vector.
    n_targets
        Length of the behaviour vector.
    halflife
        Events after which an observation's weight halves.
    ridge
        L2 penalty, in units of effective observations.
    solve_every
        Events between two solves (the first solves come sooner, while data are scarce).
    """

    def __init__(
        self,
        n_features: int,
        n_targets: int,
        halflife: float = 4_000,
        ridge: float = 1.0,
        solve_every: int = 1_000,
    ) -> None:
        self.n_features = n_features
        self.n_targets = n_targets
        self.decay = 0.5 ** (1.0 / halflife)
        self.ridge = ridge
        self.solve_every = solve_every
        # X'X = _xtx * _scale: forgetting scales one number per batch, not the matrices
        # (a 135 x 135 multiply per batch was ~2% of a worker's time).
        self._xtx = np.zeros((n_features, n_features))
        self._xty = np.zeros((n_features, n_targets))
        self._scale = 1.0
        self.coef = np.zeros((n_features, n_targets))
        self.n_seen = 0
        self._since_solve = 0

    def learn_many(
        self, x: np.ndarray, y: np.ndarray, cols: np.ndarray | None = None, solve: bool = True
    ) -> bool:
        """Add rows of ``x`` (n, n_features) and ``y`` (n, n_targets); True when it re-solved.

        ``cols``: the columns of ``x`` that may be non-zero (the others are all zero), when
        known; the products then cost O(len(cols) ** 2) per row instead of O(n_features ** 2).
        ``solve=False`` only gathers the statistics (a federated worker: the merge solves).
        """
        n = len(x)
        if n == 0:
            return False
        # Decay once per batch: within a batch every row counts alike.
        self._scale *= self.decay**n
        if self._scale < 1e-150:
            self._fold()  # before the scale underflows
        weight = 1.0 / self._scale
        if cols is None:
            self._xtx += (x.T @ x) * weight
            self._xty += (x.T @ y) * weight
        else:
            part = x[:, cols]
            self._xtx[np.ix_(cols, cols)] += (part.T @ part) * weight
            self._xty[cols] += (part.T @ y) * weight
        self.n_seen += n
        self._since_solve += n
        # Solve often while young (every 50 events up to 2,000), then on the cadence.
        due = self.solve_every if self.n_seen > 2_000 else min(50, self.solve_every)
        if solve and self._since_solve >= due:
            self.solve()
            return True
        return False

    @property
    def xtx(self) -> np.ndarray:
        """Decayed ``X'X`` (a new array)."""
        return self._xtx * self._scale

    @xtx.setter
    def xtx(self, value: np.ndarray) -> None:
        self._fold()
        self._xtx = np.array(value, dtype=float)

    @property
    def xty(self) -> np.ndarray:
        """Decayed ``X'Y`` (a new array)."""
        return self._xty * self._scale

    @xty.setter
    def xty(self, value: np.ndarray) -> None:
        self._fold()
        self._xty = np.array(value, dtype=float)

    def _fold(self) -> None:
        self._xtx *= self._scale
        self._xty *= self._scale
        self._scale = 1.0

    def solve(self) -> None:
        """Re-solve ``(X'X + ridge I) coef = X'Y``."""
        a = self.xtx + self.ridge * np.eye(self.n_features)
        self.coef = np.linalg.solve(a, self.xty)
        self._since_solve = 0

    def predict_many(self, x: np.ndarray) -> np.ndarray:
        """Expected behaviour for rows of ``x``."""
        return x @ self.coef

    def learn_one(self, x: dict[int, float], y: list[float]) -> None:
        """River-style single update; ``x`` maps vector index to value."""
        self.learn_many(self._dense(x), np.asarray([y], dtype=float))

    def predict_one(self, x: dict[int, float]) -> list[float]:
        return self.predict_many(self._dense(x))[0].tolist()

    def _dense(self, x: dict[int, float]) -> np.ndarray:
        row = np.zeros((1, self.n_features))
        for i, v in x.items():
            row[0, i] += v
        return row
