"""The demo's tenants: closed-loop clients of the example service (``examples/service/loadgen.py``)
that behave very differently, and one that misbehaves.

========  ==============================  ==============================================
tenant    requests                        who (closed-loop clients, think time)
========  ==============================  ==============================================
shoppers  fast item reads (20 ms store)   200 users, 6 clients, 20 ms: ~130 req/s
partners  slow item reads (90 ms store)   20 users, 3 clients, 100 ms: ~15 req/s
analysts  heavy exports (600 ms scan)     8 users, 2 clients, 500 ms: ~2 req/s
media     2 MiB downloads                 10 users, 1 client, 300 ms: ~3 req/s
scraper   item reads, never backs off     one user, 2 clients, none: ~70 req/s, a hundred
                                          times any other user's rate, from
                                          ``scraper_after_s`` on
========  ==============================  ==============================================

Run by ``shardshape demo`` as ``python -m shardshape.infra.demo.load --url URL --seconds S``; prints
each tenant's requests and latency quantiles when done.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from shardshape.infra.demo.examples import example_module

SCRAPER_AFTER_S = 20.0


def tenants() -> tuple[list[Any], Any]:
    """The well-behaved tenants' workloads, and the scraper's."""
    Workload = example_module("loadgen").Workload
    normal = [
        Workload("shoppers", "/items/{n}?read_ms=20", "shopper", clients=6, users=200,
                 think_s=0.02),
        Workload("partners", "/items/p{n}?read_ms=90", "partner", clients=3, users=20,
                 think_s=0.1),
        Workload("analysts", "/exports/r{n}?scan_ms=600&rows=20000", "analyst", clients=2,
                 users=8, think_s=0.5),
        Workload("media", "/downloads/d{n}?mib=2", "media", clients=1, users=10, think_s=0.3),
    ]  # fmt: skip
    scraper = Workload(
        "scraper", "/items/s{n}?read_ms=25", "scraper-bot", clients=2, max_backoff_s=0.0
    )
    return normal, scraper


async def run_tenants(url: str, seconds: float, scraper_after_s: float) -> dict[str, Any]:
    """All tenants for ``seconds``; the scraper joins after ``scraper_after_s``."""
    loadgen = example_module("loadgen")
    normal, scraper = tenants()

    async def scraping() -> dict[str, Any]:
        await asyncio.sleep(min(scraper_after_s, seconds))
        return await loadgen.run_load(url, [scraper], max(seconds - scraper_after_s, 0.0))

    results = await asyncio.gather(loadgen.run_load(url, normal, seconds), scraping())
    return {**results[0], **results[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--scraper-after", type=float, default=SCRAPER_AFTER_S)
    args = parser.parse_args()
    results = asyncio.run(run_tenants(args.url, args.seconds, args.scraper_after))
    print(example_module("loadgen").format_results(results, args.seconds), flush=True)


if __name__ == "__main__":
    main()
