"""The Faust application: topics, agents and the worker entry point.

Agents stay short; what they do lives in plain functions (``shardshape.streams.validation``).
Values on every topic are raw bytes decoded by ``shardshape.core.contracts``: nothing is
unpickled.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import ssl
import time
from datetime import timedelta

import faust
import orjson
from faust.types.auth import CredentialsT

from shardshape.allocator.planning import (
    PlanningLoop,
    ReplicaTracker,
    WindowReporter,
    experiment_policy,
    plan_listener,
)
from shardshape.allocator.pools_config import load_pools_config
from shardshape.core.columns import concat_columns
from shardshape.core.contracts import (
    MAX_ID_CHARS,
    MAX_MESSAGE_BYTES,
    QUEUE_REPORT_KEY,
    encode,
    snapshot_key,
)
from shardshape.core.follower import TopicFollower
from shardshape.core.health import HEALTH_PATH, READY_PATH, Checks, liveness, readiness
from shardshape.core.logs import use_log_format
from shardshape.core.metrics import (
    WindowRecorder,
    aggregate,
    partition_key,
    partition_of,
    slots_of,
)
from shardshape.core.net import ensure_port_free
from shardshape.core.partitioning import partition_for
from shardshape.core.settings import Settings
from shardshape.core.signing import Checker, Signer, checker_from, signer_from
from shardshape.models.blas import limit_blas_threads
from shardshape.models.profiler import ProfilerConfig
from shardshape.streams.dashboard.prometheus import PlannerCollector
from shardshape.streams.dashboard.views import add_web_views
from shardshape.streams.fetch_wait import set_fetch_max_wait
from shardshape.streams.gaps import GapReader, SkippedOffsets, start_offset
from shardshape.streams.highwater import apply_end_offset_correction
from shardshape.streams.intake import Received, merge_groups, take_queued
from shardshape.streams.internals import check_internals
from shardshape.streams.profiling import (
    KeyCheckpoints,
    ProfilingWorker,
    SnapshotMerger,
    snapshot_listener,
)
from shardshape.streams.publisher import RoutingPublisher, flush_before_commits
from shardshape.streams.rebalance import forget_moved_partitions, kept_partitions
from shardshape.streams.validation import MessageOrigin, validate_message

log = logging.getLogger("shardshape.worker")

METRIC_WINDOWS = {"10s": 10.0, "1m": 60.0}  # tumbling window sizes of the metrics tables
# The profile agent takes up to TAKE_MESSAGES queued messages at once and profiles up to
# MERGE_EVENTS of their events per call (streams.intake); a buffered message waits at most
# TAKE_WITHIN_S (it normally waits not at all: the buffer goes when the queue is empty).
TAKE_MESSAGES = 16
MERGE_EVENTS = 1_000
TAKE_WITHIN_S = 0.2
WINDOWS_KEPT = 30  # windows of each size a worker keeps

READY_LINE = "shardshape worker ready"


class PipelineCounters:
    """Totals the worker has seen since start, logged on a timer."""

    def __init__(self) -> None:
        self.messages = 0
        self.events = 0
        self.dead_letters = 0
        self.profiler_calls = 0  # fewer than messages when queued messages are merged
        self.first_time = 0.0  # wall time of the first and last message handled
        self.last_time = 0.0
        self.first_cpu = 0.0  # the process's CPU seconds (all threads) at those moments
        self.last_cpu = 0.0
        self.first_loop_cpu = 0.0  # the event loop thread's (the agent's) CPU seconds
        self.last_loop_cpu = 0.0
        self._last_logged = (0, 0, 0)
        self._last_time = time.monotonic()

    def record(self, events: int, dead_letters: int) -> None:
        now, cpu, loop_cpu = time.time(), time.process_time(), time.thread_time()
        if not self.first_time:
            self.first_time, self.first_cpu, self.first_loop_cpu = now, cpu, loop_cpu
        self.last_time, self.last_cpu, self.last_loop_cpu = now, cpu, loop_cpu
        self.messages += 1
        self.events += events
        self.dead_letters += dead_letters

    def as_dict(self) -> dict[str, float]:
        return {
            "messages": self.messages,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "profiler_calls": self.profiler_calls,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "cpu_seconds": self.last_cpu - self.first_cpu,
            "loop_cpu_seconds": self.last_loop_cpu - self.first_loop_cpu,
        }

    def summary(self) -> str | None:
        """A log line when something changed since the last one, else None."""
        now = time.monotonic()
        current = (self.messages, self.events, self.dead_letters)
        if current == self._last_logged:
            return None
        rate = (self.events - self._last_logged[1]) / max(now - self._last_time, 1e-9)
        self._last_logged, self._last_time = current, now
        return (
            f"{self.messages} messages, {self.events} valid events ({rate:,.0f}/s), "
            f"{self.dead_letters} sent to the DLQ"
        )


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings`` (which must name the bootstrap servers)."""
    bootstrap = settings.require_bootstrap()
    worker_id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host.strip()}" for host in bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 3,
        broker_commit_interval=settings.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        # A fetch returns up to this much per partition: with 100+ kB batches, aiokafka's 1 MB
        # default leaves the agent idle a third of the time, waiting for the next fetch.
        consumer_max_fetch_size=16 * 1024 * 1024,
        # A dead letter carries a whole rejected message (up to MAX_MESSAGE_BYTES) in base64.
        producer_max_request_size=2 * MAX_MESSAGE_BYTES,
        datadir=str(settings.data_dir / "worker"),
        store="memory://",
        # No standby replicas: Faust applies a standby's changelog records to the same table
        # data, in buffered batches at moments of its own, so a worker's views would count
        # some slots of partitions it does not own next to their owner's. A worker restores a
        # partition it takes over from the changelog anyway (memory store).
        table_standby_replicas=0,
        # Topics carry raw bytes (contracts decode them); table keys, such as the windowed
        # tables' (key, window) pairs, are JSON.
        key_serializer="json",
        value_serializer="raw",
        topic_partitions=settings.requests_partitions,
        topic_replication_factor=settings.replication_factor,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        autodiscover=False,
    )

    requests = _raw_topic(app, settings.topic_requests, settings.requests_partitions)
    dlq = _raw_topic(app, settings.topic_dlq)
    # Routing entries and snapshots go out through librdkafka (see streams.publisher).
    signer = signer_from(settings)  # signs what this worker publishes
    checker = checker_from(settings)  # checks what it reads
    routing = RoutingPublisher(settings.confluent_config(), settings.topic_routing, signer)
    # Internal: each worker's model summary; one partition, so exactly one worker merges.
    summaries = _raw_topic(app, f"{settings.app_id}-summaries", partitions=1)
    # Per-key statistics survive a worker's loss through this table's changelog (JSON bytes).
    key_stats = app.Table(
        "key-stats",
        default=None,
        key_type=str,
        value_type=bytes,
        partitions=settings.requests_partitions,
    )
    # Request metrics in tumbling windows: one record per (source partition, window) holding
    # every (service, shard, arm) series' stats, written whole (streams.metrics.WindowRecorder).
    # Named apart from the per-series records of earlier versions, which it does not read.
    metric_tables = {
        name: app.Table(
            f"shard-windows-{name}",
            default=None,
            key_type=str,
            value_type=bytes,
            partitions=settings.requests_partitions,
        ).tumbling(size, expires=timedelta(seconds=size * WINDOWS_KEPT))
        for name, size in METRIC_WINDOWS.items()
    }
    planning = (
        PlanningLoop(
            load_pools_config(settings.pools_config),
            METRIC_WINDOWS[settings.plan_window],
            horizon_s=settings.plan_horizon_s,
            experiments=experiment_policy(settings),
        )
        if settings.pools_config
        else None
    )
    recorders = {
        name: WindowRecorder(
            *_window_store(table), METRIC_WINDOWS[name], settings.metrics_write_interval_s
        )
        for name, table in metric_tables.items()
    }
    checkpoints = KeyCheckpoints(settings.checkpoint_interval_s)

    def write_unwritten_metrics() -> None:
        # Before offsets are committed, every window total of the batches they cover must be
        # in the changelog: a restart then skips those batches (offsets) and loses nothing.
        for recorder in recorders.values():
            recorder.flush()

    flush_before_commits(app, routing, before=write_unwritten_metrics)
    counters = PipelineCounters()
    replicas = ReplicaTracker(ttl_s=60.0)  # the gateways whose batches this worker sees
    # Federated: workers predict with the merged global snapshot, never a local model.
    # BLAS is limited once for the whole worker (run_worker), not around every batch.
    profiler_config = ProfilerConfig(
        max_shards=settings.max_shards,
        federated=True,
        blas_threads=None,
        max_keys=settings.max_keys,
    )
    profiling = ProfilingWorker(profiler_config, worker_id)
    merger = SnapshotMerger(profiler_config)
    follower = TopicFollower(
        settings.confluent_config(),
        settings.topic_routing,
        snapshot_listener(profiling, merger, planning),
        signer=checker,
    )
    app.shardshape_counters = counters  # read by tests and web views
    app.shardshape_profiling = profiling

    def recover_key(key: str) -> list | None:
        stored = key_stats.get(key)
        return orjson.loads(stored)["rec"] if stored else None

    def retire_evicted() -> None:
        # Keys evicted for max_keys leave the key-stats table and the routing topic too, so
        # neither (nor a gateway's routing table, nor a recovering worker) keeps them.
        evicted = profiling.take_evicted()
        if not evicted:
            return
        checkpoints.forget(evicted)
        stored = key_stats.data
        for key in evicted:
            routing.publish(key[:MAX_ID_CHARS].encode(), None)
            if stored.pop(key, None) is not None:
                partition = partition_for(key, settings.requests_partitions)
                key_stats.send_changelog(partition, key, None, value_serializer="raw")

    # Offsets the consumer skips are read again directly (streams.gaps, docs/reliability.md).
    skipped = SkippedOffsets(
        lambda: GapReader(
            settings.confluent_config(), settings.topic_requests, f"{settings.app_id}.gap-reader"
        )
    )
    owned: set[int] = set()  # requests partitions owned since the last rebalance
    generation = [-1]  # the consumer group generation of that rebalance

    @app.on_partitions_assigned.connect
    async def after_rebalance(app: faust.App, assigned: set, **kwargs: object) -> None:
        now = {tp.partition for tp in assigned if tp.topic == settings.topic_requests}
        consecutive = app.consumer_generation_id == generation[0] + 1
        generation[0] = app.consumer_generation_id
        skipped.forget(keep=kept_partitions(owned, now, consecutive=consecutive))
        dropped = forget_moved_partitions(
            owned, now, settings.requests_partitions, consecutive=consecutive,
            recorders=recorders.values(), checkpoints=checkpoints, profiling=profiling,
            metric_data=[table.table.data for table in metric_tables.values()],
            key_stats=key_stats.data,
        )  # fmt: skip
        log.info("partitions of %s now %s (were %s, generation %d); %d keys left for their "
                 "new owners", settings.topic_requests, sorted(now), sorted(owned),
                 generation[0], dropped)  # fmt: skip
        owned.clear()
        owned.update(now)

    def profile(group: list[Received]) -> None:
        """Profile messages' events in one call; then per message, as if one by one."""
        batches = [message.batch for message in group if len(message.batch)]
        if batches:
            outcome = profiling.process(
                concat_columns(batches), recover=recover_key, batches=len(batches)
            )
            counters.profiler_calls += 1
            for entry in outcome.changes:
                routing.publish(entry.key.encode(), encode(entry))
            retire_evicted()  # after the entries: a key evicted meanwhile stays retired
            routing.poll()
        now = time.time()
        # Records hold every event of the group: stored with their partition's last offset.
        last_offset = {message.partition: message.offset for message in group}
        start = 0
        for message in group:
            n, partition = len(message.batch), message.partition
            if n:
                keys, shards = outcome.keys[start : start + n], outcome.shards[start : start + n]
                start += n
                checkpoints.mark(partition, keys)
                due = checkpoints.due(partition, now)
                for key, record in profiling.records(due).items():
                    value = orjson.dumps({"rec": record, "offset": last_offset[partition]})
                    # key_stats[key] = value, to the message's partition (no event in context)
                    key_stats.data[key] = value
                    key_stats.send_changelog(partition, key, value)
                stats = aggregate(message.batch, shards)
                for recorder in recorders.values():
                    recorder.record(stats, partition, message.offset, message.timestamp, now)
            counters.record(n, message.dead_letters)

    async def receive(
        partition: int, offset: int, timestamp: float, key: bytes | None, value: bytes | None
    ) -> Received:
        """A requests message validated; its rejected parts go to the DLQ."""
        origin = MessageOrigin(settings.topic_requests, partition, offset, key)
        result = validate_message(value, origin, worker_id)
        batch = result.batch
        if len(batch):
            replicas.saw(result.gateway_id, set(batch.service), time.time())
        for letter in result.dead_letters:
            log.warning("dead letter %s[%d]@%d: %s", origin.topic, origin.partition,
                        origin.offset, letter.reason)  # fmt: skip
            await dlq.send(key=key, value=encode(letter))
        return Received(partition, offset, timestamp, batch, len(result.dead_letters))

    @app.agent(requests, name="shardshape.profile")
    async def profile_requests(stream: faust.StreamT) -> None:
        # Queued messages are profiled together (streams.intake): under load the fixed cost
        # of a profiler call is paid once per MERGE_EVENTS events, not once per message.
        async for events in take_queued(stream, TAKE_MESSAGES, within=TAKE_WITHIN_S):
            received = []
            for event in events:
                message = event.message
                start = start_offset(app.consumer, message.tp)
                for gone in await skipped.before(message.partition, message.offset, start):
                    received.append(await receive(gone.partition, gone.offset, gone.timestamp,
                                                  gone.key, gone.value))  # fmt: skip
                mine = (message.partition, message.offset, message.timestamp, message.key)
                received.append(await receive(*mine, event.value))
            for group in merge_groups(received, MERGE_EVENTS):
                profile(group)

    @app.agent(summaries, name="shardshape.merge")
    async def merge_summaries(stream: faust.StreamT) -> None:
        async for value in stream:
            merger.add(value)

    @app.timer(0.5)
    async def adopt_snapshots() -> None:
        # Between batches the agent adopts new snapshots itself; this covers an idle stream.
        for entry in profiling.adopt_offered():
            routing.publish(entry.key.encode(), encode(entry))
        routing.poll()

    @app.timer(settings.snapshot_interval_s)
    async def share_summary() -> None:
        for key, value in profiling.summaries():
            await summaries.send(key=key, value=value)

    @app.timer(settings.snapshot_interval_s)
    async def publish_snapshots() -> None:
        # Only the worker that owns the summaries partition has summaries to merge.
        for snapshot in merger.merge():
            routing.publish(snapshot_key(snapshot.service), encode(snapshot))
            log.info("published snapshot %s v%d (%d shards)", snapshot.service,
                     snapshot.version, len(snapshot.shards))  # fmt: skip

    @app.timer(10.0)
    async def log_progress() -> None:
        line = counters.summary()
        if line:
            log.info("%s; snapshot versions %s", line, profiling.versions())

    @app.page(HEALTH_PATH)
    async def healthz(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        status, body = liveness()
        return web.json(body, status=status)

    @app.page(READY_PATH)
    async def readyz(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        status, body = readiness(_worker_readiness(app, generation[0], follower))
        return web.json(body, status=status)

    @app.page("/shardshape/stats")
    async def stats(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        return web.json(
            {
                **counters.as_dict(),
                "snapshot_versions": profiling.versions(),
                "keys": profiling.key_counts(),
                "keys_stored": len(key_stats.data),  # key-stats table entries held here
                "assignment": _assignment(app),
            }
        )

    if planning is not None:
        window = settings.plan_window
        _add_planning(
            app,
            settings,
            planning,
            metric_tables[window],
            recorders[window],
            worker_id,
            replicas,
            signer,
            checker,
        )

    @app.page("/shardshape/shards")
    async def shards(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        """This worker's windows: stored stats per slot, for `shardshape shards` to merge."""
        return web.json(
            {
                name: window_slots(table, recorders[name].unwritten())
                for name, table in metric_tables.items()
            }
        )

    # The dashboard and /metrics (streams.dashboard), fed with the 10 s windows.
    add_web_views(
        app,
        settings,
        counters=counters,
        windows=lambda: window_slots(metric_tables["10s"], recorders["10s"].unwritten()),
        signer=checker,
        collectors=[PlannerCollector(planning)] if planning is not None else [],
    )

    @app.task
    async def follow_routing() -> None:
        follower.start()

    @app.on_before_shutdown.connect
    async def stop_following(app: faust.App, **kwargs: object) -> None:
        follower.stop()  # before the broker goes away
        routing.flush(10.0)
        skipped.close()

    return app


def _worker_readiness(app: faust.App, generation: int, routing: TopicFollower) -> Checks:
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


def _assignment(app: faust.App) -> dict[str, list[int]]:
    """The partitions this worker's consumer owns now, per topic (changelogs included)."""
    owned: dict[str, list[int]] = {}
    for tp in sorted(app.consumer.assignment()):
        owned.setdefault(tp.topic, []).append(tp.partition)
    return owned


def _raw_topic(app: faust.App, name: str, partitions: int | None = None) -> faust.TopicT:
    """A topic of raw bytes: the contracts module decodes them, nothing is unpickled."""
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", partitions=partitions
    )


def _add_planning(
    app: faust.App,
    settings: Settings,
    planning: PlanningLoop,
    table: faust.types.tables.WindowWrapperT,
    recorder: WindowRecorder,
    worker_id: str,
    replicas: ReplicaTracker,
    signer: Signer | None = None,
    checker: Checker | None = None,
) -> None:
    """Every worker reports its closed metric windows; the owner of the one-partition reports
    topic learns from all of them and from the gateways' queue reports, and publishes plans."""
    reports = _raw_topic(app, settings.topic_windows, partitions=1)
    plans = _raw_topic(app, settings.topic_plans)
    reporter = WindowReporter(worker_id, grace_s=2.0)
    follower = TopicFollower(
        settings.confluent_config(), settings.topic_plans, plan_listener(planning), signer=checker
    )

    @app.timer(1.0)
    async def report_windows() -> None:
        now = time.time()
        slots = window_slots(table, recorder.unwritten())
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


def _window_store(table: faust.types.tables.WindowWrapperT):  # type: ignore[no-untyped-def]
    """``get(partition, window_start)`` and ``put(partition, window_start, data)`` of source
    partitions' window records on a tumbling table, addressing the window by its start,
    whatever event is being processed."""
    inner = table.table

    def key(partition: int, start: float) -> tuple[str, tuple[float, float]]:
        return partition_key(partition), inner.window.ranges(start)[0]

    def get(partition: int, start: float) -> bytes | None:
        return inner.data.get(key(partition, start))

    def put(partition: int, start: float, data: bytes) -> None:
        # To the source partition's changelog partition (the agent handles several messages'
        # events at once, outside any one event's context), as ``inner[key] = data`` in that
        # event's would.
        where = key(partition, start)
        inner.data[where] = data
        inner.send_changelog(partition, where, data)
        inner._maybe_set_key_ttl(where, partition)  # Faust expires old windows by these

    return get, put


def window_slots(
    table: faust.types.tables.WindowWrapperT,
    unwritten: dict[tuple[str, float], bytes] | None = None,
) -> list[dict]:
    """Slots of a windowed table (each partition record's, see
    :func:`~shardshape.core.metrics.slots_of`), grouped by window, newest first
    (JSON-able); ``unwritten`` (from :meth:`WindowRecorder.unwritten`) overlays totals not
    yet written."""
    inner = table.table
    stored = {
        (slot, window): data
        for (key, window), record in list(inner.data.items())
        for slot, data in slots_of(partition_of(key), record).items()
    }
    for (slot, start), data in (unwritten or {}).items():
        stored[(slot, inner.window.ranges(start)[0])] = data
    windows: dict[tuple[float, float], dict[str, str]] = {}
    for (slot, (start, end)), data in stored.items():
        windows.setdefault((start, end), {})[slot] = data.decode()
    return [
        {"start": start, "end": end, "slots": slots}
        for (start, end), slots in sorted(windows.items(), reverse=True)
    ]


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The security settings as Faust (aiokafka) credentials; None for PLAINTEXT."""
    protocol = settings.security_protocol
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
        )
        if settings.ssl_certfile:
            context.load_cert_chain(
                str(settings.ssl_certfile),
                str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
            )
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


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
    apply_end_offset_correction(settings.confluent_config(), settings.end_offset_correction)
    app = create_app(settings)
    app.shardshape_settings = settings
    _tune_process()
    _Worker(
        app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False
    ).execute_from_commandline()
