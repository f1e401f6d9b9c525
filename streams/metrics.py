"""Per-shard request metrics: what the metrics tables hold for one (service, shard, arm) window.

Plain objects, no Faust: the profile agent aggregates each batch into :class:`ShardStats`
per key and merges them into the windowed tables; views and the CLI merge the stats of all
partitions and workers (latency sketches are mergeable) and summarise them.

>>> from streams.contracts import RequestEvent
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

import base64
from collections.abc import Iterable, Sequence

import orjson
from ddsketch import DDSketch
from ddsketch.pb.ddsketch_pb2 import DDSketch as DDSketchMessage
from ddsketch.pb.proto import DDSketchProto

from streams.contracts import RequestEvent

RELATIVE_ACCURACY = 0.01  # latency quantiles within 1%
BUSY_ATTRIBUTE = "busy_ms"  # services that measure busy time report it as this attribute


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
        self.latency = DDSketch(relative_accuracy=RELATIVE_ACCURACY)
        self.latency_sum = 0.0  # the sketch's wire form keeps no sum: kept here for the mean

    def add(self, event: RequestEvent) -> None:
        self.count += 1
        if event.status != "ok":
            self.errors[event.status] = self.errors.get(event.status, 0) + 1
        self.payload_bytes += event.payload_bytes
        self.response_bytes += event.response_bytes or 0.0
        if event.latency_ms is not None:
            self.latency.add(max(event.latency_ms, 1e-3))  # the sketch needs positive values
            self.latency_sum += event.latency_ms
        busy = event.attributes.get(BUSY_ATTRIBUTE)
        if isinstance(busy, int | float) and not isinstance(busy, bool) and busy >= 0:
            self.busy_ms += busy
            self.busy_reported += 1

    def merge(self, other: ShardStats) -> ShardStats:
        """Add ``other`` into this one (windows of other partitions or workers)."""
        self.count += other.count
        for status, n in other.errors.items():
            self.errors[status] = self.errors.get(status, 0) + n
        self.payload_bytes += other.payload_bytes
        self.response_bytes += other.response_bytes
        self.busy_ms += other.busy_ms
        self.busy_reported += other.busy_reported
        if other.latency.count:
            self.latency.merge(other.latency)
        self.latency_sum += other.latency_sum
        return self

    def summary(self, window_s: float) -> dict[str, float | int | dict[str, int] | None]:
        """What people and the planner read: rates, error share, latency quantiles."""
        sketch = self.latency

        def quantile(q: float) -> float | None:
            return sketch.get_quantile_value(q) if sketch.count else None

        return {
            "count": self.count,
            "rps": self.count / window_s,
            "errors": dict(self.errors),
            "error_rate": sum(self.errors.values()) / self.count if self.count else 0.0,
            "p50_ms": quantile(0.5),
            "p95_ms": quantile(0.95),
            "p99_ms": quantile(0.99),
            "mean_ms": self.latency_sum / sketch.count if sketch.count else None,
            "payload_bytes": self.payload_bytes,
            "response_bytes": self.response_bytes,
            "busy_ms": self.busy_ms if self.busy_reported else None,
        }

    def to_bytes(self, offset: int = -1) -> bytes:
        """JSON with the sketch as base64 protobuf; ``offset`` is the last source offset in it."""
        sketch = DDSketchProto.to_proto(self.latency).SerializeToString()
        return orjson.dumps(
            {
                "count": self.count,
                "errors": self.errors,
                "payload_bytes": self.payload_bytes,
                "response_bytes": self.response_bytes,
                "busy_ms": self.busy_ms,
                "busy_reported": self.busy_reported,
                "latency": base64.b64encode(sketch).decode(),
                "latency_sum": self.latency_sum,
                "offset": offset,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ShardStats:
        raw = orjson.loads(data)
        stats = cls()
        stats.count = int(raw["count"])
        stats.errors = {str(k): int(v) for k, v in raw["errors"].items()}
        stats.payload_bytes = float(raw["payload_bytes"])
        stats.response_bytes = float(raw["response_bytes"])
        stats.busy_ms = float(raw["busy_ms"])
        stats.busy_reported = int(raw["busy_reported"])
        message = DDSketchMessage()
        message.ParseFromString(base64.b64decode(raw["latency"]))
        stats.latency = DDSketchProto.from_proto(message)
        stats.latency_sum = float(raw["latency_sum"])
        return stats


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


def aggregate(events: Sequence[RequestEvent], shards: Iterable[int]) -> dict[str, ShardStats]:
    """One :class:`ShardStats` per (service, shard, arm) of a batch; ``shards[i]`` is event i's.

    An event's own ``shard_id`` (the shard the gateway ran it in) wins over ``shards[i]``.
    """
    out: dict[str, ShardStats] = {}
    for event, shard in zip(events, shards, strict=True):
        key = metric_key(
            event.service, event.shard_id if event.shard_id is not None else shard, event.arm
        )
        stats = out.get(key)
        if stats is None:
            stats = out[key] = ShardStats()
        stats.add(event)
    return out


class WindowRecorder:
    """Folds batch aggregates into one windowed table, idempotently and without re-parsing.

    ``get(slot)`` returns the stored bytes of a slot in the current window (None when empty);
    ``put(slot, data)`` stores them. A slot is a series of one source partition, so each
    partition's changelog holds only its own sums, and a replayed message (offset at or below
    the slot's stored offset, after a worker restart) is skipped instead of counted twice.
    """

    def __init__(self, get, put) -> None:  # type: ignore[no-untyped-def]
        self._get, self._put = get, put
        self._parsed: dict[str, tuple[bytes, ShardStats]] = {}

    def record(self, batch: dict[str, ShardStats], partition: int, offset: int) -> int:
        """Fold ``batch`` (from :func:`aggregate`) in; returns how many slots were updated."""
        updated = 0
        for key, stats in batch.items():
            slot = f"{key}#{partition}"
            stored = self._get(slot)
            if stored is not None and stored_offset(stored) >= offset:
                continue  # already counted: a replay after a restart
            cached = self._parsed.get(slot)
            if stored is None:
                current = ShardStats()
            elif cached is not None and cached[0] is stored:
                current = cached[1]
            else:
                current = ShardStats.from_bytes(stored)
            data = current.merge(stats).to_bytes(offset)
            self._put(slot, data)
            self._parsed[slot] = (data, current)
            updated += 1
        return updated


def series_of(slot: str) -> str:
    """The (service, shard, arm) key of a partition slot."""
    return slot.rpartition("#")[0]


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
