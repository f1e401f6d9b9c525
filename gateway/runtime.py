"""A gateway's parts from the settings, for any way in (ASGI, WSGI, sidecar): pools, the
routing follower, the plan follower, the reporter (watching the pools' queues), metrics and
the status body; ``start()`` and ``stop()`` run the background ones.

Without ``SHARDSHAPE_KAFKA_BOOTSTRAP`` every request runs in the default pool and is reported
nowhere.

>>> from shardshape.infra.settings import Settings
>>> runtime = GatewayRuntime(Settings(kafka_bootstrap=""), "shop")
>>> runtime.status()["pools"][0]["name"]
'default'
"""

from __future__ import annotations

from typing import Any

from shardshape.allocator.client import AllocatorClient
from shardshape.gateway.pools import ShardPools
from shardshape.gateway.prometheus import GatewayMetrics
from shardshape.gateway.reporter import Reporter, default_gateway_id
from shardshape.gateway.routing_table import RoutingTable
from shardshape.gateway.status import gateway_status
from shardshape.infra.settings import Settings
from shardshape.streams.contracts import RequestEvent


class GatewayRuntime:
    """Pools, routing, plans, reporter and metrics of one gateway replica."""

    def __init__(self, settings: Settings, service: str) -> None:
        self.settings = settings
        self.service = service
        self.pools = ShardPools.from_settings(settings)
        self.routing: RoutingTable | None = None
        self.plans: AllocatorClient | None = None
        self.reporter: Reporter | None = None
        if settings.kafka_bootstrap:
            self.routing = RoutingTable.from_settings(settings)
            self.plans = AllocatorClient.from_settings(settings, service, self.pools)
            self.reporter = Reporter(settings, gateway_id=default_gateway_id())
            self.reporter.watch_queues(service, self.pools.queued_by_shard)
        self.metrics = GatewayMetrics(
            service, self.pools, reporter=self.reporter, routing=self.routing
        )
        self.gateway_id = self.reporter.gateway_id if self.reporter else default_gateway_id()

    def report(self, event: RequestEvent) -> None:
        """The middleware's ``report``: count the event, then hand it to the reporter."""
        self.metrics.observe(event)
        if self.reporter is not None:
            self.reporter.report(event)

    def start(self) -> None:
        """Follow the routing and plans topics on background threads."""
        for follower in (self.routing, self.plans):
            if follower is not None:
                follower.start()

    def stop(self) -> None:
        """Send what the reporter holds (at most the stall time), stop the followers."""
        if self.reporter is not None:
            self.reporter.close(self.settings.reporter_stall_ms / 1000)
        for follower in (self.plans, self.routing):
            if follower is not None:
                follower.stop()

    def status(self) -> dict[str, Any]:
        """The status page's JSON body."""
        body = gateway_status(
            self.service,
            self.pools,
            self.routing,
            self.plans,
            gateway_id=self.gateway_id,
            reporter=self.reporter,
        )
        return {**body, "shaping": self.pools.shaping}
