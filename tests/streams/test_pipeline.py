"""The request pipeline on plain objects, no broker: what one call of the profile agent does
to the routing topic, the DLQ, the key-stats table, the metrics tables and the counters."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson
import pytest

from shardshape.allocator.planning import ReplicaTracker
from shardshape.core.contracts import (
    DeadLetter,
    RequestBatch,
    RequestEvent,
    ShardSnapshot,
    decode,
    encode,
)
from shardshape.core.metrics import decode_window
from shardshape.core.partitioning import partition_for, profile_key
from shardshape.models.keystats import N
from shardshape.models.profiler import ProfilerConfig
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.counters import PipelineCounters
from shardshape.streams.eviction import EvictedKeys
from shardshape.streams.gaps import RawMessage, SkippedOffsets
from shardshape.streams.key_stats import KeyStats
from shardshape.streams.pipeline import RequestPipeline
from shardshape.streams.profile_step import ProfileStep
from shardshape.streams.profiling import KeyCheckpoints, ProfilingWorker, SnapshotMerger
from shardshape.streams.receiving import Receiver
from shardshape.streams.record_step import RecordStep
from tests.streams.stand_ins import MemoryPublisher, MemoryTable, MemoryTopic, memory_recorder

TOPIC = "requests"
PARTITIONS = 2
WINDOW_START = 1_000.0  # every test message's timestamp falls in the 10 s window from here


def config(max_keys: int = 1_000_000) -> ProfilerConfig:
    return ProfilerConfig(max_shards=4, federated=True, blas_threads=None, max_keys=max_keys)


class MemoryLog:
    """Messages of the requests topic, read again by offset (what a ``GapReader`` reads)."""

    def __init__(self, messages: list[RawMessage]) -> None:
        self.messages = messages

    def read(self, partition: int, offsets: range) -> list[RawMessage]:
        return [m for m in self.messages if m.partition == partition and m.offset in offsets]

    def close(self) -> None:
        pass


@dataclass
class Worker:
    """A pipeline and every plain object it writes to."""

    max_keys: int = 1_000_000
    log: list[RawMessage] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.profiling = ProfilingWorker(config(self.max_keys), "worker-1")
        self.routing = MemoryPublisher()
        self.dlq = MemoryTopic()
        self.table = MemoryTable()
        self.key_stats = KeyStats(self.table, PARTITIONS)
        self.windows: dict[tuple[int, float], bytes] = {}
        self.counters = PipelineCounters()
        self.replicas = ReplicaTracker(ttl_s=60.0)
        checkpoints = KeyCheckpoints(every_s=0.0)  # every batch writes its keys
        evicted = EvictedKeys(self.profiling, checkpoints, self.routing, self.key_stats)
        self.profile = ProfileStep(
            self.profiling, self.routing, self.key_stats, evicted, self.counters
        )
        record = RecordStep(
            self.profiling,
            checkpoints,
            self.key_stats,
            [memory_recorder(self.windows)],
            self.counters,
        )
        self.skipped = SkippedOffsets(lambda: MemoryLog(self.log))
        receiver = Receiver(TOPIC, "worker-1", self.dlq, self.replicas)
        self.pipeline = RequestPipeline(receiver, self.profile, record, self.skipped)

    def counted(self, partition: int) -> tuple[int, int]:
        """Events in ``partition``'s window record, and the last offset folded in."""
        slots, offset = decode_window(self.windows[(partition, WINDOW_START)])
        return sum(stats.count for stats in slots.values()), offset


def key_of(event: RequestEvent) -> str:
    return profile_key(event.service, event.request_type, event.user_id)


def message(partition: int, offset: int, events: list[RequestEvent]) -> RawMessage:
    batch = RequestBatch(gateway_id="gw-1", events=events)
    return RawMessage(partition, offset, WINDOW_START + 1, b"gw-1", encode(batch))


def by_partition(events: list[RequestEvent]) -> dict[int, list[RequestEvent]]:
    """Events split as the gateway partitions them: by profile key."""
    split: dict[int, list[RequestEvent]] = {p: [] for p in range(PARTITIONS)}
    for event in events:
        split[partition_for(key_of(event), PARTITIONS)].append(event)
    return split


def trained_snapshot(events: list[RequestEvent]) -> ShardSnapshot:
    """The global snapshot that merging one worker's summary of ``events`` gives."""
    other = ProfilingWorker(config(), "worker-2")
    other.process(events)
    merger = SnapshotMerger(config())
    for _, value in other.summaries():
        merger.add(value)
    (snapshot,) = merger.merge(now=time.time())
    return snapshot


@pytest.fixture(scope="module")
def events() -> list[RequestEvent]:
    return list(SyntheticStream(seed=5, users=20).events(1_200))


async def test_queued_messages_are_profiled_in_one_call_and_recorded_message_by_message(
    events: list[RequestEvent],
) -> None:
    worker = Worker()
    split = by_partition(events[:600])
    messages = [
        message(0, 10, split[0][:150]),
        message(1, 5, split[1]),
        message(0, 11, split[0][150:]),
    ]
    await worker.pipeline.handle(messages)

    totals = worker.counters.as_dict()
    assert (totals["messages"], totals["events"], totals["dead_letters"]) == (3, 600, 0)
    assert totals["profiler_calls"] == 1  # 600 events: one group, one profiler call
    # Each partition's window record holds its events and its last offset.
    assert worker.counted(0) == (len(split[0]), 11)
    assert worker.counted(1) == (len(split[1]), 5)
    # Every key's statistics went to the table, in its own partition, at the group's last
    # offset of that partition (the record holds every event of the group).
    assert set(worker.table.data) == {key_of(e) for e in events[:600]}
    for partition, key, value in worker.table.changelog:
        assert partition == partition_for(key, PARTITIONS)
        assert orjson.loads(value)["offset"] == {0: 11, 1: 5}[partition]
    assert worker.replicas.live(time.time()) == {"shop": ["gw-1"]}
    assert worker.dlq.sent == []


async def test_messages_over_the_group_size_are_profiled_in_more_calls(
    events: list[RequestEvent],
) -> None:
    worker = Worker()
    worker.pipeline.max_events = 250
    await worker.pipeline.handle([message(0, i, events[i * 100 : i * 100 + 100]) for i in range(6)])
    assert worker.counters.profiler_calls == 3  # 600 events in groups of at most 250
    assert worker.counters.events == 600


async def test_routes_are_published_once_a_snapshot_is_adopted(
    events: list[RequestEvent],
) -> None:
    worker = Worker()
    await worker.pipeline.handle([message(0, 0, events[:300])])
    assert worker.routing.entries() == []  # federated: no routes before a global snapshot

    # With the stream idle, the timer's call adopts the snapshot and publishes the routes of
    # the keys known.
    worker.profiling.offer_snapshot(trained_snapshot(events[:600]))
    worker.profile.adopt_offered()
    adopted = worker.routing.entries()
    assert {entry.key for entry in adopted} == {key_of(e) for e in events[:300]}
    assert {entry.snapshot_version for entry in adopted} == {1}

    await worker.pipeline.handle([message(0, 1, events[300:600])])
    routed = {entry.key for entry in worker.routing.entries()[len(adopted) :]}
    assert routed and routed <= {key_of(e) for e in events[:600]}
    assert worker.routing.polls >= 2


async def test_rejected_messages_and_events_go_to_the_dlq_and_valid_events_on(
    events: list[RequestEvent],
) -> None:
    worker = Worker()
    good, bad = events[0].model_dump(mode="json"), events[1].model_dump(mode="json")
    bad["latency_ms"] = -1.0
    partly_bad = orjson.dumps({"v": 1, "gateway_id": "gw-1", "events": [good, bad]})
    messages = [
        RawMessage(0, 0, WINDOW_START, b"junk", b"not json"),
        RawMessage(0, 1, WINDOW_START, b"partly", partly_bad),
        RawMessage(0, 2, WINDOW_START, None, None),  # a tombstone
    ]
    await worker.pipeline.handle(messages)

    letters = [(key, decode(DeadLetter, value)) for key, value in worker.dlq.sent]
    assert [(key, letter.offset) for key, letter in letters] == [
        (b"junk", 0),
        (b"partly", 1),
        (None, 2),
    ]
    assert all(
        letter.source_topic == TOPIC and letter.worker == "worker-1" for _, letter in letters
    )
    assert letters[0][1].original() == b"not json"
    totals = worker.counters.as_dict()
    assert (totals["messages"], totals["events"], totals["dead_letters"]) == (3, 1, 3)
    assert set(worker.table.data) == {key_of(events[0])}


async def test_evicted_keys_leave_the_routing_topic_and_the_key_stats_table(
    events: list[RequestEvent],
) -> None:
    worker = Worker(max_keys=5)
    template = events[0]
    first = [template.model_copy(update={"user_id": f"old-{i}"}) for i in range(5)]
    then = [template.model_copy(update={"user_id": f"new-{i}"}) for i in range(5)]
    await worker.pipeline.handle([message(0, 0, first)])
    assert set(worker.table.data) == {key_of(e) for e in first}

    await worker.pipeline.handle([message(0, 1, then)])  # the table is full: the old go
    old, new = {key_of(e) for e in first}, {key_of(e) for e in then}
    assert set(worker.routing.tombstones()) == old
    assert set(worker.table.data) == new
    deleted = [(p, key) for p, key, value in worker.table.changelog if value is None]
    assert sorted(deleted) == sorted((partition_for(key, PARTITIONS), key) for key in old)
    assert worker.profiling.key_counts() == {"shop": {"keys": 5, "evicted": 5}}


async def test_a_long_key_is_retired_by_its_routing_entrys_key(
    events: list[RequestEvent],
) -> None:
    worker = Worker(max_keys=1)
    long_user = "u" * 120  # the profile key is longer than a routing entry's key may be
    first = [events[0].model_copy(update={"user_id": long_user})]
    await worker.pipeline.handle([message(0, 0, first)])
    await worker.pipeline.handle([message(0, 1, [events[0]])])
    (tombstone,) = worker.routing.tombstones()
    assert tombstone == key_of(first[0])[:128]


async def test_offsets_the_consumer_skipped_are_read_again_before_the_next_message(
    events: list[RequestEvent],
) -> None:
    worker = Worker()
    on_topic = [message(0, offset, events[offset * 10 : offset * 10 + 10]) for offset in range(4)]
    worker.log.extend(on_topic)
    # The consumer hands on offsets 0 and 3: 1 and 2 are read from the topic, in order.
    await worker.pipeline.handle([on_topic[0], on_topic[3]])
    assert worker.skipped.read_again == 2
    assert worker.counters.messages == 4 and worker.counters.events == 40
    assert worker.counted(0) == (40, 3)


async def test_a_key_new_to_this_worker_is_seeded_from_the_key_stats_table(
    events: list[RequestEvent],
) -> None:
    user = [e for e in events if key_of(e) == key_of(events[0])]
    owner, successor, stranger = Worker(), Worker(), Worker()
    await owner.pipeline.handle([message(0, 0, user[:-1])])
    successor.table.data.update(owner.table.data)  # the changelog restored after a takeover
    for worker in (successor, stranger):
        await worker.pipeline.handle([message(0, 1, user[-1:])])
    key = key_of(events[0])
    assert successor.profiling.records([key])[key][N] == len(user)
    assert stranger.profiling.records([key])[key][N] == 1
