"""The profile agent's logic on one worker, without Faust: plain objects the agents call.

- :class:`ProfilingWorker` runs one :class:`~shardshape.models.profiler.Profiler` per service on the
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
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from shardshape.core.cadence import PartitionClock
from shardshape.core.columns import EventColumns, columns_of
from shardshape.core.contracts import (
    SNAPSHOT_KEY_PREFIX,
    ContractError,
    RequestEvent,
    RoutingEntry,
    ShardSnapshot,
    decode,
)
from shardshape.core.follower import OnMessage
from shardshape.models.federation import GlobalModel, adopt_snapshot, worker_summary
from shardshape.models.profiler import Profiler, ProfilerConfig, Recover


class SnapshotNoter(Protocol):
    """What takes the snapshots a worker follows
    (:class:`shardshape.allocator.planning.PlanningLoop`)."""

    def note_snapshot(self, snapshot: ShardSnapshot) -> None: ...


log = logging.getLogger("shardshape.profiling")


@dataclass
class BatchOutcome:
    """What one batch changed: routes to publish, and each event's profile key and shard as
    predicted at arrival."""

    changes: list[RoutingEntry]
    keys: list[str]
    shards: list[int]


class KeyCheckpoints:
    """Keys whose statistics changed since their partition's last checkpoint.

    The agent marks every batch's keys; when a partition's checkpoint is due (at most once per
    ``every_s``) its changed keys are written, at most ``per_batch`` with each later batch of
    that partition, so that thousands of table writes never stall the stream at once. A key
    restored after a rebalance is at most about ``every_s`` stale.

    >>> checkpoints = KeyCheckpoints(every_s=5.0, per_batch=2)
    >>> checkpoints.mark(0, ["a|t|u1", "a|t|u2", "a|t|u3", "a|t|u1"])
    >>> len(checkpoints.due(0, now=100.0)), len(checkpoints.due(0, now=101.0))
    (2, 1)
    >>> checkpoints.due(0, now=102.0)
    []
    >>> checkpoints.mark(0, ["a|t|u4", "a|t|u5"])
    >>> checkpoints.forget(["a|t|u4"])  # evicted: never written
    >>> checkpoints.due(0, now=200.0)
    ['a|t|u5']
    >>> checkpoints.mark(1, ["a|t|u6"])
    >>> checkpoints.forget_partitions(keep={0})  # partition 1 moved to another worker
    >>> checkpoints.due(1, now=300.0)
    []
    """

    def __init__(self, every_s: float, per_batch: int = 250) -> None:
        self.per_batch = per_batch
        self._clock = PartitionClock(every_s)
        self._dirty: dict[int, set[str]] = {}
        self._writing: dict[int, list[str]] = {}  # due keys not written yet

    def mark(self, partition: int, keys: Iterable[str]) -> None:
        self._dirty.setdefault(partition, set()).update(keys)

    def forget(self, keys: Iterable[str]) -> None:
        """Write no checkpoint of ``keys`` any more (they were evicted)."""
        keys = set(keys)
        for dirty in self._dirty.values():
            dirty -= keys
        for partition, writing in self._writing.items():
            self._writing[partition] = [key for key in writing if key not in keys]

    def forget_partitions(self, keep: Collection[int]) -> None:
        """Write no checkpoints for partitions not in ``keep`` (another worker owns them)."""
        for pending in (self._dirty, self._writing):
            for partition in [p for p in pending if p not in keep]:
                del pending[partition]

    def due(self, partition: int, now: float) -> list[str]:
        """The keys of ``partition`` to write with this batch (forgotten here)."""
        writing = self._writing.get(partition)
        if not writing:
            if partition not in self._dirty or not self._clock.due(partition, now):
                return []
            writing = self._writing[partition] = list(self._dirty.pop(partition))
        keys = writing[-self.per_batch :]
        del writing[-self.per_batch :]
        return keys


class ProfilingWorker:
    """Per-service profilers of one worker, fed batch by batch by the profile agent."""

    def __init__(self, config: ProfilerConfig, worker_id: str) -> None:
        self.config = config
        self.worker_id = worker_id
        self.profilers: dict[str, Profiler] = {}
        self._offered: dict[str, ShardSnapshot] = {}
        self._shared: dict[str, int] = {}  # service -> clusterer samples at the last summary
        self._evicted: list[str] = []  # keys evicted since take_evicted()
        self._lock = threading.Lock()

    def profiler(self, service: str) -> Profiler:
        profiler = self.profilers.get(service)
        if profiler is None:
            profiler = self.profilers[service] = Profiler(service, self.config)
            profiler.keys.on_evict = self._evicted.extend
        return profiler

    def take_evicted(self) -> list[str]:
        """Profile keys evicted (``max_keys``) since the last call, to retire their copies."""
        evicted, self._evicted[:] = list(self._evicted), []
        return evicted

    def key_counts(self) -> dict[str, dict[str, int]]:
        """Per service: profile keys held and evicted since start."""
        return {
            service: {"keys": len(p.keys), "evicted": p.keys.evicted}
            for service, p in self.profilers.items()
        }

    def process(
        self,
        events: Sequence[RequestEvent] | EventColumns,
        recover: Recover | None = None,
        batches: int = 1,
    ) -> BatchOutcome:
        """Predict and learn a batch.

        ``recover(key)`` gives the stored statistics of a key this worker does not know yet
        (it moved here in a rebalance), or None for a new key. ``batches``: how many gateway
        batches ``events`` joins (see :meth:`Profiler.process_many`).
        """
        changes = self.adopt_offered()
        batch = columns_of(events)
        services = set(batch.service)
        if len(services) == 1:  # the usual case: a gateway's batch is one service's
            profiler = self.profiler(services.pop())
            keys, shards, _, _ = profiler.process_many(batch, recover, batches)
            return BatchOutcome(changes + profiler.routing_changes(), keys, shards)
        positions: dict[str, list[int]] = {}
        for position, service in enumerate(batch.service):
            positions.setdefault(service, []).append(position)
        keys = [""] * len(batch)
        shards = [0] * len(batch)
        for service, where in positions.items():
            profiler = self.profiler(service)
            result = profiler.process_many(batch.take(where), recover, batches)
            for i, key, shard in zip(where, result.keys, result.predicted, strict=True):
                keys[i], shards[i] = key, shard
            changes += profiler.routing_changes()
        return BatchOutcome(changes, keys, shards)

    def forget_keys(self, moved: Callable[[str], bool]) -> int:
        """Drop the statistics of every key for which ``moved(key)`` is true; how many.

        For keys whose partition another worker owns, or owned since this one last did: the
        next event of such a key seeds it again from the key-stats table.
        """
        dropped = 0
        for profiler in self.profilers.values():
            keys = [key for key in profiler.keys.slots if moved(key)]
            profiler.keys.remove(keys)
            dropped += len(keys)
        return dropped

    def records(self, keys: Iterable[str]) -> dict[str, list]:
        """The current statistics of ``keys`` (profile keys), for checkpoints."""
        out = {}
        for key in keys:
            for profiler in self.profilers.values():  # services may contain "|": ask each
                record = profiler.keys.get(key)
                if record is not None:
                    out[key] = record
                    break
        return out

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


def snapshot_listener(
    profiling: ProfilingWorker, merger: SnapshotMerger, planning: SnapshotNoter | None = None
) -> OnMessage:
    """Routing-topic callback for a :class:`TopicFollower`: hand snapshots to both, and to
    the planning loop (which retires the shards a service's snapshot no longer has)."""
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
        if planning is not None:
            planning.note_snapshot(snapshot)

    return on_message
