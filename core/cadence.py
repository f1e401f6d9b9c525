"""When per-partition state kept in memory is next written to its changelog-backed table.

Writing a table key costs a changelog message; at 100,000+ events/s per worker, writing per
batch would cost more than the batch. The agent folds batches in memory and writes each source
partition's state at most once per interval, from within that partition's stream (Faust
tables know the changelog partition from the event being processed).

>>> clock = PartitionClock(every_s=1.0)
>>> clock.due(0, now=10.0), clock.due(0, now=10.5), clock.due(0, now=11.0), clock.due(1, now=11.0)
(True, False, True, True)
"""

from __future__ import annotations


class PartitionClock:
    """Says, per source partition, whether ``every_s`` passed since it was last due."""

    def __init__(self, every_s: float) -> None:
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0, got {every_s}")
        self.every_s = every_s
        self._last: dict[int, float] = {}

    def due(self, partition: int, now: float) -> bool:
        last = self._last.get(partition)
        if last is not None and now - last < self.every_s:
            return False
        self._last[partition] = now
        return True
