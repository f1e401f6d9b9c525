"""Cost of the sidecar (``shardshape gateway``): latency and throughput through it against
calling its upstream directly, in one run.

Run: ``python benchmarks/bench_sidecar.py [--rate 500] [--seconds 5]``. Needs ``node`` (the
upstream is tests/gateway/upstream.js, answering ``GET /items/{id}?ms=0`` at once). Prints
figures; asserts nothing (target: added p50 under 1 ms at 500 requests/s).

The sidecar runs as its own process in front of the Node.js upstream, reporting nowhere
(no ``SHARDSHAPE_KAFKA_BOOTSTRAP``: the reporter's own cost is in bench_reporter.py) and
otherwise with the default settings: the request is predicted, takes a slot of the default
pool, is forwarded on a kept-alive connection, counted in /metrics. The load generator is a
minimal HTTP/1.1 keep-alive client on raw asyncio streams (so its own cost stays small):

- fixed rate: requests sent at ``--rate`` per second on a pool of connections, latency from
  send to last byte, alternating one-second rounds direct and through the sidecar so drift in
  the machine's load hits both alike;
- max throughput: ``--clients`` closed-loop connections for ``--seconds`` each way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from shardshape.core.net import free_port

REPO = Path(__file__).resolve().parent.parent
UPSTREAM_JS = REPO / "tests" / "gateway" / "upstream.js"
PATH = "/items/{n}?ms=0"


def _wait_up(url: str, process: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{process.args[0]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{url} did not answer within {timeout_s} s")


class Connection:
    """One keep-alive HTTP/1.1 connection: ``get(path)`` returns the body's length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, path: str) -> int:
        self.writer.write(f"GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {head[:60]!r}")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return length

    def close(self) -> None:
        self.writer.close()


async def fixed_rate(port: int, rate: float, seconds: float, pool: int = 32) -> list[float]:
    """Latencies (ms) of requests sent at ``rate`` per second for ``seconds``."""
    idle = asyncio.Queue()
    for _ in range(pool):
        idle.put_nowait(await Connection.open(port))
    latencies: list[float] = []

    async def one(n: int) -> None:
        connection = await idle.get()
        started = time.perf_counter()
        await connection.get(PATH.format(n=n))
        latencies.append((time.perf_counter() - started) * 1000)
        idle.put_nowait(connection)

    tasks = []
    start = time.perf_counter()
    total = int(rate * seconds)
    for n in range(total):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return latencies


async def throughput(port: int, clients: int, seconds: float) -> float:
    """Requests per second of ``clients`` closed-loop connections."""
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        connection = await Connection.open(port)
        n = 0
        while time.perf_counter() < stop:
            await connection.get(PATH.format(n=n))
            n += 1
            done += 1
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - started)


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(direct: int, sidecar: int, args: argparse.Namespace, pid: int) -> None:
    for port in (direct, sidecar):  # warm both paths and the sidecar's upstream pool
        await fixed_rate(port, args.rate, 1.0)
    rounds: dict[int, list[float]] = {direct: [], sidecar: []}
    for _ in range(max(1, round(args.seconds))):
        for port in (direct, sidecar):
            rounds[port] += await fixed_rate(port, args.rate, 1.0)
    print(f"fixed rate {args.rate:g} req/s, {len(rounds[direct])} requests each way:")
    p50 = {}
    for name, port in (("direct ", direct), ("sidecar", sidecar)):
        values = rounds[port]
        p50[port] = statistics.median(values)
        print(
            f"  {name}  p50 {p50[port]:6.2f} ms   p99 {_quantile(values, 0.99):6.2f} ms   "
            f"max {max(values):6.1f} ms"
        )
    added = p50[sidecar] - p50[direct]
    p99_added = _quantile(rounds[sidecar], 0.99) - _quantile(rounds[direct], 0.99)
    print(f"  added by the sidecar: p50 {added:.2f} ms, p99 {p99_added:.2f} ms (target p50 < 1)")
    print(f"max throughput, {args.clients} closed-loop connections, {args.seconds:g} s each:")
    for name, port in (("direct ", direct), ("sidecar", sidecar)):
        cpu = _cpu_s(pid)
        rate = await throughput(port, args.clients, args.seconds)
        print(f"  {name}  {rate:8,.0f} req/s")
    per_request = (_cpu_s(pid) - cpu) / (rate * args.seconds) * 1e6
    print(f"  sidecar CPU per request (its process, user + system): {per_request:,.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=500, help="requests/s of the fixed rate")
    parser.add_argument("--seconds", type=float, default=5, help="seconds measured each way")
    parser.add_argument("--clients", type=int, default=16, help="connections, max throughput")
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None:
        sys.exit("node is not installed: the benchmark's upstream is a Node.js server")
    direct, sidecar = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
    env["SHARDSHAPE_KAFKA_BOOTSTRAP"] = ""
    shardshape = str(Path(sys.executable).with_name("shardshape"))
    command = [shardshape, "gateway", "--service", "bench", "--upstream",
               f"http://127.0.0.1:{direct}", "--listen", f"127.0.0.1:{sidecar}"]  # fmt: skip
    upstream = subprocess.Popen([node, str(UPSTREAM_JS), str(direct)], stdout=subprocess.DEVNULL)
    proxy = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        _wait_up(f"http://127.0.0.1:{direct}/items/0?ms=0", upstream)
        _wait_up(f"http://127.0.0.1:{sidecar}/shardshape/gateway/healthz", proxy)
        print(f"{os.cpu_count()} cores; upstream node {direct}, sidecar {sidecar}")
        asyncio.run(measure(direct, sidecar, args, proxy.pid))
    finally:
        for process in (proxy, upstream):
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
