"""``oracle``: the planner with perfect information, the upper bound for ``shardshape``.

It routes every request by its true class (the scenario's profile; for a trace, its service
time class known in hindsight), with an anomalous profile in the quarantine shard, and at
every planning window asks the same :class:`~shardshape.allocator.planner.PoolPlanner` (same policy,
smoothing and optimiser) for blocks, given for each class:

* the demand it will actually see: the highest arrival rate of the next ``horizon_s``, in
  windows of ``window_s`` (perfect foresight instead of a forecast quantile);
* the capacity one block truly has for it: slots over the mean service time of its requests
  in that horizon (instead of a calibrated estimate).

Only the information differs from ``shardshape``; the decision code is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shardshape.allocator.lending import LendingPolicy
from shardshape.allocator.optimiser import ShardDemand
from shardshape.allocator.planner import PoolPlanner
from shardshape.allocator.pools_config import PoolsConfig
from shardshape.allocator.simulate.engine import Allocation, Completed, EngineView, QueueKey
from shardshape.allocator.simulate.workload import Workload


class Oracle:
    """Per-class queues planned from the future (see the module notes).

    Parameters
    ----------
    workload
        The run's requests, with their true classes (``workload.truth``).
    config
        Pools, the service and the planning policy (its ``target_utilisation`` is the knob).
    quarantine_shard
        Shard id of anomalous profiles (its settings in ``config`` apply to them).
    lending
        The gateway's lending rule between the class queues, as for ``shardshape``.
    """

    name = "oracle"

    def __init__(
        self,
        workload: Workload,
        config: PoolsConfig,
        *,
        quarantine_shard: int = 8,
        window_s: float = 60.0,
        horizon_s: float = 120.0,
        lending: LendingPolicy | None = None,
    ) -> None:
        self.w = workload
        self.lending = lending
        self._priority: dict[int, int] = {}
        self.config = config
        self.window_s = window_s
        self.horizon_s = horizon_s
        truth, names, anomalous = workload.truth()
        self.shard_of_class = _shard_ids(len(names), anomalous, quarantine_shard)
        self._shards = self.shard_of_class[truth]
        service = config.services[workload.service]
        self.planner = PoolPlanner.from_config(config, service.pool)
        self.types = config.shard_settings(workload.service, 0).block_types
        self._columns = [workload.type_index(t) for t in self.types]
        self._slots = [workload.block_types[c].concurrency for c in self._columns]
        # Per class: arrival times and cumulative service times per block type, to answer
        # "how many arrive in [a, b) and how long do they take" in O(log n).
        self._arrivals = []
        self._cum_service = []
        for c in range(len(names)):
            rows = np.flatnonzero(truth == c)
            self._arrivals.append(workload.arrival[rows])
            cum = np.zeros((len(rows) + 1, len(self._columns)))
            cum[1:] = np.cumsum(workload.service_s[np.ix_(rows, self._columns)], axis=0)
            self._cum_service.append(cum)
        self._next_plan = workload.start
        self.extras: dict[str, object] = {"plans": []}

    def start(self, workload: Workload) -> Allocation:
        return self._plan(workload.start) or {}

    def route(self, lo: int, hi: int, now: float) -> Sequence[QueueKey]:
        return self._shards[lo:hi].tolist()

    def observe(self, done: Completed, now: float) -> None:
        pass

    def control(self, now: float, view: EngineView) -> Allocation | None:
        if now + 1e-9 < self._next_plan:
            return None
        return self._plan(now)

    def priority(self, key: QueueKey) -> int:
        """A class queue's priority for lending: its shard's in the pools config."""
        shard = int(key)  # type: ignore[call-overload]
        if shard not in self._priority:
            self._priority[shard] = self.config.shard_settings(self.w.service, shard).priority
        return self._priority[shard]

    def _plan(self, now: float) -> Allocation | None:
        self._next_plan = now + self.window_s
        demands = []
        for c, shard in enumerate(self.shard_of_class.tolist()):
            rate, capacity = self._foresight(c, now)
            settings = self.config.shard_settings(self.w.service, shard)
            demands.append(
                ShardDemand(
                    service=self.w.service,
                    shard_id=shard,
                    demand_rps=rate,
                    capacity_rps=capacity,
                    priority=settings.priority,
                    min_blocks=settings.min_blocks,
                    target_utilisation=settings.target_utilisation,
                    slo_p99_ms=settings.slo_p99_ms,
                )
            )
        step = self.planner.plan(demands, now=now)
        if not step.replanned:
            return None
        plan = {key[1]: dict(a.blocks) for key, a in step.allocation.shards.items()}
        self.extras["plans"].append(  # type: ignore[union-attr]
            (now, {d.shard_id: (d.demand_rps, sum(plan[d.shard_id].values())) for d in demands})
        )
        return plan

    def _foresight(self, c: int, now: float) -> tuple[float, dict[str, float]]:
        times, cum = self._arrivals[c], self._cum_service[c]
        edges = horizon_edges(now, self.horizon_s, self.window_s)
        at = np.searchsorted(times, edges)
        rate = peak_rate(times, edges)
        lo, hi = int(at[0]), int(at[-1])
        if hi == lo:  # nobody comes: size by the class's overall mean
            lo, hi = 0, len(times)
        mean = (cum[hi] - cum[lo]) / max(hi - lo, 1)
        capacity = {
            t: (slots / m if m > 0 else 1e9)
            for t, slots, m in zip(self.types, self._slots, mean.tolist(), strict=True)
        }
        return rate, capacity


def horizon_edges(now: float, horizon_s: float, window_s: float) -> np.ndarray:
    """Window edges from ``now`` over ``horizon_s`` (the last window may be shorter).

    >>> horizon_edges(0.0, 150.0, 60.0).tolist()
    [0.0, 60.0, 120.0, 150.0]
    """
    edges = now + np.arange(0.0, horizon_s + 1e-9, window_s)
    if edges[-1] < now + horizon_s:
        edges = np.append(edges, now + horizon_s)
    return edges


def peak_rate(times: np.ndarray, edges: np.ndarray) -> float:
    """The highest arrival rate (per second) of sorted ``times`` in the windows ``edges``.

    >>> peak_rate(np.array([1.0, 2.0, 70.0]), np.array([0.0, 60.0, 120.0]))
    0.03333333333333333
    """
    if len(edges) < 2:
        return 0.0
    at = np.searchsorted(times, edges)
    return float(np.max(np.diff(at) / np.diff(edges)))


def true_shards(workload: Workload, quarantine_shard: int) -> np.ndarray:
    """Each request's shard by its true class (the oracle's routing)."""
    truth, names, anomalous = workload.truth()
    return _shard_ids(len(names), anomalous, quarantine_shard)[truth]


def _shard_ids(n: int, anomalous: np.ndarray, quarantine_shard: int) -> np.ndarray:
    """Shard id per class: 0, 1, ... for normal classes, the quarantine id for anomalous ones.

    >>> _shard_ids(4, np.array([False, False, True, False]), 8).tolist()
    [0, 1, 8, 2]
    """
    ids = np.empty(n, dtype=np.int64)
    normal = 0
    for c in range(n):
        if anomalous[c]:
            ids[c] = quarantine_shard
        else:
            ids[c] = normal
            normal += 1
    return ids
