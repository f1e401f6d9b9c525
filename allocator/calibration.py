"""Calibration: how many requests per second one block of each type sustains, per shard.

Each metrics window gives one measurement of the shard's total capacity through the
utilisation law. With ``S`` request slots held (blocks x slots per block), ``N`` completions and
busy time ``B`` in a window of ``W`` seconds, the utilisation is ``U = B / (W S)`` and the
service demand per completion per slot is ``D = B / N``, so the capacity of what was held is

    K = X / U = N S / B        (X = N / W, the throughput)

and ``K = sum_t n_t c_t`` for the ``n_t`` blocks of type ``t`` held, with ``c_t`` the unknown
capacity of one block. The per-type capacities are learned by Bayesian linear regression (a
Kalman filter on a constant state): a prior proportional to the block's CPU, correlated across
types so that what a shard shows on small blocks also moves its estimate for large ones; each
window's precision grows with its completions; old evidence fades slowly (stabilised
forgetting, so a shard that changes is followed, and confidence never exceeds what recent
windows support).

When the window has no busy time, ``B`` falls back to the latency sum (which includes
queueing, so it overstates ``B`` and errs on the safe side), then to Little's law,
``B = L W`` with ``L`` the mean number of requests in flight.

>>> from shardshape.allocator.blocks import BlockType
>>> small = BlockType(name="small", cpu_millicores=500, memory_mib=256, concurrency=4, cost=1)
>>> cal = Calibrator({"small": small}, rps_per_core=100)
>>> round(cal.estimate("shop", 1, "small").mean_rps, 1)  # prior: 0.5 cores x 100 rps/core
50.0
>>> for _ in range(20):  # each request holds a slot 20 ms: 4 slots / 0.02 s = 200 rps/block
...     _ = cal.observe(ShardWindow("shop", 1, window_s=10, completions=1000, busy_ms=20_000,
...                                 blocks={"small": 2}))
>>> est = cal.estimate("shop", 1, "small")
>>> round(est.mean_rps), est.confidence > 0.8
(200, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from shardshape.allocator.blocks import BlockType

ShardKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ShardWindow:
    """Metrics of one shard over one window, as the metrics agent aggregates them.

    Parameters
    ----------
    service, shard_id
        Which shard.
    window_s
        Length of the window in seconds.
    completions
        Requests completed in the window (errors included: they held a slot too).
    busy_ms
        Total time requests spent being served (not queued), summed over completions.
    latency_ms_sum
        Total response time of the completions; used when ``busy_ms`` is absent.
    mean_in_flight
        Mean number of requests in flight; used (Little's law) when both above are absent.
    blocks
        Blocks held during the window by type; a time-weighted mean when the plan changed
        within the window.
    """

    service: str
    shard_id: int
    window_s: float
    completions: int
    busy_ms: float | None = None
    latency_ms_sum: float | None = None
    mean_in_flight: float | None = None
    blocks: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CapacityEstimate:
    """What the calibration believes about one block type for one shard.

    ``mean_rps`` is the posterior mean of the throughput one block sustains at full
    utilisation; ``conservative_rps`` is ``mean - z sd`` (floored at a quarter of the mean),
    which the optimiser uses; ``confidence`` is ``1 - (sd / mean) / prior_relative_sd`` in
    [0, 1], 0 for a prior alone; ``completions`` counts the (faded) evidence behind it.
    """

    mean_rps: float
    sd_rps: float
    conservative_rps: float
    confidence: float
    completions: float


@dataclass
class _ShardState:
    mean: np.ndarray
    cov: np.ndarray
    prior_cov: np.ndarray
    evidence: float = 0.0


class Calibrator:
    """Per shard and block type, the sustainable requests/s of one block, learned online.

    Parameters
    ----------
    block_types
        Block types by name; a block's CPU in cores sets its size in the prior.
    rps_per_core
        Prior capacity of one core for a shard with no evidence and no calibrated siblings.
        Per service values go in ``service_priors``.
    prior_relative_sd
        Spread of the prior as a fraction of its mean.
    type_correlation
        Prior correlation of one shard's capacities across block types.
    forgetting
        Per window, the precision gained from evidence fades by this factor toward the prior's.
    service_cv
        Coefficient of variation of service times, which sets how noisy a window of ``N``
        completions is (relative sd ``cv / sqrt(N)``).
    z
        How many standard deviations ``conservative_rps`` stays below the mean.
    """

    def __init__(
        self,
        block_types: Mapping[str, BlockType],
        *,
        rps_per_core: float = 100.0,
        service_priors: Mapping[str, float] | None = None,
        prior_relative_sd: float = 0.5,
        type_correlation: float = 0.8,
        forgetting: float = 0.98,
        service_cv: float = 1.0,
        z: float = 1.0,
    ) -> None:
        if not block_types:
            raise ValueError("Calibrator needs at least one block type")
        if not 0 < forgetting <= 1:
            raise ValueError(f"forgetting={forgetting}: must be in (0, 1]; 1 never forgets")
        if not 0 <= type_correlation < 1:
            raise ValueError(f"type_correlation={type_correlation}: must be in [0, 1)")
        self.type_names = tuple(sorted(block_types))
        self._index = {name: i for i, name in enumerate(self.type_names)}
        self._cores = np.array([max(block_types[n].cores, 1e-3) for n in self.type_names])
        self._slots = np.array([block_types[n].concurrency for n in self.type_names], float)
        self.rps_per_core = rps_per_core
        self.service_priors = dict(service_priors or {})
        self.prior_relative_sd = prior_relative_sd
        self.type_correlation = type_correlation
        self.forgetting = forgetting
        self.service_cv = service_cv
        self.z = z
        self._shards: dict[ShardKey, _ShardState] = {}

    # ----------------------------------------------------------------------------------- learn

    def observe(self, window: ShardWindow) -> str | None:
        """Learn from one window. Returns ``None`` when used, else why it was skipped."""
        if window.completions <= 0 or window.window_s <= 0:
            return "no completions in the window: nothing to learn"
        n = np.zeros(len(self.type_names))
        for name, count in window.blocks.items():
            if name not in self._index:
                return f"unknown block type {name!r}; known: {', '.join(self.type_names)}"
            n[self._index[name]] = count
        if not np.all(np.isfinite(n)) or n.min() < 0 or n.sum() <= 0:
            return "no blocks held in the window: capacity cannot be attributed"
        busy_s = _busy_seconds(window)
        if busy_s is None:
            return "no busy_ms, latency_ms_sum or mean_in_flight: utilisation unknown"
        slots = float(n @ self._slots)
        implied = window.completions * slots / max(busy_s, 1e-9)  # K = N S / B
        state = self._state(window.service, window.shard_id)
        state.cov = self.forgetting * state.cov + (1 - self.forgetting) * state.prior_cov
        state.evidence *= self.forgetting
        predicted = max(float(n @ state.mean), 1e-9)
        # A window's relative sd is cv / sqrt(N); taking the larger of the prediction and the
        # measurement keeps one window from claiming certainty about a far-off prior.
        noise_var = (self.service_cv * max(predicted, implied)) ** 2 / window.completions
        gain_denominator = float(n @ state.cov @ n) + noise_var
        gain = state.cov @ n / gain_denominator
        residual = implied - predicted
        state.mean = np.maximum(state.mean + gain * residual, 1e-6)
        state.cov = state.cov - np.outer(gain, n @ state.cov)
        state.cov = (state.cov + state.cov.T) / 2
        state.evidence += window.completions
        return None

    def forget(self, service: str, shard_id: int) -> None:
        """Drop a shard that no longer exists."""
        self._shards.pop((service, shard_id), None)

    # ---------------------------------------------------------------------------------- answer

    def estimate(self, service: str, shard_id: int, block_type: str) -> CapacityEstimate:
        """The capacity of one block of ``block_type`` for a shard (the prior if unseen)."""
        if block_type not in self._index:
            known = ", ".join(self.type_names)
            raise KeyError(f"unknown block type {block_type!r}; known: {known}")
        state = self._shards.get((service, shard_id)) or self._new_state(service, shard_id)
        i = self._index[block_type]
        mean = float(state.mean[i])
        sd = math.sqrt(max(float(state.cov[i, i]), 0.0))
        return CapacityEstimate(
            mean_rps=mean,
            sd_rps=sd,
            conservative_rps=max(mean - self.z * sd, 0.25 * mean),
            confidence=min(max(1.0 - sd / mean / self.prior_relative_sd, 0.0), 1.0),
            completions=state.evidence,
        )

    def capacities(
        self, service: str, shard_id: int, block_types: tuple[str, ...] | None = None
    ) -> dict[str, float]:
        """Conservative per-block capacity by block type: what the optimiser should plan with."""
        names = block_types or self.type_names
        return {n: self.estimate(service, shard_id, n).conservative_rps for n in names}

    # -------------------------------------------------------------------------------- internal

    def _state(self, service: str, shard_id: int) -> _ShardState:
        key = (service, shard_id)
        if key not in self._shards:
            self._shards[key] = self._new_state(service, shard_id)
        return self._shards[key]

    def _new_state(self, service: str, shard_id: int) -> _ShardState:
        per_core = self._sibling_rps_per_core(service)
        if per_core is None:
            per_core = self.service_priors.get(service, self.rps_per_core)
        mean = per_core * self._cores
        sd = self.prior_relative_sd * mean
        rho = self.type_correlation
        cov = np.outer(sd, sd) * (rho + (1 - rho) * np.eye(len(sd)))
        return _ShardState(mean=mean.copy(), cov=cov.copy(), prior_cov=cov)

    def _sibling_rps_per_core(self, service: str) -> float | None:
        """Prior for a new shard: the evidence-weighted rps/core of its service's other shards."""
        total = weight = 0.0
        for (svc, _), state in self._shards.items():
            if svc == service and state.evidence > 0:
                total += state.evidence * float(np.mean(state.mean / self._cores))
                weight += state.evidence
        return total / weight if weight > 0 else None


def _busy_seconds(window: ShardWindow) -> float | None:
    if window.busy_ms is not None and window.busy_ms > 0:
        return window.busy_ms / 1000.0
    if window.latency_ms_sum is not None and window.latency_ms_sum > 0:
        return window.latency_ms_sum / 1000.0
    if window.mean_in_flight is not None and window.mean_in_flight > 0:
        return window.mean_in_flight * window.window_s
    return None
