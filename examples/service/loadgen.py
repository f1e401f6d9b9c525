"""Closed-loop HTTP load for the example service: per workload, N clients that each send the next
request as soon as the last one answered, for a given time; then latency quantiles per workload.

A rejected request (503) is counted and the client backs off for its ``Retry-After`` (capped),
as a well-behaved client would. Run::

    python examples/service/loadgen.py --url http://127.0.0.1:8000 --seconds 10 \\
        --workload 'reads:/items/{n}?read_ms=20:reader:4' \\
        --workload 'exports:/exports/r{n}?scan_ms=200:exporter:16'

A workload is ``name:path:user:clients``; ``{n}`` in the path is a running request number.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np


@dataclass(frozen=True)
class Workload:
    """``clients`` closed-loop clients of user ``user`` requesting ``path`` (``{n}`` numbered).

    With ``users > 1`` the requests come from users ``<user>-0`` to ``<user>-<users - 1>`` in
    turn: a tenant of many users, each calling at a fraction of the tenant's rate. A client
    waits ``think_s`` after each answer before its next request.
    """

    name: str
    path: str
    user: str
    clients: int = 1
    max_backoff_s: float = 0.5
    users: int = 1
    think_s: float = 0.0

    def user_of(self, n: int) -> str:
        """The user of request number ``n``.

        >>> Workload("w", "/", "shopper", users=3).user_of(7)
        'shopper-1'
        """
        return f"{self.user}-{n % self.users}" if self.users > 1 else self.user

    @classmethod
    def parse(cls, text: str) -> Workload:
        """``name:path:user:clients``.

        >>> Workload.parse("reads:/items/{n}:reader:4")
        Workload(name='reads', path='/items/{n}', user='reader', clients=4, ...)
        """
        name, _, rest = text.partition(":")
        parts = rest.rsplit(":", 2)
        if len(parts) != 3 or not parts[2].isdigit() or not parts[0].startswith("/"):
            raise argparse.ArgumentTypeError(
                f"workload {text!r}: expected name:/path:user:clients, e.g. reads:/items/{{n}}:u:4"
            )
        path, user, clients = parts
        return cls(name, path, user, int(clients))


@dataclass
class Result:
    """What one workload saw: latency of every answered request and a count per status."""

    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)  # transport errors by exception class

    def quantile_ms(self, q: float) -> float:
        """Latency quantile of the successful (2xx) requests, in milliseconds."""
        return float(np.quantile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


async def _client(
    http: httpx.AsyncClient, workload: Workload, numbers: itertools.count, until: float, out: Result
) -> None:
    while time.monotonic() < until:
        n = next(numbers)
        path = workload.path.replace("{n}", str(n))
        started = time.perf_counter()
        try:
            response = await http.get(path, headers={"x-user-id": workload.user_of(n)})
            await response.aread()
        except httpx.HTTPError as error:
            out.failures[type(error).__name__] += 1
            continue
        elapsed = time.perf_counter() - started
        out.statuses[response.status_code] += 1
        if response.is_success:
            out.latencies_s.append(elapsed)
        elif response.status_code == 503:
            retry = float(response.headers.get("retry-after", "1"))
            await asyncio.sleep(min(retry, workload.max_backoff_s))
        if workload.think_s:
            await asyncio.sleep(workload.think_s)


async def run_load(
    base_url: str, workloads: list[Workload], seconds: float, *, timeout_s: float = 30.0
) -> dict[str, Result]:
    """Run every workload at once for ``seconds``; one connection pool per workload."""
    until = time.monotonic() + seconds
    results = {w.name: Result() for w in workloads}
    clients = []
    tasks = []
    for workload in workloads:
        limits = httpx.Limits(max_connections=workload.clients, max_keepalive_connections=None)
        http = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout_s)
        clients.append(http)
        numbers = itertools.count()
        for _ in range(workload.clients):
            tasks.append(_client(http, workload, numbers, until, results[workload.name]))
    try:
        await asyncio.gather(*tasks)
    finally:
        for http in clients:
            await http.aclose()
    return results


def format_results(results: dict[str, Result], seconds: float) -> str:
    header = f"{'workload':<12}{'requests':>9}{'rps':>8}{'ok':>7}{'503':>6}"
    lines = [f"{header}{'p50 ms':>9}{'p99 ms':>9}"]
    for name, r in results.items():
        ok = sum(n for code, n in r.statuses.items() if 200 <= code < 300)
        lines.append(
            f"{name:<12}{r.requests:>9}{r.requests / seconds:>8.1f}{ok:>7}{r.statuses[503]:>6}"
            f"{r.quantile_ms(0.5):>9.1f}{r.quantile_ms(0.99):>9.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--workload",
        type=Workload.parse,
        action="append",
        help="name:path:user:clients (repeat; default: reads, exports and downloads)",
    )
    args = parser.parse_args()
    workloads = args.workload or [
        Workload("reads", "/items/{n}?read_ms=20", "reader", 4),
        Workload("exports", "/exports/r{n}?scan_ms=200&rows=20000", "exporter", 16),
        Workload("downloads", "/downloads/d{n}?mib=4", "downloader", 2),
    ]
    results = asyncio.run(run_load(args.url, workloads, args.seconds))
    print(format_results(results, args.seconds))


if __name__ == "__main__":
    main()
