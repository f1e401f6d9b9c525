"""The key-stats table: profile keys' statistics, which survive a worker's loss through the
table's changelog (JSON bytes), so that a worker taking a partition over seeds its keys there.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Protocol

import orjson

from shardshape.core.partitioning import partition_for


class ChangelogTable(Protocol):
    """What is used of a Faust table: its data, and writes to its changelog."""

    @property
    def data(self) -> MutableMapping: ...

    def send_changelog(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> object: ...


class KeyStats:
    """Profile keys' records in the key-stats table, each with the source offset it is at.

    The agent handles several messages' events at once, outside any one event's context, so
    each write goes to the changelog partition named (the key's source partition), as
    ``table[key] = value`` would within that partition's event.

    Parameters
    ----------
    table
        The key-stats table (keys: profile keys; values: JSON bytes).
    partitions
        Partitions of the requests topic (a key's partition is :func:`partition_for` it).

    >>> from types import SimpleNamespace
    >>> changelog = []
    >>> table = SimpleNamespace(data={}, send_changelog=lambda *a, **k: changelog.append(a))
    >>> stats = KeyStats(table, partitions=4)
    >>> stats.write(2, "shop|get|u1", [1.0, 2.0], offset=41)
    >>> stats.recover("shop|get|u1"), stats.recover("shop|get|u2"), len(stats)
    ([1.0, 2.0], None, 1)
    >>> stats.delete("shop|get|u1"); stats.delete("shop|get|u1")  # the second: nothing held
    >>> [(partition, key, value) for partition, key, value in changelog]
    [(2, 'shop|get|u1', b'{"rec":[1.0,2.0],"offset":41}'), (..., 'shop|get|u1', None)]
    """

    def __init__(self, table: ChangelogTable, partitions: int) -> None:
        self.table = table
        self.partitions = partitions

    def __len__(self) -> int:
        return len(self.table.data)

    def recover(self, key: str) -> list | None:
        """The stored record of ``key``, or None (a new key)."""
        stored = self.table.data.get(key)
        return orjson.loads(stored)["rec"] if stored else None

    def write(self, partition: int, key: str, record: list, offset: int) -> None:
        """Store ``key``'s ``record`` at source ``offset`` of ``partition``."""
        value = orjson.dumps({"rec": record, "offset": offset})
        self.table.data[key] = value
        self.table.send_changelog(partition, key, value)

    def delete(self, key: str) -> None:
        """Drop ``key`` (a tombstone in its partition's changelog) if it is held here."""
        if self.table.data.pop(key, None) is not None:
            partition = partition_for(key, self.partitions)
            self.table.send_changelog(partition, key, None, value_serializer="raw")
