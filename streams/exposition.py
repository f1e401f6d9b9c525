"""What the worker's and the gateway's ``/metrics`` share: the content type of the text
exposition and the latency histogram's bounds. Kept apart so the gateway imports neither the
worker's collector nor its dashboard state.

>>> LATENCY_BUCKETS_S[0], LATENCY_BUCKETS_S[-1]
(0.005, 300)
"""

from __future__ import annotations

from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Latency histogram bounds in seconds: a 5 ms read to a five-minute generation job.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
