"""The reporter on a real broker: batches by partition, a worker accepts them, and a paused
broker never blocks ``report()``; counters say what was dropped or spooled, and reporting
resumes by itself."""

from __future__ import annotations

import contextlib
import gc
import json
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shardshape.core.contracts import RequestBatch, RequestEvent, decode, encode
from shardshape.core.metrics import merged_series
from shardshape.core.net import ensure_port_free
from shardshape.core.partitioning import partition_for
from shardshape.core.settings import Settings, SettingsError, load_settings
from shardshape.gateway.reporter import Reporter, ReporterStats
from shardshape.infra.broker import EmbeddedBroker
from shardshape.infra.topics import create_topics
from shardshape.models.features import profile_key
from tests.gateway.reporting import batch_ids, consume_batches, has_all
from tests.support.broker import paused_broker
from tests.support.polling import wait_until
from tests.support.processes import running, settings_env, shardshape_command, wait_for_line

PAUSE_S = 20.0
# A call that waited on Kafka would take a request or connection timeout: seconds, not this.
MAX_CALL_S = 0.050


def _event(i: int, tag: str) -> RequestEvent:
    return RequestEvent(
        request_id=f"{tag}-{i}",
        ts=time.time(),
        service="svc",
        request_type=("GET /items", "POST /export")[i % 2],
        user_id=f"user-{i % 37}",
        payload_bytes=100 + i % 7,
        response_bytes=2_000.0,
        latency_ms=1.0 + i % 13,
        status=("ok", "ok", "ok", "error")[i % 4],
        shard_id=i % 3,
        arm=("control", "variant")[i % 2],
    )


def _balanced(stats: ReporterStats) -> bool:
    """Every event is somewhere: delivered, dropped, spooled, buffered or in flight."""
    return stats.reported + stats.replayed == (
        stats.delivered + stats.dropped_total + stats.spooled + stats.buffered + stats.in_flight
    )


def test_events_arrive_as_batches_on_their_key_partitions(settings: Settings) -> None:
    settings = settings.model_copy(update={"reporter_batch_events": 100})
    create_topics(settings)
    events = [_event(i, "r") for i in range(2_000)]
    with Reporter(settings, gateway_id="gw-a") as reporter:
        for event in events:
            reporter.report(event)
        assert reporter.flush(30) == 0
        stats = reporter.stats()
    assert (stats.reported, stats.delivered, stats.dropped, stats.buffered) == (2_000, 2_000, {}, 0)
    assert _balanced(stats)

    batches = consume_batches(settings, has_all({e.request_id for e in events}), timeout_s=30)
    assert batch_ids(batches) == Counter(e.request_id for e in events), "each event exactly once"
    assert {batch.gateway_id for _, batch in batches} == {"gw-a"}
    assert len(batches) < len(events) / 10, "batched, not one message per event"
    assert max(len(batch.events) for _, batch in batches) <= 100
    for partition, batch in batches:
        keys = {profile_key(e.service, e.request_type, e.user_id) for e in batch.events}
        assert {partition_for(k, settings.requests_partitions) for k in keys} == {partition}
    received = {e.request_id: e for _, batch in batches for e in batch.events}
    assert all(received[e.request_id] == e for e in events), "latency, status, shard, arm kept"


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_a_worker_accepts_the_reporters_batches(settings: Settings, tmp_path: Path) -> None:
    port = ensure_port_free(0, "WEB_PORT")
    settings = settings.model_copy(update={"web_enabled": True, "web_port": port})
    create_topics(settings)
    events = [_event(i, "w") for i in range(3_000)]
    log = tmp_path / "worker.log"
    with running(shardshape_command("worker"), settings_env(settings), log) as worker:
        wait_for_line(log, "shardshape worker ready", worker, 90)
        with Reporter(settings, gateway_id="gw-w") as reporter:
            for event in events:
                reporter.report(event)
            assert reporter.flush(30) == 0

        expected = Counter(f"svc|{e.shard_id}|{e.arm}" for e in events)

        def counted() -> dict[str, int]:
            windows = _get_json(f"http://127.0.0.1:{port}/shardshape/shards")["1m"]
            slots = ((slot, data.encode()) for w in windows for slot, data in w["slots"].items())
            return {key: stats.count for key, stats in merged_series(slots).items()}

        wait_until(
            lambda: counted() == expected, 60, "the worker kept each event's shard and arm",
            every_s=0.5, explain=lambda: log.read_text(errors="replace")[-3_000:],
        )  # fmt: skip
        stats = _get_json(f"http://127.0.0.1:{port}/shardshape/stats")
    tail = log.read_text(errors="replace")[-3_000:]
    assert stats["events"] == len(events) and stats["dead_letters"] == 0, f"{stats}\n{tail}"


def test_a_spool_left_by_an_earlier_process_is_replayed(settings: Settings, tmp_path: Path) -> None:
    create_topics(settings)
    spool = tmp_path / "spool.jsonl"
    left = [_event(i, "left") for i in range(50)]
    by_partition: dict[int, list[RequestEvent]] = {}
    for event in left:
        key = profile_key(event.service, event.request_type, event.user_id)
        by_partition.setdefault(partition_for(key, settings.requests_partitions), []).append(event)
    lines = [encode(RequestBatch(gateway_id="gw-old", events=e)) for e in by_partition.values()]
    spool.write_bytes(b"\n".join(lines) + b'\n{"v": 1, "gateway_id": "torn", "ev')
    settings = settings.model_copy(update={"reporter_spool_path": spool})

    with Reporter(settings, gateway_id="gw-new") as reporter:
        wait_until(lambda: reporter.stats().delivered >= len(left), 30, "the spool delivered")
        stats = reporter.stats()
    assert (stats.replayed, stats.delivered, stats.spool_bytes) == (50, 50, 0)
    assert spool.stat().st_size == 0, "a replayed spool is emptied"
    batches = consume_batches(settings, has_all({e.request_id for e in left}), timeout_s=30)
    assert batch_ids(batches) == Counter(e.request_id for e in left)
    assert {batch.gateway_id for _, batch in batches} == {"gw-old"}, "replayed as spooled"


# -- a paused broker -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A broker of this module alone: pausing the session broker would stall other tests."""
    with EmbeddedBroker(Settings(), log_dir=tmp_path_factory.mktemp("own-broker")) as broker:
        yield broker


def _own_settings(broker: EmbeddedBroker, tmp_path: Path, **reporter: object) -> Settings:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_requests=f"p{tag}.requests",
        topic_dlq=f"p{tag}.dlq",
        topic_routing=f"p{tag}.routing",
        topic_plans=f"p{tag}.plans",
        data_dir=tmp_path / "data",
        reporter_linger_ms=50,
        **reporter,
    )
    create_topics(settings)
    return settings


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the objects made so far out of garbage collections while measuring calls: a full
    collection of pytest's heap pauses every thread for tens of ms, whatever runs."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _Load:
    """Reports events at a steady rate and keeps the longest ``report()`` call."""

    def __init__(self, reporter: Reporter, per_tick: int = 50, tick_s: float = 0.025) -> None:
        self.reporter, self.per_tick, self.tick_s = reporter, per_tick, tick_s
        self.longest_s = 0.0
        self.sent = 0

    def run(
        self, seconds: float, tag: str, until: Callable[[], bool] | None = None, what: str = ""
    ) -> set[str]:
        """Report ``tag`` events for ``seconds`` or, given ``until``, until it holds: failing
        naming ``what`` when it does not within ``seconds``. The ids reported."""
        ids: set[str] = set()
        deadline = time.monotonic() + seconds
        while not (until is not None and until()):
            if time.monotonic() >= deadline:
                if until is not None:
                    pytest.fail(f"{what}: not within {seconds:g} s; {self.reporter.stats()}")
                break
            for _ in range(self.per_tick):
                event = _event(self.sent, tag)
                started = time.perf_counter()
                self.reporter.report(event)
                self.longest_s = max(self.longest_s, time.perf_counter() - started)
                ids.add(event.request_id)
                self.sent += 1
            time.sleep(self.tick_s)  # the load's pace
        return ids


@pytest.mark.slow
def test_a_paused_broker_never_blocks_report_and_reporting_resumes_by_itself(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = _own_settings(own_broker, tmp_path)
    with Reporter(settings, gateway_id="gw-p") as reporter, _frozen_heap():
        load = _Load(reporter)
        before = load.run(1.0, "before")
        assert reporter.flush(20) == 0
        with paused_broker(own_broker):
            load.run(PAUSE_S, "paused")
            paused = reporter.stats()
        longest_paused = load.longest_s
        # Nothing but report() calls: reporting comes back by itself.
        load.run(60, "resumed", until=lambda: reporter.stats().delivered > paused.delivered,
                 what="an event delivered after the broker resumed")  # fmt: skip
        after = load.run(1.0, "after")
        assert reporter.flush(20) == 0
        final = reporter.stats()

    assert longest_paused < MAX_CALL_S, f"report() took {longest_paused * 1e3:.1f} ms"
    assert not paused.kafka_reachable and paused.delivered == len(before)
    assert paused.dropped.get("kafka_unreachable", 0) > 0, paused
    assert set(paused.dropped) <= {"kafka_unreachable", "delivery_failed"}, paused
    assert paused.buffered + paused.in_flight < settings.reporter_max_buffered
    assert _balanced(paused) and _balanced(final)
    assert final.kafka_reachable and final.buffered == final.in_flight == 0
    assert final.dropped_total >= paused.dropped_total
    assert final.delivered + final.dropped_total == final.reported
    batches = consume_batches(settings, has_all(before | after), timeout_s=30)
    assert before | after <= set(batch_ids(batches))


@pytest.mark.slow
def test_a_paused_broker_with_a_spool_keeps_batches_within_its_bound(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    limit = 64 * 1024
    settings = _own_settings(
        own_broker, tmp_path, reporter_spool_path=spool, reporter_spool_max_bytes=limit,
        reporter_stall_ms=500, reporter_delivery_timeout_ms=3_000,
    )  # fmt: skip
    with Reporter(settings, gateway_id="gw-s") as reporter, _frozen_heap():
        load = _Load(reporter)
        load.run(0.5, "before")
        assert reporter.flush(20) == 0
        with paused_broker(own_broker):
            sizes = [spool.stat().st_size]

            def spool_filled() -> bool:
                """Half a second more load, the spool's size after it; True after eight seconds
                of load (batches in flight when the broker stopped time out in three) once
                batches were spooled and the full spool dropped some. (While the broker is
                down one batch at a time probes it: in flight is rarely 0.)"""
                load.run(0.5, "paused")
                sizes.append(spool.stat().st_size)
                stats = reporter.stats()
                return len(sizes) > 16 and stats.spooled and stats.dropped.get("spool_full")

            wait_until(
                spool_filled, 60, "batches spooled and dropped by the full spool", every_s=0,
                explain=lambda: f"{reporter.stats()}, spool sizes {sizes}",
            )  # fmt: skip
            paused = reporter.stats()
            text = spool.read_bytes()
        spooled_ids = {
            event.request_id
            for line in text.split(b"\n")[:-1]  # the last piece may be a line being written
            for event in decode(RequestBatch, line).events
        }
        load.run(60, "resumed", until=lambda: reporter.stats().spool_bytes == 0,
                 what="the spool replayed after the broker resumed")  # fmt: skip
        assert reporter.flush(20) == 0
        # flush() waits for the events reported, not for spooled ones replayed: the last
        # replayed batch may still be unacknowledged.
        wait_until(
            lambda: not reporter.stats().in_flight,
            20,
            "the last replayed batch acknowledged",
            explain=lambda: str(reporter.stats()),
        )
        final = reporter.stats()

    assert load.longest_s < MAX_CALL_S, f"report() took {load.longest_s * 1e3:.1f} ms"
    assert max(sizes) <= limit and paused.spool_bytes <= limit
    assert paused.spooled > 0 and paused.dropped.get("spool_full", 0) > 0, paused
    assert set(paused.dropped) == {"spool_full"}, "with a spool, only a full spool drops"
    assert len(spooled_ids) > 0
    assert _balanced(paused) and _balanced(final)
    assert final.replayed >= len(spooled_ids) and final.spool_bytes == 0
    assert final.kafka_reachable and final.buffered == final.in_flight == 0
    batches = consume_batches(settings, has_all(spooled_ids), timeout_s=30)
    assert spooled_ids <= set(batch_ids(batches)), "spooled batches reach the topic after resume"


# -- configuration -----------------------------------------------------------------------


def test_bad_reporter_settings_fail_fast_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match="SHARDSHAPE_REPORTER_BATCH_EVENTS=0"):
        load_settings(reporter_batch_events=0)
    monkeypatch.setenv("SHARDSHAPE_REPORTER_LINGER_MS", "-5")
    with pytest.raises(SettingsError, match="SHARDSHAPE_REPORTER_LINGER_MS=-5"):
        load_settings()
    monkeypatch.delenv("SHARDSHAPE_REPORTER_LINGER_MS")
    with pytest.raises(SettingsError, match="REPORTER_MAX_BUFFERED=10 is smaller than"):
        load_settings(reporter_max_buffered=10, reporter_batch_events=20)
    with pytest.raises(SettingsError, match="REPORTER_STALL_MS=5000 must be below"):
        load_settings(reporter_stall_ms=5_000, reporter_delivery_timeout_ms=5_000)

    base = Settings(kafka_bootstrap="127.0.0.1:9")
    # model_copy skips validation; the reporter validates again before it starts anything.
    with pytest.raises(SettingsError, match="SHARDSHAPE_REPORTER_BATCH_EVENTS=0"):
        Reporter(base.model_copy(update={"reporter_batch_events": 0}), gateway_id="gw")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(SettingsError, match=r"SHARDSHAPE_REPORTER_SPOOL_PATH=.*cannot be opened"):
        Reporter(
            base.model_copy(update={"reporter_spool_path": not_a_dir / "spool.jsonl"}),
            gateway_id="gw",
        )
    with pytest.raises(ValueError, match="gateway_id"):
        Reporter(base, gateway_id="")
    with pytest.raises(SettingsError, match="KAFKA_BOOTSTRAP"):
        Reporter(Settings(), gateway_id="gw")
