"""One service's gateway wired from the settings: the pieces, and starting and stopping them.

:class:`Gateway` builds what a service needs to be shaped — the shard pools, the routing table
and the plan follower (both following their topics), the reporter of completed requests that
also tells the planner what waits in the pools, and the Prometheus metrics — and starts and
stops them. It knows nothing of ASGI or WSGI: :func:`shardshape.gateway.asgi.install` puts one
in a Starlette or FastAPI app's middleware and lifespan; other frameworks can do the same with
:meth:`Gateway.start`, :meth:`Gateway.stop` and :meth:`Gateway.shaping_options`.

Without a broker (no ``SHARDSHAPE_KAFKA_BOOTSTRAP``) the gateway cannot learn plans or report,
so it runs unshaped: it says so in one log line and :attr:`Gateway.shaped` is False.

>>> gateway = Gateway("shop", Settings(kafka_bootstrap=None))
>>> gateway.shaped, gateway.routing, gateway.reporter
(False, None, None)
>>> gateway.status()["pools"][0]["name"]
'default'
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from shardshape.allocator.client import AllocatorClient
from shardshape.core.contracts import RequestEvent
from shardshape.core.settings import ENV_PREFIX, Settings, load_settings
from shardshape.gateway.endpoints import Endpoint, json_endpoint
from shardshape.gateway.pools import ShardPools
from shardshape.gateway.prometheus import METRICS_PATH, GatewayMetrics
from shardshape.gateway.reporter import Reporter, default_gateway_id
from shardshape.gateway.routing_table import RoutingTable
from shardshape.gateway.status import STATUS_PATH, gateway_status, health_endpoints

log = logging.getLogger("shardshape.gateway")


def gateway_settings(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    """``settings`` (default: the environment's) with ``overrides`` of its fields, validated.

    >>> gateway_settings(Settings(), {"gateway_queue_size": 7}).gateway_queue_size
    7
    >>> gateway_settings(Settings(), {"queue": 7})
    Traceback (most recent call last):
    ...
    TypeError: unknown gateway option 'queue': give a setting (a field of ...Settings, ...
    """
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise TypeError(
            f"unknown gateway option {unknown[0]!r}: give a setting (a field of "
            "shardshape.core.settings.Settings, e.g. gateway_queue_size; `shardshape settings` "
            "lists them) or a hook of the middleware"
        )
    if settings is None:
        return load_settings(**overrides)
    return settings.model_copy(update=overrides).revalidated() if overrides else settings


class Gateway:
    """The gateway of ``service``, built from ``settings``; :meth:`start` it with the app.

    Parameters
    ----------
    service
        The service name in events, plans and metrics.
    settings
        Default: :func:`~shardshape.core.settings.load_settings` (the ``SHARDSHAPE_*``
        environment).
    reporter
        A reporter of the caller's (shared, or configured apart): used, and never closed here.
        By default the gateway makes its own at :meth:`start` when a broker is configured, and
        closes it at :meth:`stop`.
    metrics
        Count completed requests and expose pools, versions and reporter counters
        (:attr:`metrics`, a :class:`~shardshape.gateway.prometheus.GatewayMetrics`).

    Attributes
    ----------
    pools, routing, plans, reporter, metrics
        The pieces: ``routing`` and ``plans`` (the
        :class:`~shardshape.allocator.client.AllocatorClient`) are None without a broker;
        ``reporter`` is None until started, and without a broker; ``metrics`` None when off.
    shaped
        False without a broker: nothing to follow, every request should go straight through.
    """

    def __init__(
        self,
        service: str,
        settings: Settings | None = None,
        *,
        reporter: Reporter | None = None,
        metrics: bool = True,
    ) -> None:
        self.service = service
        self.settings = settings = settings or load_settings()
        self.pools = ShardPools.from_settings(settings)
        self.shaped = bool(settings.kafka_bootstrap)
        self.routing = RoutingTable.from_settings(settings) if self.shaped else None
        self.plans = (
            AllocatorClient.from_settings(settings, service, self.pools) if self.shaped else None
        )
        self.reporter = reporter
        self.gateway_id = reporter.gateway_id if reporter is not None else default_gateway_id()
        self._owns_reporter = reporter is None and self.shaped
        self.metrics = (
            GatewayMetrics(service, self.pools, reporter=reporter, routing=self.routing)
            if metrics
            else None
        )
        self._lock = threading.Lock()
        self._state = "new"
        if not self.shaped:
            log.warning(
                "shardshape gateway of %s runs unshaped: no broker is configured "
                "(%sKAFKA_BOOTSTRAP is not set), so it has no plans to follow and reports "
                "nowhere; every request goes straight to the app. Set %sKAFKA_BOOTSTRAP="
                "host:port to shape it.",
                service,
                ENV_PREFIX,
                ENV_PREFIX,
            )

    def start(self) -> Gateway:
        """Follow the routing and plans topics and start reporting (background threads; nothing
        here waits on Kafka). A gateway starts once."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"this gateway was already {self._state}: make a new one")
            self._state = "started"
        if self._owns_reporter:
            self.reporter = Reporter(self.settings, gateway_id=self.gateway_id)
            if self.metrics is not None:
                self.metrics.reporter = self.reporter
        if self.reporter is not None:
            # The planner sees a burst waiting in the pools within seconds, not a window later.
            self.reporter.watch_queues(self.service, self.pools.queued_by_shard)
        for follower in (self.routing, self.plans):
            if follower is not None:
                follower.start()
        return self

    def stop(self) -> None:
        """Send what the own reporter holds (for at most ``reporter_stall_ms``, then it drops,
        counted), and stop following; blocks until the threads are gone. Safe to call twice."""
        with self._lock:
            if self._state != "started":
                return
            self._state = "stopped"
        if self._owns_reporter and self.reporter is not None:
            self.reporter.close(self.settings.reporter_stall_ms / 1000)
        for follower in (self.plans, self.routing):
            if follower is not None:
                follower.stop()

    def report(self, event: RequestEvent) -> None:
        """Count one completed request and hand it to the reporter (the middleware's ``report``;
        never blocks)."""
        if self.metrics is not None:
            self.metrics.observe(event)
        reporter = self.reporter
        if reporter is not None:
            reporter.report(event)

    def shaping_options(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~shardshape.gateway.middleware.ShapingMiddleware`
        that come from this gateway (the hooks come from the caller)."""
        return {
            "service": self.service,
            "pools": self.pools,
            "routing": self.routing,
            "report": self.report,
            "user_header": self.settings.gateway_user_header,
        }

    def endpoints(
        self, status_path: str | None = STATUS_PATH, metrics_path: str | None = METRICS_PATH
    ) -> dict[str, Endpoint]:
        """The gateway's own endpoints by path: the status page with its health and readiness
        beside it, and the metrics (``None``: a path not served), for
        :func:`~shardshape.gateway.endpoints.with_endpoints` or a WSGI app's own dispatch."""
        endpoints: dict[str, Endpoint] = {}
        if status_path is not None:
            endpoints.update(health_endpoints(self.routing, self.plans))
            endpoints[status_path] = json_endpoint(lambda: (200, self.status()))
        if metrics_path is not None and self.metrics is not None:
            endpoints[metrics_path] = self.metrics.endpoint
        return endpoints

    def status(self) -> dict[str, Any]:
        """The status page's JSON body (:class:`~shardshape.gateway.status.GatewayStatus`)."""
        return gateway_status(
            self.service,
            self.pools,
            self.routing,
            self.plans,
            gateway_id=self.gateway_id,
            reporter=self.reporter,
        )
