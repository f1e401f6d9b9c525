"""Prometheus metrics of a worker, read from its
:class:`~shardshape.streams.dashboard.state.DashboardState` at scrape time (the standard client's
custom-collector pattern: nothing is counted twice).

Per (service, shard, arm) series, over this worker's partitions: requests by status since the
worker started (a counter), a latency histogram in seconds built from the mergeable latency
sketches, and the latest closed 10 s window's request rate and quantiles (gauges). Per shard:
blocks and SLO of the plan in force. Per pool: blocks of capacity and allocated. The pipeline:
messages, events and dead letters (counters), events/s, consumer lag per partition; and the
snapshot and plan versions, shard and quarantined-key counts, experiments by status; the
planner's progress where it runs; the process and platform (``process_*``, ``python_*``).

Names follow Prometheus's rules: a unit in the name, and no family whose label splits things
that do not add up (capacity and allocated blocks are two families). The gateway
(:mod:`shardshape.gateway.prometheus`) uses the same names for the same things
(``shardshape_shard_requests_total``, ``shardshape_shard_request_duration_seconds``,
``shardshape_plan_version``, ``shardshape_snapshot_version``).

>>> import gzip
>>> from shardshape.streams.dashboard.state import DashboardState
>>> from shardshape.core.exposition import negotiated
>>> body, headers = negotiated(worker_registry(DashboardState()), accept="", accept_encoding="")
>>> "# TYPE shardshape_pipeline_events_total counter" in body.decode(), headers
(True, {'Content-Type': 'text/plain; version=0.0.4; charset=utf-8'})
>>> body, headers = negotiated(worker_registry(DashboardState()), "", "gzip, deflate")
>>> headers["Content-Encoding"], gzip.decompress(body).startswith(b"# HELP")
('gzip', True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from shardshape.core.exposition import (
    LATENCY_BUCKETS_S,
    PLAN_VERSION,
    SHARD_DURATION,
    SHARD_REQUESTS,
    SNAPSHOT_VERSION,
    add_process_collectors,
)
from shardshape.core.metrics import ShardStats, split_metric_key
from shardshape.streams.dashboard.state import DashboardState

_SERIES = ["service", "shard", "arm"]


def latency_buckets(stats: ShardStats) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs of a series' latency sketch, ending with ``+Inf``.

    >>> import numpy as np
    >>> stats = ShardStats()
    >>> stats.latency.add_many(np.array([3.0, 40.0, 40.0, 900.0]))
    >>> dict(latency_buckets(stats))["0.05"], dict(latency_buckets(stats))["+Inf"]
    (3.0, 4.0)
    """
    total = stats.latency.count
    pairs = [
        (f"{bound:g}", float(total - stats.latency.count_above(bound * 1000)))
        for bound in LATENCY_BUCKETS_S
    ]
    return [*pairs, ("+Inf", float(total))]


class WorkerCollector(Collector):
    """Collects the worker's metrics from ``state`` when scraped."""

    def __init__(self, state: DashboardState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        yield from self._series()
        yield from self._latest()
        yield from self._plans()
        yield from self._pipeline()
        yield from self._profiles()

    def _series(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            SHARD_REQUESTS,
            "Requests completed per shard and status (ok, error, timeout, rejected), as the "
            "gateways reported them (this worker's partitions, since it started).",
            labels=[*_SERIES, "status"],
        )
        latency = HistogramMetricFamily(
            SHARD_DURATION,
            "Response time per shard as the gateway measured it.",
            labels=_SERIES,
        )
        for key, stats in sorted(self.state.cumulative().items()):
            labels = _labels(key)
            requests.add_metric([*labels, "ok"], stats.count - sum(stats.errors.values()))
            for status, n in sorted(stats.errors.items()):
                requests.add_metric([*labels, status], n)
            latency.add_metric(labels, latency_buckets(stats), stats.latency_sum / 1000)
        yield from (requests, latency)

    def _latest(self) -> Iterator[Metric]:
        rate = GaugeMetricFamily(
            "shardshape_shard_window_requests_per_second",
            "Requests per second per shard in the latest closed 10 s window.",
            labels=_SERIES,
        )
        quantiles = GaugeMetricFamily(
            "shardshape_shard_window_latency_seconds",
            "Latency quantiles per shard in the latest closed 10 s window.",
            labels=[*_SERIES, "quantile"],
        )
        latest = self.state.latest()
        if latest is not None:
            (start, end), series = latest
            for key, stats in sorted(series.items()):
                labels = _labels(key)
                rate.add_metric(labels, stats.count / (end - start))
                for q in (0.5, 0.95, 0.99):
                    value = stats.latency.quantile(q)
                    if value is not None:
                        quantiles.add_metric([*labels, str(q)], value / 1000)
        yield from (rate, quantiles)

    def _plans(self) -> Iterator[Metric]:
        blocks = GaugeMetricFamily(
            "shardshape_shard_blocks",
            "Blocks per shard and block type in the plan in force.",
            labels=["service", "shard", "block_type"],
        )
        slo = GaugeMetricFamily(
            "shardshape_shard_slo_p99_seconds",
            "The p99 latency objective per shard in the plan in force.",
            labels=["service", "shard"],
        )
        version = GaugeMetricFamily(
            PLAN_VERSION, "Version of the plan in force.", labels=["service"]
        )
        experiments = GaugeMetricFamily(
            "shardshape_experiments",
            "Experiments listed in the plan in force, by status.",
            labels=["service", "status"],
        )
        for service, plan in sorted(self.state.plans().items()):
            version.add_metric([service], plan.version)
            for spec in plan.shards:
                for kind, n in sorted(spec.blocks.items()):
                    blocks.add_metric([service, str(spec.shard_id), kind], n)
                if spec.slo_p99_ms is not None:
                    slo.add_metric([service, str(spec.shard_id)], spec.slo_p99_ms / 1000)
            for status, n in sorted(Counter(e.status for e in plan.experiments).items()):
                experiments.add_metric([service, status], n)
        capacity = GaugeMetricFamily(
            "shardshape_pool_capacity_blocks",
            "Blocks a pool holds, per block type (the pools config).",
            labels=["pool", "block_type"],
        )
        allocated = GaugeMetricFamily(
            "shardshape_pool_allocated_blocks",
            "Blocks of a pool the plans in force allocate, per block type.",
            labels=["pool", "block_type"],
        )
        for pool_id, kinds in sorted(self.state.pool_usage().items()):
            for kind, usage in sorted(kinds.items()):
                if usage["capacity"] is not None:
                    capacity.add_metric([pool_id, kind], usage["capacity"])
                allocated.add_metric([pool_id, kind], sum(usage["allocated"].values()))
        yield from (blocks, slo, version, experiments, capacity, allocated)

    def _pipeline(self) -> Iterator[Metric]:
        counters, lag, rate = self.state.pipeline()
        for name, what in (
            ("messages", "Messages taken from the requests topic."),
            ("events", "Valid request events processed."),
            ("dead_letters", "Messages or events sent to the DLQ topic."),
        ):
            family = CounterMetricFamily(f"shardshape_pipeline_{name}", what)
            family.add_metric([], counters.get(name, 0))
            yield family
        yield GaugeMetricFamily(
            "shardshape_pipeline_events_per_second",
            "Valid events processed per second, over the last seconds.",
            value=rate,
        )
        family = GaugeMetricFamily(
            "shardshape_consumer_lag_messages",
            "Messages of the requests topic not yet read, per partition this worker consumes.",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(lag.items()):
            family.add_metric([topic, str(partition)], n)
        yield family

    def _profiles(self) -> Iterator[Metric]:
        version = GaugeMetricFamily(
            SNAPSHOT_VERSION, "Version of the shard snapshot in force.", labels=["service"]
        )
        shards = GaugeMetricFamily(
            "shardshape_shards",
            "Behaviour shards in the snapshot in force (the quarantine shard not counted).",
            labels=["service"],
        )
        for service, snapshot in sorted(self.state.snapshots().items()):
            version.add_metric([service], snapshot.version)
            shards.add_metric([service], sum(not s.quarantine for s in snapshot.shards))
        quarantined = GaugeMetricFamily(
            "shardshape_quarantined_keys",
            "Profile keys in quarantine (anomalous callers).",
            labels=["service"],
        )
        for service, n in sorted(
            Counter(e.service for e in self.state.quarantined().values()).items()
        ):
            quarantined.add_metric([service], n)
        yield from (version, shards, quarantined)


def _labels(key: str) -> list[str]:
    service, shard, arm = split_metric_key(key)
    return [service, str(shard), arm]


class PlannerProgress(Protocol):
    learned_until: float  # end (epoch seconds) of the newest window the planner learned


class PlannerCollector(Collector):
    """``shardshape_planner_learned_until_timestamp_seconds``: where the planner is; silent
    planning shows as this falling behind the clock."""

    def __init__(self, planner: PlannerProgress) -> None:
        self.planner = planner

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "shardshape_planner_learned_until_timestamp_seconds",
            "End of the newest metrics window the planner learned (0: none yet; only the "
            "worker that owns the windows topic learns).",
            value=self.planner.learned_until,
        )


def worker_registry(state: DashboardState, extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """A registry of its own (not the process-wide default) holding the worker's collector,
    ``extra`` collectors and the process and platform collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(state))
    for collector in extra:
        registry.register(collector)
    return add_process_collectors(registry)
