"""RoutingTable semantics without a broker: what it keeps, what it ignores, how it predicts."""

from __future__ import annotations

from shardshape.core.contracts import RoutingEntry, ShardSnapshot, encode, snapshot_key
from shardshape.gateway.routing_table import RoutingTable
from tests.support.trained import trained_profiler


def _table() -> RoutingTable:
    # Never started: messages are fed through apply(), as the follower thread would.
    return RoutingTable({"bootstrap.servers": "127.0.0.1:1"}, "routing", default_shard=7)


def test_before_any_snapshot_it_serves_the_default_shard() -> None:
    _, events = trained_profiler(500)
    assignment = _table().predict(events[0])
    assert (assignment.shard_id, assignment.source, assignment.snapshot_version) == (
        7,
        "default",
        0,
    )


def test_snapshot_and_entries_drive_predictions() -> None:
    profiler, events = trained_profiler()
    table = _table()
    snapshot = profiler.snapshot()
    table.apply(snapshot_key("shop"), encode(snapshot))
    for entry in profiler.routing_changes() or []:
        table.apply(entry.key.encode(), encode(entry))
    key = "shop|GET /search|bulk-3"
    table.apply(
        key.encode(),
        encode(
            RoutingEntry(
                service="shop",
                key=key,
                shard_id=snapshot.shards[0].shard_id,
                snapshot_version=snapshot.version,
                confidence=1.0,
            )
        ),
    )
    bulk = next(e for e in events if e.user_id == "bulk-3")
    hit = table.predict(bulk)
    assert (hit.source, hit.shard_id, hit.snapshot_version) == (
        "key",
        snapshot.shards[0].shard_id,
        snapshot.version,
    )
    unseen = bulk.model_copy(update={"user_id": "someone-new"})
    miss = table.predict(unseen)
    assert miss.source == "model"
    assert miss.shard_id in {s.shard_id for s in snapshot.shards}


def test_malformed_messages_are_ignored_and_the_last_good_state_kept() -> None:
    profiler, events = trained_profiler()
    table = _table()
    good = profiler.snapshot()
    table.apply(snapshot_key("shop"), encode(good))
    table.apply(snapshot_key("shop"), b"{not json")
    table.apply(
        snapshot_key("shop"),
        b'{"v": 1, "service": "shop", "version": 99, "model": {"format": "alien"}}',
    )
    table.apply(b"shop|GET /item|u1", b'{"v": 1, "service": "shop"}')
    assert table.rejected == 3
    assert table.snapshot_version("shop") == good.version
    assert table.predict(events[0]).snapshot_version == good.version


def test_older_snapshots_do_not_replace_newer_and_tombstones_retire_keys() -> None:
    profiler, _ = trained_profiler()
    table = _table()
    newer = profiler.snapshot().model_copy(update={"version": 5})
    older = profiler.snapshot().model_copy(update={"version": 4})
    table.apply(snapshot_key("shop"), encode(newer))
    table.apply(snapshot_key("shop"), encode(older))
    assert table.snapshot_version("shop") == 5
    entry = RoutingEntry(service="shop", key="shop|GET /item|u9", shard_id=1, snapshot_version=5)
    table.apply(entry.key.encode(), encode(entry))
    assert table.entry(entry.key) == entry
    table.apply(entry.key.encode(), None)
    assert table.entry(entry.key) is None
    assert isinstance(table.snapshot("shop"), ShardSnapshot)
