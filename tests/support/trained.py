"""A profiler trained on the synthetic stream, for tests that need a real snapshot."""

from __future__ import annotations

from shardshape.models.profiler import Profiler, ProfilerConfig
from shardshape.models.synthetic import SyntheticStream


def trained_profiler(n: int = 6_000) -> tuple[Profiler, list]:
    """A profiler of service ``shop`` trained on ``n`` synthetic events, and the events."""
    profiler = Profiler("shop", ProfilerConfig())
    events = list(SyntheticStream(seed=4).events(n))
    for i in range(0, n, 500):
        profiler.process_batch(events[i : i + 500])
    return profiler, events
