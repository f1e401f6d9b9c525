"""The record step: after a group is profiled, per message, its keys' checkpoints, its shard
metrics and the counters, as if the messages had been handled one by one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from shardshape.core.metrics import WindowRecorder, aggregate
from shardshape.streams.counters import PipelineCounters
from shardshape.streams.intake import Received
from shardshape.streams.key_stats import KeyStats
from shardshape.streams.profiling import BatchOutcome, KeyCheckpoints, ProfilingWorker


@dataclass(slots=True)
class RecordStep:
    """Records what a profiled group of messages leaves behind, message by message.

    - **Key checkpoints**: the message's keys are marked changed; when its partition's
      checkpoint is due (:class:`KeyCheckpoints`), the due keys' statistics go to the key-stats
      table, stored with the group's last offset of that partition (the records hold every
      event of the group).
    - **Shard metrics**: the message's events, per (service, shard, arm), go to every window
      recorder (:func:`~shardshape.core.metrics.aggregate`).
    - **Counters**: one message, its valid events and dead letters.

    Parameters
    ----------
    profiling
        The profilers, which give the keys' current statistics.
    checkpoints
        Which keys are due to be written.
    key_stats
        The key-stats table.
    recorders
        The metrics tables' recorders (one per window size).
    counters
        The worker's totals.
    """

    profiling: ProfilingWorker
    checkpoints: KeyCheckpoints
    key_stats: KeyStats
    recorders: Sequence[WindowRecorder]
    counters: PipelineCounters

    def record(self, group: Sequence[Received], outcome: BatchOutcome | None) -> None:
        """Record ``group``, whose events (in order) ``outcome`` profiled."""
        now = time.time()
        last_offset = {message.partition: message.offset for message in group}
        start = 0
        for message in group:
            n, partition = len(message.batch), message.partition
            if n and outcome is not None:
                keys, shards = outcome.keys[start : start + n], outcome.shards[start : start + n]
                start += n
                self.checkpoints.mark(partition, keys)
                due = self.checkpoints.due(partition, now)
                for key, record in self.profiling.records(due).items():
                    self.key_stats.write(partition, key, record, last_offset[partition])
                stats = aggregate(message.batch, shards)
                for recorder in self.recorders:
                    recorder.record(stats, partition, message.offset, message.timestamp, now)
            self.counters.record(n, message.dead_letters)
