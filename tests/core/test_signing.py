"""Ed25519 signing over the real broker: a gateway that holds only the workers' public key
applies the plans and routing entries they sign, and drops what any other key signed (a
gateway's own, or the HMAC fallback's), unsigned messages and replays of older versions; two
public keys let the signing key rotate without downtime."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from shardshape.allocator.client import AllocatorClient
from shardshape.core.contracts import RoutingEntry, encode, snapshot_key
from shardshape.core.settings import Settings, SettingsError, load_settings
from shardshape.core.signing import (
    Ed25519Signer,
    Ed25519Verifier,
    HmacSigner,
    Signer,
    checker_from,
    private_key_text,
    public_key_text,
    signer_from,
)
from shardshape.gateway.routing_table import RoutingTable
from shardshape.infra.topics import create_topics
from shardshape.streams.publisher import RoutingPublisher
from tests.support.plans import plan, shard
from tests.support.trained import trained_profiler

pytestmark = pytest.mark.broker


def key_pair() -> tuple[str, str]:
    """A new key pair as `shardshape signing-keys` prints it: (private, public)."""
    key = Ed25519PrivateKey.generate()
    return private_key_text(key), public_key_text(key.public_key())


def worker_signer(settings: Settings, private: str, public: str | None = None) -> Signer:
    """What a worker with these keys signs with (the same path ``shardshape worker`` takes)."""
    update = {"signing_private_key": SecretStr(private), "signing_public_key": public}
    signer = signer_from(settings.model_copy(update=update).revalidated())
    assert isinstance(signer, Ed25519Signer)
    return signer


def gateway_settings(
    settings: Settings, public: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """A gateway's settings: the public key(s) only, read from a file as a container secret."""
    path = tmp_path / "signing.pub"
    path.write_text(public + "\n")
    monkeypatch.setenv("SHARDSHAPE_SIGNING_PUBLIC_KEY_FILE", str(path))
    gateway = load_settings(**settings.model_dump(exclude_none=True))
    assert gateway.signing_private_key is None and gateway.signing_key is None
    assert isinstance(checker_from(gateway), Ed25519Verifier) and signer_from(gateway) is None
    return gateway


def publish(settings: Settings, topic: str, signer, messages) -> None:  # type: ignore[no-untyped-def]
    """Produce (key, value) messages signed by ``signer`` (None: unsigned) with the workers'
    publisher."""
    publisher = RoutingPublisher(settings.confluent_config(), topic, signer)
    for key, value in messages:
        publisher.publish(key, value)
    assert publisher.flush(10) == 0


def test_a_gateway_with_only_the_public_key_applies_what_workers_sign(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    create_topics(settings)
    private, public = key_pair()
    worker = worker_signer(settings, private)
    gateway_key = Ed25519Signer(Ed25519PrivateKey.generate())  # what a gateway could sign with
    shared = HmacSigner("h" * 40)  # the fallback scheme's key, which every gateway would hold
    gateway = gateway_settings(settings, public, tmp_path, monkeypatch)

    profiler, _ = trained_profiler(4_000)
    good = profiler.snapshot()
    older = good.model_copy(update={"version": good.version - 1})
    newer = good.model_copy(update={"version": good.version + 1})
    skey = snapshot_key("shop")
    entry = RoutingEntry(service="shop", key="shop|GET /item|u1", shard_id=1,
                         snapshot_version=good.version, updated_ts=200.0)  # fmt: skip
    stale = entry.model_copy(update={"shard_id": 3, "snapshot_version": older.version})
    moved = entry.model_copy(update={"shard_id": 2, "updated_ts": 300.0})
    ekey = entry.key.encode()
    publish(settings, settings.topic_routing, worker, [(skey, encode(good)), (ekey, encode(entry))])
    publish(
        settings, settings.topic_routing, worker, [(skey, encode(older)), (ekey, encode(stale))]
    )
    for other in (gateway_key, shared, None):
        publish(settings, settings.topic_routing, other,
                [(skey, encode(newer)), (ekey, encode(moved))])  # fmt: skip
    publish(
        settings,
        settings.topic_plans,
        worker,
        [(b"shop", encode(plan(2, shard(0, concurrency=4))))],
    )
    publish(
        settings,
        settings.topic_plans,
        worker,
        [(b"shop", encode(plan(1, shard(0, concurrency=4))))],
    )
    for version, other in ((3, gateway_key), (4, shared), (5, None)):
        publish(
            settings,
            settings.topic_plans,
            other,
            [(b"shop", encode(plan(version, shard(0, concurrency=4))))],
        )

    caplog.set_level(logging.WARNING)
    backend = SimpleNamespace(applied=[], apply=lambda p: backend.applied.append(p.version))
    with (
        RoutingTable.from_settings(gateway) as table,
        AllocatorClient.from_settings(gateway, "shop", backend) as client,
    ):
        assert table.wait_caught_up(30) and client.wait_caught_up(30)
    assert table.snapshot_version("shop") == good.version  # older replayed, newer forged
    assert table.entry(entry.key) == entry  # the replayed stale entry and the forged move: no
    assert table.rejected == 1 + 3 * 2  # the replay, and 3 forgers x (snapshot, entry)
    assert backend.applied == [2] and client.ignored == 4  # the v1 replay and 3 forgeries
    messages = [r.getMessage() for r in caplog.records]
    assert sum("matches none of the 1 public key" in m for m in messages) == 3
    assert sum("not an Ed25519 signature" in m for m in messages) == 3
    assert sum("unsigned" in m for m in messages) == 3
    assert sum("replay" in m or "stale plan v1" in m for m in messages) == 2


def test_two_public_keys_let_the_signing_key_rotate(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_topics(settings)
    (old_private, old_public), (new_private, new_public) = key_pair(), key_pair()
    before = worker_signer(settings, old_private)
    # Mid-rotation workers sign with the new key and still accept the old one's messages.
    after = worker_signer(settings, new_private, public=old_public)
    old_plan = encode(plan(1, shard(0, concurrency=4)))
    assert after.check(b"shop", old_plan, before.headers(b"shop", old_plan)) is None
    publish(settings, settings.topic_plans, before, [(b"shop", old_plan)])
    publish(
        settings, settings.topic_plans, after, [(b"shop", encode(plan(2, shard(0, concurrency=4))))]
    )

    both = gateway_settings(settings, f"{old_public},{new_public}", tmp_path, monkeypatch)
    backend = SimpleNamespace(applied=[], apply=lambda p: backend.applied.append(p.version))
    with AllocatorClient.from_settings(both, "shop", backend) as client:
        assert client.wait_caught_up(30)
    assert backend.applied == [1, 2] and client.ignored == 0

    only_new = gateway_settings(settings, new_public, tmp_path, monkeypatch)
    backend.applied.clear()
    with AllocatorClient.from_settings(only_new, "shop", backend) as client:
        assert client.wait_caught_up(30)
    assert backend.applied == [2] and client.ignored == 1  # the old key's plan, once retired


def test_signing_settings_say_what_is_wrong() -> None:
    keys = [key_pair() for _ in range(3)]
    with pytest.raises(SettingsError, match="at most 2"):
        load_settings(signing_public_key=",".join(public for _, public in keys))
    with pytest.raises(SettingsError, match="at most 2"):  # the private key's own counts
        load_settings(signing_private_key=keys[0][0],
                      signing_public_key=f"{keys[1][1]},{keys[2][1]}")  # fmt: skip
    with pytest.raises(SettingsError, match="unset the HMAC key"):
        load_settings(signing_private_key=keys[0][0], signing_key="k" * 40)
    with pytest.raises(SettingsError, match="SIGNING_PUBLIC_KEY: not Ed25519 public keys"):
        load_settings(signing_public_key="not-a-key")
    with pytest.raises(SettingsError, match="SIGNING_PRIVATE_KEY: not an Ed25519 private key"):
        load_settings(signing_private_key="c2hvcnQ=")
