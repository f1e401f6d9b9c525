"""Prometheus metrics of a worker, read from its
:class:`~shardshape.streams.dashboard.state.DashboardState` at scrape time (the standard client's
custom-collector pattern: nothing is counted twice).

Per (service, shard, arm) series, over this worker's partitions: requests and errors since the
worker started (counters), a latency histogram in seconds built from the mergeable latency
sketches, and the latest closed 10 s window's request rate and quantiles (gauges). Per shard:
blocks and SLO of the plan in force. Per pool: blocks allocated and held. The pipeline:
messages, events and dead letters (counters), events/s, consumer lag per partition; and the
snapshot and plan versions, shard and quarantined-key counts, experiments by status.

>>> from shardshape.streams.dashboard.state import DashboardState
>>> text = exposition(worker_registry(DashboardState())).decode()
>>> "# TYPE shardshape_pipeline_events_total counter" in text
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from shardshape.streams.dashboard.state import DashboardState
from shardshape.streams.exposition import LATENCY_BUCKETS_S
from shardshape.streams.metrics import ShardStats, split_metric_key

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
            "shardshape_shard_requests",
            "Requests completed per shard since the worker started (its partitions).",
            labels=_SERIES,
        )
        errors = CounterMetricFamily(
            "shardshape_shard_errors",
            "Requests that did not end ok (error, timeout, rejected), per shard.",
            labels=[*_SERIES, "status"],
        )
        latency = HistogramMetricFamily(
            "shardshape_shard_latency_seconds",
            "Response time per shard as the gateway measured it.",
            labels=_SERIES,
        )
        for key, stats in sorted(self.state.cumulative().items()):
            labels = _labels(key)
            requests.add_metric(labels, stats.count)
            for status, n in sorted(stats.errors.items()):
                errors.add_metric([*labels, status], n)
            latency.add_metric(labels, latency_buckets(stats), stats.latency_sum / 1000)
        yield from (requests, errors, latency)

    def _latest(self) -> Iterator[Metric]:
        rate = GaugeMetricFamily(
            "shardshape_shard_request_rate",
            "Requests per second per shard in the latest closed 10 s window.",
            labels=_SERIES,
        )
        quantiles = GaugeMetricFamily(
            "shardshape_shard_latency_window_seconds",
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
            "shardshape_plan_version", "Version of the plan in force.", labels=["service"]
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
        pool = GaugeMetricFamily(
            "shardshape_pool_blocks",
            "Blocks of a pool: capacity (the pools config) and allocated (by the plans).",
            labels=["pool", "block_type", "state"],
        )
        for pool_id, kinds in sorted(self.state.pool_usage().items()):
            for kind, usage in sorted(kinds.items()):
                if usage["capacity"] is not None:
                    pool.add_metric([pool_id, kind, "capacity"], usage["capacity"])
                pool.add_metric([pool_id, kind, "allocated"], sum(usage["allocated"].values()))
        yield from (blocks, slo, version, experiments, pool)

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
            "shardshape_consumer_lag",
            "Messages of the requests topic not yet read, per partition this worker consumes.",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(lag.items()):
            family.add_metric([topic, str(partition)], n)
        yield family

    def _profiles(self) -> Iterator[Metric]:
        version = GaugeMetricFamily(
            "shardshape_snapshot_version",
            "Version of the shard snapshot in force.",
            labels=["service"],
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


def worker_registry(state: DashboardState) -> CollectorRegistry:
    """A registry of its own (not the process-wide default) holding the worker's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(state))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry`` (serve it with
    :data:`shardshape.streams.exposition.CONTENT_TYPE`)."""
    return generate_latest(registry)
