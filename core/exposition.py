"""What the worker's and the gateway's ``/metrics`` share: the names of the families both expose,
the latency histogram's bounds, the process collectors and how a scrape is answered. Kept apart
so the gateway imports neither the worker's collector nor its dashboard state.

>>> from prometheus_client import CollectorRegistry
>>> body, headers = negotiated(add_process_collectors(CollectorRegistry()), "", "gzip")
>>> headers["Content-Encoding"], gzip.decompress(body).startswith(b"# HELP")
('gzip', True)
>>> LATENCY_BUCKETS_S[0], LATENCY_BUCKETS_S[-1]
(0.005, 300)
"""

from __future__ import annotations

import gzip

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Families the worker and the gateway both expose, under the same name.
SHARD_REQUESTS = "shardshape_shard_requests"  # a counter: exposed with _total
SHARD_DURATION = "shardshape_shard_request_duration_seconds"
PLAN_VERSION = "shardshape_plan_version"
SNAPSHOT_VERSION = "shardshape_snapshot_version"
# Latency histogram bounds in seconds: a 5 ms read to a five-minute generation job.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def add_process_collectors(registry: CollectorRegistry) -> CollectorRegistry:
    """Register the standard process, platform and garbage-collector collectors."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def negotiated(
    registry: CollectorRegistry, accept: str, accept_encoding: str
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a scrape, as prometheus_client's own servers answer one: the
    format the ``Accept`` header asks for (OpenMetrics or text), gzipped when accepted."""
    encoder, content_type = choose_encoder(accept)
    body = encoder(registry)
    headers = {"Content-Type": content_type}
    if "gzip" in accept_encoding:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return body, headers


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry`` (serve it with :data:`CONTENT_TYPE`)."""
    return generate_latest(registry)
