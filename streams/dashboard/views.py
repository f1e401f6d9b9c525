"""The worker's read-only web views: the dashboard, its JSON and assets, and ``/metrics``.

:func:`add_web_views` is the one call the worker's pages make (``shardshape.streams.pages``):
it starts followers of the routing and plans topics into a
:class:`~shardshape.streams.dashboard.state.DashboardState`, feeds it the worker's 10 s metric
windows and pipeline counters on a timer, and serves:

- ``/dashboard``: the page (HTML, one script, one stylesheet, all served from here);
- ``/dashboard/api/state``: the JSON it polls (also read by ``shardshape demo``);
- ``/metrics``: Prometheus exposition (:mod:`shardshape.streams.dashboard.prometheus`), text or
  OpenMetrics as the scraper's ``Accept`` asks, gzipped when it accepts that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Protocol

import faust

from shardshape.allocator.pools_config import load_pools_config
from shardshape.core.exposition import negotiated
from shardshape.core.follower import TopicFollower
from shardshape.core.settings import Settings
from shardshape.streams.dashboard.prometheus import worker_registry
from shardshape.streams.dashboard.state import DashboardState

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from shardshape.core.signing import Checker

DASHBOARD_PATH = "/dashboard"
STATE_PATH = "/dashboard/api/state"
METRICS_PATH = "/metrics"
_ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_UPDATE_EVERY_S = 2.0


class _Counters(Protocol):
    def as_dict(self) -> dict[str, float]: ...


def add_web_views(
    app: faust.App,
    settings: Settings,
    *,
    counters: _Counters,
    windows: Callable[[], list[dict]],
    signer: Checker | None = None,
    collectors: Iterable[Collector] = (),
) -> DashboardState | None:
    """Register the dashboard and ``/metrics`` on ``app`` (nothing when its web is off).

    Parameters
    ----------
    counters
        The worker's pipeline counters (``shardshape.streams.counters.PipelineCounters``).
    windows
        This worker's 10 s metric windows with what is not written yet
        (``shardshape.streams.windows.MetricWindows.slots``).
    signer
        With signing keys set: snapshots, routing entries and plans not signed with
        it are not shown (the followers drop them, as the worker's own do).
    """
    if not settings.web_enabled:
        return None
    pools = load_pools_config(settings.pools_config) if settings.pools_config else None
    state = DashboardState(pools)
    config = settings.confluent_config()
    followers = [
        TopicFollower(config, settings.topic_routing, state.on_routing, signer=signer),
        TopicFollower(config, settings.topic_plans, state.on_plan, signer=signer),
    ]
    registry = worker_registry(state, collectors)
    static = files("shardshape.streams.dashboard") / "static"
    page = (static / "index.html").read_text(encoding="utf-8")
    assets = {name: (static / name).read_bytes() for name in _ASSETS}
    app.shardshape_dashboard = state  # read by tests

    @app.task
    async def follow_for_dashboard() -> None:
        for follower in followers:
            follower.start()

    @app.on_before_shutdown.connect
    async def stop_dashboard_followers(app: faust.App, **kwargs: object) -> None:
        for follower in followers:
            follower.stop()

    @app.timer(_UPDATE_EVERY_S)
    async def update_dashboard() -> None:
        now = time.time()
        state.update_windows(windows(), now)
        state.note_pipeline(counters.as_dict(), _consumer_lag(app, settings.topic_requests), now)

    async def dashboard(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        return web.html(page)

    app.page(DASHBOARD_PATH, name="shardshape-dashboard")(dashboard)
    app.page(f"{DASHBOARD_PATH}/", name="shardshape-dashboard-slash")(dashboard)

    @app.page(f"{DASHBOARD_PATH}/static/{{name}}", name="shardshape-dashboard-static")
    async def asset(
        web: faust.web.Web, request: faust.web.Request, name: str
    ) -> faust.web.Response:
        if name not in assets:
            return web.text(f"no asset {name!r}\n", status=404)
        return web.bytes(assets[name], headers={"Content-Type": _ASSETS[name]})

    @app.page(STATE_PATH, name="shardshape-dashboard-state")
    async def dashboard_state(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        return web.json(state.document(), headers={"Cache-Control": "no-store"})

    @app.page(METRICS_PATH, name="shardshape-metrics")
    async def metrics(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        body, headers = negotiated(
            registry,
            request.headers.get("Accept", ""),
            request.headers.get("Accept-Encoding", ""),
        )
        return web.bytes(body, headers=headers)

    return state


def _consumer_lag(app: faust.App, topic: str) -> dict[tuple[str, int], int]:
    """Messages not yet read per partition of ``topic`` this worker consumes (Faust's monitor:
    the highwater seen at the last fetch, and the offset last read)."""
    monitor: Any = app.monitor
    read = monitor.tp_read_offsets
    lag = {}
    for tp, end in list(monitor.tp_end_offsets.items()):
        if tp.topic == topic:
            last = read.get(tp)
            lag[(tp.topic, tp.partition)] = max(0, end - (last + 1 if last is not None else 0))
    return lag
