"""Offsets of the requests topic the consumer skipped, read again straight from the broker.

The requests topic is not compacted, so every offset holds a message (or, from a
transactional producer, a commit marker): a message more than one offset past the last one
the profile agent handled in its partition means the consumer skipped something. It happens,
rarely, after a takeover: the survivor's consumer hands on offsets 28-31 and then 33 of a
partition it took over, and Faust acks 32 as a gap (``Consumer._add_gap``, meant for
compacted and transactional topics), so its commit moves past a message nobody counted
(docs/reliability.md). The agent does not rely on the consumer there:
:class:`OffsetContinuity` finds the skipped offsets and :class:`GapReader` reads them with a
consumer of its own, before the agent handles the message after them. Whatever is read twice
is skipped downstream, like any replay, by the offsets the window totals store.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, TopicPartition
from faust.types import TP

log = logging.getLogger("shardshape.worker")
_T = TypeVar("_T")


class OffsetContinuity:
    """The next offset expected in each requests partition, from the offsets handled.

    >>> continuity = OffsetContinuity()
    >>> continuity.missing(0, 5)  # nothing handled yet: no expectation
    range(0, 0)
    >>> continuity.saw(0, 5)
    >>> continuity.missing(0, 6), continuity.missing(0, 9), continuity.missing(0, 3)
    (range(0, 0), range(6, 9), range(0, 0))
    >>> continuity.saw(0, 3)  # a replay does not move the expectation back
    >>> continuity.missing(0, 9)
    range(6, 9)
    >>> continuity.expect(1, 40)  # a partition taken over, from its committed offset
    >>> continuity.missing(1, 42)
    range(40, 42)
    >>> continuity.forget(keep={1})
    >>> continuity.missing(0, 9), continuity.missing(1, 42)
    (range(0, 0), range(40, 42))
    """

    def __init__(self) -> None:
        self._next: dict[int, int] = {}

    def missing(self, partition: int, offset: int) -> range:
        """The offsets before ``offset`` in ``partition`` that were expected and not handled."""
        expected = self._next.get(partition)
        if expected is None or offset <= expected:
            return range(0)
        return range(expected, offset)

    def knows(self, partition: int) -> bool:
        """Whether an offset is expected in ``partition``."""
        return partition in self._next

    def saw(self, partition: int, offset: int) -> None:
        """``offset`` of ``partition`` was handled."""
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def expect(self, partition: int, offset: int) -> None:
        """The consumer starts ``partition`` at ``offset`` (its committed offset)."""
        self._next[partition] = offset

    def forget(self, keep: Iterable[int]) -> None:
        """Drop every partition but ``keep`` (the others may have moved on elsewhere)."""
        kept = set(keep)
        self._next = {p: offset for p, offset in self._next.items() if p in kept}


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A message read by :class:`GapReader`: what the agent reads of a consumed message."""

    partition: int
    offset: int
    timestamp: float  # seconds
    key: bytes | None
    value: bytes | None


class GapReader:
    """Reads given offsets of one topic with its own consumer (outside the workers' group,
    never committing).

    Parameters
    ----------
    config
        librdkafka settings (servers, security): ``Settings.confluent_config()``.
    topic
        The topic read.
    group_id
        A consumer group id of its own (librdkafka wants one; the reader never joins it).
    timeout_s
        How long a read may take before it gives up on what it has not found.
    """

    def __init__(self, config: dict, topic: str, group_id: str, timeout_s: float = 10.0) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._lock = threading.Lock()  # one call at a time (executor threads)
        self._consumer = Consumer(
            {
                **config,
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "isolation.level": "read_uncommitted",  # as Faust's consumer reads
            }
        )

    def read(self, partition: int, offsets: range) -> list[RawMessage]:
        """The messages at ``offsets`` of ``partition``, in order.

        Offsets the read passes without a message hold none (transaction markers); any it
        did not reach by the timeout (the broker away, deleted by retention) are logged as
        lost and left out.
        """
        with self._lock:
            found, reached = self._read(partition, offsets)
        have = {message.offset for message in found}
        unread = [offset for offset in offsets if offset not in have]
        if reached < offsets.stop - 1:
            log.error("%s[%d]: offsets %s were skipped by the consumer and could not be read "
                      "again within %.0f s; their events are not counted",
                      self.topic, partition, unread, self.timeout_s)  # fmt: skip
        elif unread:
            log.info("%s[%d]: offsets %s hold no messages", self.topic, partition, unread)
        return found

    def _read(self, partition: int, offsets: range) -> tuple[list[RawMessage], int]:
        """The messages found and the last offset reached."""
        found: list[RawMessage] = []
        reached = offsets.start - 1
        self._consumer.assign([TopicPartition(self.topic, partition, offsets.start)])
        deadline = time.monotonic() + self.timeout_s
        try:
            while reached < offsets.stop - 1 and time.monotonic() < deadline:
                message = self._consumer.poll(min(1.0, self.timeout_s))
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        reached = max(reached, message.offset() - 1)
                    else:
                        log.warning("reading skipped offsets of %s[%d]: %s",
                                    self.topic, partition, error)  # fmt: skip
                    continue
                offset = message.offset()
                reached = max(reached, offset)
                if offset in offsets:
                    _, timestamp_ms = message.timestamp()
                    found.append(RawMessage(partition, offset, timestamp_ms / 1000.0,
                                            message.key(), message.value()))  # fmt: skip
        finally:
            self._consumer.unassign()
        return found, reached

    def close(self) -> None:
        with self._lock:
            self._consumer.close()


def start_offset(consumer: object, tp: object) -> int | None:
    """Where Faust's ``consumer`` started partition ``tp``: the committed offset it sought
    after the partition was assigned (commits since cannot pass a message the agent has not
    handled). Faust keeps it in a private map only; ``None`` when unknown.
    """
    offsets = getattr(consumer, "_committed_offset", {})
    return offsets.get(tp)


def start_offsets(app: object, topic: str) -> Callable[[int], int | None]:
    """:func:`start_offset` of each partition of ``topic``, on the consumer ``app`` (a Faust
    app) has when asked."""
    return lambda partition: start_offset(app.consumer, TP(topic, partition))  # type: ignore[attr-defined]


class SkippedOffsets:
    """The profile agent's guard: before each message, the messages its consumer skipped.

    Parameters
    ----------
    reader
        Makes the :class:`GapReader` on first use (most workers never need one).
    """

    def __init__(self, reader: Callable[[], GapReader]) -> None:
        self.read_again = 0  # messages the reader found so far
        self._continuity = OffsetContinuity()
        self._make_reader = reader
        self._reader: GapReader | None = None

    async def before(
        self, partition: int, offset: int, start: int | None = None
    ) -> list[RawMessage]:
        """The messages of ``partition`` skipped before ``offset``, read again (oldest first);
        then ``offset`` counts as handled.

        ``start``: where the consumer started the partition (its committed offset), the
        expectation for its first message here.
        """
        if start is not None and not self._continuity.knows(partition):
            self._continuity.expect(partition, start)
        missing = self._continuity.missing(partition, offset)
        found: list[RawMessage] = []
        if missing:
            log.warning("the consumer skipped offsets %d-%d of partition %d (next: %d); "
                        "reading them directly", missing.start, missing.stop - 1, partition,
                        offset)  # fmt: skip
            found = await self._call(lambda reader: reader.read(partition, missing))
            self.read_again += len(found)
        self._continuity.saw(partition, offset)
        return found

    def forget(self, keep: Iterable[int]) -> None:
        """Forget every partition but ``keep`` (see :meth:`OffsetContinuity.forget`)."""
        self._continuity.forget(keep)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    async def _call(self, work: Callable[[GapReader], _T]) -> _T:
        if self._reader is None:
            self._reader = self._make_reader()
        reader = self._reader
        return await asyncio.get_running_loop().run_in_executor(None, work, reader)
