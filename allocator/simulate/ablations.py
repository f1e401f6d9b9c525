"""Ablations of ``shardshape``: which of its inputs costs what against the oracle.

The oracle differs from ``shardshape`` in two inputs, the profiles (which queue a request
joins) and the demand (what a plan provisions for); each ablation gives ``shardshape`` one of
them and keeps the rest of its own:

* ``true-profiles``: requests routed by their true class, as the oracle routes them, with
  ``shardshape``'s own planning loop (forecasts, calibration, queue reports, planner);
* ``perfect-forecast``: ``shardshape``'s own profiles (the profiler predicts every request's
  shard at arrival and learns as in production), but each plan provisions the demand that will
  actually arrive in the horizon, as the oracle's does: the highest rate of the next windows of
  the requests that the current model routes to each shard.

So the gap from ``shardshape`` to ``true-profiles`` is what profiling costs, and to
``perfect-forecast`` what forecasting costs.
"""

from __future__ import annotations

import numpy as np

from shardshape.allocator.calibration import ShardKey
from shardshape.allocator.planning import PlanningLoop
from shardshape.allocator.pools_config import PoolsConfig
from shardshape.allocator.simulate.engine import Allocation, EngineView
from shardshape.allocator.simulate.oracle import horizon_edges, peak_rate, true_shards
from shardshape.allocator.simulate.shaped import Shardshape
from shardshape.allocator.simulate.workload import Workload
from shardshape.core.columns import EventColumns
from shardshape.models.forecast import DemandForecaster


class TrueProfiles(Shardshape):
    """``shardshape`` routing every request by its true class (see the module notes)."""

    name = "true-profiles"

    def __init__(self, workload: Workload, config: PoolsConfig, **kwargs: object) -> None:
        super().__init__(workload, config, **kwargs)  # type: ignore[arg-type]
        self._true = true_shards(workload, self.profiler.quarantine_shard).tolist()

    def shards_at_arrival(self, lo: int, hi: int) -> list[int]:
        return self._true[lo:hi]

    def learn(self, columns: EventColumns) -> None:
        """No profiler: the classes are given."""

    def note_snapshot(self, now: float) -> None:
        """The true classes never retire."""


class ForesightPlanning(PlanningLoop):
    """A :class:`PlanningLoop` whose plans provision ``foresight`` (requests/s per shard)
    instead of the forecasts; everything else (calibration, queue reports, the planner) as
    the real loop's."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.foresight: dict[ShardKey, float] = {}

    def demand(self, key: ShardKey, forecaster: DemandForecaster) -> tuple[float, float]:
        rate = self.foresight.get(key, 0.0)
        return rate, rate


class PerfectForecast(Shardshape):
    """``shardshape`` planning on the demand its own shards will see (see the module notes)."""

    name = "perfect-forecast"

    def __init__(self, workload: Workload, config: PoolsConfig, **kwargs: object) -> None:
        super().__init__(workload, config, **kwargs)  # type: ignore[arg-type]
        real = self.planning
        self.planning = ForesightPlanning(
            config,
            real.window_s,
            real.horizon_bins * real.window_s,
            real.complete_after_s,
        )
        self._horizon_s = real.horizon_bins * real.window_s

    def control(self, now: float, view: EngineView) -> Allocation | None:
        self.planning.foresight = self._foresight(now)  # type: ignore[attr-defined]
        return super().control(now, view)

    def _foresight(self, now: float) -> dict[ShardKey, float]:
        """Per shard, the highest rate of the next windows of the requests arriving in the
        horizon, each routed as the current model routes it."""
        arrival = self.w.arrival
        edges = horizon_edges(now, self._horizon_s, self.window_s)
        lo, hi = np.searchsorted(arrival, [edges[0], edges[-1]]).tolist()
        if hi <= lo:
            return {}
        shards = np.asarray(self.profiler.predict_many(self._columns(lo, hi, None)))
        times = arrival[lo:hi]
        return {
            (self.service, int(s)): peak_rate(times[shards == s], edges)
            for s in np.unique(shards).tolist()
        }
