"""The profile step: a group of received messages' events profiled in one call, and the
routes that changed published."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shardshape.core.columns import concat_columns
from shardshape.core.contracts import RoutingEntry, encode
from shardshape.streams.counters import PipelineCounters
from shardshape.streams.eviction import EvictedKeys
from shardshape.streams.intake import Received
from shardshape.streams.key_stats import KeyStats
from shardshape.streams.profiling import BatchOutcome, ProfilingWorker
from shardshape.streams.publisher import Publisher


@dataclass(slots=True)
class ProfileStep:
    """Profiles messages' events (:meth:`ProfilingWorker.process`) and publishes the routing
    entries that changed.

    Parameters
    ----------
    profiling
        The worker's profilers.
    routing
        The routing topic's publisher.
    key_stats
        Where a key new to this worker is seeded from (it moved here in a rebalance).
    evicted
        Retires the keys evicted meanwhile.
    counters
        Counts the profiler calls.
    """

    profiling: ProfilingWorker
    routing: Publisher
    key_stats: KeyStats
    evicted: EvictedKeys
    counters: PipelineCounters

    def profile(self, group: Sequence[Received]) -> BatchOutcome | None:
        """Profile the events of ``group`` in one call; None when it has none."""
        batches = [message.batch for message in group if len(message.batch)]
        if not batches:
            return None
        outcome = self.profiling.process(
            concat_columns(batches), recover=self.key_stats.recover, batches=len(batches)
        )
        self.counters.profiler_calls += 1
        self._publish(outcome.changes)
        self.evicted.retire()  # after the entries: a key evicted meanwhile stays retired
        self.routing.poll()
        return outcome

    def adopt_offered(self) -> None:
        """Adopt newer global snapshots offered, and publish the routes they change.

        The agent adopts them before each batch; this is for when the stream is idle.
        """
        self._publish(self.profiling.adopt_offered())
        self.routing.poll()

    def _publish(self, entries: Iterable[RoutingEntry]) -> None:
        for entry in entries:
            self.routing.publish(entry.key.encode(), encode(entry))
