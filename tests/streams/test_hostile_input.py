"""Hostile input on the requests topic: 10,000 bad messages of many kinds mixed into valid
traffic reach the DLQ one by one with a reason, the worker never restarts, and the valid events'
results are those of a run without them.

Two real workers run side by side on the session broker, on topics of their own: one is fed
the valid batches alone, the other the same batches (same order in each partition) with the
hostile messages in between. What the valid events decide, independently of how the online
model happens to learn, must be equal: events, errors and bytes per service and source
partition in the shard metrics, and the set of profile keys routed.
"""

from __future__ import annotations

import json
import random
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from shardshape.core.batching import PartitionBatcher
from shardshape.core.contracts import (
    MAX_ATTRIBUTES,
    MAX_BATCH_EVENTS,
    DeadLetter,
    RequestBatch,
    decode,
    encode,
)
from shardshape.core.follower import TopicFollower
from shardshape.core.metrics import ShardStats, partition_of, series_of, split_metric_key
from shardshape.core.net import ensure_port_free
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics
from shardshape.models.features import profile_key
from shardshape.models.synthetic import SyntheticStream
from tests.support.polling import wait_until
from tests.support.processes import running, settings_env, shardshape_command, wait_for_line
from tests.support.workers import all_committed, messages_on, read_topic

HOSTILE = 10_000
VALID_EVENTS = 20_000
PARTITIONS = 4


@dataclass(frozen=True)
class Hostile:
    kind: str
    value: bytes | None
    expected_original: bytes  # what its dead letter must carry

    @staticmethod
    def whole(kind: str, value: bytes | None) -> Hostile:
        return Hostile(kind, value, value or b"")


def _event(**fields: object) -> dict:
    base = {"v": 1, "request_id": "h", "ts": 1.0, "service": "shop", "request_type": "GET /x"}
    return {**base, **fields}


def _json(value: object) -> bytes:
    return orjson.dumps(value)


def _batch(*events: object, **fields: object) -> bytes:
    return _json({"v": 1, "gateway_id": "evil", **fields, "events": list(events)})


def _hostile_kinds(rng: random.Random, i: int) -> list[Hostile]:
    """One message of every cheap kind; ``i`` makes them differ from round to round."""
    head = f'{{"v":1,"request_id":"r{i}","ts":1,"service":"shop","request_type":"t",'

    def raw_event(tail: str) -> bytes:
        return (head + tail).encode()

    def raw_batch(tail: str) -> bytes:
        return b'{"v":1,"gateway_id":"g","events":[' + raw_event(tail) + b"]}"

    one_bad_event = _event(request_id=f"b{i}", payload_bytes=-1 - i)
    return [
        # Not JSON, or not an object.
        Hostile.whole("not-json", b"GET /index.html HTTP/1.1\r\n"),
        Hostile.whole("not-json", b"{" * (1 + i % 5)),
        Hostile.whole("not-json", rng.randbytes(1 + i % 200)),
        Hostile.whole("not-json", b"\xef\xbb\xbf" + _json(_event(request_id=f"bom{i}"))),
        Hostile.whole("top-level", _json([1, 2, 3])),
        Hostile.whole("top-level", b"null"),
        Hostile.whole("top-level", _json(f"string {i}")),
        Hostile.whole("top-level", str(i).encode()),
        # Empty, and a null value (a tombstone).
        Hostile.whole("empty", b""),
        Hostile.whole("null-value", None),
        # Wrong types (the wire is strict: no "12" for 12).
        Hostile.whole("wrong-type", _json(_event(ts="yesterday"))),
        Hostile.whole("wrong-type", _json(_event(service=i))),
        Hostile.whole("wrong-type", _json(_event(attributes=["a", "b"]))),
        Hostile.whole("wrong-type", _json(_event(latency_ms=str(i)))),
        Hostile.whole("wrong-type", _json(_event(status="maybe"))),
        Hostile.whole("wrong-type", _json(_event(user_id=None))),
        Hostile.whole("wrong-type", _json({"v": 1, "gateway_id": "g", "events": {"a": 1}})),
        Hostile.whole("wrong-type", _json(_event(ts=True))),
        Hostile.whole("unknown-field", _json(_event(admin=True))),
        Hostile.whole("missing-field", _json({"v": 1, "request_id": f"m{i}"})),
        # Unknown versions, of a single event and of a batch.
        Hostile.whole("version", _json(_event(v=2 + i % 7))),
        Hostile.whole("version", _json(_event(v="1"))),
        Hostile.whole("version", _batch(_event(), v=0)),
        # NaN and infinity literals, and numbers beyond float.
        Hostile.whole("nan-inf", raw_event('"latency_ms":NaN}')),
        Hostile.whole("nan-inf", raw_event('"payload_bytes":Infinity}')),
        Hostile.whole("nan-inf", raw_batch('"ts":-Infinity}')),
        Hostile.whole("huge-number", raw_event('"latency_ms":1e400}')),
        Hostile.whole("huge-number", raw_event(f'"shard_id":{2**64 + i}}}')),
        Hostile.whole("huge-number", raw_batch(f'"shard_id":1{"0" * 400}}}')),
        # Negative sizes and times.
        Hostile.whole("negative", _json(_event(payload_bytes=-1 - i))),
        Hostile.whole("negative", _json(_event(response_bytes=-0.5))),
        Hostile.whole("negative", _json(_event(latency_ms=-i - 1))),
        Hostile.whole("negative", _json(_event(ts=-1))),
        # Limits of strings and maps, and a batch with no events.
        Hostile.whole("too-long", _json(_event(user_id="u" * (129 + i % 1000)))),
        Hostile.whole(
            "too-many-attributes",
            _json(_event(attributes={f"a{k}": k for k in range(MAX_ATTRIBUTES + 1)})),
        ),
        Hostile.whole("empty-batch", _batch()),
        # Deeply nested JSON, as a whole message and inside an event.
        Hostile.whole("deep", b"[" * (2_000 + i % 50_000) + b"]" * (2_000 + i % 50_000)),
        Hostile.whole("deep", raw_batch('"attributes":{"a":' + "[" * 5_000 + "]" * 5_000 + "}}")),
        # Invalid UTF-8 and lone surrogates.
        Hostile.whole("utf8", b'{"v":1,"request_id":"\xff\xfe","ts":1,"service":"s"}'),
        Hostile.whole("utf8", _json(_event(user_id="ok")).replace(b"ok", b"\xc3\x28")),
        Hostile.whole("surrogate", raw_event('"user_id":"\\ud800"}')),
        Hostile.whole("surrogate", raw_batch('"user_id":"x\\udc00y"}')),
        # A batch whose only event is bad: its event goes to the DLQ (as a separate record).
        Hostile("bad-event-in-batch", _batch(one_bad_event), _json(one_bad_event)),
    ]


def _rare_kinds(i: int) -> list[Hostile]:
    """Big ones, a few of each."""
    huge_event = _event(request_type="r" * (2_000_000 + i))
    return [
        Hostile.whole("megabyte-string", _json(_event(user_id="m" * (1_000_000 + i)))),
        Hostile("megabyte-string", _batch(huge_event), _json(huge_event)),
        Hostile.whole(
            "batch-over-limit",
            _batch(*[_event(request_id=f"o{i}-{k}") for k in range(MAX_BATCH_EVENTS + 1)]),
        ),
    ]


def hostile_messages(count: int, seed: int) -> list[Hostile]:
    """``count`` hostile messages: four rounds of the big kinds, the cheap kinds for the rest."""
    rng = random.Random(seed)
    out = [h for i in range(4) for h in _rare_kinds(i)]
    i = 0
    while len(out) < count:
        out += _hostile_kinds(rng, i)
        i += 1
    return out[:count]


def valid_messages(seed: int) -> tuple[list[tuple[int, bytes]], Counter, set[str]]:
    """Batches of synthetic events per partition; events per (service, partition); keys."""
    events = list(SyntheticStream(seed=seed, users=3_000).events(VALID_EVENTS))
    batcher = PartitionBatcher(PARTITIONS, batch_events=250, linger_s=3600)
    batches = [full for event in events if (full := batcher.add(event, 0.0)) is not None]
    batches += batcher.due(0.0, everything=True)
    messages = [
        (partition, encode(RequestBatch(gateway_id="gw", events=batch)))
        for partition, batch in batches
    ]
    per_partition = Counter()
    for partition, batch in batches:
        per_partition[("shop", partition)] += len(batch)
    keys = {profile_key(e.service, e.request_type, e.user_id) for e in events}
    return messages, per_partition, keys


def _produce(settings: Settings, messages: Iterator[tuple[int, bytes, bytes | None]]) -> None:
    producer = Producer(
        settings.confluent_config(
            **{"message.max.bytes": 8 * 1024 * 1024, "enable.idempotence": True}
        )
    )
    for partition, key, value in messages:
        while True:
            try:
                producer.produce(settings.topic_requests, value=value, key=key, partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def _wait_for_messages(port: int, expected: int, timeout_s: float, log: Path) -> None:
    handled = [0]

    def all_handled() -> bool:
        handled[0] = _get(port, "/shardshape/stats")["messages"]
        return handled[0] >= expected

    wait_until(
        all_handled, timeout_s, f"{expected} messages handled", every_s=0.5,
        explain=lambda: f"{handled[0]} handled; the log's end:\n"
        + "\n".join(log.read_text(errors="replace").splitlines()[-40:]),
    )  # fmt: skip


def metric_totals(port: int) -> dict[tuple[str, int], tuple[int, dict[str, int], float]]:
    """(service, source partition) -> (events, errors by status, payload bytes), all windows,
    all shards: what the valid events decide, whatever shards the model put them in."""
    totals: dict[tuple[str, int], tuple[int, Counter, float]] = {}
    for window in _get(port, "/shardshape/shards")["1m"]:
        for slot, data in window["slots"].items():
            service, _, _ = split_metric_key(series_of(slot))
            stats = ShardStats.from_bytes(data.encode())
            count, errors, payload = totals.get((service, partition_of(slot)), (0, Counter(), 0))
            errors.update(stats.errors)
            totals[(service, partition_of(slot))] = (
                count + stats.count,
                errors,
                payload + stats.payload_bytes,
            )
    return {k: (n, dict(errors), round(payload)) for k, (n, errors, payload) in totals.items()}


def read_dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every dead letter on the DLQ, read to its end. Called once the worker has committed every
    request (``RoutedKeys.wait_for``): it sends a message's dead letters before committing it."""
    big = {"fetch.message.max.bytes": 16 * 1024 * 1024}
    messages = messages_on(settings, settings.topic_dlq, settings.dlq_partitions, **big)
    return [decode(DeadLetter, message.value()) for message in messages]


class RoutedKeys:
    """Profile keys with a routing entry on a routing topic (followed live)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys: set[str] = set()
        config = settings.confluent_config()
        self._follower = TopicFollower(config, settings.topic_routing, self._on)

    def _on(self, key: bytes | None, value: bytes | None) -> None:
        if key and value and not _is_snapshot(key):
            self.keys.add(key.decode())

    def __enter__(self) -> RoutedKeys:
        self._follower.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._follower.stop()

    def wait_for(self, expected: set[str], timeout_s: float) -> set[str]:
        """The keys routed, once ``expected`` all are and the worker has committed every
        request: it writes a request's routing entries before committing it, so the topic's
        end then holds every entry the requests made, extra keys included."""
        wait_until(
            lambda: expected <= self.keys, timeout_s, "every valid key routed", every_s=0.5,
            explain=lambda: f"never routed: {sorted(expected - self.keys)[:20]}",
        )  # fmt: skip
        wait_until(lambda: all_committed(self.settings), timeout_s, "every request committed",
                   every_s=0.5)  # fmt: skip
        on_topic = read_topic(self.settings, self.settings.topic_routing)
        return self.keys | {key.decode() for key in on_topic if not _is_snapshot(key)}


def _is_snapshot(key: bytes) -> bool:
    return key.startswith(b"__snapshot__/")


def _listening_address(port: int) -> str:
    """The local address a TCP listener on ``port`` is bound to (from /proc/net/tcp)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                return address
    raise AssertionError(f"nothing listens on port {port}")


@pytest.mark.slow
@pytest.mark.timeout(600)  # its waits add up to ~10 minutes on a loaded machine; ~1 when quiet
def test_hostile_messages_reach_the_dlq_and_change_nothing_else(
    settings: Settings, tmp_path: Path
) -> None:
    hostile = hostile_messages(HOSTILE, seed=9)
    assert len({h.kind for h in hostile}) >= 20
    valid, per_partition, keys = valid_messages(seed=21)
    rng = random.Random(5)
    positions = sorted(rng.randrange(len(valid) + 1) for _ in hostile)
    targets = [rng.randrange(PARTITIONS) for _ in hostile]

    runs = {}
    for name in ("clean", "mixed"):
        port = ensure_port_free(0, "WEB_PORT")
        run = settings.model_copy(
            update={
                "app_id": f"{settings.app_id}-{name}",
                "topic_requests": f"{settings.topic_requests}.{name}",
                "topic_dlq": f"{settings.topic_dlq}.{name}",
                "topic_routing": f"{settings.topic_routing}.{name}",
                "topic_plans": f"{settings.topic_plans}.{name}",
                "data_dir": tmp_path / name,
                "requests_partitions": PARTITIONS,
                "web_enabled": True,
                "web_port": port,
                "snapshot_interval_s": 1.0,
            }
        )
        create_topics(run)
        runs[name] = (run, port, tmp_path / f"{name}.log")

    def mixed_stream() -> Iterator[tuple[int, bytes, bytes | None]]:
        h = 0
        for index, (partition, value) in enumerate(valid):
            while h < len(hostile) and positions[h] == index:
                yield targets[h], f"hostile-{h}".encode(), hostile[h].value
                h += 1
            yield partition, str(partition).encode(), value
        for rest in range(h, len(hostile)):
            yield targets[rest], f"hostile-{rest}".encode(), hostile[rest].value

    (clean, clean_port, clean_log), (mixed, mixed_port, mixed_log) = runs["clean"], runs["mixed"]
    with (
        running(shardshape_command("worker"), settings_env(clean), clean_log) as clean_worker,
        running(shardshape_command("worker"), settings_env(mixed), mixed_log) as mixed_worker,
        RoutedKeys(clean) as clean_routing,  # followed while the workers process
        RoutedKeys(mixed) as mixed_routing,
    ):
        wait_for_line(clean_log, "shardshape worker ready", clean_worker, 120)
        wait_for_line(mixed_log, "shardshape worker ready", mixed_worker, 120)
        pid = mixed_worker.pid
        _produce(clean, ((p, str(p).encode(), value) for p, value in valid))
        _produce(mixed, mixed_stream())

        _wait_for_messages(clean_port, len(valid), 120, clean_log)
        _wait_for_messages(mixed_port, len(valid) + len(hostile), 240, mixed_log)
        clean_routed = clean_routing.wait_for(keys, 90)
        mixed_routed = mixed_routing.wait_for(keys, 90)
        # Both workers have committed every request: what they show from here on is final.
        clean_stats = _get(clean_port, "/shardshape/stats")
        mixed_stats = _get(mixed_port, "/shardshape/stats")
        clean_totals, mixed_totals = metric_totals(clean_port), metric_totals(mixed_port)
        letters = read_dead_letters(mixed)
        clean_letters = read_dead_letters(clean)
        mixed_log_text = mixed_log.read_text(errors="replace")
        assert mixed_worker.poll() is None and mixed_worker.pid == pid, "the worker restarted"
        listening = _listening_address(mixed_port)

    # Every hostile message is one dead letter, with its reason and original bytes.
    assert len(letters) == len(hostile), Counter(letter.error_class for letter in letters)
    by_key = {letter.key_b64: letter for letter in letters}
    assert len(by_key) == len(hostile), "one dead letter per hostile message"
    import base64

    for index, message in enumerate(hostile):
        letter = by_key[base64.b64encode(f"hostile-{index}".encode()).decode()]
        assert letter.reason and letter.error_class, message.kind
        assert letter.original() == message.expected_original, message.kind
        assert letter.source_topic == mixed.topic_requests and letter.offset >= 0
    assert clean_letters == []

    # The worker took every message in stride: same process, no traceback, all counted.
    assert "Traceback" not in mixed_log_text and "crashed" not in mixed_log_text.lower()
    assert mixed_stats["messages"] == len(valid) + len(hostile)
    assert mixed_stats["dead_letters"] == len(hostile)
    assert mixed_stats["events"] == clean_stats["events"] == VALID_EVENTS

    # The valid events decided the same: per partition counts, errors, bytes; keys routed.
    assert {k: v[0] for k, v in clean_totals.items()} == dict(per_partition)
    assert mixed_totals == clean_totals
    assert clean_routed == keys, f"never routed: {sorted(keys - clean_routed)[:20]}"
    assert mixed_routed == clean_routed, (
        f"routed only without hostile input: {sorted(clean_routed - mixed_routed)[:20]}; "
        f"only with it: {sorted(mixed_routed - clean_routed)[:20]}"
    )

    # The worker's web views listen on loopback only (the default web_bind).
    assert listening in ("0100007F", "00000000000000000000000001000000"), listening
