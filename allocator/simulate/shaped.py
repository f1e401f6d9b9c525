"""``shardshape``: the full system, in-process, on the simulated service.

What runs is the project's own code, fed what the deployed parts would feed it:

* **at arrival** (the gateway): :meth:`shardshape.models.profiler.Profiler.process_many` on the
arriving
  requests without an outcome, which predicts each one's shard with the key routes and model
  as they stand (the same predictor the gateway's routing table builds from the snapshot);
  a request whose shard the plan in force gives blocks runs in that shard's queue, a request
  of a shard the plan does not know or gives no blocks runs in the default pool (the
  gateway's ``gateway_default_concurrency`` slots, here ``default_blocks`` blocks, always
  held);
* **on completion** (the reporter and the profile agent): the completed requests, with their
  response time (queueing included), status and response bytes, go through
  ``process_many`` again, which learns from them; the same events, with the service's
  ``busy_ms`` attribute, are aggregated with :func:`shardshape.core.metrics.aggregate` into
  per-shard window statistics;
* **per window** (the metrics agent and the planner): each closed window is one report to a
  :class:`shardshape.allocator.planning.PlanningLoop` (demand forecasts, calibration, the pool
  planner, the optimiser and plan building), whose plans set the blocks of every shard's queue;
* **per tick** (the snapshot on the routing topic and the gateway's queue report): the
  profiler's snapshot goes to
  :meth:`~shardshape.allocator.planning.PlanningLoop.note_snapshot`, which
  retires shards it no longer has; the requests waiting in every queue, counted by predicted
  shard, go to :meth:`~shardshape.allocator.planning.PlanningLoop.add_queued` as a
  :class:`~shardshape.core.contracts.QueueReport`, which the planner adds to their shards'
  demand.

Nothing here knows the scenario's profiles: shards are whatever the profiler learned.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import numpy as np
import orjson

from shardshape.allocator.lending import LendingPolicy
from shardshape.allocator.planning import PlanningLoop
from shardshape.allocator.pools_config import PoolsConfig
from shardshape.allocator.simulate.engine import Allocation, Completed, EngineView, QueueKey
from shardshape.allocator.simulate.workload import Workload
from shardshape.core.columns import EventColumns
from shardshape.core.contracts import BUSY_ATTRIBUTE, QueueReport, encode
from shardshape.core.metrics import ShardStats, aggregate
from shardshape.models.churn import ShardChurn
from shardshape.models.profiler import Profiler, ProfilerConfig

DEFAULT = "default"


class Shardshape:
    """The profiler, metrics windows and planning loop in front of per-shard queues.

    Parameters
    ----------
    workload
        The run's requests; only what a gateway and a reporter see is read.
    config
        Pools, the service and the planning policy (its ``target_utilisation`` is the knob).
    max_shards, window_s, horizon_s
        As the worker's settings ``max_shards``, ``plan_window`` and ``plan_horizon_s``.
    default_blocks
        Blocks of the default pool (the gateway's, for shards not in the plan yet).
    lending
        The gateway's lending rule (:mod:`shardshape.allocator.lending`): a request whose shard's
        slots are all busy borrows an idle slot of another shard or of the default pool (priority
        0), by the plan's priorities. ``None``: every queue takes only its own slots.
    """

    name = "shardshape"

    def __init__(
        self,
        workload: Workload,
        config: PoolsConfig,
        *,
        max_shards: int = 8,
        window_s: float = 60.0,
        horizon_s: float = 120.0,
        complete_after_s: float = 10.0,
        default_blocks: int = 4,
        seed: int = 0,
        lending: LendingPolicy | None = None,
    ) -> None:
        if workload.service not in config.services:
            raise KeyError(
                f"service {workload.service!r} is not in the pools config; add a "
                f"[services.{workload.service}] table"
            )
        self.w = workload
        self.service = workload.service
        self.window_s = window_s
        self.profiler = Profiler(self.service, ProfilerConfig(max_shards=max_shards, seed=seed))
        self.planning = PlanningLoop(config, window_s, horizon_s, complete_after_s)
        allowed = config.shard_settings(self.service, 0).block_types
        self.default_type = allowed[0]
        self.default_blocks = default_blocks
        self.lending = lending
        self._priority: dict[QueueKey, int] = {}
        self.planned: set[int] = set()
        self._blocks: dict[int, dict[str, int]] = {}
        self.predicted = np.full(len(workload), -1, dtype=np.int64)
        self._window_start = 0.0
        self._window: dict[str, ShardStats] = {}
        # Arrival columns, shared by every batch (strings and dicts are not copied).
        n = len(workload)
        self._types = [workload.type_names[t] for t in workload.request_type.tolist()]
        self._payload = workload.payload.tolist()
        self._ts = (workload.arrival + workload.epoch).tolist()
        self._services = [self.service] * n
        self._nones = [None] * n
        # Births and retirements of the profiler's shards over the scored period.
        self.churn = ShardChurn(from_ts=workload.score_from)
        self.extras: dict[str, object] = {"plans": [], "demand": [], "shard_churn": self.churn}

    def start(self, workload: Workload) -> Allocation:
        self._window_start = self._window_floor(workload.start)
        return {DEFAULT: {self.default_type: self.default_blocks}}

    def route(self, lo: int, hi: int, now: float) -> Sequence[QueueKey]:
        shards = self.shards_at_arrival(lo, hi)
        self.predicted[lo:hi] = shards
        planned = self.planned
        return [shard if shard in planned else DEFAULT for shard in shards]

    def shards_at_arrival(self, lo: int, hi: int) -> list[int]:
        """The shards of requests ``lo:hi`` as the gateway predicts them now."""
        return self.profiler.process_many(self._columns(lo, hi, None)).predicted

    def observe(self, done: Completed, now: float) -> None:
        rows = done.index
        w = self.w
        status = np.where(done.rejected, "rejected", np.where(w.error[rows], "error", "ok"))
        latency_ms = (done.latency_s * 1000.0).tolist()
        response = np.where(done.rejected, 0.0, w.response[rows]).tolist()
        columns = self._columns(rows, None, (latency_ms, status.tolist(), response))
        self.learn(columns)
        busy = (done.service_s * 1000.0).tolist()
        reported = dataclasses.replace(
            columns,
            attributes=[
                {**a, BUSY_ATTRIBUTE: b} for a, b in zip(columns.attributes, busy, strict=True)
            ],
        )
        self._record(reported, self.predicted[rows].tolist())

    def control(self, now: float, view: EngineView) -> Allocation | None:
        while now >= self._window_start + self.window_s:  # windows close on the clock
            self._close(self._window_start)
            self._window_start += self.window_s
        self.note_snapshot(now)
        self.planning.add_queued(self._queue_report(now, view))
        plans = self.planning.tick(now + self.w.epoch)
        change: dict[QueueKey, dict[str, int]] = {}
        for plan in plans:
            if plan.service != self.service:
                continue
            blocks = {spec.shard_id: dict(spec.blocks) for spec in plan.shards}
            for shard in self._blocks.keys() - blocks.keys():
                change[shard] = {}
            for shard, held in blocks.items():
                if held != self._blocks.get(shard):
                    change[shard] = held
            self._blocks = blocks
            self._priority = {spec.shard_id: spec.priority for spec in plan.shards}
            # A shard the plan gives no blocks runs in the default pool, as an unknown one.
            self.planned = {shard for shard, held in blocks.items() if sum(held.values())}
            self.extras["plans"].append(  # type: ignore[union-attr]
                (now, {s.shard_id: (s.forecast_rps, sum(s.blocks.values())) for s in plan.shards})
            )
        return change or None

    def priority(self, key: QueueKey) -> int:
        """A queue's priority for lending: its shard's in the plan, 0 for the default pool
        (as the gateway's default pool)."""
        return self._priority.get(key, 0)  # type: ignore[arg-type]

    def learn(self, columns: EventColumns) -> None:
        """The profile agent learns from completed requests."""
        self.profiler.process_many(columns)

    def note_snapshot(self, now: float) -> None:
        """The worker publishes the profiler's snapshot every few seconds; the planner drops
        the shards it no longer has."""
        snapshot = self.profiler.snapshot()
        self.churn.note(now, [p.shard_id for p in snapshot.shards if not p.quarantine])
        self.planning.note_snapshot(snapshot)

    # -- internals ------------------------------------------------------------------------
    def _columns(
        self,
        lo: int | np.ndarray,
        hi: int | None,
        outcome: tuple[list[float], list[str], list[float]] | None,
    ) -> EventColumns:
        w = self.w
        if hi is not None:
            rows: list[int] | range = range(lo, hi)  # type: ignore[arg-type]
            pick = slice(lo, hi)
            types, users = self._types[pick], w.user[pick]
            ts, payload, attrs = self._ts[pick], self._payload[pick], w.attributes[pick]
        else:
            rows = lo.tolist()  # type: ignore[union-attr]
            types = [self._types[i] for i in rows]
            users = [w.user[i] for i in rows]
            ts = [self._ts[i] for i in rows]
            payload = [self._payload[i] for i in rows]
            attrs = [w.attributes[i] for i in rows]
        n = len(rows)
        nones = self._nones[:n]
        latency, status, response = outcome or (nones, ["ok"] * n, nones)
        return EventColumns(
            range(n),
            ts,
            self._services[:n],
            types,
            users,
            payload,
            response,
            latency,  # type: ignore[arg-type]
            status,
            nones,
            nones,
            attrs,
        )

    def _queue_report(self, now: float, view: EngineView) -> bytes:
        """What the gateway reports: its waiting requests by the shard each was predicted to."""
        waiting = Counter(self.predicted[view.waiting()].tolist())
        return encode(QueueReport.counted("simulator", self.service, now + self.w.epoch, waiting))

    def _record(self, columns: EventColumns, shards: list[int]) -> None:
        """Fold completed events into the open metrics window."""
        for key, stats in aggregate(columns, shards).items():
            held = self._window.get(key)
            self._window[key] = held.merge(stats) if held is not None else stats

    def _window_floor(self, t: float) -> float:
        return float(np.floor(t / self.window_s) * self.window_s)

    def _close(self, start: float) -> None:
        series = self._window
        self._window = {}
        epoch = self.w.epoch
        self.planning.add_report(
            orjson.dumps(
                {
                    "worker": "simulator",
                    "start": start + epoch,
                    "end": start + self.window_s + epoch,
                    "series": {key: s.to_bytes().decode() for key, s in series.items()},
                    "replicas": {},
                }
            )
        )
        rates = {}
        for key, stats in series.items():
            shard = int(key.split("|")[1])
            rates[shard] = rates.get(shard, 0.0) + stats.count / self.window_s
        self.extras["demand"].append((start + self.window_s, rates))  # type: ignore[union-attr]
