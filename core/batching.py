"""Group request events into per-partition batches: full ones leave at once, old ones on time.

Events are grouped by the partition of their profile key (:func:`partition_for`), so each
``RequestBatch`` made of a group lands whole on the partition whose worker owns those keys.

>>> batcher = PartitionBatcher(partitions=4, batch_events=2, linger_s=1.0)
>>> event = RequestEvent(request_id="r1", ts=0, service="s", request_type="t", user_id="u")
>>> batcher.add(event, now=0.0) is None, len(batcher)
(True, 1)
>>> partition, events = batcher.add(event, now=0.1)
>>> partition == partition_for(profile_key("s", "t", "u"), 4), len(events), len(batcher)
(True, 2, 0)
>>> batcher.add(event, now=2.0)
>>> batcher.due(now=2.5), [len(events) for _, events in batcher.due(now=3.0)]
([], [1])
"""

from __future__ import annotations

from shardshape.core.contracts import RequestEvent
from shardshape.core.partitioning import partition_for, profile_key

Batch = tuple[int, list[RequestEvent]]


class PartitionBatcher:
    """Per-partition buffers of request events, each released when full or ``linger_s`` old.

    Parameters
    ----------
    partitions
        Partitions of the requests topic.
    batch_events
        Most events in one batch; a buffer that reaches it is released by :meth:`add`.
    linger_s
        Longest the first event of a buffer waits; :meth:`due` releases older buffers.
    """

    def __init__(self, partitions: int, batch_events: int, linger_s: float) -> None:
        if partitions < 1 or batch_events < 1 or linger_s < 0:
            raise ValueError(
                f"partitions ({partitions}) and batch_events ({batch_events}) must be at least "
                f"1 and linger_s ({linger_s}) at least 0"
            )
        self.partitions = partitions
        self.batch_events = batch_events
        self.linger_s = linger_s
        self._buffers: dict[int, list[RequestEvent]] = {}
        self._opened: dict[int, float] = {}
        self._held = 0

    def __len__(self) -> int:
        """Events held, not yet released."""
        return self._held

    def add(self, event: RequestEvent, now: float) -> Batch | None:
        """Hold ``event``; return its partition's batch when this event fills it."""
        partition = partition_for(
            profile_key(event.service, event.request_type, event.user_id), self.partitions
        )
        buffer = self._buffers.get(partition)
        if buffer is None:
            buffer = self._buffers[partition] = []
            self._opened[partition] = now
        buffer.append(event)
        self._held += 1
        if len(buffer) >= self.batch_events:
            return self._release(partition)
        return None

    def due(self, now: float, *, everything: bool = False) -> list[Batch]:
        """Release every buffer whose first event is ``linger_s`` old (all with ``everything``)."""
        return [
            self._release(partition)
            for partition, opened in list(self._opened.items())
            if everything or now - opened >= self.linger_s
        ]

    def _release(self, partition: int) -> Batch:
        events = self._buffers.pop(partition)
        del self._opened[partition]
        self._held -= len(events)
        return partition, events
