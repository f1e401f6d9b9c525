"""Queue reports on a real broker: while requests wait in a gateway's pools, the reporter tells
the planner's topic how many, by predicted shard; one empty report once they drain; nothing
while idle. A failing count is logged once and never stops the reporter."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import httpx
import pytest

from shardshape.allocator.planning import QUEUE_REPORT_TTL_S
from shardshape.core.contracts import QUEUE_REPORT_KEY, QueueReport, RequestEvent, decode
from shardshape.core.settings import Settings, SettingsError, load_settings
from shardshape.gateway.limits import PoolDefaults
from shardshape.gateway.pools import ShardPools
from shardshape.gateway.queue_report import QueueReports
from shardshape.gateway.reporter import Reporter
from shardshape.infra.topics import create_topics
from tests.gateway.holding import Held, settle
from tests.gateway.reporting import QueueReportReader
from tests.support.plans import plan, shard
from tests.support.polling import until
from tests.support.serving import example, serve

pytestmark = pytest.mark.broker

INTERVAL_MS = 200
IDLE_COUNTS = 5  # counts of the drained queues watched, after which nothing may have been sent


def _queue_settings(settings: Settings) -> Settings:
    """``settings`` with short queue-report intervals, and their topics (the planner's too)."""
    settings = settings.model_copy(update={"reporter_queue_interval_ms": INTERVAL_MS})
    create_topics(settings)
    return settings


def _counts(report: QueueReport) -> dict[int, int]:
    return {shard.shard_id: shard.queued for shard in report.shards}


def _event(i: int) -> RequestEvent:
    return RequestEvent(
        request_id=f"q-{i}", ts=time.time(), service="shop", request_type="GET /items", shard_id=1
    )


async def test_waiting_requests_reach_the_planners_topic_by_shard_then_one_empty_report(
    settings: Settings,
) -> None:
    settings = _queue_settings(settings)
    pools = ShardPools(PoolDefaults(concurrency=1, queue_size=8, queue_timeout_s=60))
    pools.apply(plan(1, shard(1, concurrency=1, queue=8, timeout_ms=60_000)))
    running = [Held(pools, 1), Held(pools, 4)]  # shard 4 is not in the plan: the default pool
    await settle()
    waiting = [Held(pools, 1), Held(pools, 1), Held(pools, 4)]
    await settle()
    expected = {1: 2, 4: 1}
    assert pools.queued_by_shard() == expected

    counts = [0]  # how often the reporter counted the queues

    def count_queues() -> Mapping[int, int]:
        counts[0] += 1
        return pools.queued_by_shard()

    windows = QueueReportReader(settings)
    try:
        with Reporter(settings, gateway_id="gw-q") as reporter:
            reporter.watch_queues("shop", count_queues)
            for i in range(5):  # events travel beside the queue reports, counted as always
                reporter.report(_event(i))
            queued = await asyncio.to_thread(windows.read_until, lambda reports: len(reports) >= 2)
            for held in [*running, *waiting]:
                await held.release()
            assert pools.queued_by_shard() == {}
            drained = await asyncio.to_thread(
                windows.read_until, lambda reports: any(not r.shards for r in reports)
            )
            # The reporter counts a service's queues only once its last report is acknowledged:
            # when it has counted the drained queues IDLE_COUNTS + 1 more times, whatever the
            # first IDLE_COUNTS counts sent is on the topic, below its end offset.
            idle_from = counts[0]
            await until(
                lambda: counts[0] > idle_from + IDLE_COUNTS, 10,
                f"the reporter counted the drained queues {IDLE_COUNTS + 1} more times",
            )  # fmt: skip
            after = await asyncio.to_thread(windows.read_to_end)
            assert reporter.flush(20) == 0
            stats = reporter.stats()
    finally:
        windows.close()

    assert len(queued) >= 2 and all(_counts(r) == expected for r in queued), queued
    assert {key for key, _ in windows.messages} == {QUEUE_REPORT_KEY}
    assert {(r.gateway_id, r.service) for r in after} == {("gw-q", "shop")}
    empty = [i for i, r in enumerate(after) if not r.shards]
    assert empty == [len(after) - 1], "exactly one empty report, the last: none while idle"
    for report in after[len(queued) : -1]:  # counted while the queues drained
        assert all(0 < n <= expected.get(s, 0) for s, n in _counts(report).items()), report
    assert after == drained, "nothing sent while idle"
    assert stats.queue_reports == len(after)
    assert (stats.reported, stats.delivered, stats.dropped) == (5, 5, {}), "events apart"
    assert stats.reported + stats.replayed == (
        stats.delivered + stats.dropped_total + stats.spooled + stats.buffered + stats.in_flight
    )


async def test_a_failing_count_is_logged_once_and_other_services_are_still_reported(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _queue_settings(settings)
    calls = {"broken": 0}

    def broken() -> Mapping[int, int]:
        calls["broken"] += 1
        raise RuntimeError("pools are gone")

    windows = QueueReportReader(settings)
    caplog.set_level(logging.WARNING, logger="shardshape.gateway.queue_report")
    try:
        with Reporter(settings, gateway_id="gw-b") as reporter:
            reporter.watch_queues("broken", broken)
            reporter.watch_queues("shop", lambda: {3: 7})
            reports = await asyncio.to_thread(windows.read_until, lambda reports: len(reports) >= 4)
            failed = calls["broken"]
    finally:
        windows.close()

    assert len(reports) >= 4 and {r.service for r in reports} == {"shop"}
    assert all(_counts(r) == {3: 7} for r in reports)
    assert failed >= 3, "the broken count was tried every interval"
    logged = [r for r in caplog.records if "queue report of broken skipped" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]


async def test_the_example_service_reports_its_queued_requests(settings: Settings) -> None:
    settings = _queue_settings(settings).model_copy(
        update={"gateway_default_concurrency": 1, "gateway_queue_timeout_ms": 30_000}
    )
    windows = QueueReportReader(settings)
    try:
        with Reporter(settings, gateway_id="gw-e") as reporter:
            app = example("app").create_app(settings, reporter=reporter)
            async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
                # No snapshot yet: every request is predicted to the default shard, 0, and
                # two of the three wait for the default pool's one slot.
                answers = await asyncio.gather(
                    *(http.get(f"/items/{i}", params={"read_ms": 1_000}) for i in range(3))
                )
            assert [a.status_code for a in answers] == [200, 200, 200]
            reports = await asyncio.to_thread(
                windows.read_until, lambda reports: bool(reports) and not reports[-1].shards
            )
    finally:
        windows.close()

    assert {(r.gateway_id, r.service) for r in reports} == {("gw-e", "shop")}
    assert max(sum(_counts(r).values()) for r in reports) in (1, 2), reports
    assert {s for r in reports for s in _counts(r)} == {0}
    assert not reports[-1].shards, "one empty report once the queue drained"


# -- without a broker: what is skipped, and the setting ------------------------------------


def test_reports_wait_for_kafka_and_a_lost_drained_report_is_sent_again() -> None:
    outcomes: list[Callable[[bool], None]] = []
    sent: list[QueueReport] = []

    def send(value: bytes, done: Callable[[bool], None]) -> bool:
        sent.append(decode(QueueReport, value))
        outcomes.append(done)
        return True

    waiting = {2: 3}
    reports = QueueReports("gw-1", 1.0, send)
    reports.watch("shop", lambda: waiting)
    reports.tick(0.0, reachable=False)
    assert sent == [], "Kafka unreachable: skipped, not kept"
    reports.tick(1.0)
    reports.tick(2.0)
    assert [_counts(r) for r in sent] == [{2: 3}], "one unacknowledged at a time"
    outcomes[-1](True)
    waiting.clear()
    reports.tick(3.0)
    assert not sent[-1].shards
    outcomes[-1](False)  # the drained report was lost ...
    reports.tick(4.0)
    assert len(sent) == 3 and not sent[-1].shards  # ... so it goes again
    outcomes[-1](True)
    reports.tick(5.0)
    assert len(sent) == 3 and reports.delivered == 2


def test_the_queue_interval_is_off_at_zero_and_between_100_ms_and_10_s() -> None:
    assert load_settings().reporter_queue_interval_ms == 5_000
    assert load_settings(reporter_queue_interval_ms=0).reporter_queue_interval_ms == 0
    with pytest.raises(SettingsError, match="SHARDSHAPE_REPORTER_QUEUE_INTERVAL_MS=50 is below"):
        load_settings(reporter_queue_interval_ms=50)
    # Above 10 s a report would age out of the planner (QUEUE_REPORT_TTL_S) before the next.
    assert QUEUE_REPORT_TTL_S >= 3 * 10
    with pytest.raises(SettingsError, match="SHARDSHAPE_REPORTER_QUEUE_INTERVAL_MS=10001"):
        load_settings(reporter_queue_interval_ms=10_001)
    sent: list[bytes] = []
    off = QueueReports("gw-1", 0.0, lambda value, done: sent.append(value) or True)
    off.watch("shop", lambda: {1: 1})
    off.tick(0.0)
    off.tick(100.0)
    assert sent == []
