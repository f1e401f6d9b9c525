"""The gateway's routing table: the routing topic, replayed locally, answering ``predict``.

It follows the compacted routing topic from its start (:class:`TopicFollower`), keeps the
latest :class:`RoutingEntry` per profile key and the latest :class:`ShardSnapshot` per
service, and predicts a request's shard without any network call:
a key lookup, or the snapshot's small model for keys it has not seen. A malformed message is
logged with its reason and ignored; the last good entry or snapshot stays in force, so the
gateway keeps routing when Kafka is unreachable.

Memory is bounded: at most ``max_routes`` entries are held, and the least recently seen one
(looked up by ``predict`` or updated by the topic) is evicted first and counted; an evicted key
is predicted by the snapshot's model until its entry comes again. With a signer, messages not
signed with a key it accepts are rejected (:mod:`shardshape.core.signing`).

>>> from shardshape.core.contracts import encode
>>> table = RoutingTable({"bootstrap.servers": "127.0.0.1:1"}, "routing", max_routes=2)
>>> for user in ("u1", "u2", "u3"):
...     entry = RoutingEntry(service="s", key=f"s|t|{user}", shard_id=1, snapshot_version=1)
...     table.apply(entry.key.encode(), encode(entry))
>>> len(table), table.evicted, table.entry("s|t|u1") is None
(2, 1, True)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol

from shardshape.core.contracts import (
    SNAPSHOT_KEY_PREFIX,
    ContractError,
    RoutingEntry,
    ShardSnapshot,
    decode,
)
from shardshape.core.follower import TopicFollower
from shardshape.core.partitioning import profile_key
from shardshape.core.signing import Checker, checker_from

if TYPE_CHECKING:
    from shardshape.core.settings import Settings
    from shardshape.models.predictor import ShardPredictor

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
    max_routes
        Most entries held (``gateway_max_routes``); the least recently seen go first.
    signer
        When given, messages not signed with a key it accepts are rejected (``checker_from``).
    """

    def __init__(
        self,
        consumer_config: dict,
        topic: str,
        default_shard: int = 0,
        *,
        max_routes: int = 1_000_000,
        signer: Checker | None = None,
    ) -> None:
        if max_routes < 1:
            raise ValueError(f"max_routes must be at least 1 (gateway_max_routes): {max_routes}")
        self._follower = TopicFollower(
            consumer_config, topic, self.apply, signer=signer, on_rejected=self._reject_unsigned
        )
        self.topic = topic
        self.default_shard = default_shard
        self.max_routes = max_routes
        # Oldest first: predict() and updates move a key to the end, eviction pops the front.
        self._entries: OrderedDict[str, RoutingEntry] = OrderedDict()
        self._models: dict[str, tuple[ShardSnapshot, ShardPredictor]] = {}
        self._snapshot_seen = threading.Condition()
        self.rejected = 0  # malformed, unsigned or forged messages
        self.evicted = 0  # entries dropped to stay within max_routes

    @classmethod
    def from_settings(cls, settings: Settings, default_shard: int = 0) -> RoutingTable:
        """The routing table of ``settings``: its security, topic, bound and signing key."""
        return cls(
            settings.confluent_config(),
            settings.topic_routing,
            default_shard,
            max_routes=settings.gateway_max_routes,
            signer=checker_from(settings),
        )

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
        key = profile_key(request.service, request.request_type, request.user_id)
        entry = self._entries.get(key)
        if entry is not None:
            try:  # noqa: SIM105 (contextlib.suppress costs more than this lookup)
                self._entries.move_to_end(key)  # seen: the last to be evicted
            except KeyError:  # evicted or retired by the follower thread meanwhile
                pass
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
                self._put(decode(RoutingEntry, value))
        except ContractError as error:
            self.rejected += 1
            log.warning("ignored routing message %r: %s", text_key[:80], error.reason)
        except Exception as error:  # a well-formed snapshot whose model cannot be built
            self.rejected += 1
            log.warning("ignored routing message %r: %s", text_key[:80], error)

    def _put(self, entry: RoutingEntry) -> None:
        entries = self._entries
        held = entries.get(entry.key)
        if held is not None and entry.snapshot_version < held.snapshot_version:
            # Decided under an older snapshot: sent again (a replay, even a validly signed
            # one). Not by time: a worker that takes a partition over may decide again from
            # older events, and its decision stands.
            self.rejected += 1
            log.warning("ignored routing entry %r: older than the one held (a replay)",
                        entry.key[:80])  # fmt: skip
            return
        entries[entry.key] = entry
        entries.move_to_end(entry.key)
        while len(entries) > self.max_routes:
            try:
                entries.popitem(last=False)
            except KeyError:  # emptied meanwhile (cannot happen with max_routes >= 1)
                break
            self.evicted += 1

    def _reject_unsigned(self, key: bytes | None, reason: str) -> None:
        self.rejected += 1
        log.warning("ignored routing message %r: %s", (key or b"")[:80], reason)

    def _apply_snapshot(self, snapshot: ShardSnapshot) -> None:
        if snapshot.version <= self.snapshot_version(snapshot.service):
            return
        # Imported with the first snapshot, on the follower's thread: importing the gateway
        # does not load numpy, the predictor's only heavy dependency.
        from shardshape.models.predictor import ShardPredictor

        predictor = ShardPredictor.from_snapshot(snapshot)
        with self._snapshot_seen:
            self._models[snapshot.service] = (snapshot, predictor)
            self._snapshot_seen.notify_all()
        log.info("routing snapshot %s v%d loaded", snapshot.service, snapshot.version)
