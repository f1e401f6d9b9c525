"""In-memory stand-ins for what the worker's steps write to: a table's data and changelog, the
routing topic's publisher, the dead-letter topic, and a metrics table for a recorder."""

from __future__ import annotations

from typing import Any

from shardshape.core.contracts import SNAPSHOT_KEY_PREFIX, RoutingEntry, decode
from shardshape.core.metrics import WindowRecorder


class MemoryTable:
    """A table's data and what was sent to its changelog: ``(partition, key, value)``."""

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}
        self.changelog: list[tuple[int | None, Any, Any]] = []

    def send_changelog(self, partition: int | None, key: Any, value: Any, **codecs: Any) -> None:
        self.changelog.append((partition, key, value))


class MemoryPublisher:
    """The messages published, in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes | None]] = []
        self.polls = 0

    def publish(self, key: bytes, value: bytes | None) -> None:
        self.messages.append((key, value))

    def poll(self) -> None:
        self.polls += 1

    def entries(self) -> list[RoutingEntry]:
        """The routing entries published (tombstones and snapshots left out)."""
        return [
            decode(RoutingEntry, value)
            for key, value in self.messages
            if value is not None and not key.startswith(SNAPSHOT_KEY_PREFIX.encode())
        ]

    def tombstones(self) -> list[str]:
        return [key.decode() for key, value in self.messages if value is None]


class MemoryTopic:
    """The messages sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def send(self, *, key: bytes | None, value: bytes) -> None:
        self.sent.append((key, value))


def memory_recorder(
    store: dict[tuple[int, float], bytes], size_s: float = 10.0, write_every_s: float = 0.0
) -> WindowRecorder:
    """A recorder whose table is ``store``: ``(partition, window start) -> record``."""
    return WindowRecorder(
        lambda partition, start: store.get((partition, start)),
        lambda partition, start, data: store.__setitem__((partition, start), data),
        size_s,
        write_every_s,
    )
