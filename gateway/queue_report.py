"""Queue reports: how many requests wait in a gateway's pools, by predicted shard.

The planner learns demand from completed requests, one window late; a burst waiting in a
gateway's queues is demand it has not seen yet. :class:`QueueReports` counts the waiting
requests of each watched service every ``interval_s`` and hands a
:class:`~shardshape.core.contracts.QueueReport` to ``send`` while any wait, plus one report with
no shards when they have just drained (so the planner stops counting them at once); nothing
while idle. The reporter's background thread drives it
(:meth:`shardshape.gateway.reporter.Reporter.watch_queues`); see docs/reporter.md.

Reports are best effort: one that cannot go now (Kafka unreachable, the last one still
unacknowledged, the counting function failing) is skipped, never kept for later, since a
stale count is of no use to the planner. Only a lost drained report is sent again, at the
next interval.

>>> from shardshape.core.contracts import decode
>>> sent = []
>>> def send(value, done):
...     sent.append(decode(QueueReport, value))
...     done(True)  # acknowledged at once
...     return True
>>> reports = QueueReports("gw-1", interval_s=5.0, send=send)
>>> waiting = {3: 2, 1: 1}
>>> reports.watch("shop", lambda: waiting)
>>> reports.tick(now=0.0)
>>> [(shard.shard_id, shard.queued) for shard in sent[-1].shards]
[(1, 1), (3, 2)]
>>> waiting.clear()
>>> reports.tick(now=1.0)  # not due yet
>>> reports.tick(now=5.0)  # just drained: one report without shards
>>> len(sent), sent[-1].shards
(2, [])
>>> reports.tick(now=10.0)  # idle: nothing
>>> len(sent), reports.delivered
(2, 2)
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping

from shardshape.core.contracts import MAX_ID_CHARS, QueueReport, encode

log = logging.getLogger("shardshape.gateway.queue_report")

# Requests waiting now, by predicted shard (e.g. ShardPools.queued_by_shard).
Queued = Callable[[], Mapping[int, int]]
# Hands an encoded report to Kafka, False when it cannot now; calls its second argument once
# with whether Kafka acknowledged the report.
Send = Callable[[bytes, Callable[[bool], None]], bool]


class _Watch:
    __slots__ = ("announced", "in_flight", "queued", "service")

    def __init__(self, service: str, queued: Queued) -> None:
        self.service = service
        self.queued = queued
        self.announced = False  # the planner may be counting requests of this service as queued
        self.in_flight = False


class QueueReports:
    """The queue reports of one gateway, sent from the thread that calls :meth:`tick`.

    Parameters
    ----------
    gateway_id
        This gateway; every report carries it, and each replaces the gateway's last.
    interval_s
        How often the queues are counted (0: never, :meth:`tick` does nothing).
    send
        Hands an encoded report to Kafka (see ``Send``); called on :meth:`tick`'s thread.
    """

    def __init__(self, gateway_id: str, interval_s: float, send: Send) -> None:
        self.gateway_id = gateway_id
        self.interval_s = interval_s
        self.sent = 0  # handed to ``send``
        self.delivered = 0  # acknowledged
        self._send = send
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._next_at = 0.0
        self._failures_logged: set[str] = set()

    def watch(self, service: str, queued: Queued) -> None:
        """Report ``queued()`` as the waiting requests of ``service`` (replacing an earlier
        function for it). Safe from any thread; ``queued`` is called on :meth:`tick`'s."""
        if not 1 <= len(service) <= MAX_ID_CHARS:
            raise ValueError(f"service must have 1 to {MAX_ID_CHARS} characters: got {service!r}")
        with self._lock:
            self._watches[service] = _Watch(service, queued)

    def tick(self, now: float, *, reachable: bool = True) -> None:
        """Count and send what is due at ``now`` (monotonic seconds); skip it when Kafka is
        not ``reachable``."""
        if not self.interval_s or now < self._next_at:
            return
        self._next_at = now + self.interval_s
        if not reachable:
            return
        with self._lock:
            watches = list(self._watches.values())
        for watch in watches:
            self._report(watch)

    def _report(self, watch: _Watch) -> None:
        if watch.in_flight:
            return  # the last one is unacknowledged after a whole interval: Kafka is slow
        report = self._count(watch)
        if report is None or not (report.shards or watch.announced):
            return
        queued, announced = bool(report.shards), watch.announced
        watch.in_flight, watch.announced = True, queued  # before: ``send`` may call back at once
        if not self._send(encode(report), functools.partial(self._done, watch, queued)):
            watch.in_flight, watch.announced = False, announced
            return
        self.sent += 1

    def _count(self, watch: _Watch) -> QueueReport | None:
        """The report of ``watch``'s queues now; None when counting them failed (logged once
        per kind of failure, so a broken function cannot flood the log)."""
        try:
            return QueueReport.counted(self.gateway_id, watch.service, time.time(), watch.queued())
        except Exception as exc:
            kind = type(exc).__name__
            if kind not in self._failures_logged:
                self._failures_logged.add(kind)
                log.warning(
                    "queue report of %s skipped: counting its queues failed (%s: %s); "
                    "further %s failures are skipped without a log line",
                    watch.service, kind, exc, kind, exc_info=True,
                )  # fmt: skip
            return None

    def _done(self, watch: _Watch, queued: bool, acknowledged: bool) -> None:
        watch.in_flight = False
        if acknowledged:
            self.delivered += 1
        elif not queued:
            watch.announced = True  # the drained report was lost: send it again next time
