"""Profile-agent throughput beside a raw consumer, routing latency and gateway predict cost.

All on one broker in one run, so the figures compare side by side:

1. the requests topic is loaded with synthetic events in ``RequestBatch`` messages;
2. **ceiling**: a raw aiokafka consumer reads them all and decodes every batch into events;
3. **pipeline**: a real worker process (validation, key statistics, prediction, learning,
   routing entries, key checkpoints, shard metrics) consumes the same messages; its own
   counters time it: wall clock, CPU seconds of the whole process, and CPU seconds of the
   agent's thread (the event loop), which bounds the rate when it has a core to itself;
4. **routing latency**: batches with a new key each, from produce to the key's routing entry
   being visible in a ``RoutingTable`` (p50, p99);
5. **predict**: ``RoutingTable.predict`` per call (median, p99), known keys and unseen ones.

Run::

    .venv/bin/python benchmarks/bench_pipeline.py --events 300000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from shardshape.core.columns import decode_columns
from shardshape.core.contracts import RequestBatch, encode
from shardshape.core.net import ensure_port_free
from shardshape.core.settings import Settings, load_settings
from shardshape.gateway.routing_table import RoutingTable
from shardshape.infra.broker import kafka_bootstrap
from shardshape.infra.topics import create_topics
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.faust_setup import faust_credentials
from shardshape.streams.replay import replay


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def raw_consumer_rate(settings: Settings, expected: int) -> float:
    """Events/s of a bare aiokafka consumer that decodes every batch (the ceiling), with the
    agent's own fast decoder (``shardshape.core.columns``)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        group_id=None,
        # The worker's own security settings (TLS, SASL), as Faust hands them to aiokafka.
        **credentials_to_aiokafka_auth(faust_credentials(settings)),
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(settings.topic_requests, p) for p in range(settings.requests_partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen, start = 0, None
        while seen < expected:
            records = await consumer.getmany(timeout_ms=1000, max_records=1000)
            for batch in records.values():
                for record in batch:
                    start = start or time.perf_counter()
                    decoded = decode_columns(record.value)
                    assert decoded is not None, "a synthetic batch left the fast path"
                    seen += len(decoded[1])
        return seen / (time.perf_counter() - start)
    finally:
        await consumer.stop()


def worker_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/shardshape/stats", timeout=5) as r:
        return json.loads(r.read())


def run(args: argparse.Namespace) -> None:
    base = load_settings()
    with kafka_bootstrap(base) as bootstrap:
        tag = uuid.uuid4().hex[:8]
        web_port = ensure_port_free(0, "WEB_PORT")
        settings = base.with_bootstrap(bootstrap).model_copy(
            update={
                "app_id": f"bench-{tag}",
                "topic_requests": f"bench-{tag}.requests",
                "topic_dlq": f"bench-{tag}.dlq",
                "topic_routing": f"bench-{tag}.routing",
                "topic_plans": f"bench-{tag}.plans",
                "session_timeout_s": 6,
                "web_port": web_port,
                "snapshot_interval_s": 2,
            }
        )
        create_topics(settings)
        events = list(SyntheticStream(seed=11, users=args.users).events(args.events))
        sent = replay(
            events, settings.confluent_config(), settings.topic_requests,
            settings.requests_partitions, batch_size=args.batch,
        )  # fmt: skip
        print(f"loaded {sent.events:,} events in {sent.batches:,} batches "
              f"({sent.events_per_s:,.0f} events/s produced)")  # fmt: skip

        ceiling = asyncio.run(raw_consumer_rate(settings, sent.events))
        print(f"raw aiokafka consumer + decode:  {ceiling:>10,.0f} events/s")

        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
        env.update(settings.as_environment())  # secrets included: the worker must connect
        env["SHARDSHAPE_DATA_DIR"] = tempfile.mkdtemp(prefix="bench-")
        log = Path(env["SHARDSHAPE_DATA_DIR"]) / "worker.log"
        command = [str(Path(sys.executable).with_name("shardshape")), "worker"]
        with open(log, "wb") as out:
            worker = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            stats = {"events": 0}
            while stats["events"] < sent.events and time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    stats = worker_stats(web_port)
                except OSError:
                    continue
            seconds = stats["last_time"] - stats["first_time"]
            rate = stats["events"] / seconds if seconds else 0.0
            print(f"profile agent (1 worker process): {rate:>10,.0f} events/s "
                  f"({stats['events']:,} events in {seconds:.2f} s)")  # fmt: skip
            print(f"ratio pipeline / raw consumer:    {rate / ceiling:>10.2f}")
            # On a shared machine wall time includes waiting for a core; CPU time does not.
            per_cpu = stats["events"] / stats["cpu_seconds"] if stats["cpu_seconds"] else 0.0
            print(f"profile agent per CPU second:     {per_cpu:>10,.0f} events "
                  f"({stats['cpu_seconds']:.2f} CPU s, all the worker's threads)")  # fmt: skip
            # The agent's own thread (Faust's event loop): what bounds the rate when it has a
            # core to itself; the other threads (fetching, librdkafka) run beside it.
            loop_cpu = stats.get("loop_cpu_seconds", 0.0)
            per_loop = stats["events"] / loop_cpu if loop_cpu else 0.0
            print(f"... per event-loop CPU second:    {per_loop:>10,.0f} events "
                  f"({loop_cpu:.2f} CPU s, the agent's thread)")  # fmt: skip

            with RoutingTable(settings.confluent_config(), settings.topic_routing) as table:
                table.wait_caught_up(60)
                latencies = routing_latencies(settings, table, events[0], args.latency_samples)
                print(f"batch produced -> routing entry in RoutingTable: "
                      f"p50 {quantile(latencies, 0.5) * 1e3:.1f} ms, "
                      f"p99 {quantile(latencies, 0.99) * 1e3:.1f} ms, "
                      f"max {max(latencies) * 1e3:.1f} ms ({len(latencies)} batches)")  # fmt: skip
                table.wait_for_snapshot("shop", timeout_s=30)
                known = events[-5_000:]
                unseen = [e.model_copy(update={"user_id": f"new-{i}"}) for i, e in enumerate(known)]
                for name, sample in (("known keys", known), ("unseen keys", unseen)):
                    per_call = predict_costs(table, sample)
                    print(f"RoutingTable.predict, {name}: median "
                          f"{statistics.median(per_call) * 1e6:.2f} us, "
                          f"p99 {quantile(per_call, 0.99) * 1e6:.2f} us")  # fmt: skip
        finally:
            worker.send_signal(2)
            worker.wait(30)


def routing_latencies(settings: Settings, table: RoutingTable, template, samples: int):
    producer = Producer(settings.confluent_config(**{"linger.ms": 0}))
    latencies = []
    for i in range(samples):
        event = template.model_copy(update={"user_id": f"latency-{uuid.uuid4().hex[:8]}-{i}"})
        key = f"{event.service}|{event.request_type}|{event.user_id}"
        start = time.perf_counter()
        producer.produce(
            settings.topic_requests, value=encode(RequestBatch(gateway_id="bench", events=[event]))
        )
        producer.flush(5)
        while table.entry(key) is None and time.perf_counter() - start < 10:
            time.sleep(0.0005)
        latencies.append(time.perf_counter() - start)
    return latencies


def predict_costs(table: RoutingTable, events) -> list[float]:
    costs = []
    clock = time.perf_counter
    for event in events:
        start = clock()
        table.predict(event)
        costs.append(clock() - start)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--latency-samples", type=int, default=200)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
