"""Prometheus metrics of a gateway, with the standard client: requests per shard (a counter by
status and a latency histogram, from the events the middleware reports), each pool's slots,
requests in flight and queued, occupancy and rejections, the plan and snapshot versions in
force, what the reporter did with the events, and the process and platform. The families the
worker also has are named as the worker names them (:mod:`shardshape.streams.dashboard.prometheus`);
``/metrics`` is prometheus_client's own ASGI app (text or OpenMetrics, gzip).

:func:`shardshape.gateway.install` wires it (``metrics_path``). By hand, wire it around the
report callable and the app::

    metrics = GatewayMetrics("shop", pools, reporter=reporter)
    app.add_middleware(ShapingMiddleware, service="shop", pools=pools,
                       report=metrics.observing(reporter.report))
    app = with_metrics(app, metrics)  # GET /metrics answered before the shaping middleware

>>> from shardshape.core.contracts import RequestEvent
>>> metrics = GatewayMetrics("shop")
>>> metrics.observe(RequestEvent(request_id="r", ts=0, service="shop", request_type="GET /",
...                              latency_ms=12.0, shard_id=2))
>>> 'shardshape_shard_requests_total{arm="",service="shop",shard="2",status="ok"} 1.0' in (
...     metrics.exposition().decode())
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shardshape.core.contracts import RequestEvent
from shardshape.core.exposition import (
    LATENCY_BUCKETS_S,
    PLAN_VERSION,
    SHARD_DURATION,
    SHARD_REQUESTS,
    SNAPSHOT_VERSION,
    add_process_collectors,
    exposition,
    negotiated,
)
from shardshape.gateway.endpoints import Scope, header, with_endpoints

if TYPE_CHECKING:
    from shardshape.gateway.pools import ShardPools
    from shardshape.gateway.reporter import Reporter
    from shardshape.gateway.routing_table import RoutingTable

METRICS_PATH = "/metrics"


class GatewayMetrics:
    """A gateway's metrics in a registry of their own.

    Parameters
    ----------
    service
        The service name, a label of every series.
    pools, reporter, routing
        Read at scrape time when given (they may also be set later as attributes).
    """

    def __init__(
        self,
        service: str,
        pools: ShardPools | None = None,
        *,
        reporter: Reporter | None = None,
        routing: RoutingTable | None = None,
    ) -> None:
        self.service = service
        self.pools = pools
        self.reporter = reporter
        self.routing = routing
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            SHARD_REQUESTS,
            "Requests completed by the gateway, per shard, experiment arm and status.",
            ["service", "shard", "arm", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            SHARD_DURATION,
            "Response time per shard, measured around the app (queueing in the pool included).",
            ["service", "shard", "arm"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))
        add_process_collectors(self.registry)

    def observe(self, event: RequestEvent) -> None:
        """Count one completed request (the middleware's reported event)."""
        shard, arm = "" if event.shard_id is None else str(event.shard_id), event.arm or ""
        self._requests.labels(event.service, shard, arm, event.status).inc()
        if event.latency_ms is not None:
            self._latency.labels(event.service, shard, arm).observe(event.latency_ms / 1000)

    def observing(
        self, report: Callable[[RequestEvent], None] | None = None
    ) -> Callable[[RequestEvent], None]:
        """A report callable for the middleware that counts each event, then hands it on."""

        def observe_and_report(event: RequestEvent) -> None:
            self.observe(event)
            if report is not None:
                report(event)

        return observe_and_report

    def exposition(self) -> bytes:
        """The text exposition."""
        return exposition(self.registry)

    def endpoint(self, scope: Scope) -> tuple[int, bytes, dict[str, str]]:
        """A scrape's answer (a :mod:`shardshape.gateway.endpoints` endpoint): text or
        OpenMetrics as its ``Accept`` asks, gzipped when it accepts that."""
        body, headers = negotiated(
            self.registry, header(scope, b"accept"), header(scope, b"accept-encoding")
        )
        return 200, body, headers


class _StateCollector(Collector):
    """Pools, versions and reporter counters, read when scraped."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # series come and go with the plans; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield from self._pools(m)
        if m.pools is not None:
            plan = GaugeMetricFamily(
                PLAN_VERSION,
                "Version of the plan the gateway applies (0: none yet).",
                labels=["service"],
            )
            plan.add_metric([m.service], m.pools.plan_version)
            yield plan
        if m.routing is not None:
            snapshot = GaugeMetricFamily(
                SNAPSHOT_VERSION,
                "Version of the shard snapshot the gateway predicts with (0: none yet).",
                labels=["service"],
            )
            snapshot.add_metric([m.service], m.routing.snapshot_version(m.service))
            yield snapshot
        if m.reporter is not None:
            yield from self._reporter(m)

    def _pools(self, m: GatewayMetrics) -> Iterator[Metric]:
        labels = ["service", "pool"]
        slots = GaugeMetricFamily(
            "shardshape_gateway_pool_slots", "Concurrency slots of each shard pool.", labels=labels
        )
        in_flight = GaugeMetricFamily(
            "shardshape_gateway_pool_in_flight", "Requests holding a slot.", labels=labels
        )
        queued = GaugeMetricFamily(
            "shardshape_gateway_pool_queued", "Requests waiting for a slot.", labels=labels
        )
        occupancy = GaugeMetricFamily(
            "shardshape_gateway_pool_occupancy_ratio",
            "Share of a pool's slots in use (in flight / slots).",
            labels=labels,
        )
        rejections = CounterMetricFamily(
            "shardshape_gateway_pool_rejections",
            "Requests a pool turned away (503), by reason, since the pool was created.",
            labels=[*labels, "reason"],
        )
        lent = CounterMetricFamily(
            "shardshape_gateway_pool_lent",
            "Requests of other pools that ran on this pool's idle slots (lending).",
            labels=labels,
        )
        borrowed = CounterMetricFamily(
            "shardshape_gateway_pool_borrowed",
            "Requests of this pool that ran on another pool's idle slots (lending).",
            labels=labels,
        )
        for state in m.pools.states() if m.pools is not None else ():
            pool = [m.service, state.name]
            slots.add_metric(pool, state.limits.concurrency)
            in_flight.add_metric(pool, state.in_use)
            queued.add_metric(pool, state.queued)
            occupancy.add_metric(pool, state.in_use / state.limits.concurrency)
            for reason, n in sorted(state.rejected.items()):
                rejections.add_metric([*pool, reason], n)
            lent.add_metric(pool, state.lent)
            borrowed.add_metric(pool, state.borrowed)
        yield from (slots, in_flight, queued, occupancy, rejections, lent, borrowed)

    def _reporter(self, m: GatewayMetrics) -> Iterator[Metric]:
        stats = m.reporter.stats()  # type: ignore[union-attr]
        for outcome, what, n in (
            ("reported", "handed to the reporter", stats.reported),
            ("delivered", "acknowledged by Kafka", stats.delivered),
            ("spooled", "written to the spool while Kafka could not take them", stats.spooled),
        ):
            family = CounterMetricFamily(
                f"shardshape_gateway_reporter_{outcome}_events",
                f"Completed requests {what}.",
                labels=["service"],
            )
            family.add_metric([m.service], n)
            yield family
        dropped = CounterMetricFamily(
            "shardshape_gateway_reporter_dropped_events",
            "Completed requests the reporter dropped, by reason.",
            labels=["service", "reason"],
        )
        for reason, n in sorted(stats.dropped.items()):
            dropped.add_metric([m.service, reason], n)
        reachable = GaugeMetricFamily(
            "shardshape_gateway_kafka_reachable",
            "1 while the reporter's batches are acknowledged by Kafka.",
            labels=["service"],
        )
        reachable.add_metric([m.service], 1.0 if stats.kafka_reachable else 0.0)
        yield from (dropped, reachable)


def with_metrics(app: Any, metrics: GatewayMetrics, path: str = METRICS_PATH) -> Any:
    """An ASGI app that answers ``GET path`` with ``metrics`` (content negotiation and gzip, as
    prometheus_client's own servers answer) and hands the rest to ``app`` (so scrapes are
    neither pooled nor reported as requests)."""
    return with_endpoints(app, {path: metrics.endpoint})
