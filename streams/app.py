"""The Faust application: topics, tables, agents, timers and the worker entry point.

:func:`create_app` declares them and nothing else; agents and timers are a few lines each,
handing what arrives to plain objects (:class:`~shardshape.streams.parts.WorkerParts`: the
request pipeline of :mod:`shardshape.streams.pipeline` and its steps, the rebalance handover,
the snapshot merger). Values on every topic are raw bytes decoded by
``shardshape.core.contracts``: nothing is unpickled.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from datetime import timedelta

import faust

from shardshape.allocator.planning import PlanningLoop, WindowReporter, plan_listener
from shardshape.core.contracts import QUEUE_REPORT_KEY, encode
from shardshape.core.follower import TopicFollower
from shardshape.core.logs import use_log_format
from shardshape.core.net import ensure_port_free
from shardshape.core.settings import Settings
from shardshape.models.blas import limit_blas_threads
from shardshape.streams.faust_setup import bytes_table, faust_app, raw_topic
from shardshape.streams.fetch_wait import set_fetch_max_wait
from shardshape.streams.gaps import start_offsets
from shardshape.streams.highwater import apply_end_offset_correction
from shardshape.streams.intake import TAKE_MESSAGES, TAKE_WITHIN_S, raw_message, take_queued
from shardshape.streams.internals import check_internals
from shardshape.streams.pages import add_worker_pages
from shardshape.streams.parts import WorkerParts
from shardshape.streams.publisher import flush_before_commits
from shardshape.streams.seek_back import seek_back_past_revoked
from shardshape.streams.snapshots import publish_merged
from shardshape.streams.windows import METRIC_WINDOWS, WINDOWS_KEPT

log = logging.getLogger("shardshape.worker")

READY_LINE = "shardshape worker ready"


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings`` (which must name the bootstrap servers).

    Declares its topics, tables, agents, timers and pages; they hand their work to the
    worker's plain parts (:class:`~shardshape.streams.parts.WorkerParts`).
    """
    app = faust_app(settings)
    requests = raw_topic(app, settings.topic_requests, settings.requests_partitions)
    dlq = raw_topic(app, settings.topic_dlq)
    # Internal: each worker's model summary; one partition, so exactly one worker merges.
    summaries = raw_topic(app, f"{settings.app_id}-summaries", partitions=1)
    # Per-key statistics survive a worker's loss through this table's changelog (JSON bytes).
    key_stats = bytes_table(app, "key-stats", settings.requests_partitions)
    # Request metrics in tumbling windows: one record per (source partition, window) holding
    # every (service, shard, arm) series' stats, written whole (core.metrics.WindowRecorder).
    # Named apart from the per-series records of earlier versions, which it does not read.
    metric_tables = {
        name: bytes_table(app, f"shard-windows-{name}", settings.requests_partitions).tumbling(
            size, expires=timedelta(seconds=size * WINDOWS_KEPT)
        )
        for name, size in METRIC_WINDOWS.items()
    }
    parts = WorkerParts(
        settings, key_stats, metric_tables, dlq, start_offsets(app, settings.topic_requests)
    )
    flush_before_commits(app, parts.routing, before=parts.windows.flush)

    @app.on_partitions_assigned.connect
    async def after_rebalance(app: faust.App, assigned: set, **kwargs: object) -> None:
        parts.handover.assigned(assigned, app.consumer_generation_id)

    @app.agent(requests, name="shardshape.profile")
    async def profile_requests(stream: faust.StreamT) -> None:
        # Queued messages are profiled together (streams.intake): under load the fixed cost
        # of a profiler call is paid once per MERGE_EVENTS events, not once per message.
        async for events in take_queued(stream, TAKE_MESSAGES, within=TAKE_WITHIN_S):
            await parts.pipeline.handle([raw_message(event) for event in events])

    @app.agent(summaries, name="shardshape.merge")
    async def merge_summaries(stream: faust.StreamT) -> None:
        async for value in stream:
            parts.merger.add(value)

    @app.timer(0.5)
    async def adopt_snapshots() -> None:
        parts.profile.adopt_offered()  # the agent adopts between batches; this when idle

    @app.timer(settings.snapshot_interval_s)
    async def share_summary() -> None:
        for key, value in parts.profiling.summaries():
            await summaries.send(key=key, value=value)

    @app.timer(settings.snapshot_interval_s)
    async def publish_snapshots() -> None:
        publish_merged(parts.merger, parts.routing)  # on the summaries partition's owner

    @app.timer(10.0)
    async def log_progress() -> None:
        if line := parts.counters.summary():
            log.info("%s; snapshot versions %s", line, parts.profiling.versions())

    if parts.planning is not None:
        _add_planning(app, settings, parts, parts.planning)
    add_worker_pages(app, settings, parts)  # health, readiness, stats, dashboard, /metrics

    @app.task
    async def follow_routing() -> None:
        parts.follower.start()

    @app.on_before_shutdown.connect
    async def stop_following(app: faust.App, **kwargs: object) -> None:
        parts.close()  # before the broker goes away

    return app


def _add_planning(
    app: faust.App, settings: Settings, parts: WorkerParts, planning: PlanningLoop
) -> None:
    """Every worker reports its closed metric windows; the owner of the one-partition reports
    topic learns from all of them and from the gateways' queue reports, and publishes plans."""
    reports = raw_topic(app, settings.topic_windows, partitions=1)
    plans = raw_topic(app, settings.topic_plans)
    signer, replicas = parts.signer, parts.replicas
    reporter = WindowReporter(parts.worker_id, grace_s=2.0)
    follower = TopicFollower(
        settings.confluent_config(),
        settings.topic_plans,
        plan_listener(planning),
        signer=parts.checker,
    )

    @app.timer(1.0)
    async def report_windows() -> None:
        now = time.time()
        slots = parts.windows.slots(settings.plan_window)
        for value in reporter.closed(slots, now, replicas.live(now)):
            await reports.send(key=b"windows", value=value)

    @app.agent(reports, name="shardshape.plan")
    async def collect_reports(stream: faust.StreamT) -> None:
        # Workers' window reports and gateways' queue reports share the topic, told by key.
        async for key, value in stream.items():
            if key == QUEUE_REPORT_KEY:
                planning.add_queued(value)
            else:
                planning.add_report(value)

    @app.timer(1.0)
    async def publish_plans() -> None:
        # Off the event loop: a long optimiser run must not hold up heartbeats (the group
        # would rebalance), fetches or the web views.
        loop = asyncio.get_running_loop()
        for plan in await loop.run_in_executor(None, planning.tick, time.time()):
            key, value = plan.service.encode(), encode(plan)
            headers = signer.headers(key, value) if signer is not None else None
            await plans.send(key=key, value=value, headers=headers)
            log.info("published plan %s v%d: %s", plan.service, plan.version,
                     plan.rationale.splitlines()[0] if plan.rationale else "")  # fmt: skip

    @app.task
    async def follow_plans() -> None:
        follower.start()

    @app.on_before_shutdown.connect
    async def stop_following_plans(app: faust.App, **kwargs: object) -> None:
        follower.stop()


class _Worker(faust.Worker):
    """Faust's worker, plus one plain "ready" line that people and tests can wait for."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        use_log_format(logger, self.app.shardshape_settings.log_format)
        # The frameworks are chatty at INFO; at that level only shardshape's own lines show.
        if level >= logging.INFO:
            for name in ("faust", "aiokafka", "mode"):
                logging.getLogger(name).setLevel(max(level, logging.WARNING))
            # "producer buffer full" is Faust's own back-pressure at work (table changelogs
            # outpacing the producer), logged at WARNING per batch: nothing for a user to do.
            logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        settings: Settings = self.app.shardshape_settings
        web = (
            f", web on http://{settings.web_bind}:{settings.web_port}"
            if settings.web_enabled
            else ""
        )
        print(
            f"{READY_LINE}: consuming {settings.topic_requests} on {settings.kafka_bootstrap}, "
            f"invalid messages to {settings.topic_dlq}{web}",
            flush=True,
        )


def _tune_process() -> None:
    """One BLAS thread (see models.blas); collect young objects less often and never rescan
    the long-lived ones.

    A batch of 500 events allocates tens of thousands of short-lived objects; with Python's
    default thresholds each batch triggers several collections that walk every long-lived
    object (Faust, the models) again: about a third of the time spent decoding a batch.
    """
    limit_blas_threads(1)
    gc.collect()
    gc.freeze()  # what exists now (modules, the app) lives as long as the process
    gc.set_threshold(50_000, 50, 100)


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until SIGINT/SIGTERM. Raises SystemExit when done."""
    if settings.web_enabled:
        ensure_port_free(settings.web_port, "WEB_PORT")
    (settings.data_dir / "worker").mkdir(parents=True, exist_ok=True)
    check_internals()  # the private attributes patched below still exist
    set_fetch_max_wait(settings.fetch_max_wait_ms)
    seek_back_past_revoked()
    apply_end_offset_correction(settings.confluent_config(), settings.end_offset_correction)
    app = create_app(settings)
    app.shardshape_settings = settings
    _tune_process()
    _Worker(
        app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False
    ).execute_from_commandline()
