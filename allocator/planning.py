"""Planning in the workers: closed metric windows out of every worker, plans out of one.

- :class:`WindowReporter` (every worker) turns each closed window of its metrics table into one
  report: the worker's merged :class:`~shardshape.core.metrics.ShardStats` per (service, shard,
  arm).
- :class:`PlanningLoop` runs on whichever worker owns the one-partition reports topic: it adds
  up the reports of all workers per window, and for every complete window feeds each shard's
  demand forecaster (requests/s per window) and the throughput calibration, then asks each
  pool's :class:`~shardshape.allocator.planner.PoolPlanner` for an allocation and turns it into one
  versioned :class:`~shardshape.core.contracts.AllocationPlan` per service. Its
  :class:`~shardshape.allocator.experiments.ExperimentManager` reads the same windows per arm,
  decides and proposes experiments, and amends every plan with them and with what they promoted.
  The gateways' :class:`~shardshape.core.contracts.QueueReport` messages on the same topic add
  the requests waiting in their queues to the shards' demand, and while any wait, the loop plans
  every ``[planning] queue_replan_s``, not only when a window closes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

import orjson

from shardshape.allocator.calibration import ShardKey, ShardWindow
from shardshape.allocator.experiments import ExperimentManager, ExperimentPolicy
from shardshape.allocator.plan import build_plan
from shardshape.allocator.planner import PoolPlanner, calibrator_for, shard_demands
from shardshape.allocator.pools_config import PoolsConfig
from shardshape.allocator.sequential import TestDesign
from shardshape.core.contracts import (
    AllocationPlan,
    ContractError,
    QueueReport,
    ShardSnapshot,
    decode,
)
from shardshape.core.metrics import ShardStats, merged_series, split_metric_key
from shardshape.models.forecast import DemandForecaster

if TYPE_CHECKING:
    from shardshape.core.settings import ExperimentSettings

log = logging.getLogger("shardshape.planning")

# A gateway's queue report older than this counts for nothing (the gateway stopped, or lost
# Kafka): a stale backlog would hold blocks for demand that has long been served or dropped.
QUEUE_REPORT_TTL_S = 30.0
# The longest a gateway waits between two queue reports (SHARDSHAPE_REPORTER_QUEUE_INTERVAL_MS
# is at most 10,000): part of how long a waiting request waits for the blocks it brings.
QUEUE_REPORT_MAX_S = 10.0


def experiment_policy(settings: ExperimentSettings) -> ExperimentPolicy:
    """The planner's :class:`ExperimentPolicy` from the ``experiments_*`` settings; what they
    leave out keeps the policy's defaults.

    >>> from shardshape.core.settings import Settings
    >>> policy = experiment_policy(Settings(experiments_trigger_windows=1))
    >>> policy.trigger_windows, policy.budget, policy.design.min_requests
    (1, 0.2, 200)
    """
    return ExperimentPolicy(
        enabled=settings.experiments_enabled,
        budget=settings.experiments_budget,
        variant_weight=settings.experiments_variant_weight,
        min_variant_weight=settings.experiments_min_variant_weight,
        max_duration_s=settings.experiments_max_duration_s,
        min_window_requests=settings.experiments_min_window_requests,
        trigger_windows=settings.experiments_trigger_windows,
        low_hit_rate=settings.experiments_low_hit_rate,
        cache_size=settings.experiments_cache_size,
        cooldown_s=settings.experiments_cooldown_s,
        design=replace(TestDesign(), min_requests=settings.experiments_min_requests),
    )


class ReplicaTracker:
    """The gateways (replicas of a service) seen lately, per service.

    >>> replicas = ReplicaTracker(ttl_s=60)
    >>> replicas.saw("gw-1", ["shop"], now=0); replicas.saw("gw-2", ["shop"], now=50)
    >>> replicas.live(now=70)
    {'shop': ['gw-2']}
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._seen: dict[str, dict[str, float]] = {}

    def saw(self, gateway_id: str, services: Iterable[str], now: float) -> None:
        if gateway_id:
            for service in services:
                self._seen.setdefault(service, {})[gateway_id] = now

    def live(self, now: float) -> dict[str, list[str]]:
        """Gateway ids per service seen within ``ttl_s`` of ``now`` (others are forgotten)."""
        for service, gateways in list(self._seen.items()):
            for gateway in [g for g, ts in gateways.items() if now - ts > self.ttl_s]:
                del gateways[gateway]
            if not gateways:
                del self._seen[service]
        return {service: sorted(gateways) for service, gateways in self._seen.items()}


class WindowReporter:
    """Reports each closed window of a worker's metrics table once.

    Parameters
    ----------
    worker_id
        Written into every report, so the planner adds each worker's share once.
    grace_s
        How long after its end a window is considered closed (late events still land).
    """

    def __init__(self, worker_id: str, grace_s: float) -> None:
        self.worker_id = worker_id
        self.grace_s = grace_s
        self._sent: set[tuple[float, float]] = set()

    def closed(
        self, windows: list[dict], now: float, replicas: dict[str, list[str]] | None = None
    ) -> list[bytes]:
        """Reports of the windows (from ``window_slots``) that closed since the last call,
        with the gateways this worker has seen lately (``replicas``, per service)."""
        reports = []
        for window in windows:
            span = (window["start"], window["end"])
            if span in self._sent or window["end"] + self.grace_s > now:
                continue
            self._sent.add(span)
            series = merged_series((slot, data.encode()) for slot, data in window["slots"].items())
            reports.append(
                orjson.dumps(
                    {
                        "worker": self.worker_id,
                        "start": span[0],
                        "end": span[1],
                        "series": {key: stats.to_bytes().decode() for key, stats in series.items()},
                        "replicas": replicas or {},
                    }
                )
            )
        oldest = min((w["start"] for w in windows), default=None)
        if oldest is not None:
            self._sent = {span for span in self._sent if span[0] >= oldest}
        return reports


class PlanningLoop:
    """Forecasts, calibration and plans for every pool of ``config``.

    Parameters
    ----------
    config
        Block types, pools, services and the planning policy.
    window_s
        Length of the reported windows; one forecast step.
    horizon_s
        How far ahead a plan provisions: the highest forecast quantile over the horizon.
    complete_after_s
        How long after a window's end its reports are taken as complete.
    experiments
        When and how experiments are proposed and decided (default: :class:`ExperimentPolicy`).
    """

    def __init__(
        self,
        config: PoolsConfig,
        window_s: float,
        horizon_s: float = 60.0,
        complete_after_s: float = 10.0,
        experiments: ExperimentPolicy | None = None,
    ) -> None:
        self.config = config
        self.window_s = window_s
        self.horizon_bins = max(1, round(horizon_s / window_s))
        self.complete_after_s = complete_after_s
        self.calibrator = calibrator_for(config)
        self.planners = {pool: PoolPlanner.from_config(config, pool) for pool in config.pools}
        self.forecasters: dict[ShardKey, DemandForecaster] = {}
        self.versions: dict[str, int] = {}
        self._reports: dict[tuple[float, float], dict[str, dict[str, ShardStats]]] = {}
        self._blocks: dict[ShardKey, dict[str, int]] = {}
        self._unplanned: set[str] = set()  # services seen that no pool serves (warned once)
        # Per service, the version and shard ids of the latest snapshot noted: shards it no
        # longer has are retired (their forecasts, calibration and blocks dropped).
        self._live: dict[str, tuple[int, frozenset[int]]] = {}
        self._retired = False  # a shard was retired since the last plan
        self.replicas = ReplicaTracker(ttl_s=max(60.0, 3 * window_s))
        # The latest queue report per (gateway, service): when it was counted, waiting per shard.
        self._queued: dict[tuple[str, str], tuple[float, dict[int, int]]] = {}
        self._planned_at = float("-inf")
        self.learned_until = 0.0  # end of the newest window learned (shown in /metrics)
        # Follower threads note plans and snapshots, the worker's agent adds reports while
        # tick runs on an executor thread: each holds the lock for what they share.
        self._lock = threading.Lock()
        self.experiments = ExperimentManager(config, experiments)

    def add_report(self, value: bytes) -> None:
        """Take one reports-topic message; malformed ones are logged and skipped."""
        try:
            report = orjson.loads(value)
            span = (float(report["start"]), float(report["end"]))
            series = {
                str(key): ShardStats.from_bytes(data.encode())
                for key, data in report["series"].items()
            }
            worker = str(report["worker"])
            replicas = {str(svc): [str(g) for g in gws] for svc, gws in report["replicas"].items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            log.warning("ignored malformed window report: %r", error)
            return
        with self._lock:
            self._reports.setdefault(span, {})[worker] = series
            for service, gateways in replicas.items():
                for gateway in gateways:
                    self.replicas.saw(gateway, [service], now=span[1])

    def add_queued(self, value: bytes) -> None:
        """Take one gateway's :class:`~shardshape.core.contracts.QueueReport`; it replaces that
        gateway's previous one (an older one is ignored). Malformed ones are logged and skipped.
        """
        try:
            report = decode(QueueReport, value)
        except ContractError as error:
            log.warning("ignored malformed queue report: %s", error.reason)
            return
        waiting = {s.shard_id: s.queued for s in report.shards if s.queued}
        with self._lock:
            held = self._queued.get((report.gateway_id, report.service))
            if held is None or report.ts >= held[0]:
                self._queued[report.gateway_id, report.service] = (report.ts, waiting)

    def backlog(self, now: float) -> dict[ShardKey, int]:
        """Requests waiting in all gateways per shard, from queue reports fresh at ``now``."""
        waiting: dict[ShardKey, int] = {}
        with self._lock:
            for (gateway, service), (ts, shards) in list(self._queued.items()):
                if now - ts > QUEUE_REPORT_TTL_S:
                    del self._queued[gateway, service]
                    continue
                for shard, n in shards.items():
                    waiting[service, shard] = waiting.get((service, shard), 0) + n
        return waiting

    def note_published(self, plan: AllocationPlan) -> None:
        """A plan seen on the plans topic: a new planner continues after its version."""
        with self._lock:
            self.versions[plan.service] = max(self.versions.get(plan.service, 0), plan.version)
            self.experiments.restore(plan)

    def note_snapshot(self, snapshot: ShardSnapshot) -> None:
        """The service's shards as the latest snapshot has them (an older version is ignored).

        A shard the service no longer has is retired at the next tick: without it, a shard
        the profiler merged away would keep its forecast (a silent series' upper quantile
        stays above zero for about a season), its minimum and its blocks for ever.
        """
        live = {p.shard_id for p in snapshot.shards}
        if snapshot.quarantine_shard is not None:
            live.add(snapshot.quarantine_shard)
        with self._lock:
            held = self._live.get(snapshot.service)
            if held is None or snapshot.version >= held[0]:
                self._live[snapshot.service] = (snapshot.version, frozenset(live))

    def tick(self, now: float) -> list[AllocationPlan]:
        """Learn from the windows complete by ``now``; return the plans that changed.

        It plans when a window is complete and, while the gateways report requests waiting,
        every ``[planning] queue_replan_s`` in between.
        """
        with self._lock:
            complete = sorted(s for s in self._reports if s[1] + self.complete_after_s <= now)
            reports = [(span, self._reports.pop(span)) for span in complete]
        for span, by_worker in reports:
            self._learn_window(span, by_worker)
            self.learned_until = max(self.learned_until, span[1])
        self._retire()
        if not self.forecasters:
            return []
        policy = self.config.planning
        backlog = self.backlog(now) if policy.queue_drain_s else {}
        between_windows = bool(backlog) and now - self._planned_at >= policy.queue_replan_s
        if not complete and not between_windows:
            return []
        return self._plan(now, backlog)

    def _is_live(self, key: ShardKey) -> bool:
        held = self._live.get(key[0])
        return held is None or key[1] in held[1]

    def _retire(self) -> None:
        """Drop every shard that the latest snapshot of its service no longer has."""
        with self._lock:
            gone = [key for key in self.forecasters if not self._is_live(key)]
        for key in gone:
            del self.forecasters[key]
            self._blocks.pop(key, None)
            self.calibrator.forget(*key)
        self._retired |= bool(gone)

    def _learn_window(self, span: tuple[float, float], by_worker: dict) -> None:
        arms: dict[str, ShardStats] = {}  # per (service, shard, arm) key, over all workers
        for series in by_worker.values():
            for key, stats in series.items():
                arms[key] = arms[key].merge(stats) if key in arms else stats
        totals: dict[ShardKey, ShardStats] = {}
        for key, stats in arms.items():
            service, shard, _arm = split_metric_key(key)
            totals.setdefault((service, shard), ShardStats()).merge(stats)
        seconds = span[1] - span[0]
        with self._lock:
            new = sorted(k for k in totals.keys() - self.forecasters.keys() if self._is_live(k))
        # Sorted: the calibration's prior for a new shard sums over the shards in the order
        # they were added, so the order must not follow the process's string hashing.
        for shard_key in new:
            self.forecasters[shard_key] = DemandForecaster(season_bins=_season_bins(seconds))
        for shard_key, forecaster in self.forecasters.items():
            stats = totals.get(shard_key)
            # Rejected requests are demand, but they held no slot: counted as completions
            # with no busy time they would make the shard look faster than it is, just
            # when it is overloaded.
            forecaster.learn_one(stats.count / seconds if stats else 0.0)
            served = stats.count - stats.errors.get("rejected", 0) if stats else 0
            if stats is not None and served > 0:
                self.calibrator.observe(
                    ShardWindow(
                        service=shard_key[0],
                        shard_id=shard_key[1],
                        window_s=seconds,
                        completions=served,
                        busy_ms=stats.busy_ms if stats.busy_reported else None,
                        latency_ms_sum=stats.latency_sum,
                        blocks=self._blocks.get(shard_key, {}),
                    )
                )
        with self._lock:
            self.experiments.observe(span, arms)

    def _plan(self, now: float, backlog: dict[ShardKey, int]) -> list[AllocationPlan]:
        self._planned_at = now
        policy = self.config.planning
        horizon_s = self.horizon_bins * self.window_s
        forecasts, means, idle, quantiles = {}, {}, set(), {}
        for key, f in self.forecasters.items():
            # Waiting requests are demand the forecast has not seen: served within the drain
            # time, they add as much to the mean as to the quantile.
            queued_rps = backlog.get(key, 0) / policy.queue_drain_s if backlog else 0.0
            upper, mean = self.demand(key, f)
            if self.can_wait(key):
                # Its requests can wait for the blocks a burst's queue reports bring: no
                # margin held through every quiet window for the burst's first minutes.
                upper, quantiles[key] = mean, 0.5
            # Less than one request expected over the horizon, even at the upper quantile:
            # no block, not even the shard's minimum. A fading series never forecasts exactly
            # 0, and any demand above 0 costs a whole block; a stray request runs in the
            # gateway's default pool. In a pool too small for every minimum, an idle shard's
            # minimum would otherwise take a block from a busy one.
            if upper * horizon_s < 1.0:
                upper = 0.0
                if not queued_rps:
                    idle.add(key)
            mean = min(mean, upper)
            forecasts[key] = upper + queued_rps
            means[key] = mean + queued_rps
        for service in {service for service, _ in forecasts} - self.config.services.keys():
            if service not in self._unplanned:
                self._unplanned.add(service)
                log.warning("service %r is in no pool: add [services.%s] to the pools config "
                            "to plan its shards", service, service)  # fmt: skip
        plans = []
        for pool_id, planner in self.planners.items():
            demands = shard_demands(
                self.config, self.calibrator, pool_id, forecasts, means, quantiles
            )
            if not demands:
                continue
            demands = [replace(d, min_blocks=0) if d.key in idle else d for d in demands]
            # A retired shard leaves the plan at once, not after the minimum interval.
            step = planner.plan(
                self.experiments.shape_demands(demands), now=now, force=self._retired
            )
            services = {d.service for d in demands}
            if not step.replanned:
                # A held allocation is republished only for what experiments changed.
                services = self.experiments.changed(services)
                if not services:
                    continue
            self._blocks.update(step.allocation.blocks())
            plans += self._service_plans(pool_id, step.allocation, services, now)
        self._retired = False
        return plans

    def reaction_s(self) -> float:
        """How long a request that finds its shard's blocks busy waits, at most, for the
        blocks its wait brings: a gateway's queue report, a replan, a block's start-up."""
        policy = self.config.planning
        return QUEUE_REPORT_MAX_S + policy.queue_replan_s + policy.block_start_s

    def can_wait(self, key: ShardKey) -> bool:
        """Whether ``key``'s SLO leaves its requests :meth:`reaction_s` to wait beyond their
        service time (the slowest of its block types, as calibrated), so that the shard is
        planned at its mean forecast: a burst above the plan waits for the blocks the queue
        reports bring and still meets the SLO, and no quiet window pays for its margin. A shard
        with no SLO, or with queue reports off (``queue_drain_s = 0``), keeps the quantile."""
        policy = self.config.planning
        settings = self.config.shard_settings(*key)
        if settings.slo_p99_ms is None or not policy.queue_drain_s:
            return False
        service_s = 0.0
        for name in settings.block_types:
            rps = self.calibrator.estimate(key[0], key[1], name).mean_rps
            slots = self.config.block_types[name].concurrency
            service_s = max(service_s, slots / rps if rps > 0 else float("inf"))
        return settings.slo_p99_ms / 1000.0 - service_s >= self.reaction_s()

    def demand(self, key: ShardKey, forecaster: DemandForecaster) -> tuple[float, float]:
        """What a plan provisions ``key`` for over the horizon, requests/s: the highest
        forecast quantile (``[planning] forecast_quantile``) of its steps, and the highest
        mean forecast. (The simulator's ``perfect-forecast`` ablation puts foresight here.)"""
        quantile = self.config.planning.forecast_quantile
        return (
            max(forecaster.forecast_quantile(self.horizon_bins, quantile)),
            max(forecaster.forecast(self.horizon_bins)),
        )

    def _service_plans(
        self, pool_id: str, allocation, services: Iterable[str], now: float
    ) -> list[AllocationPlan]:  # type: ignore[no-untyped-def]
        plans = []
        with self._lock:
            live = self.replicas.live(now)
            for service in sorted(services):
                version = self.versions[service] = self.versions.get(service, 0) + 1
                plan = build_plan(
                    allocation,
                    service,
                    pool_id=pool_id,
                    block_types=self.config.pool_block_types(pool_id),
                    replicas=live.get(service, []),
                    version=version,
                    created_ts=now,
                    calibrator=self.calibrator,
                )
                plans.append(self.experiments.attach(plan))
        return plans


def _season_bins(window_s: float) -> int:
    """A day of windows, capped: short windows model the recent past, not the daily cycle."""
    return max(2, min(round(86_400 / window_s), 1_440))


def plan_listener(planning: PlanningLoop):  # type: ignore[no-untyped-def]
    """Plans-topic callback for a :class:`TopicFollower`: versions continue after a failover."""

    def on_message(key: bytes | None, value: bytes | None) -> None:
        try:
            planning.note_published(decode(AllocationPlan, value))
        except ContractError as error:
            log.warning("ignored plan %r: %s", (key or b"")[:80], error.reason)

    return on_message
