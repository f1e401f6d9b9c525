"""Peak memory of a worker and of a gateway's routing table fed one million distinct users,
with and without their caps (``max_keys``, ``gateway_max_routes``), side by side in one run.

1. **worker**: a real ``shardshape worker`` process profiles ``--users`` events, each from a
   new user (a new profile key); its peak RSS (VmHWM) and the keys it holds are read at the end.
2. **routing table**: the routing topic is filled with one entry per user; a fresh process
   follows it with :class:`~shardshape.gateway.routing_table.RoutingTable` until caught up.

Run: ``python benchmarks/bench_memory.py [--users 1000000] [--worker-cap 100000]
[--routes-cap 100000]``. Uses ``SHARDSHAPE_KAFKA_BOOTSTRAP`` if set, else an embedded broker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import Producer

from shardshape.core.contracts import RoutingEntry, encode
from shardshape.core.net import ensure_port_free
from shardshape.core.settings import Settings, load_settings
from shardshape.gateway.routing_table import RoutingTable
from shardshape.infra.broker import kafka_bootstrap
from shardshape.infra.memory import process_memory
from shardshape.infra.topics import create_topics
from shardshape.models.synthetic import distinct_users
from shardshape.streams.replay import replay

UNCAPPED = 100_000_000
MIB = 1024 * 1024


def isolated(base: Settings, bootstrap: str, **update: object) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return base.with_bootstrap(bootstrap).model_copy(
        update={
            "app_id": f"bench-mem-{tag}",
            "topic_requests": f"bench-mem-{tag}.requests",
            "topic_dlq": f"bench-mem-{tag}.dlq",
            "topic_routing": f"bench-mem-{tag}.routing",
            "topic_plans": f"bench-mem-{tag}.plans",
            "session_timeout_s": 6,
            **update,
        }
    )


def _stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/shardshape/stats", timeout=5) as r:
        return json.loads(r.read())


def worker_run(base: Settings, bootstrap: str, users: int, max_keys: int) -> dict:
    """Peak RSS and keys of one worker that profiles ``users`` distinct users."""
    port = ensure_port_free(0, "WEB_PORT")
    settings = isolated(
        base, bootstrap, max_keys=max_keys, web_port=port, data_dir=Path(tempfile.mkdtemp())
    )
    create_topics(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
    env.update(settings.as_environment())
    log = settings.data_dir / "worker.log"
    command = [str(Path(sys.executable).with_name("shardshape")), "worker"]
    with open(log, "wb") as out:
        worker = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while "shardshape worker ready" not in log.read_text(errors="replace"):
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        idle = process_memory(worker.pid).rss_bytes
        started = time.monotonic()
        replay(
            distinct_users(users), settings.confluent_config(), settings.topic_requests,
            settings.requests_partitions,
        )  # fmt: skip
        stats = {"events": 0}
        while stats["events"] < users and time.monotonic() - started < 1_800:
            time.sleep(1.0)
            stats = _stats(port)
        memory = process_memory(worker.pid)
        keys = stats["keys"].get("shop", {"keys": 0, "evicted": 0})
        return {
            "idle_rss": idle,
            "peak_rss": memory.peak_rss_bytes,
            "rss": memory.rss_bytes,
            "held": keys["keys"],
            "evicted": keys["evicted"],
            "stored": stats["keys_stored"],
            "seconds": time.monotonic() - started,
        }
    finally:
        worker.send_signal(2)
        worker.wait(60)


def fill_routing_topic(settings: Settings, users: int) -> None:
    producer = Producer(settings.confluent_config(**{"linger.ms": 20}))
    for i, event in enumerate(distinct_users(users)):
        key = f"{event.service}|{event.request_type}|{event.user_id}"
        entry = RoutingEntry(
            service="shop", key=key, shard_id=i % 5, snapshot_version=1, confidence=0.9
        )
        while True:
            try:
                producer.produce(settings.topic_routing, key=key.encode(), value=encode(entry))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0


def routing_child() -> None:
    """In a fresh process: follow the routing topic, print memory and the table's size."""
    settings = load_settings()
    table = RoutingTable.from_settings(settings).start()
    try:
        if not table.wait_caught_up(1_800):
            raise SystemExit("the routing table did not catch up")
        memory = process_memory(os.getpid())
    finally:
        table.stop()
    print(json.dumps({
        "peak_rss": memory.peak_rss_bytes, "rss": memory.rss_bytes,
        "held": len(table), "evicted": table.evicted,
    }))  # fmt: skip


def routing_run(settings: Settings, max_routes: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
    env.update(settings.model_copy(update={"gateway_max_routes": max_routes}).as_environment())
    done = subprocess.run(
        [sys.executable, __file__, "--routing-child"],
        env=env, capture_output=True, text=True, timeout=1_900, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(component: str, cap: int, result: dict) -> str:
    cap_text = "none" if cap == UNCAPPED else f"{cap:,}"
    return (
        f"{component:<14} {cap_text:>10} {result['held']:>10,} {result['evicted']:>10,} "
        f"{result['peak_rss'] / MIB:>10,.0f} {result['rss'] / MIB:>9,.0f}"
    )


def run(args: argparse.Namespace) -> None:
    base = load_settings()
    with kafka_bootstrap(base) as bootstrap:
        print(f"{args.users:,} distinct users")
        columns = ("cap", "held", "evicted", "peak MiB")
        rows = [f"{'':<14} " + " ".join(f"{c:>10}" for c in columns) + f" {'RSS MiB':>9}"]
        workers = {}
        for cap in (UNCAPPED, args.worker_cap):
            workers[cap] = result = worker_run(base, bootstrap, args.users, cap)
            rows.append(_row("worker", cap, result))
            print(f"  worker (cap {cap:,}): {result['seconds']:.0f} s, idle RSS "
                  f"{result['idle_rss'] / MIB:.0f} MiB, key-stats entries {result['stored']:,}",
                  flush=True)  # fmt: skip
        routing = isolated(base, bootstrap)
        create_topics(routing)
        fill_routing_topic(routing, args.users)
        tables = {cap: routing_run(routing, cap) for cap in (UNCAPPED, args.routes_cap)}
        rows += [_row("routing table", cap, result) for cap, result in tables.items()]
        print("\n".join(rows))
        for name, results, cap in (
            ("worker", workers, args.worker_cap),
            ("routing table", tables, args.routes_cap),
        ):
            ratio = results[cap]["peak_rss"] / results[UNCAPPED]["peak_rss"]
            print(f"{name}: peak RSS capped / uncapped = {ratio:.2f}")


def main() -> None:
    if "--routing-child" in sys.argv:
        routing_child()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--worker-cap", type=int, default=100_000)
    parser.add_argument("--routes-cap", type=int, default=100_000)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
