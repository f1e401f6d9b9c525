"""The profile agent's logic on one worker, without Faust: plain objects the agents call.

- :class:`ProfilingWorker` runs one :class:`~models.profiler.Profiler` per service on the
  events of this worker's partitions, emits routing changes, and adopts the global snapshot.
- :class:`SnapshotMerger` runs on whichever worker owns the (single-partition) summaries
  topic: it keeps the latest summary of each worker and merges them into one global
  :class:`ShardSnapshot` per service with stable shard ids and a version that only grows.

Every worker and gateway predicts with the global snapshot, so all agree on the version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from models.features import profile_key
from models.federation import GlobalModel, adopt_snapshot, worker_summary
from models.keystats import N
from models.profiler import Profiler, ProfilerConfig
from streams.contracts import (
    SNAPSHOT_KEY_PREFIX,
    ContractError,
    RequestEvent,
    RoutingEntry,
    ShardSnapshot,
    decode,
)
from streams.follower import OnMessage

log = logging.getLogger("shardshape.profiling")

Recover = Callable[[str], list | None]


@dataclass
class BatchOutcome:
    """What one batch changed: routes to publish, key statistics to checkpoint (those new,
    every ``checkpoint_every`` of a key's events, or re-routed), and each event's shard as
    predicted at arrival."""

    changes: list[RoutingEntry]
    checkpoints: dict[str, list]
    shards: list[int]


class ProfilingWorker:
    """Per-service profilers of one worker, fed batch by batch by the profile agent."""

    def __init__(self, config: ProfilerConfig, worker_id: str, checkpoint_every: int = 16) -> None:
        self.config = config
        self.worker_id = worker_id
        self.checkpoint_every = checkpoint_every
        self.profilers: dict[str, Profiler] = {}
        self._offered: dict[str, ShardSnapshot] = {}
        self._shared: dict[str, int] = {}  # service -> clusterer samples at the last summary
        self._lock = threading.Lock()

    def profiler(self, service: str) -> Profiler:
        profiler = self.profilers.get(service)
        if profiler is None:
            profiler = self.profilers[service] = Profiler(service, self.config)
        return profiler

    def process(
        self, events: Sequence[RequestEvent], recover: Recover = lambda key: None
    ) -> BatchOutcome:
        """Predict and learn a batch.

        ``recover(key)`` gives the stored statistics of a key this worker does not know yet
        (it moved here in a rebalance), or None for a new key.
        """
        changes = self.adopt_offered()
        by_service: dict[str, list[RequestEvent]] = {}
        positions: dict[str, list[int]] = {}
        for position, event in enumerate(events):
            by_service.setdefault(event.service, []).append(event)
            positions.setdefault(event.service, []).append(position)
        touched: dict[str, list] = {}
        shards = [0] * len(events)
        every = self.checkpoint_every
        for service, batch in by_service.items():
            profiler = self.profiler(service)
            seen_before: dict[str, int] = {}
            for event in batch:
                key = profile_key(event.service, event.request_type, event.user_id)
                if key in seen_before:
                    continue
                record = profiler.keys.get(key)
                if record is None and (stored := recover(key)) is not None:
                    record = profiler.keys.records[key] = list(stored)
                seen_before[key] = record[N] if record is not None else 0
            assignments = profiler.process_batch(batch)
            for position, assignment in zip(positions[service], assignments, strict=True):
                shards[position] = assignment.predicted
            service_changes = profiler.routing_changes()
            changes += service_changes
            # Checkpoint a key when it is new, every ``every`` of its events, and when its
            # route changes: a restored key is at most ``every - 1`` events stale.
            for key, before in seen_before.items():
                record = profiler.keys.get(key)
                if record is not None and (before == 0 or record[N] // every != before // every):
                    touched[key] = record
            for entry in service_changes:
                if (record := profiler.keys.get(entry.key)) is not None:
                    touched[entry.key] = record
        return BatchOutcome(changes, touched, shards)

    def summaries(self) -> list[tuple[bytes, bytes]]:
        """(key, value) messages for the summaries topic: the services that learned since."""
        now = time.time()
        messages = []
        for service, profiler in self.profilers.items():
            learned = profiler.clusterer.n_samples
            if learned == self._shared.get(service, 0):
                continue  # nothing new: an idle worker sends nothing, no new version is made
            self._shared[service] = learned
            body = {
                "worker": self.worker_id,
                "service": service,
                "sent_ts": now,
                "summary": worker_summary(profiler),
            }
            messages.append((service.encode(), orjson.dumps(body)))
        return messages

    def offer_snapshot(self, snapshot: ShardSnapshot) -> None:
        """Keep the newest global snapshot of each service until the agent adopts it."""
        with self._lock:
            held = self._offered.get(snapshot.service)
            if held is None or snapshot.version > held.version:
                self._offered[snapshot.service] = snapshot

    def adopt_offered(self) -> list[RoutingEntry]:
        """Adopt newer global snapshots; return the routes that adopting them changed.

        Called on the event loop (by the agent before a batch, and by a timer when idle).
        """
        with self._lock:
            offered, self._offered = self._offered, {}
        changes: list[RoutingEntry] = []
        for service, snapshot in offered.items():
            profiler = self.profiler(service)
            if snapshot.version > profiler.version:
                adopt_snapshot(profiler, snapshot)
                changes += profiler.routing_changes()
                log.info("adopted snapshot %s v%d", service, snapshot.version)
        return changes

    def versions(self) -> dict[str, int]:
        return {service: p.version for service, p in self.profilers.items()}


class SnapshotMerger:
    """Merges the latest summary of every worker into one global snapshot per service.

    Parameters
    ----------
    config
        The profiler configuration (max shards, scales) shared by all workers.
    worker_ttl_s
        Summaries older than this are dropped: their worker has gone.
    """

    def __init__(self, config: ProfilerConfig, worker_ttl_s: float = 60.0) -> None:
        self.config = config
        self.worker_ttl_s = worker_ttl_s
        self._latest: dict[str, dict[str, dict]] = {}  # service -> worker -> message
        self._models: dict[str, GlobalModel] = {}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()  # note_published runs on the follower's thread

    def add(self, value: bytes) -> None:
        """Take one summaries-topic message; malformed ones are logged and skipped."""
        try:
            message = orjson.loads(value)
            service, worker = str(message["service"]), str(message["worker"])
            float(message["sent_ts"])
            dict(message["summary"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            log.warning("ignored malformed worker summary: %s", error)
            return
        self._latest.setdefault(service, {})[worker] = message
        self._dirty.add(service)

    def note_published(self, snapshot: ShardSnapshot) -> None:
        """A snapshot seen on the routing topic: a new merger continues after its version."""
        with self._lock:
            model = self._model(snapshot.service)
            model.version = max(model.version, snapshot.version)

    def merge(self, now: float | None = None) -> list[ShardSnapshot]:
        """Global snapshots of the services with new summaries since the last merge."""
        now = time.time() if now is None else now
        with self._lock:
            return self._merge_dirty(now)

    def _merge_dirty(self, now: float) -> list[ShardSnapshot]:
        snapshots = []
        for service in sorted(self._dirty):
            workers = self._latest[service]
            for worker in [w for w, m in workers.items() if now - m["sent_ts"] > self.worker_ttl_s]:
                del workers[worker]
            if not workers:
                continue
            try:
                snapshots.append(
                    self._model(service).merge([m["summary"] for m in workers.values()], now)
                )
            except (ValueError, KeyError, TypeError) as error:
                log.warning("could not merge summaries of %s: %s", service, error)
        self._dirty.clear()
        return snapshots

    def _model(self, service: str) -> GlobalModel:
        model = self._models.get(service)
        if model is None:
            model = self._models[service] = GlobalModel(service, self.config)
        return model


def snapshot_listener(profiling: ProfilingWorker, merger: SnapshotMerger) -> OnMessage:
    """Routing-topic callback for a :class:`TopicFollower`: hand snapshots to both."""
    prefix = SNAPSHOT_KEY_PREFIX.encode()

    def on_message(key: bytes | None, value: bytes | None) -> None:
        if not key or not key.startswith(prefix):
            return
        try:
            snapshot = decode(ShardSnapshot, value)
        except ContractError as error:
            log.warning("ignored snapshot %r: %s", key[:80], error.reason)
            return
        profiling.offer_snapshot(snapshot)
        merger.note_published(snapshot)

    return on_message
