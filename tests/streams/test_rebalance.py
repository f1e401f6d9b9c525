"""The rebalance handover on plain objects, no broker: what a worker forgets when the
requests partitions it owns change."""

from __future__ import annotations

from shardshape.core.metrics import ShardStats, partition_key
from shardshape.core.partitioning import partition_for, profile_key
from shardshape.models.profiler import ProfilerConfig
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.gaps import SkippedOffsets
from shardshape.streams.profiling import KeyCheckpoints, ProfilingWorker
from shardshape.streams.rebalance import PartitionHandover
from tests.streams.stand_ins import MemoryTable, memory_recorder

TOPIC = "requests"
PARTITIONS = 4
WINDOW = (1_000.0, 1_010.0)


class ReadLog:
    """A topic with no messages that notes which offsets were read again."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, range]] = []

    def read(self, partition: int, offsets: range) -> list:
        self.reads.append((partition, offsets))
        return []


class Owner:
    """A worker's state in every requests partition, and its handover."""

    def __init__(self, log: ReadLog | None = None) -> None:
        config = ProfilerConfig(max_shards=4, federated=True, blas_threads=None)
        self.profiling = ProfilingWorker(config, "worker-1")
        events = list(SyntheticStream(seed=2, users=50).events(1_000))
        self.keys = {profile_key(e.service, e.request_type, e.user_id) for e in events}
        self.profiling.process(events)
        self.key_stats = MemoryTable()
        self.key_stats.data.update({key: b"{}" for key in self.keys})
        self.metrics = MemoryTable()
        self.metrics.data.update({(partition_key(p), WINDOW): b"" for p in range(PARTITIONS)})
        self.windows: dict[tuple[int, float], bytes] = {}
        self.recorder = memory_recorder(self.windows, write_every_s=60.0)
        self.skipped = SkippedOffsets(lambda: log or ReadLog())
        self.handover = PartitionHandover(
            TOPIC,
            PARTITIONS,
            skipped=self.skipped,
            recorders=[self.recorder],
            checkpoints=KeyCheckpoints(every_s=0.0),
            profiling=self.profiling,
            metric_tables=[self.metrics],
            key_stats=self.key_stats,
        )

    def keys_in(self, partitions: set[int]) -> set[str]:
        return {key for key in self.keys if partition_for(key, PARTITIONS) in partitions}

    def hold_unwritten(self, partition: int) -> None:
        """Totals of ``partition`` recorded and not written yet (the first write is due at
        once, the next a minute later)."""
        for offset in (7, 8):
            self.recorder.record({"shop|0|": ShardStats()}, partition, offset, 1_001.0, now=0.0)
        assert self.recorder.unwritten()

    def profiled(self) -> set[str]:
        return set(self.profiling.profilers["shop"].keys.slots)


def assigned(*partitions: int) -> set[tuple[str, int]]:
    """An assignment: the requests partitions, and a changelog partition (not followed)."""
    return {(TOPIC, p) for p in partitions} | {("app-key-stats-changelog", 0)}


def test_partitions_kept_through_consecutive_generations_keep_their_state() -> None:
    owner = Owner()
    assert owner.handover.assigned(assigned(0, 1, 2, 3), generation=1) == len(owner.keys)
    owner.profiling.process(list(SyntheticStream(seed=2, users=50).events(1_000)))
    owner.hold_unwritten(1)

    dropped = owner.handover.assigned(assigned(0, 1), generation=2)

    assert dropped == len(owner.keys_in({2, 3}))
    assert owner.profiled() == owner.keys_in({0, 1})
    assert set(owner.key_stats.data) == owner.keys_in({0, 1})
    assert set(owner.metrics.data) == {(partition_key(p), WINDOW) for p in (0, 1)}
    assert owner.recorder.unwritten()  # partition 1's totals are current: kept in memory
    assert (owner.handover.owned, owner.handover.generation) == ({0, 1}, 2)


def test_after_a_missed_generation_every_partition_is_read_again() -> None:
    owner = Owner()
    owner.handover.assigned(assigned(0, 1, 2, 3), generation=1)
    owner.profiling.process(list(SyntheticStream(seed=2, users=50).events(1_000)))
    owner.hold_unwritten(1)

    dropped = owner.handover.assigned(assigned(0, 1), generation=5)  # it missed 2 to 4

    assert dropped == len(owner.keys)  # statistics: read again from the table
    assert owner.recorder.unwritten() == {}
    # The tables' data of partitions still owned stays: it is what they are read from.
    assert set(owner.key_stats.data) == owner.keys_in({0, 1})
    assert set(owner.metrics.data) == {(partition_key(p), WINDOW) for p in (0, 1)}


async def test_offsets_skipped_are_looked_for_only_in_partitions_owned_throughout() -> None:
    log = ReadLog()
    owner = Owner(log)
    owner.handover.assigned(assigned(0, 1), generation=1)
    for partition in (0, 1):
        await owner.skipped.before(partition, 10)
    owner.handover.assigned(assigned(1), generation=2)
    for partition in (0, 1):
        await owner.skipped.before(partition, 20)
    # Partition 1 expected offset 11 next; partition 0 may have moved on elsewhere meanwhile.
    assert log.reads == [(1, range(11, 20))]
