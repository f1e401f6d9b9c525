"""What a worker forgets when the requests partitions it owns change (a rebalance).

Every partition resumes from its committed offset, and the state of a partition this worker
did not own throughout may be stale (another worker changed it meanwhile): such state is read
again from the tables, restored from their changelogs. See docs/reliability.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, MutableMapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Protocol

from shardshape.core.metrics import WindowRecorder, partition_of
from shardshape.core.partitioning import partition_for
from shardshape.streams.gaps import SkippedOffsets
from shardshape.streams.profiling import KeyCheckpoints, ProfilingWorker

log = logging.getLogger("shardshape.worker")


def drop_keys(data: MutableMapping, gone: Callable[[Hashable], bool]) -> int:
    """Delete the keys of ``data`` that are ``gone``; return how many.

    >>> data = {"a": 1, "b": 2, "c": 3}
    >>> drop_keys(data, lambda key: key != "b"), data
    (2, {'b': 2})
    """
    keys = [key for key in data if gone(key)]
    for key in keys:
        del data[key]
    return len(keys)


def kept_partitions(owned: set[int], now: set[int], *, consecutive: bool) -> set[int]:
    """The partitions whose state here is current: owned in both assignments, when this one's
    generation directly follows that one's (nobody else owned them meanwhile).

    >>> sorted(kept_partitions({0, 1, 2}, {1, 2, 3}, consecutive=True))
    [1, 2]
    >>> kept_partitions({0, 1, 2}, {1, 2, 3}, consecutive=False)
    set()
    """
    return owned & now if consecutive else set()


class Stored(Protocol):
    """A table as far as a rebalance goes: its data (a Faust table's memory store)."""

    @property
    def data(self) -> MutableMapping: ...


@dataclass
class PartitionHandover:
    """Follows the requests partitions this worker owns, and on each new assignment forgets
    what may be stale.

    Parameters
    ----------
    topic
        The requests topic.
    partitions
        Its partition count (a profile key's partition is :func:`partition_for` it).
    skipped
        The skipped-offsets guard, whose expectations of moved partitions go.
    recorders
        The metrics tables' recorders.
    checkpoints
        The key checkpoints.
    profiling
        The profilers, which drop the keys of partitions not kept.
    metric_tables
        The metrics tables (keys ``(partition key, window)``).
    key_stats
        The key-stats table (keys: profile keys).
    """

    topic: str
    partitions: int
    _: KW_ONLY
    skipped: SkippedOffsets
    recorders: Sequence[WindowRecorder]
    checkpoints: KeyCheckpoints
    profiling: ProfilingWorker
    metric_tables: Sequence[Stored]
    key_stats: Stored
    owned: set[int] = field(default_factory=set, init=False)  # since the last rebalance
    generation: int = field(default=-1, init=False)  # the consumer group's, at that rebalance

    def assigned(self, assigned: Iterable[tuple[str, int]], generation: int) -> int:
        """The consumer now owns ``assigned`` (topic, partition) pairs, in group
        ``generation``: forget what may be stale; return how many profile keys were left for
        their new owners.

        When this generation directly follows the last one seen, nobody else owned the
        partitions in both meanwhile, and their state here is current. Otherwise (this worker
        missed a rebalance, for example after a session timeout) every partition's state is
        read again.
        """
        now = {partition for topic, partition in assigned if topic == self.topic}
        kept = kept_partitions(self.owned, now, consecutive=generation == self.generation + 1)
        self.generation = generation
        self.skipped.forget(keep=kept)
        dropped = self._forget(kept, now)
        log.info("partitions of %s now %s (were %s, generation %d); %d keys left for their "
                 "new owners", self.topic, sorted(now), sorted(self.owned), generation,
                 dropped)  # fmt: skip
        self.owned = now
        return dropped

    def _forget(self, kept: set[int], now: set[int]) -> int:
        """Forget the state held of partitions not ``kept``, and the tables' data of those
        not owned ``now``; return how many profile keys were dropped."""
        for recorder in self.recorders:
            recorder.forget(keep=kept)  # elsewhere the slots' stored offsets skip replays
        self.checkpoints.forget_partitions(kept)
        partitions = self.partitions
        dropped = self.profiling.forget_keys(lambda key: partition_for(key, partitions) not in kept)
        # Faust's memory store forgets the values it restored of partitions gone elsewhere, not
        # those written here: views would count them next to their new owner's.
        for table in self.metric_tables:
            drop_keys(table.data, lambda key: partition_of(key[0]) not in now)
        drop_keys(self.key_stats.data, lambda key: partition_for(key, partitions) not in now)
        return dropped
