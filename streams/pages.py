"""The worker's web pages: liveness, readiness, its counters and its metric windows, and
the dashboard and ``/metrics`` (:mod:`shardshape.streams.dashboard`)."""

from __future__ import annotations

import faust

from shardshape.core.follower import TopicFollower
from shardshape.core.health import HEALTH_PATH, READY_PATH, Checks, liveness, readiness
from shardshape.core.settings import Settings
from shardshape.streams.dashboard.prometheus import PlannerCollector
from shardshape.streams.dashboard.views import add_web_views
from shardshape.streams.parts import WorkerParts

STATS_PATH = "/shardshape/stats"
SHARDS_PATH = "/shardshape/shards"


def add_worker_pages(app: faust.App, settings: Settings, parts: WorkerParts) -> None:
    """Serve ``/healthz``, ``/readyz``, ``/shardshape/stats``, ``/shardshape/shards``, and
    the dashboard and ``/metrics`` (:func:`add_web_views`, fed with the 10 s windows)."""

    @app.page(HEALTH_PATH)
    async def healthz(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        status, body = liveness()
        return web.json(body, status=status)

    @app.page(READY_PATH)
    async def readyz(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        checks = worker_readiness(app, parts.handover.generation, parts.follower)
        status, body = readiness(checks)
        return web.json(body, status=status)

    @app.page(STATS_PATH)
    async def stats(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        return web.json(
            {
                **parts.counters.as_dict(),
                "snapshot_versions": parts.profiling.versions(),
                "keys": parts.profiling.key_counts(),
                "keys_stored": len(parts.key_stats),  # key-stats table entries held here
                "assignment": assignment(app),
            }
        )

    @app.page(SHARDS_PATH)
    async def shards(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        """This worker's windows: stored stats per slot, for `shardshape shards` to merge."""
        return web.json({name: parts.windows.slots(name) for name in parts.windows.tables})

    add_web_views(
        app,
        settings,
        counters=parts.counters,
        windows=lambda: parts.windows.slots("10s"),
        signer=parts.checker,
        collectors=[PlannerCollector(parts.planning)] if parts.planning is not None else [],
    )


def worker_readiness(app: faust.App, generation: int, routing: TopicFollower) -> Checks:
    """What ``/readyz`` checks: joined the group, partitions assigned, tables recovered, the
    routing topic read to its end (the latest shard snapshot adopted)."""
    recovery = app.tables.recovery
    return {
        "joined": (
            generation >= 0 and not app.rebalancing,
            f"joining consumer group {app.conf.id}" if generation < 0 else "rebalancing",
        ),
        "assigned": (bool(app.consumer.assignment()), "no partitions assigned"),
        "recovered": (
            recovery.completed.is_set() and not recovery.in_recovery,
            "recovering tables from their changelogs",
        ),
        "snapshot": (
            routing.caught_up.is_set(),
            "reading the routing topic (the latest shard snapshot not adopted yet)",
        ),
    }


def assignment(app: faust.App) -> dict[str, list[int]]:
    """The partitions this worker's consumer owns now, per topic (changelogs included)."""
    owned: dict[str, list[int]] = {}
    for tp in sorted(app.consumer.assignment()):
        owned.setdefault(tp.topic, []).append(tp.partition)
    return owned
