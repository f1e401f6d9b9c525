"""The broker paused for 30 s (SIGSTOP of its process group): a running worker and a gateway's
reporter with a spool and routing table recover by themselves, every event the reporter
accepted ends up counted in the worker's shard metrics, and the routing table follows the
snapshots published after the pause."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardshape.core.contracts import RequestEvent
from shardshape.core.settings import Settings
from shardshape.gateway.reporter import Reporter
from shardshape.gateway.routing_table import RoutingTable
from shardshape.infra.broker import EmbeddedBroker
from shardshape.infra.topics import create_topics
from tests.support.broker import paused_broker
from tests.support.polling import wait_until
from tests.support.workers import counted_by, settled, tails, topic_request_ids, worker

PAUSE_S = 30.0


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A broker of this module alone: pausing the session broker would stall other tests."""
    with EmbeddedBroker(Settings(), log_dir=tmp_path_factory.mktemp("own-broker")) as broker:
        yield broker


def _report(reporter: Reporter, seconds: float, tag: str) -> set[str]:
    """Report about 400 completed requests a second for ``seconds``; their ids."""
    ids: set[str] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(20):
            i = len(ids)
            event = RequestEvent(
                request_id=f"{tag}-{i}", ts=time.time(), service="shop",
                request_type=("GET /items", "POST /export")[i % 2], user_id=f"user-{i % 50}",
                payload_bytes=100 + i % 7, latency_ms=1.0 + i % 13,
            )  # fmt: skip
            reporter.report(event)
            ids.add(event.request_id)
        time.sleep(0.05)  # the load's pace
    return ids


@pytest.mark.slow
def test_worker_and_reporter_ride_out_a_paused_broker(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=own_broker.bootstrap,
        app_id=f"outage-{tag}",
        topic_requests=f"o{tag}.requests", topic_dlq=f"o{tag}.dlq",
        topic_routing=f"o{tag}.routing", topic_plans=f"o{tag}.plans",
        data_dir=tmp_path / "data",
        session_timeout_s=6,
        snapshot_interval_s=1,
        reporter_spool_path=tmp_path / "spool.jsonl",
        reporter_linger_ms=50, reporter_stall_ms=500, reporter_delivery_timeout_ms=3_000,
    )  # fmt: skip
    create_topics(settings)
    with (
        worker(settings, tmp_path, "w") as w,
        Reporter(settings, gateway_id="gw-outage") as reporter,
        RoutingTable.from_settings(settings) as table,
    ):
        before = _report(reporter, 2.0, "before")
        wait_until(
            lambda: counted_by([w]) == len(before),
            60,
            "counted before the pause",
            every_s=0.5,
            explain=tails([w]),
        )
        assert table.wait_for_snapshot("shop", timeout_s=60), "a snapshot before the pause"

        with paused_broker(own_broker):
            during = _report(reporter, PAUSE_S, "during")
            paused = reporter.stats()
        version_at_pause_end = table.snapshot_version("shop")
        # No manual step: reporting goes on, the reporter and the worker find the broker again.
        after = _report(reporter, 5.0, "after")
        wait_until(
            lambda: reporter.flush(1) == 0 and reporter.stats().spool_bytes == 0,
            120, "the reporter delivered its spool", every_s=0.5, explain=tails([w]),
        )  # fmt: skip
        final = reporter.stats()
        reported = before | during | after
        on_topic = topic_request_ids(settings)
        # Settled: every message handled and committed, so the count below is final.
        wait_until(lambda: settled(settings, [w]), 120, "the worker handled and committed them",
                   every_s=0.5, explain=tails([w]))  # fmt: skip
        counted = counted_by([w])
        assert w.process.poll() is None, "the worker never stopped"
        # The gateway's routing table reads on: snapshots published after the pause arrive.
        newer = table.wait_for_snapshot("shop", version_at_pause_end + 1, timeout_s=60)
        assert newer, f"no snapshot after v{version_at_pause_end} reached the routing table"
        version_after = table.snapshot_version("shop")

    assert not paused.kafka_reachable and paused.spooled > 0, paused
    assert final.kafka_reachable and final.replayed >= paused.spooled, final
    assert final.dropped == {}, "with a spool of room, the reporter accepts every event"
    assert final.reported == len(reported)
    assert set(on_topic) == reported, "every accepted event reached the topic"
    # A batch delivered just as the broker stopped may be spooled and sent again: on the
    # topic twice, and counted as often as it is there.
    assert counted == on_topic.total() >= len(reported)
    print(
        f"\n{len(reported):,} events reported ({len(during):,} during the {PAUSE_S:.0f} s pause, "
        f"{paused.spooled:,} spooled), {on_topic.total() - len(reported)} sent twice, "
        f"{counted:,} counted by the worker; routing table at snapshot v{version_at_pause_end} "
        f"when the broker came back, v{version_after} after"
    )
