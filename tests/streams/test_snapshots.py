"""Publishing merged snapshots on plain objects, no broker."""

from __future__ import annotations

from shardshape.core.contracts import ShardSnapshot, decode, snapshot_key
from shardshape.models.profiler import ProfilerConfig
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.profiling import ProfilingWorker, SnapshotMerger
from shardshape.streams.snapshots import publish_merged
from tests.streams.stand_ins import MemoryPublisher


def test_each_merge_of_new_summaries_is_published_once_under_the_services_snapshot_key() -> None:
    config = ProfilerConfig(max_shards=4, federated=True, blas_threads=None)
    worker, merger, routing = (
        ProfilingWorker(config, "w-1"),
        SnapshotMerger(config),
        MemoryPublisher(),
    )
    events = list(SyntheticStream(seed=1).events(1_000))
    assert publish_merged(merger, routing) == []  # no summaries: this worker merges nothing

    worker.process(events[:500])
    for _, value in worker.summaries():
        merger.add(value)
    (snapshot,) = publish_merged(merger, routing)
    assert publish_merged(merger, routing) == []  # nothing new since

    worker.process(events[500:])
    for _, value in worker.summaries():
        merger.add(value)
    (newer,) = publish_merged(merger, routing)

    assert [key for key, _ in routing.messages] == [snapshot_key("shop")] * 2
    published = [decode(ShardSnapshot, value) for _, value in routing.messages]
    assert [s.version for s in published] == [snapshot.version, newer.version] == [1, 2]
