"""The gateway's routing table: the routing topic, replayed locally, answering ``predict``.

It follows the compacted routing topic from its start (:class:`TopicFollower`), keeps the
latest :class:`RoutingEntry` per profile key and the latest :class:`ShardSnapshot` per
service, and predicts a request's shard without any network call:
a key lookup, or the snapshot's small model for keys it has not seen. A malformed message is
logged with its reason and ignored; the last good entry or snapshot stays in force, so the
gateway keeps routing when Kafka is unreachable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import NamedTuple, Protocol

from models.features import profile_key
from models.predictor import ShardPredictor
from streams.contracts import (
    SNAPSHOT_KEY_PREFIX,
    ContractError,
    RoutingEntry,
    ShardSnapshot,
    decode,
)
from streams.follower import TopicFollower

log = logging.getLogger("shardshape.gateway.routing")


class ArrivingRequest(Protocol):
    """What the gateway knows of a request when it arrives (a ``RequestEvent`` fits)."""

    service: str
    request_type: str
    user_id: str
    payload_bytes: float
    attributes: Mapping[str, float | bool | str]


class ShardAssignment(NamedTuple):
    shard_id: int
    snapshot_version: int
    confidence: float
    anomalous: bool
    source: str  # "key" (routing entry), "model" (snapshot model) or "default" (no snapshot)


class RoutingTable:
    """Local replica of the routing topic for one gateway process.

    Parameters
    ----------
    consumer_config
        librdkafka settings with at least ``bootstrap.servers`` (``Settings.confluent_config()``).
    topic
        The routing topic.
    default_shard
        The shard served before any snapshot has arrived.
    """

    def __init__(self, consumer_config: dict, topic: str, default_shard: int = 0) -> None:
        self._follower = TopicFollower(consumer_config, topic, self.apply)
        self.topic = topic
        self.default_shard = default_shard
        self._entries: dict[str, RoutingEntry] = {}
        self._models: dict[str, tuple[ShardSnapshot, ShardPredictor]] = {}
        self._snapshot_seen = threading.Condition()
        self.rejected = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> RoutingTable:
        self._follower.start()
        return self

    def stop(self) -> None:
        self._follower.stop()

    def __enter__(self) -> RoutingTable:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_caught_up(self, timeout_s: float) -> bool:
        """True once everything on the topic at start has been read."""
        return self._follower.caught_up.wait(timeout_s)

    def wait_for_snapshot(self, service: str, min_version: int = 1, timeout_s: float = 30) -> bool:
        """Block until a snapshot of ``service`` with at least ``min_version`` is loaded."""
        deadline = time.monotonic() + timeout_s
        with self._snapshot_seen:
            while self.snapshot_version(service) < min_version:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._snapshot_seen.wait(left)
        return True

    # -- reading ----------------------------------------------------------------------------
    def snapshot(self, service: str) -> ShardSnapshot | None:
        model = self._models.get(service)
        return model[0] if model else None

    def snapshot_version(self, service: str) -> int:
        model = self._models.get(service)
        return model[0].version if model else 0

    def entry(self, key: str) -> RoutingEntry | None:
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def predict(self, request: ArrivingRequest) -> ShardAssignment:
        """The shard of an arriving request, from local state only."""
        model = self._models.get(request.service)
        entry = self._entries.get(
            profile_key(request.service, request.request_type, request.user_id)
        )
        if model is None:
            if entry is not None:
                return ShardAssignment(
                    entry.shard_id, entry.snapshot_version, entry.confidence, entry.anomalous, "key"
                )
            return ShardAssignment(self.default_shard, 0, 0.0, False, "default")
        snapshot, predictor = model
        shard = predictor.predict_one(
            request.request_type, request.payload_bytes, request.attributes, entry
        )
        if entry is not None and (entry.anomalous or shard == entry.shard_id):
            return ShardAssignment(
                shard, snapshot.version, entry.confidence, entry.anomalous, "key"
            )
        return ShardAssignment(shard, snapshot.version, 0.0, False, "model")

    # -- consuming ------------------------------------------------------------------------
    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one routing-topic message (public so tests and tools can feed it directly)."""
        text_key = key.decode(errors="replace") if key else ""
        try:
            if text_key.startswith(SNAPSHOT_KEY_PREFIX):
                self._apply_snapshot(decode(ShardSnapshot, value))
            elif value is None:
                self._entries.pop(text_key, None)  # tombstone: the key was retired
            else:
                entry = decode(RoutingEntry, value)
                self._entries[entry.key] = entry
        except ContractError as error:
            self.rejected += 1
            log.warning("ignored routing message %r: %s", text_key[:80], error.reason)
        except Exception as error:  # a well-formed snapshot whose model cannot be built
            self.rejected += 1
            log.warning("ignored routing message %r: %s", text_key[:80], error)

    def _apply_snapshot(self, snapshot: ShardSnapshot) -> None:
        if snapshot.version <= self.snapshot_version(snapshot.service):
            return
        predictor = ShardPredictor.from_snapshot(snapshot)
        with self._snapshot_seen:
            self._models[snapshot.service] = (snapshot, predictor)
            self._snapshot_seen.notify_all()
        log.info("routing snapshot %s v%d loaded", snapshot.service, snapshot.version)
