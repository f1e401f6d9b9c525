"""Throughput of the profiler's batch path and latency of a gateway's snapshot predict.

Run: ``python benchmarks/bench_models.py [n_events]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import time

from shardshape.core.contracts import ShardSnapshot, decode, encode
from shardshape.models.predictor import Route, ShardPredictor
from shardshape.models.profiler import Profiler
from shardshape.models.synthetic import SyntheticStream

BATCH = 500


def main(n_events: int = 100_000) -> None:
    events = list(SyntheticStream(seed=1).events(n_events))
    warm, timed = events[:20_000], events[20_000:]
    profiler = Profiler("shop")
    for i in range(0, len(warm), BATCH):
        profiler.process_batch(warm[i : i + BATCH])
    started = time.perf_counter()
    for i in range(0, len(timed), BATCH):
        profiler.process_batch(timed[i : i + BATCH])
    elapsed = time.perf_counter() - started
    print(
        f"process_batch ({BATCH}/batch): {len(timed) / elapsed:,.0f} events/s "
        f"over {len(timed):,} events, {len(profiler.keys):,} keys"
    )

    snapshot = decode(ShardSnapshot, encode(profiler.snapshot()))
    print(
        f"snapshot: version {snapshot.version}, {len(encode(snapshot)):,} bytes JSON, "
        f"{len(snapshot.shards)} shards"
    )
    gateway = ShardPredictor.from_snapshot(snapshot)
    sample = timed[:5_000]
    hit = Route(gateway.ids[0], 0.99, False)
    weak = Route(gateway.ids[0], 0.3, False)
    for name, route in (("lookup hit", hit), ("model, known key", weak), ("model, unseen", None)):
        timings = []
        for e in sample:
            t0 = time.perf_counter()
            gateway.predict_one(e.request_type, e.payload_bytes, e.attributes, route)
            timings.append(time.perf_counter() - t0)
        timings.sort()
        print(
            f"predict_one {name:17s}: median {statistics.median(timings) * 1e6:5.2f} us, "
            f"p99 {timings[int(0.99 * len(timings))] * 1e6:6.2f} us"
        )
    routes = [None] * BATCH
    t0 = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        gateway.predict_many(sample[:BATCH], routes)
    per = (time.perf_counter() - t0) / (rounds * BATCH)
    print(f"predict_many ({BATCH}/call, unseen keys): {per * 1e6:.2f} us per request")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
