"""The gateway's reporter: completed requests go to the requests topic without ever blocking.

:meth:`Reporter.report` appends the event to a bounded buffer and returns. One background
thread groups events by the partition of their profile key (:class:`PartitionBatcher`, the
grouping trace replay uses) into ``RequestBatch`` messages carrying the gateway id, and
produces them with confluent-kafka; every call into the producer happens on that thread.

When Kafka is slow or down (a batch unacknowledged for ``reporter_stall_ms``, or a delivery
failing), the reporter calls it unreachable: batches are dropped with a counted reason, or
written to a bounded spool file when ``reporter_spool_path`` is set, and one batch at a time
probes the broker. The first acknowledged batch makes it reachable again; sending resumes and
the spool is replayed.

With :meth:`Reporter.watch_queues`, the same thread also tells the planner every
``reporter_queue_interval_ms`` how many requests wait in the gateway's pools, by shard
(:mod:`shardshape.gateway.queue_report`); these best-effort messages are no events and stay out of
the counters' identity. See docs/reporter.md.

>>> from shardshape.core.settings import Settings
>>> reporter = Reporter(Settings(kafka_bootstrap="127.0.0.1:9"), gateway_id="gw-1")
>>> reporter.report(RequestEvent(request_id="r1", ts=0, service="s", request_type="t"))
>>> reporter.close(timeout=0)  # nothing listens there: the event is dropped, and counted
>>> stats = reporter.stats()
>>> stats.reported, stats.delivered, stats.dropped
(1, 0, {'closed': 1})
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from shardshape.core.batching import PartitionBatcher
from shardshape.core.contracts import (
    MAX_ID_CHARS,
    QUEUE_REPORT_KEY,
    ContractError,
    RequestEvent,
    decode_requests,
)
from shardshape.core.partitioning import partition_for, profile_key
from shardshape.core.settings import Settings
from shardshape.gateway.queue_report import QueueReports
from shardshape.gateway.reporter_kafka import REPLAY_IN_FLIGHT, batch_messages, producer_config
from shardshape.gateway.spool import Spool

log = logging.getLogger("shardshape.gateway.reporter")

_LONGEST_TICK_S = 0.05


@dataclass(frozen=True)
class ReporterStats:
    """Counters since start, in events. Every reported event is, at any time, exactly one of
    dropped, spooled, delivered, buffered or in flight; a replayed event counts again:
    ``reported + replayed == delivered + dropped_total + spooled + buffered + in_flight``.
    ``queue_reports`` counts messages of another kind, outside that identity."""

    reported: int  # report() calls
    sent: int  # handed to the producer (live and replayed)
    delivered: int  # acknowledged by Kafka (live and replayed)
    dropped: Mapping[str, int]  # reason -> events
    spooled: int  # written to the spool file
    replayed: int  # read back from the spool and handed to the producer
    buffered: int  # held in memory, not yet handed to the producer or the spool
    in_flight: int  # handed to the producer, not yet acknowledged or failed
    spool_bytes: int  # spool file bytes not yet replayed
    last_error: str | None
    kafka_reachable: bool
    queue_reports: int = 0  # QueueReport messages acknowledged (best effort, not events)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def default_gateway_id() -> str:
    """``<host name>:<pid>``: one id per service replica, what :class:`Reporter` needs.

    >>> host, pid = default_gateway_id().rsplit(":", 1)
    >>> int(pid) == os.getpid()
    True
    """
    return f"{socket.gethostname()[: MAX_ID_CHARS - 12]}:{os.getpid()}"


class _Batch(NamedTuple):
    partition: int
    value: bytes
    events: int
    replayed: bool  # read back from the spool, not counted in the reporter's bound


class Reporter:
    """Batches completed requests by partition and produces them, never blocking the caller.

    Parameters
    ----------
    settings
        ``kafka_bootstrap``, ``topic_requests``, ``requests_partitions``, ``topic_windows``
        (for queue reports) and the ``reporter_*`` settings are used; validated again here
        (a bad one raises :class:`~shardshape.core.settings.SettingsError` naming it).
    gateway_id
        This gateway (service replica); every ``RequestBatch`` carries it, and the planner
        counts live replicas by it.
    """

    def __init__(self, settings: Settings, *, gateway_id: str) -> None:
        settings = settings.revalidated()
        if not 1 <= len(gateway_id) <= MAX_ID_CHARS:
            raise ValueError(
                f"gateway_id must have 1 to {MAX_ID_CHARS} characters, one per service replica "
                f"(e.g. host name and pid): got {gateway_id!r}"
            )
        self.gateway_id = gateway_id
        self._topic = settings.topic_requests
        self._partitions = settings.requests_partitions
        self._max_buffered = settings.reporter_max_buffered
        self._stall_s = settings.reporter_stall_ms / 1000
        linger_s = settings.reporter_linger_ms / 1000
        self._tick_s = min(max(linger_s / 4, 0.001), _LONGEST_TICK_S)
        self._wake_at = settings.reporter_batch_events if linger_s else 1
        self._batcher = PartitionBatcher(self._partitions, settings.reporter_batch_events, linger_s)
        self._spool = (
            Spool(settings.reporter_spool_path, settings.reporter_spool_max_bytes)
            if settings.reporter_spool_path
            else None
        )
        self._producer = Producer(producer_config(settings, gateway_id, self._on_error))
        self._windows_topic = settings.topic_windows
        self._queue_reports = QueueReports(
            gateway_id, settings.reporter_queue_interval_ms / 1000, self._send_queue_report
        )

        # Shared with callers, under _lock.
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._incoming: list[RequestEvent] = []
        self._held = 0  # reported events not yet delivered, dropped or spooled (the bound)
        self._flushing = 0
        self._closing = False
        self._close_deadline = 0.0
        self._reported = self._sent = self._delivered = 0
        self._spooled = self._replayed = 0
        self._in_flight_events = 0  # live and replayed
        self._in_flight_live = 0  # live only: these are part of _held
        self._spool_bytes = self._spool.pending_bytes if self._spool else 0
        self._dropped: dict[str, int] = {}
        self._last_error: str | None = None
        self._reachable = True

        # The background thread's own.
        self._outbox: deque[_Batch] = deque()
        self._in_flight: OrderedDict[int, float] = OrderedDict()  # batch id -> sent (monotonic)
        self._replaying = 0
        self._next_id = 0
        self._unreachable_since = 0.0
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"shardshape-reporter-{gateway_id}", daemon=True
        )
        self._thread.start()

    # -- the caller's side ----------------------------------------------------------------

    def report(self, event: RequestEvent) -> None:
        """Queue a completed request for sending; never blocks, drops (counted) when full.

        Safe from any thread and from asyncio code: it takes a lock that no one holds across
        I/O, appends and returns.
        """
        with self._lock:
            self._reported += 1
            if self._closing:
                self._count_drop("closed", 1)
                return
            if self._held >= self._max_buffered:
                self._count_drop("buffer_full", 1)
                return
            self._held += 1
            self._incoming.append(event)
            wake = len(self._incoming) == self._wake_at
        if wake:
            self._wake.set()

    def watch_queues(self, service: str, queued: Callable[[], Mapping[int, int]]) -> None:
        """Tell the planner how many requests of ``service`` wait, by predicted shard.

        Every ``reporter_queue_interval_ms`` the reporter's thread (never the caller's) calls
        ``queued()`` (e.g. :meth:`shardshape.gateway.pools.ShardPools.queued_by_shard`; it must be
        safe to call from that thread) and, while anything waits, sends a
        :class:`~shardshape.core.contracts.QueueReport` to the planner's topic, then one without
        shards once the queues drain. Calling it again for ``service`` replaces ``queued``.
        """
        self._queue_reports.watch(service, queued)

    def stats(self) -> ReporterStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return ReporterStats(
                reported=self._reported,
                sent=self._sent,
                delivered=self._delivered,
                dropped=dict(self._dropped),
                spooled=self._spooled,
                replayed=self._replayed,
                buffered=self._held - self._in_flight_live,
                in_flight=self._in_flight_events,
                spool_bytes=self._spool_bytes,
                last_error=self._last_error,
                kafka_reachable=self._reachable,
                queue_reports=self._queue_reports.delivered,
            )

    def flush(self, timeout: float = 10.0) -> int:
        """Send what is buffered now (not waiting for batches to fill) and wait up to
        ``timeout`` seconds until nothing reported is left unresolved (delivered, dropped or
        spooled); returns the number of events still outstanding."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._flushing += 1
            self._wake.set()
            try:
                while self._held and (remaining := deadline - time.monotonic()) > 0:
                    self._drained.wait(remaining)
                return self._held
            finally:
                self._flushing -= 1

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting events, send what is held for up to ``timeout`` seconds, then spool
        (or drop, counted as ``closed``) the rest. Safe to call twice."""
        with self._lock:
            if not self._closing:
                self._closing = True
                self._close_deadline = time.monotonic() + timeout
        self._wake.set()
        self._thread.join(timeout + 5)

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the background thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._tick_s)
            self._wake.clear()
            try:
                if self._step():
                    break
            except Exception:  # never let one bad step stop reporting for good
                log.exception("reporter step failed; carrying on")
                time.sleep(self._tick_s)
        self._shut_down()

    def _step(self) -> bool:
        """One round of the thread; True once closing is done."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
            closing, hurry = self._closing, self._flushing > 0 or self._closing
        now = time.monotonic()
        for event in incoming:
            full = self._batcher.add(event, now)
            if full is not None:
                self._queue(*full)
        for partition, events in self._batcher.due(now, everything=hurry):
            self._queue(partition, events)
        self._producer.poll(0)  # delivery callbacks, on this thread
        self._watch_stall(now)
        self._send_outbox()
        self._replay_spool()
        self._queue_reports.tick(now, reachable=self._reachable and not closing)
        with self._lock:
            if not self._held:
                self._drained.notify_all()
            return closing and (not self._held or now >= self._close_deadline)

    def _queue(self, partition: int, events: list[RequestEvent]) -> None:
        for value, count in batch_messages(self.gateway_id, events):
            self._outbox.append(_Batch(partition, value, count, replayed=False))

    def _send_outbox(self) -> None:
        while self._outbox:
            batch = self._outbox[0]
            if not self._reachable and self._in_flight:
                # Unreachable: one batch at a time probes the broker, the rest step aside.
                self._divert(self._outbox.popleft(), "kafka_unreachable")
            elif not self._produce(batch):
                return  # the producer's queue is full: the batch waits for the next round
            else:
                self._outbox.popleft()

    def _replay_spool(self) -> None:
        if self._spool is None or not self._reachable:
            return
        while self._replaying < REPLAY_IN_FLIGHT and (line := self._spool.peek()) is not None:
            try:
                events = decode_requests(line)
            except ContractError as err:
                log.warning("spool %s: skipping a line that is no batch: %s", self._spool.path,
                            err.reason)  # fmt: skip
                self._spool.advance()
                continue
            first = events[0]
            partition = partition_for(
                profile_key(first.service, first.request_type, first.user_id), self._partitions
            )
            if not self._produce(_Batch(partition, line, len(events), replayed=True)):
                break
            self._spool.advance()
            with self._lock:
                self._replayed += len(events)
        self._sync_spool_bytes()

    def _produce(self, batch: _Batch) -> bool:
        """Hand ``batch`` to the producer; False when its queue is full (try again later)."""
        batch_id = self._next_id
        self._next_id += 1
        try:
            self._producer.produce(
                self._topic, value=batch.value, key=str(batch.partition).encode(),
                partition=batch.partition,
                on_delivery=functools.partial(self._on_delivery, batch_id, batch),
            )  # fmt: skip
        except BufferError:
            return False
        except KafkaException as exc:
            self._record_error(str(exc.args[0]))
            self._divert(batch, "produce_failed")
            return True
        self._in_flight[batch_id] = time.monotonic()
        if batch.replayed:
            self._replaying += 1
        with self._lock:
            self._sent += batch.events
            self._in_flight_events += batch.events
            if not batch.replayed:
                self._in_flight_live += batch.events
        return True

    def _send_queue_report(self, value: bytes, done: Callable[[bool], None]) -> bool:
        """Hand a queue report to the producer; False when it cannot take it now."""
        try:
            self._producer.produce(
                self._windows_topic, value=value, key=QUEUE_REPORT_KEY, partition=0,
                on_delivery=lambda error, _message: done(error is None),
            )  # fmt: skip
        except (BufferError, KafkaException):
            return False
        return True

    def _on_delivery(
        self, batch_id: int, batch: _Batch, error: KafkaError | None, _message: Message
    ) -> None:
        self._in_flight.pop(batch_id, None)
        if batch.replayed:
            self._replaying -= 1
        if error is None:
            with self._lock:
                self._landed(batch)
                self._delivered += batch.events
                if not batch.replayed:
                    self._held -= batch.events
            self._set_reachable(True, "a batch was acknowledged")
            return
        self._record_error(f"delivery failed: {error.str()}")
        closed = error.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)
        if not closed:
            self._set_reachable(False, f"delivery failed ({error.str()})")
        self._divert(batch, "closed" if closed else "delivery_failed", was_in_flight=True)

    def _landed(self, batch: _Batch) -> None:
        """Under ``_lock``: ``batch`` is no longer in flight."""
        self._in_flight_events -= batch.events
        if not batch.replayed:
            self._in_flight_live -= batch.events

    def _divert(self, batch: _Batch, reason: str, *, was_in_flight: bool = False) -> None:
        """A batch Kafka cannot take now: to the spool when there is one and room, else dropped."""
        spooled = False
        if self._spool is not None:
            reason = "spool_full"
            try:
                spooled = self._spool.append(batch.value)
            except OSError as exc:
                reason = "spool_error"
                self._record_error(f"spool {self._spool.path}: {exc}")
                log.warning(
                    "spool %s: cannot write (%s); dropping the batch", self._spool.path, exc
                )
        with self._lock:
            if was_in_flight:
                self._landed(batch)
            if spooled:
                self._spooled += batch.events
            else:
                self._count_drop(reason, batch.events)
            if not batch.replayed:
                self._held -= batch.events
            if self._spool is not None:
                self._spool_bytes = self._spool.pending_bytes

    def _watch_stall(self, now: float) -> None:
        if self._reachable and self._in_flight:
            oldest = next(iter(self._in_flight.values()))
            if now - oldest >= self._stall_s:
                self._set_reachable(False, f"a batch unacknowledged for {now - oldest:.1f} s")

    def _set_reachable(self, reachable: bool, why: str) -> None:
        if reachable == self._reachable:
            return
        now = time.monotonic()
        stats = self.stats()
        with self._lock:
            self._reachable = reachable
        if reachable:
            log.info("Kafka reachable again after %.1f s (%s); %d events dropped, %d spooled so "
                     "far", now - self._unreachable_since, why, stats.dropped_total,
                     stats.spooled)  # fmt: skip
        else:
            self._unreachable_since = now
            where = f"spooling to {self._spool.path}" if self._spool else "dropping"
            log.warning("Kafka unreachable: %s; %s batches, one probe at a time, until one is "
                        "acknowledged", why, where)  # fmt: skip

    def _on_error(self, error: KafkaError) -> None:
        self._record_error(error.str())
        log.debug("Kafka client error: %s", error.str())

    def _record_error(self, message: str) -> None:
        with self._lock:
            self._last_error = message

    def _sync_spool_bytes(self) -> None:
        if self._spool is not None:
            with self._lock:
                self._spool_bytes = self._spool.pending_bytes

    def _count_drop(self, reason: str, events: int) -> None:
        """Under ``_lock``."""
        self._dropped[reason] = self._dropped.get(reason, 0) + events

    def _shut_down(self) -> None:
        """Past the close deadline: what is left goes to the spool, or is dropped as closed."""
        for partition, events in self._batcher.due(0.0, everything=True):
            self._queue(partition, events)
        self._producer.purge()  # in-flight and queued batches fail with a purge error ...
        self._producer.poll(0)  # ... and their callbacks divert them
        while self._outbox:
            self._divert(self._outbox.popleft(), "closed")
        self._producer.flush(0)
        if self._spool is not None:
            self._spool.close()
        with self._lock:
            self._drained.notify_all()
        stats = self.stats()
        log.info("reporter %s closed: %d reported, %d delivered, %d dropped %s, %d spooled",
                 self.gateway_id, stats.reported, stats.delivered, stats.dropped_total,
                 stats.dropped or "", stats.spooled)  # fmt: skip
