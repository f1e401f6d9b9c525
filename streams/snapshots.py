"""Publishing the merged global snapshots: the worker that owns the summaries partition merges
every worker's summary (:class:`~shardshape.streams.profiling.SnapshotMerger`) and publishes
one :class:`~shardshape.core.contracts.ShardSnapshot` per service on the routing topic."""

from __future__ import annotations

import logging

from shardshape.core.contracts import ShardSnapshot, encode, snapshot_key
from shardshape.streams.profiling import SnapshotMerger
from shardshape.streams.publisher import Publisher

log = logging.getLogger("shardshape.worker")


def publish_merged(merger: SnapshotMerger, routing: Publisher) -> list[ShardSnapshot]:
    """Publish the snapshots of the services with new summaries since the last call (none on
    a worker that does not own the summaries partition: it has no summaries to merge)."""
    snapshots = merger.merge()
    for snapshot in snapshots:
        routing.publish(snapshot_key(snapshot.service), encode(snapshot))
        log.info("published snapshot %s v%d (%d shards)", snapshot.service,
                 snapshot.version, len(snapshot.shards))  # fmt: skip
    return snapshots
