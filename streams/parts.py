"""The plain objects one worker runs, wired together from its settings and its Faust tables.

``create_app`` declares the Faust side (topics, tables, agents, timers) and hands everything
that arrives to these parts; none of them calls back into the app.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

from shardshape.allocator.planning import PlanningLoop, ReplicaTracker, experiment_policy
from shardshape.allocator.pools_config import load_pools_config
from shardshape.core.follower import TopicFollower
from shardshape.core.settings import Settings
from shardshape.core.signing import checker_from, signer_from
from shardshape.models.profiler import ProfilerConfig
from shardshape.streams.counters import PipelineCounters
from shardshape.streams.eviction import EvictedKeys
from shardshape.streams.gaps import GapReader, SkippedOffsets
from shardshape.streams.key_stats import ChangelogTable, KeyStats
from shardshape.streams.pipeline import RequestPipeline
from shardshape.streams.profile_step import ProfileStep
from shardshape.streams.profiling import (
    KeyCheckpoints,
    ProfilingWorker,
    SnapshotMerger,
    snapshot_listener,
)
from shardshape.streams.publisher import RoutingPublisher
from shardshape.streams.rebalance import PartitionHandover
from shardshape.streams.receiving import DeadLetterTopic, Receiver
from shardshape.streams.record_step import RecordStep
from shardshape.streams.windows import METRIC_WINDOWS, MetricWindows, WindowTable


class WorkerParts:
    """One worker's parts.

    Parameters
    ----------
    settings
        The worker's settings.
    key_stats
        The key-stats table.
    metric_tables
        The metrics tables, by window name (:data:`~shardshape.streams.windows.METRIC_WINDOWS`).
    dlq
        The dead-letter topic.
    started
        Where the consumer started a requests partition (see :class:`RequestPipeline`).
    """

    def __init__(
        self,
        settings: Settings,
        key_stats: ChangelogTable,
        metric_tables: Mapping[str, WindowTable],
        dlq: DeadLetterTopic,
        started: Callable[[int], int | None],
    ) -> None:
        self.worker_id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.signer = signer_from(settings)  # signs what this worker publishes
        self.checker = checker_from(settings)  # checks what it reads
        # Routing entries and snapshots go out through librdkafka (see streams.publisher).
        self.routing = RoutingPublisher(
            settings.confluent_config(), settings.topic_routing, self.signer
        )
        self.planning = (
            PlanningLoop(
                load_pools_config(settings.pools_config),
                METRIC_WINDOWS[settings.plan_window],
                horizon_s=settings.plan_horizon_s,
                experiments=experiment_policy(settings),
            )
            if settings.pools_config
            else None
        )
        self.windows = MetricWindows(metric_tables, settings.metrics_write_interval_s)
        self.checkpoints = KeyCheckpoints(settings.checkpoint_interval_s)
        self.counters = PipelineCounters()
        self.replicas = ReplicaTracker(ttl_s=60.0)  # the gateways whose batches this worker sees
        # Federated: workers predict with the merged global snapshot, never a local model.
        # BLAS is limited once for the whole worker (run_worker), not around every batch.
        profiler_config = ProfilerConfig(
            max_shards=settings.max_shards,
            federated=True,
            blas_threads=None,
            max_keys=settings.max_keys,
        )
        self.profiling = ProfilingWorker(profiler_config, self.worker_id)
        self.merger = SnapshotMerger(profiler_config)
        self.follower = TopicFollower(
            settings.confluent_config(),
            settings.topic_routing,
            snapshot_listener(self.profiling, self.merger, self.planning),
            signer=self.checker,
        )
        self.key_stats = KeyStats(key_stats, settings.requests_partitions)
        # Offsets the consumer skips are read again directly (streams.gaps, docs/reliability.md).
        self.skipped = SkippedOffsets(
            lambda: GapReader(
                settings.confluent_config(),
                settings.topic_requests,
                f"{settings.app_id}.gap-reader",
            )
        )
        evicted = EvictedKeys(self.profiling, self.checkpoints, self.routing, self.key_stats)
        self.profile = ProfileStep(
            self.profiling, self.routing, self.key_stats, evicted, self.counters
        )
        recorders = list(self.windows.recorders.values())
        self.pipeline = RequestPipeline(
            Receiver(settings.topic_requests, self.worker_id, dlq, self.replicas),
            self.profile,
            RecordStep(self.profiling, self.checkpoints, self.key_stats, recorders, self.counters),
            self.skipped,
            started,
        )
        self.handover = PartitionHandover(
            settings.topic_requests,
            settings.requests_partitions,
            skipped=self.skipped,
            recorders=recorders,
            checkpoints=self.checkpoints,
            profiling=self.profiling,
            metric_tables=[table.table for table in metric_tables.values()],
            key_stats=key_stats,
        )

    def close(self) -> None:
        """Stop following the routing topic and deliver what is published (at shutdown,
        before the broker goes away)."""
        self.follower.stop()
        self.routing.flush(10.0)
        self.skipped.close()
