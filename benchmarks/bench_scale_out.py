"""Profile-agent throughput with 1, 2 and 3 worker processes sharing the requests partitions.

All in one run on one broker, the same load for each count, so the figures compare side by
side. For each worker count: a fresh consumer group and requests topic (``--partitions``),
that many ``shardshape worker`` processes, started and settled (every partition owned, each
worker some) before the first event is produced; then the same pre-encoded ``RequestBatch``
messages are produced as fast as the broker takes them. A count's events/s is all events over
the span from the first message any worker handled to the last; CPU seconds are the workers'
own (every thread). On a machine with fewer cores than workers plus the broker, processes
share cores: read the events per CPU second beside the wall-clock rate.

Run::

    .venv/bin/python benchmarks/bench_scale_out.py --events 300000 --workers 1 2 3 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka import Producer

from shardshape.core.batching import PartitionBatcher
from shardshape.core.contracts import RequestBatch, encode
from shardshape.core.net import ensure_port_free
from shardshape.core.settings import Settings, load_settings
from shardshape.infra.broker import kafka_bootstrap
from shardshape.infra.topics import create_topics
from shardshape.models.synthetic import SyntheticStream


def encoded_batches(events: int, users: int, partitions: int) -> list[tuple[int, bytes]]:
    """(partition, message) of the load, grouped by key partition, 500 events a message."""
    batcher = PartitionBatcher(partitions, batch_events=500, linger_s=0.0)
    batches = []
    for event in SyntheticStream(seed=11, users=users).events(events):
        full = batcher.add(event, 0.0)
        if full is not None:
            batches.append(full)
    batches += batcher.due(0.0, everything=True)
    return [
        (partition, encode(RequestBatch(gateway_id="bench", events=batch)))
        for partition, batch in batches
    ]


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/shardshape/stats", timeout=20) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def workers(settings: Settings, count: int, log_dir: Path) -> Iterator[list[int]]:
    """``count`` worker processes on ``settings``; yields their web ports, stops them after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
    env.update(settings.as_environment())  # secrets included: the workers must connect
    command = [str(Path(sys.executable).with_name("shardshape")), "worker"]
    ports, processes = [], []
    try:
        for i in range(count):
            port = ensure_port_free(0, "WEB_PORT")
            variables = {**env, "SHARDSHAPE_WEB_PORT": str(port), "SHARDSHAPE_WORKER_ID": f"w{i}"}
            with open(log_dir / f"w{i}.log", "wb") as out:
                processes.append(
                    subprocess.Popen(command, env=variables, stdout=out, stderr=subprocess.STDOUT)
                )
            ports.append(port)
        yield ports
    finally:
        for process in processes:
            process.send_signal(2)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def settled(settings: Settings, ports: list[int], timeout_s: float = 180.0) -> None:
    """Wait until every worker owns some partitions and together they own all of them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            shares = [stats(port)["assignment"].get(settings.topic_requests, []) for port in ports]
            owned = sorted(p for share in shares for p in share)
            if all(shares) and owned == list(range(settings.requests_partitions)):
                return
        time.sleep(0.5)
    raise RuntimeError(f"{len(ports)} workers did not share the partitions in {timeout_s:.0f} s")


def measure(base: Settings, count: int, load: list[tuple[int, bytes]], events: int) -> dict:
    """Start ``count`` workers, produce ``load`` once they share the partitions, time them."""
    tag = uuid.uuid4().hex[:8]
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-scale-{count}-"))
    settings = base.model_copy(
        update={
            "app_id": f"bench-{tag}",
            "topic_requests": f"bench-{tag}.requests",
            "topic_dlq": f"bench-{tag}.dlq",
            "topic_routing": f"bench-{tag}.routing",
            "topic_plans": f"bench-{tag}.plans",
            "data_dir": data_dir,
        }
    )
    create_topics(settings)
    with workers(settings, count, data_dir) as ports:
        settled(settings, ports)
        producer = Producer({"linger.ms": 20, **settings.confluent_config()})
        for partition, value in load:
            while True:
                try:
                    producer.produce(settings.topic_requests, value=value, partition=partition)
                    break
                except BufferError:
                    producer.poll(0.1)
        if producer.flush(120):
            raise RuntimeError("the load was not delivered")
        deadline = time.monotonic() + 600
        seen: list[dict] = []
        while time.monotonic() < deadline:
            time.sleep(0.5)
            with contextlib.suppress(OSError):
                seen = [stats(port) for port in ports]
                if sum(s["events"] for s in seen) >= events:
                    break
        else:
            raise RuntimeError(f"{count} workers did not handle {events:,} events in time")
    busy = [s for s in seen if s["events"]]
    seconds = max(s["last_time"] for s in busy) - min(s["first_time"] for s in busy)
    cpu = sum(s["cpu_seconds"] for s in busy)
    return {
        "workers": count,
        "events": sum(s["events"] for s in seen),
        "seconds": seconds,
        "rate": events / seconds,
        "cpu_seconds": cpu,
        "per_cpu": events / cpu if cpu else 0.0,
    }


def run(args: argparse.Namespace) -> None:
    base = load_settings()
    with kafka_bootstrap(base) as bootstrap:
        settings = base.with_bootstrap(bootstrap).model_copy(
            update={"requests_partitions": args.partitions, "session_timeout_s": 6}
        )
        load = encoded_batches(args.events, args.users, args.partitions)
        print(f"load: {args.events:,} events in {len(load):,} messages over "
              f"{args.partitions} partitions; {os.cpu_count()} cores; "
              f"median of {args.repeat} runs each, counts interleaved")  # fmt: skip
        runs: dict[int, list[dict]] = {count: [] for count in args.workers}
        for _ in range(args.repeat):
            for count in args.workers:
                runs[count].append(measure(settings, count, load, args.events))
    first = statistics.median(r["rate"] for r in runs[args.workers[0]])
    print(f"{'workers':>7} {'events/s':>10} {'vs first':>8} {'events/CPU s':>12}  "
          f"events/s of each run")  # fmt: skip
    for count, results in runs.items():
        rate = statistics.median(r["rate"] for r in results)
        per_cpu = statistics.median(r["per_cpu"] for r in results)
        each = ", ".join(f"{r['rate']:,.0f}" for r in results)
        print(f"{count:>7} {rate:>10,.0f} {rate / first:>8.2f} {per_cpu:>12,.0f}  {each}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeat", type=int, default=3)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
