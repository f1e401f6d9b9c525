"""Malformed, unsigned and forged snapshots, routing entries and plans reaching gateways over
the real broker: each is ignored with a logged reason and the last good one stays in force."""

from __future__ import annotations

import json
import logging

import orjson
import pytest
from confluent_kafka import Producer

from shardshape.allocator.client import AllocatorClient
from shardshape.core.contracts import (
    AllocationPlan,
    RoutingEntry,
    ShardSnapshot,
    ShardSpec,
    encode,
    snapshot_key,
)
from shardshape.core.settings import Settings
from shardshape.core.signing import SIGNATURE_HEADER, HmacSigner
from shardshape.gateway.routing_table import RoutingTable
from shardshape.infra.topics import create_topics
from shardshape.models.profiler import Profiler, ProfilerConfig
from shardshape.models.synthetic import SyntheticStream

KEY = "k" * 40
Message = tuple[bytes, bytes | None, list[tuple[str, bytes]] | None]


def _produce(settings: Settings, topic: str, messages: list[Message]) -> None:
    producer = Producer(settings.confluent_config())
    for key, value, headers in messages:
        producer.produce(topic, key=key, value=value, headers=headers)
    assert producer.flush(10) == 0


def _snapshot() -> tuple[ShardSnapshot, list]:
    profiler = Profiler("shop", ProfilerConfig())
    events = list(SyntheticStream(seed=4).events(4_000))
    for i in range(0, len(events), 500):
        profiler.process_batch(events[i : i + 500])
    return profiler.snapshot(), events


def _malformed_snapshots(good: ShardSnapshot) -> list[bytes | None]:
    newer = orjson.loads(encode(good)) | {"version": good.version + 10}
    return [
        b"{not json",
        b"",
        None,
        b"\xff\xfe" + encode(good),
        orjson.dumps(newer | {"v": 2}),
        orjson.dumps(newer | {"version": -1}),
        json.dumps(newer | {"version": 2**64}).encode(),
        orjson.dumps(newer | {"created_ts": "now"}),
        orjson.dumps(newer).replace(b'"created_ts":', b'"created_ts":NaN,"x":'),
        orjson.dumps(newer | {"unexpected": 1}),
        b'{"v":1,"service":"shop","version":99,"model":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        # Valid JSON of the schema, but a model no predictor can be built from.
        orjson.dumps(newer | {"model": {"format": "alien"}}),
        orjson.dumps(newer | {"shards": [{"shard_id": 0, "centroid": [1.0] * 3}] * 300}),
    ]


def _malformed_entries() -> list[tuple[bytes, bytes]]:
    entry = {"v": 1, "service": "shop", "key": "shop|GET /item|u1", "shard_id": 1}
    return [
        (b"shop|GET /item|u1", orjson.dumps(entry)),  # snapshot_version missing
        (b"shop|GET /item|u2", orjson.dumps(entry | {"snapshot_version": 1, "shard_id": -3})),
        (b"shop|GET /item|u3", orjson.dumps(entry | {"snapshot_version": 1, "confidence": 7})),
        (b"shop|GET /item|u4", b'{"v":1,"service":"shop","key":"\\ud800","shard_id":1}'),
        (b"shop|GET /item|u5", b""),
    ]


def test_routing_table_ignores_malformed_messages_and_keeps_the_last_good(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    create_topics(settings)
    good, events = _snapshot()
    bad_snapshots = _malformed_snapshots(good)
    bad_entries = _malformed_entries()
    entry = RoutingEntry(service="shop", key="shop|GET /item|u9", shard_id=2, snapshot_version=1)
    messages: list[Message] = [
        (snapshot_key("shop"), b"{before any good one", None),
        (snapshot_key("shop"), encode(good), None),
        *[(snapshot_key("shop"), value, None) for value in bad_snapshots],
        (entry.key.encode(), encode(entry), None),
        *[(key, value, None) for key, value in bad_entries],
    ]
    _produce(settings, settings.topic_routing, messages)

    caplog.set_level(logging.WARNING, "shardshape.gateway.routing")
    with RoutingTable.from_settings(settings) as table:
        assert table.wait_caught_up(30)
    assert table.rejected == 1 + len(bad_snapshots) + len(bad_entries)
    assert table.snapshot_version("shop") == good.version
    assert table.snapshot("shop") == good
    assert table.entry(entry.key) == entry and len(table) == 1
    assert table.predict(events[0]).snapshot_version == good.version
    reasons = [r.getMessage() for r in caplog.records if "ignored routing message" in r.message]
    assert len(reasons) == table.rejected
    assert any("not JSON" in r or "Invalid JSON" in r for r in reasons)
    assert any("unsupported contract version" in r for r in reasons)
    assert any("finite" in r or "Invalid JSON" in r for r in reasons)


def _plan(version: int, **fields: object) -> AllocationPlan:
    return AllocationPlan(
        plan_id=f"shop:{version}",
        version=version,
        service="shop",
        pool_id="main",
        shards=[ShardSpec(shard_id=0, blocks={"small": version})],
        **fields,
    )


class RecordingBackend:
    def __init__(self) -> None:
        self.applied: list[int] = []

    def apply(self, plan: AllocationPlan) -> None:
        self.applied.append(plan.version)


def test_allocator_client_ignores_malformed_plans_and_keeps_the_last_good(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    create_topics(settings)
    newer = orjson.loads(encode(_plan(9)))
    malformed: list[bytes | None] = [
        b"",
        None,
        b"plan v9, trust me",
        b"\xc3\x28" + encode(_plan(9)),
        orjson.dumps(newer | {"v": 7}),
        orjson.dumps(newer | {"version": "9"}),
        json.dumps(newer | {"version": 2**70}).encode(),
        orjson.dumps(newer | {"shards": [{"shard_id": 0, "blocks": {"small": -4}}]}),
        orjson.dumps(newer | {"shards": [{"shard_id": 0, "resources": {"concurrency": 0}}]}),
        orjson.dumps(newer | {"rationale": "x" * 10_000}),
        orjson.dumps(newer | {"shards": [{"shard_id": 0}] * 300}),
        orjson.dumps(newer).replace(b'"created_ts":', b'"created_ts":Infinity,"x":'),
        b'{"v":1,"plan_id":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    ]
    messages: list[Message] = [
        (b"shop", encode(_plan(1)), None),
        *[(b"shop", value, None) for value in malformed],
    ]
    _produce(settings, settings.topic_plans, messages)

    backend = RecordingBackend()
    caplog.set_level(logging.WARNING, "shardshape.allocator")
    with AllocatorClient.from_settings(settings, "shop", backend) as client:
        assert client.wait_for_version(1, timeout_s=30)
        assert client.wait_caught_up(30)
    assert backend.applied == [1]
    assert client.applied == _plan(1)
    assert client.ignored == len(malformed)
    reasons = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ignored")]
    assert len(reasons) == len(malformed) and all("malformed plan" in r for r in reasons)


def test_with_a_signing_key_unsigned_and_forged_messages_are_rejected(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    signed = settings.model_copy(update={"signing_key": KEY})
    create_topics(signed)
    signer, impostor = HmacSigner(KEY), HmacSigner("i" * 40)
    good, _ = _snapshot()
    newer = encode(good.model_copy(update={"version": good.version + 1}))
    entry = RoutingEntry(service="shop", key="shop|GET /item|u1", shard_id=1, snapshot_version=1)
    moved = encode(entry.model_copy(update={"shard_id": 3}))
    skey, ekey = snapshot_key("shop"), entry.key.encode()
    routing: list[Message] = [
        (skey, encode(good), signer.headers(skey, encode(good))),
        (ekey, encode(entry), signer.headers(ekey, encode(entry))),
        (skey, newer, None),  # unsigned
        (skey, newer, impostor.headers(skey, newer)),  # signed with another key
        (skey, newer, signer.headers(skey, encode(good))),  # a good signature moved over
        (skey, newer, [(SIGNATURE_HEADER, b"0" * 64)]),
        (skey, newer, [*signer.headers(skey, newer), *signer.headers(skey, newer)]),
        (ekey, moved, signer.headers(b"another|key|u1", moved)),  # signed for another key
        (ekey, None, None),  # an unsigned tombstone does not retire the key
    ]
    _produce(signed, signed.topic_routing, routing)
    plans: list[Message] = [
        (b"shop", encode(_plan(1)), signer.headers(b"shop", encode(_plan(1)))),
        (b"shop", encode(_plan(2)), None),
        (b"shop", encode(_plan(3)), impostor.headers(b"shop", encode(_plan(3)))),
    ]
    _produce(signed, signed.topic_plans, plans)

    caplog.set_level(logging.WARNING)
    backend = RecordingBackend()
    with (
        RoutingTable.from_settings(signed) as table,
        AllocatorClient.from_settings(signed, "shop", backend) as client,
    ):
        assert table.wait_caught_up(30) and client.wait_caught_up(30)
    assert table.snapshot_version("shop") == good.version
    assert table.entry(entry.key) == entry
    assert table.rejected == len(routing) - 2
    assert backend.applied == [1] and client.ignored == 2
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unsigned" in m for m in messages) == 3
    assert sum("forged" in m for m in messages) == 5
    assert sum("ambiguous" in m for m in messages) == 1

    # Without a key the same topic reads as plain contracts: signing changes no value.
    with RoutingTable.from_settings(settings) as plain:
        assert plain.wait_caught_up(30)
    assert plain.snapshot_version("shop") == good.version + 1 and plain.entry(entry.key) is None
