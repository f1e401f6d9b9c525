"""Reporter throughput and ``report()`` call cost, beside simpler hand-offs, on one broker.

All in one run on the same broker, so the figures compare side by side:

1. **call cost**: ``Reporter.report`` per call (median, p99, max) beside ``deque.append``, the
   least any non-blocking hand-off to another thread costs;
2. **throughput**: events/s accepted by ``report()`` in a tight loop, and events/s delivered
   (acknowledged by the broker) until ``flush`` returns, beside trace replay
   (:func:`shardshape.streams.replay.replay`, a plain synchronous batch producer) on the same
   events;
3. **outage** (``--pause S``, embedded broker only): events reported at ``--rate`` while the
   broker is stopped (SIGSTOP) for ``S`` seconds: ``report()`` cost meanwhile, what was
   dropped, and how long after SIGCONT the first batch is acknowledged again.

Run::

    .venv/bin/python benchmarks/bench_reporter.py --events 200000 --pause 20
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator

from shardshape.core.contracts import RequestEvent
from shardshape.core.settings import Settings, load_settings
from shardshape.gateway.reporter import Reporter
from shardshape.infra.broker import EmbeddedBroker
from shardshape.infra.topics import create_topics
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.replay import replay


def percentiles_us(costs: list[float]) -> str:
    cuts = statistics.quantiles(costs, n=100)
    return (
        f"median {statistics.median(costs) * 1e6:6.2f} us, p99 {cuts[98] * 1e6:6.2f} us, "
        f"max {max(costs) * 1e3:6.2f} ms"
    )


def timed_calls(call: Callable[[RequestEvent], None], events: list[RequestEvent]) -> list[float]:
    clock = time.perf_counter
    costs = []
    for event in events:
        start = clock()
        call(event)
        costs.append(clock() - start)
    return costs


def fresh_topics(base: Settings, bootstrap: str, **update: object) -> Settings:
    tag = uuid.uuid4().hex[:8]
    settings = base.with_bootstrap(bootstrap).model_copy(
        update={
            "topic_requests": f"bench-{tag}.requests",
            "topic_dlq": f"bench-{tag}.dlq",
            "topic_routing": f"bench-{tag}.routing",
            "topic_plans": f"bench-{tag}.plans",
            **update,
        }
    )
    create_topics(settings)
    return settings


@contextlib.contextmanager
def broker_for(base: Settings) -> Iterator[tuple[str, EmbeddedBroker | None]]:
    if base.resolved_broker_mode == "external":
        yield base.require_bootstrap(), None
        return
    with EmbeddedBroker(base, log_dir=tempfile.mkdtemp(prefix="bench-broker-")) as broker:
        yield broker.bootstrap, broker


def call_cost(base: Settings, bootstrap: str, events: list[RequestEvent]) -> None:
    settings = fresh_topics(base, bootstrap, reporter_max_buffered=len(events))
    baseline = timed_calls(deque().append, events)
    with Reporter(settings, gateway_id="bench-cost") as reporter:
        costs = timed_calls(reporter.report, events)
        reporter.flush(120)
    print(f"deque.append (floor):       {percentiles_us(baseline)}")
    print(f"Reporter.report:            {percentiles_us(costs)}")
    ratio = statistics.median(costs) / statistics.median(baseline)
    print(f"ratio report / append:      median {ratio:.1f}x")


def reporter_rates(
    base: Settings, bootstrap: str, events: list[RequestEvent]
) -> tuple[float, float]:
    """(accepted, delivered) events/s of one reporter fed ``events`` in a tight loop."""
    settings = fresh_topics(base, bootstrap, reporter_max_buffered=len(events))
    with Reporter(settings, gateway_id="bench-rate") as reporter:
        start = time.perf_counter()
        for event in events:
            reporter.report(event)
        accepted_s = time.perf_counter() - start
        left = reporter.flush(300)
        delivered_s = time.perf_counter() - start
        stats = reporter.stats()
    assert left == 0 and stats.delivered == len(events) and not stats.dropped, stats
    return len(events) / accepted_s, len(events) / delivered_s


def replay_rate(base: Settings, bootstrap: str, events: list[RequestEvent]) -> float:
    settings = fresh_topics(base, bootstrap)
    return replay(
        events, settings.confluent_config(), settings.topic_requests,
        settings.requests_partitions, batch_size=settings.reporter_batch_events,
    ).events_per_s  # fmt: skip


def throughput(base: Settings, bootstrap: str, events: list[RequestEvent], repeats: int) -> None:
    runs = []
    for _ in range(repeats):  # interleaved, so both see the same broker state
        runs.append(
            (*reporter_rates(base, bootstrap, events), replay_rate(base, bootstrap, events))
        )
    accepted, delivered, replayed = (
        statistics.median(column) for column in zip(*runs, strict=True)
    )
    print(f"medians of {repeats} runs of {len(events):,} events, nothing dropped:")
    print(f"report() accepted:          {accepted:>10,.0f} events/s")
    print(f"reporter delivered:         {delivered:>10,.0f} events/s")
    print(f"replay() delivered:         {replayed:>10,.0f} events/s")
    print(f"ratio reporter / replay:    {delivered / replayed:>10.2f}")


def outage(base: Settings, bootstrap: str, broker: EmbeddedBroker, args: argparse.Namespace):
    settings = fresh_topics(base, bootstrap)
    stream = SyntheticStream(seed=13).events(10**9)
    per_tick, tick_s = max(1, int(args.rate * 0.02)), 0.02
    costs: list[float] = []

    def load(seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            costs.extend(timed_calls(reporter.report, [next(stream) for _ in range(per_tick)]))
            time.sleep(tick_s)

    assert broker.process is not None
    with Reporter(settings, gateway_id="bench-outage") as reporter:
        load(2.0)
        reporter.flush(30)
        before = reporter.stats()
        costs.clear()
        os.killpg(broker.process.pid, signal.SIGSTOP)
        try:
            load(args.pause)
            paused = reporter.stats()
        finally:
            os.killpg(broker.process.pid, signal.SIGCONT)
        during = list(costs)
        resumed = time.monotonic()
        load(120, until=lambda: reporter.stats().delivered > paused.delivered)
        back_s = time.monotonic() - resumed
        reporter.flush(30)
    print(f"broker stopped {args.pause:.0f} s, {args.rate:,.0f} events/s reported:")
    print(f"  report() meanwhile:       {percentiles_us(during)} ({len(during):,} calls)")
    print(f"  dropped meanwhile:        {paused.dropped_total - before.dropped_total:,} of "
          f"{paused.reported - before.reported:,} reported {paused.dropped}")  # fmt: skip
    print(f"  first batch acknowledged: {back_s * 1e3:.0f} ms after SIGCONT")


def run(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING, format="  log %(name)s: %(message)s")
    base = load_settings()
    events = list(SyntheticStream(seed=11, users=2_000).events(args.events))
    print("command:", " ".join([os.path.relpath(sys.executable), *sys.argv]))
    print(f"{args.events:,} synthetic events, batches of {base.reporter_batch_events}, "
          f"linger {base.reporter_linger_ms:.0f} ms")  # fmt: skip
    with broker_for(base) as (bootstrap, broker):
        call_cost(base, bootstrap, events)
        throughput(base, bootstrap, events, args.repeats)
        if args.pause:
            if broker is None:
                print("outage: skipped (it stops the broker, so it needs the embedded one)")
            else:
                outage(base, bootstrap, broker, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs (median)")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds the broker is stopped")
    parser.add_argument("--rate", type=float, default=5_000, help="events/s during the outage")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
