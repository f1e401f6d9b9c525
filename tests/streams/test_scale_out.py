"""Scale out on the real broker: two and three workers share the requests partitions, a worker
that joins or leaves moves partitions, each key's statistics move with its partition (seeded
from the key-stats changelog), every event is counted once in the shard metrics, and all
workers predict with one snapshot version."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from shardshape.core.contracts import RequestEvent
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics
from shardshape.models.keystats import N
from shardshape.streams.replay import replay
from tests.support.polling import wait_until
from tests.support.workers import (
    Worker,
    counted_by,
    read_table,
    settled,
    tails,
    unsettled,
    worker,
)

PARTITIONS = 6
USERS = 40
TYPES = ("GET /items", "POST /export")
PER_ROUND = 3  # events of every key in each round

WORKER_ENV = {
    "snapshot_interval_s": "1",
    "checkpoint_interval_s": "0",  # every batch writes its keys: the changelog is exact
    "commit_interval_s": "1",
}


def _round(number: int) -> list[RequestEvent]:
    """``PER_ROUND`` completed events of every key (service, type, user)."""
    now = time.time()
    return [
        RequestEvent(
            request_id=f"r{number}-{i}-{t}-{u}",
            ts=now + i,
            service="shop",
            request_type=kind,
            user_id=f"user-{u}",
            payload_bytes=100 + 900 * t,
            latency_ms=(5.0, 80.0)[t] + u % 7,
            status="ok",
        )
        for i in range(PER_ROUND)
        for t, kind in enumerate(TYPES)
        for u in range(USERS)
    ]


def _send(settings: Settings, events: list[RequestEvent]) -> None:
    replay(events, settings.confluent_config(), settings.topic_requests, PARTITIONS)


def _settled(settings: Settings, workers: list[Worker]) -> dict[str, set[int]]:
    """Wait until ``workers`` own disjoint shares of all requests partitions; return them."""
    shares: dict[str, set[int]] = {}

    def covered() -> bool:
        shares.clear()
        shares.update({w.name: w.partitions(settings.topic_requests) for w in workers})
        owned = [p for share in shares.values() for p in share]
        return all(shares.values()) and sorted(owned) == list(range(PARTITIONS))

    wait_until(
        covered,
        90,
        f"{len(workers)} workers sharing {PARTITIONS} partitions",
        every_s=0.5,
        explain=tails(workers),
    )
    return dict(shares)


def _counted_once(settings: Settings, workers: list[Worker], expected: int) -> None:
    """Every event counted by exactly one of ``workers``, with offsets committed: once they have
    counted ``expected`` and are settled (ready, every message committed) what they count is
    final, and stopping or moving a partition replays nothing, so each key's count stays exact."""
    wait_until(
        lambda: counted_by(workers) >= expected and settled(settings, workers), 60,
        "every event counted and committed", every_s=0.5, explain=unsettled(settings, workers),
    )  # fmt: skip
    for size in ("1m", "10s"):
        each = {w.name: counted_by([w], size) for w in workers}
        assert sum(each.values()) == expected, f"{size} windows counted {each}, sent {expected}"


@pytest.mark.slow
def test_partitions_and_key_state_move_as_workers_join_and_leave(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"requests_partitions": PARTITIONS})
    create_topics(settings)
    sent = 0
    with (
        worker(settings, tmp_path, "a", **WORKER_ENV) as a,
        worker(settings, tmp_path, "b", **WORKER_ENV) as b,
    ):
        two = _settled(settings, [a, b])
        _send(settings, first := _round(1))
        sent += len(first)
        _counted_once(settings, [a, b], sent)

        with worker(settings, tmp_path, "c", **WORKER_ENV) as c:
            three = _settled(settings, [a, b, c])
            assert three["c"] and not three["c"] & (three["a"] | three["b"]), "c took some"
            assert three["a"] | three["b"] < two["a"] | two["b"], "a and b gave them up"
            _send(settings, second := _round(2))
            sent += len(second)
            _counted_once(settings, [a, b, c], sent)

        # c left: its partitions (and its windows, through their changelogs) went back.
        back = _settled(settings, [a, b])
        assert three["c"] <= back["a"] | back["b"]
        _send(settings, third := _round(3))
        sent += len(third)
        _counted_once(settings, [a, b], sent)

        # Each key was counted on up to three workers in turn; its statistics moved along, so
        # its last checkpoint holds every event. A worker that started a moved key afresh, or
        # kept a stale copy from an earlier ownership, would hold fewer.
        stored = read_table(settings, "key-stats")
        keys = {f"shop|{kind}|user-{u}" for kind in TYPES for u in range(USERS)}
        counts = {orjson.loads(key): orjson.loads(value)["rec"][N] for key, value in stored.items()}
        assert counts == dict.fromkeys(keys, 3 * PER_ROUND)

        # One global snapshot version, the same on both workers once summaries stop changing.
        def one_version() -> bool:
            versions = [w.stats()["snapshot_versions"] for w in (a, b)]
            return versions[0] == versions[1] and versions[0].get("shop", 0) > 0

        wait_until(
            one_version,
            60,
            "one snapshot version on every worker",
            every_s=0.5,
            explain=tails([a, b]),
        )
