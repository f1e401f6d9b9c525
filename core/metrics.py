"""Per-shard request metrics: what the metrics tables hold for one (service, shard, arm) window.

Plain objects, no Faust: the profile agent aggregates each batch into :class:`ShardStats`
per key and merges them into the windowed tables; views and the CLI merge the stats of all
partitions and workers (latency sketches are mergeable) and summarise them.

>>> from shardshape.core.contracts import RequestEvent
>>> events = [RequestEvent(request_id=str(i), ts=0, service="api", request_type="GET",
...                        latency_ms=10.0 * (i + 1), status="error" if i == 9 else "ok")
...           for i in range(10)]
>>> stats = aggregate(events, [3] * 10)[metric_key("api", 3, "")]
>>> (stats.count, stats.errors, round(stats.summary(window_s=10)["p50_ms"]))
(10, {'error': 1}, 50)
>>> restored = ShardStats.from_bytes(stats.to_bytes())
>>> (restored.count, restored.summary(10)["mean_ms"], round(restored.summary(10)["p99_ms"]))
(10, 55.0, 89)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from itertools import repeat

import numpy as np
import orjson

from shardshape.core.cadence import PartitionClock
from shardshape.core.columns import EventColumns, columns_of, zeros_for_none
from shardshape.core.contracts import BUSY_ATTRIBUTE, CACHE_HIT_ATTRIBUTE, RequestEvent
from shardshape.core.sketch import LatencySketch


def metric_key(service: str, shard: int, arm: str | None) -> str:
    """Key of a (service, shard, arm) series; ``arm`` is empty outside experiments."""
    return f"{service}|{shard}|{arm or ''}"


def split_metric_key(key: str) -> tuple[str, int, str]:
    service, shard, arm = key.rsplit("|", 2)
    return service, int(shard), arm


class ShardStats:
    """Counts, bytes, busy time and a latency sketch of one series in one window."""

    def __init__(self) -> None:
        self.count = 0
        self.errors: dict[str, int] = {}
        self.payload_bytes = 0.0
        self.response_bytes = 0.0
        self.busy_ms = 0.0
        self.busy_reported = 0
        self.latency = LatencySketch()  # quantiles within 1%
        self.latency_sum = 0.0
        self.cache_hits = 0
        self.cache_reported = 0  # requests that said whether the cache answered them

    def add(self, event: RequestEvent) -> None:
        self.merge(_group_stats(columns_of([event]), np.zeros(1, dtype=np.intp), 1)[0])

    def merge(self, other: ShardStats) -> ShardStats:
        """Add ``other`` into this one (windows of other partitions or workers)."""
        self.count += other.count
        for status, n in other.errors.items():
            self.errors[status] = self.errors.get(status, 0) + n
        self.payload_bytes += other.payload_bytes
        self.response_bytes += other.response_bytes
        self.busy_ms += other.busy_ms
        self.busy_reported += other.busy_reported
        self.latency.merge(other.latency)
        self.latency_sum += other.latency_sum
        self.cache_hits += other.cache_hits
        self.cache_reported += other.cache_reported
        return self

    def summary(self, window_s: float) -> dict[str, float | int | dict[str, int] | None]:
        """What people and the planner read: rates, error share, latency quantiles."""
        quantile = self.latency.quantile
        observed = self.latency.count
        return {
            "count": self.count,
            "rps": self.count / window_s,
            "errors": dict(self.errors),
            "error_rate": sum(self.errors.values()) / self.count if self.count else 0.0,
            "p50_ms": quantile(0.5),
            "p95_ms": quantile(0.95),
            "p99_ms": quantile(0.99),
            "mean_ms": self.latency_sum / observed if observed else None,
            "payload_bytes": self.payload_bytes,
            "response_bytes": self.response_bytes,
            "busy_ms": self.busy_ms if self.busy_reported else None,
            "cache_hit_rate": (
                self.cache_hits / self.cache_reported if self.cache_reported else None
            ),
        }

    def to_dict(self) -> dict:
        """The stats as JSON-able values (see :meth:`from_dict`)."""
        return {
            "count": self.count,
            "errors": self.errors,
            "payload_bytes": self.payload_bytes,
            "response_bytes": self.response_bytes,
            "busy_ms": self.busy_ms,
            "busy_reported": self.busy_reported,
            "latency": self.latency.to_json(),
            "latency_sum": self.latency_sum,
            "cache_hits": self.cache_hits,
            "cache_reported": self.cache_reported,
        }

    @classmethod
    def from_dict(cls, raw: dict) -> ShardStats:
        stats = cls()
        stats.count = int(raw["count"])
        stats.errors = {str(k): int(v) for k, v in raw["errors"].items()}
        stats.payload_bytes = float(raw["payload_bytes"])
        stats.response_bytes = float(raw["response_bytes"])
        stats.busy_ms = float(raw["busy_ms"])
        stats.busy_reported = int(raw["busy_reported"])
        stats.latency = LatencySketch.from_json(raw["latency"])
        stats.latency_sum = float(raw["latency_sum"])
        stats.cache_hits = int(raw.get("cache_hits", 0))  # absent in windows stored before
        stats.cache_reported = int(raw.get("cache_reported", 0))
        return stats

    def to_bytes(self, offset: int = -1) -> bytes:
        """JSON; ``offset`` is the last source offset folded in."""
        return orjson.dumps({**self.to_dict(), "offset": offset})

    @classmethod
    def from_bytes(cls, data: bytes) -> ShardStats:
        return cls.from_dict(orjson.loads(data))


def partition_key(partition: int) -> str:
    """The table key (with the window) of a source partition's record of one window.

    >>> partition_key(3), partition_of(partition_key(3))
    ('#3', 3)
    """
    return f"#{partition}"


def encode_window(slots: dict[str, ShardStats], offset: int) -> bytes:
    """A source partition's record of one window: the stats of every (service, shard, arm)
    series the partition's events fell in, and the last source offset folded in."""
    return orjson.dumps(
        {"offset": offset, "slots": {key: stats.to_dict() for key, stats in slots.items()}}
    )


def decode_window(data: bytes) -> tuple[dict[str, ShardStats], int]:
    """The series' stats and the offset of a record from :func:`encode_window`."""
    raw = orjson.loads(data)
    return {key: ShardStats.from_dict(s) for key, s in raw["slots"].items()}, int(raw["offset"])


def slots_of(partition: int, data: bytes) -> dict[str, bytes]:
    """A partition's window record as per-slot stats (slot: ``<series>#<partition>``, data:
    :meth:`ShardStats.to_bytes` with the record's offset), what views read.

    >>> one = ShardStats()
    >>> one.count = 2
    >>> [(slot, ShardStats.from_bytes(data).count, stored_offset(data))
    ...  for slot, data in slots_of(4, encode_window({"api|1|": one}, offset=9)).items()]
    [('api|1|#4', 2, 9)]
    """
    raw = orjson.loads(data)  # views read every record often: no sketch decoded here
    offset = raw["offset"]
    return {
        f"{key}#{partition}": orjson.dumps({**stats, "offset": offset})
        for key, stats in raw["slots"].items()
    }


def stored_offset(data: bytes | None) -> int:
    """The last source offset folded into a stored window (-1 when none)."""
    return int(orjson.loads(data)["offset"]) if data else -1


def merged_series(slots: Iterable[tuple[str, bytes]]) -> dict[str, ShardStats]:
    """Stats per (service, shard, arm) from stored slots of any partitions and workers."""
    out: dict[str, ShardStats] = {}
    for slot, data in slots:
        key = series_of(slot)
        stats = ShardStats.from_bytes(data)
        out[key] = out[key].merge(stats) if key in out else stats
    return out


def aggregate(
    events: Sequence[RequestEvent] | EventColumns, shards: Sequence[int]
) -> dict[str, ShardStats]:
    """One :class:`ShardStats` per (service, shard, arm) of a batch; ``shards[i]`` is event i's.

    An event's own ``shard_id`` (the shard the gateway ran it in) wins over ``shards[i]``.
    """
    batch = columns_of(events)
    services, own, arms = batch.service, batch.shard_id, batch.arm
    n = len(services)
    if n and services.count(services[0]) == own.count(None) == arms.count(None) == n:
        # The usual batch: one service, no experiment, shards as predicted here.
        ids, group = _groups_of(np.asarray(shards, dtype=np.intp))
        keys = [metric_key(services[0], shard, None) for shard in ids.tolist()]
    else:
        index: dict[str, int] = {}
        group = np.array(
            [
                index.setdefault(
                    metric_key(service, mine if mine is not None else shard, arm), len(index)
                )
                for service, shard, mine, arm in zip(services, shards, own, arms, strict=True)
            ],
            dtype=np.intp,
        )
        keys = list(index)
    return dict(zip(keys, _group_stats(batch, group, len(keys)), strict=True))


def _group_stats(batch: EventColumns, group: np.ndarray, n_groups: int) -> list[ShardStats]:
    """The stats of each group of a batch's events (``group[i]``: event i's), vectorised."""
    out = [ShardStats() for _ in range(n_groups)]

    def per_group(weights: np.ndarray | None = None, rows: np.ndarray = group) -> list[float]:
        return np.bincount(rows, weights=weights, minlength=n_groups).tolist()

    latency = np.array(batch.latency_ms, dtype=float)  # None -> NaN
    observed = ~np.isnan(latency)
    sketches = LatencySketch.grouped(latency[observed], group[observed], n_groups)
    payload = per_group(np.asarray(batch.payload_bytes, dtype=float))
    response = per_group(zeros_for_none(batch.response_bytes))
    latency_sum = per_group(latency[observed], group[observed])
    for stats, count, p, r, lsum, sketch in zip(
        out, per_group(), payload, response, latency_sum, sketches, strict=True
    ):
        stats.count = int(count)
        stats.payload_bytes, stats.response_bytes, stats.latency_sum = p, r, lsum
        stats.latency = sketch
    statuses = batch.status
    if statuses.count("ok") != len(statuses):
        for i, status in enumerate(statuses):
            if status != "ok":
                errors = out[group[i]].errors
                errors[status] = errors.get(status, 0) + 1
    # Most events carry neither attribute: find those that do at C speed, then look closer.
    n = len(statuses)
    for name in (BUSY_ATTRIBUTE, CACHE_HIT_ATTRIBUTE):
        try:
            values = list(map(dict.get, batch.attributes, repeat(name)))
        except TypeError:  # not all dicts (columns built by hand)
            values = list(map(_attribute, batch.attributes, repeat(name)))
        if values.count(None) == n:
            continue
        for i, value in enumerate(values):
            if value is None:
                continue
            stats = out[group[i]]
            if name == BUSY_ATTRIBUTE:
                if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                    stats.busy_ms += value
                    stats.busy_reported += 1
            elif isinstance(value, bool):
                stats.cache_hits += value
                stats.cache_reported += 1
    return out


def _attribute(attributes: dict | None, name: str) -> object:
    return attributes.get(name) if attributes else None


def _groups_of(shards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(shards, return_inverse=True)`` for small shard ids, without a sort."""
    if not len(shards) or shards.min() < 0 or shards.max() > 1_000:
        return np.unique(shards, return_inverse=True)
    present = np.bincount(shards) > 0
    ids = np.flatnonzero(present)
    index = np.cumsum(present) - 1
    return ids, index[shards]


class WindowRecorder:
    """Folds batch aggregates into one windowed table, idempotently and without re-parsing.

    ``get(partition, window_start)`` returns the stored record (:func:`encode_window`) of a
    source partition in the window that starts there (None when empty); ``put(partition,
    window_start, data)`` stores it. One record holds every series of the partition in that
    window and the last source offset folded in, so a record is all or nothing: it can never
    hold a message in some series and not in others. A replayed message is skipped instead of
    counted twice: one at or below the last offset this recorder folded in for its partition
    (Faust seeks back to the committed offsets after a rebalance), and, once windows are read
    from the table again (after a restart, a rebalance or a takeover), one at or below the
    window's stored offset, whatever series its events fall in this time (a worker that
    replays a message may put its events in other shards than the one that counted it).

    Totals are kept in memory and written per partition at most every ``write_every_s``, and
    when the partition's window rolls over (see :mod:`shardshape.core.cadence`);
    :meth:`unwritten` shows what is not written yet (per slot, as views read them), so views
    are never behind.

    >>> table = {}
    >>> recorder = WindowRecorder(lambda p, w: table.get((p, w)),
    ...                           lambda p, w, d: table.__setitem__((p, w), d), size_s=10.0)
    >>> one, other = ShardStats(), ShardStats()
    >>> one.count = other.count = 1
    >>> def counts(data):
    ...     slots, offset = decode_window(data)
    ...     return {key: stats.count for key, stats in slots.items()}, offset
    >>> recorder.record({"api|1|": one}, partition=0, offset=7, timestamp=103.0, now=0.0)
    >>> counts(table[(0, 100.0)]), recorder.unwritten()
    (({'api|1|': 1}, 7), {})
    >>> for offset in (8, 8, 7):  # 8 and 7 again: replays
    ...     recorder.record({"api|1|": one}, partition=0, offset=offset, timestamp=104.0, now=0.5)
    >>> [(slot, ShardStats.from_bytes(data).count, stored_offset(data))
    ...  for (slot, _), data in recorder.unwritten().items()]
    [('api|1|#0', 2, 8)]

    After a rebalance (:meth:`forget`) windows are read from the table again, and the stored
    offset skips replays, even when the replay's events fall in another shard this time:

    >>> recorder.record({"api|1|": one}, partition=0, offset=9, timestamp=104.0, now=2.0)
    >>> recorder.forget()
    >>> recorder.record({"api|2|": other}, partition=0, offset=9, timestamp=104.0, now=3.0)
    >>> counts(table[(0, 100.0)]), recorder.unwritten()
    (({'api|1|': 3}, 9), {})

    A partition kept through the rebalance keeps its totals, and skips replays in memory:

    >>> recorder.record({"api|2|": other}, partition=0, offset=10, timestamp=104.0, now=3.1)
    >>> recorder.forget(keep={0})
    >>> for offset in (10, 11):  # 10 again: a replay
    ...     recorder.record({"api|2|": other}, partition=0, offset=offset, timestamp=104.0, now=3.2)
    >>> sorted((slot, ShardStats.from_bytes(d).count, stored_offset(d))
    ...        for (slot, _), d in recorder.unwritten().items())
    [('api|1|#0', 3, 11), ('api|2|#0', 2, 11)]

    Before Faust commits offsets, :meth:`flush` writes what is not written yet:

    >>> recorder.flush()
    >>> counts(table[(0, 100.0)]), recorder.unwritten()
    (({'api|1|': 3, 'api|2|': 2}, 11), {})
    """

    def __init__(self, get, put, size_s: float, write_every_s: float = 1.0) -> None:  # type: ignore[no-untyped-def]
        self._get, self._put = get, put
        self.size_s = size_s
        self._clock = PartitionClock(write_every_s)
        self._open: dict[int, _OpenWindow] = {}  # source partition -> its current window
        self._folded: dict[int, int] = {}  # source partition -> last offset folded in

    def record(
        self,
        batch: dict[str, ShardStats],
        partition: int,
        offset: int,
        timestamp: float,
        now: float,
    ) -> None:
        """Fold ``batch`` (from :func:`aggregate`) of message ``offset`` (at ``timestamp``) in."""
        if offset <= self._folded.get(partition, -1):
            return  # folded in already: Faust seeks back to committed offsets after rebalances
        self._folded[partition] = offset
        start = timestamp - timestamp % self.size_s
        window = self._open.get(partition)
        if window is not None and window.start != start:
            self._write(partition, window)  # the window rolled over: its totals go out first
            window = None
        if window is None:
            window = self._open[partition] = _OpenWindow(start, self._get(partition, start))
        if offset <= window.offset:
            return  # in the stored totals already: a replay after a restart or a takeover
        for key, stats in batch.items():
            current = window.slots.get(key)
            if current is None:
                current = window.slots[key] = ShardStats()
            current.merge(stats)
        window.offset = offset
        window.changed = True
        if self._clock.due(partition, now):
            self._write(partition, window)

    def unwritten(self) -> dict[tuple[str, float], bytes]:
        """``(slot, window start) -> data`` of the windows not written in full yet: every
        slot of each (see :func:`slots_of`)."""
        return {
            (f"{key}#{partition}", window.start): stats.to_bytes(window.offset)
            for partition, window in self._open.items()
            if window.changed
            for key, stats in window.slots.items()
        }

    def flush(self) -> None:
        """Write every total not written yet (before Faust commits the offsets they cover)."""
        for partition, window in self._open.items():
            self._write(partition, window)

    def forget(self, keep: Collection[int] = ()) -> None:
        """Drop the open windows of every partition not in ``keep``, so that its next batch
        reads the table again.

        Called after a rebalance, with ``keep`` the partitions this worker owned in the
        generation just before as well (nobody else can have written them). Faust resumes
        every partition from its committed offset, and a commit may fail while the group
        rebalances, so a kept partition can replay messages these totals hold: the last
        offset folded in skips them, in memory. Any other partition may have newer totals in
        the table (another worker owned it); read again, the stored offsets skip the replays.
        Nothing is lost: Faust flushes (and so :meth:`flush` runs) before it gives
        partitions up.
        """
        for partition in set(self._open) - set(keep):
            del self._open[partition]
        for partition in set(self._folded) - set(keep):
            del self._folded[partition]

    def _write(self, partition: int, window: _OpenWindow) -> None:
        if window.changed:
            self._put(partition, window.start, encode_window(window.slots, window.offset))
            window.changed = False


class _OpenWindow:
    """The window a source partition is being recorded into, from its ``stored`` record."""

    def __init__(self, start: float, stored: bytes | None) -> None:
        self.start = start
        # series -> its totals so far in this window; the last source offset folded in
        self.slots, self.offset = decode_window(stored) if stored else ({}, -1)
        self.changed = False  # folded more in since it was last written


def series_of(slot: str) -> str:
    """The (service, shard, arm) key of a partition slot."""
    return slot.rpartition("#")[0]


def partition_of(slot: str) -> int:
    """The source partition of a slot."""
    return int(slot.rpartition("#")[2])


def latest_window(
    views: Iterable[list[dict]], now: float
) -> tuple[float, float, dict[str, ShardStats]] | None:
    """The newest complete window (else the current one) merged over workers' views.

    Each view is one worker's list of ``{"start", "end", "slots"}`` for one window size.
    """
    windows: dict[tuple[float, float], list[tuple[str, bytes]]] = {}
    for view in views:
        for window in view:
            slots = windows.setdefault((window["start"], window["end"]), [])
            slots += [(slot, data.encode()) for slot, data in window["slots"].items()]
    if not windows:
        return None
    complete = [w for w in windows if w[1] <= now]
    start, end = max(complete) if complete else max(windows)
    return start, end, merged_series(windows[(start, end)])
