"""Follow a compacted topic from its start in a background thread (confluent-kafka, no group).

Gateways follow the routing topic this way to build their routing table; workers follow it to
adopt the global shard snapshot. Each message goes to ``on_message(key, value)``; the follower
never commits offsets, so every start replays the topic's current (compacted) state. With a
:class:`~shardshape.core.signing.Checker`, only messages signed with its key are passed on; the
others go to ``on_rejected(key, reason)`` (by default a logged warning) and are counted.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from shardshape.core.signing import Checker

log = logging.getLogger("shardshape.follower")

OnMessage = Callable[[bytes | None, bytes | None], None]
OnRejected = Callable[[bytes | None, str], None]


class TopicFollower:
    """Reads every partition of ``topic`` from the beginning and keeps reading.

    >>> follower = TopicFollower({"bootstrap.servers": "127.0.0.1:1"}, "t", lambda k, v: None)
    >>> follower.caught_up.is_set()
    False
    """

    def __init__(
        self,
        consumer_config: dict,
        topic: str,
        on_message: OnMessage,
        *,
        signer: Checker | None = None,
        on_rejected: OnRejected | None = None,
    ) -> None:
        self._config = {
            **consumer_config,
            "group.id": f"shardshape-follower-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # Routing changes should reach gateways in milliseconds; the broker may hold a
            # fetch until this wait is over when it has nothing new.
            "fetch.wait.max.ms": 20,
        }
        self.topic = topic
        self.on_message = on_message
        self.signer = signer
        self.on_rejected = on_rejected or self._log_rejected
        self.rejected = 0  # messages dropped for a missing or wrong signature
        self.caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> TopicFollower:
        self._thread = threading.Thread(target=self._run, name=f"follow-{self.topic}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        consumer = Consumer(self._config)
        try:
            pending_eof = set(self._assign_from_start(consumer))
            while not self._stop.is_set():
                message = consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                if error is None:
                    self._deliver(message.key(), message.value(), message.headers())
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending_eof.discard(message.partition())
                    if not pending_eof:
                        self.caught_up.set()
                else:
                    log.warning("%s: %s", self.topic, error)
        except Exception:
            log.exception("following %s stopped; the last good state stays in force", self.topic)
        finally:
            consumer.close()

    def _deliver(self, key: bytes | None, value: bytes | None, headers: list | None) -> None:
        if self.signer is not None:
            reason = self.signer.check(key, value, headers)
            if reason is not None:
                self.rejected += 1
                self.on_rejected(key, reason)
                return
        self.on_message(key, value)

    def _log_rejected(self, key: bytes | None, reason: str) -> None:
        log.warning("%s: ignored message %r: %s", self.topic, (key or b"")[:80], reason)

    def _assign_from_start(self, consumer: Consumer) -> list[int]:
        while not self._stop.is_set():
            metadata = consumer.list_topics(self.topic, timeout=5)
            topic = metadata.topics.get(self.topic)
            if topic is not None and topic.error is None and topic.partitions:
                partitions = sorted(topic.partitions)
                consumer.assign(
                    [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions]
                )
                return partitions
            log.warning("topic %s not found yet; retrying", self.topic)
            self._stop.wait(1.0)
        return []
