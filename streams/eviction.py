"""Retiring the keys a profiler evicted (``max_keys``): their copies go too.

Keys evicted for ``max_keys`` leave the key-stats table and the routing topic too, so neither
(nor a gateway's routing table, nor a recovering worker) keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardshape.core.contracts import MAX_ID_CHARS
from shardshape.streams.key_stats import KeyStats
from shardshape.streams.profiling import KeyCheckpoints, ProfilingWorker
from shardshape.streams.publisher import Publisher


@dataclass(slots=True)
class EvictedKeys:
    """Retires the keys ``profiling`` evicted since the last call: no checkpoint of them is
    written any more, the routing topic gets a tombstone of each, and the key-stats table
    drops what it holds of them.

    Parameters
    ----------
    profiling
        The profilers, whose evicted keys are taken.
    checkpoints
        The key checkpoints, which forget them.
    routing
        The routing topic's publisher (a tombstone per key).
    key_stats
        The key-stats table.
    """

    profiling: ProfilingWorker
    checkpoints: KeyCheckpoints
    routing: Publisher
    key_stats: KeyStats

    def retire(self) -> list[str]:
        """Retire the keys evicted since the last call; return them."""
        evicted = self.profiling.take_evicted()
        if not evicted:
            return evicted
        self.checkpoints.forget(evicted)
        for key in evicted:
            # Its routing entry's key: the profile key cut at the contract's limit.
            self.routing.publish(key[:MAX_ID_CHARS].encode(), None)
            self.key_stats.delete(key)
        return evicted
