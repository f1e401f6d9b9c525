"""The ``trace`` scenario: arrivals and service demands replayed from a request trace.

Rows become :class:`~shardshape.core.contracts.RequestEvent` s through the trace's TOML mapping
(the same reader as ``shardshape replay``); then each event is one request arriving at
``(ts - first ts) / speed`` whose service time is its recorded latency (the trace's
execution time: what one slot is held for, on any block type). Its reported outcome is the
trace's status. Profiles are the request types, with the service's ``slo_p99_ms`` from the
pools config as every request's SLO; nothing tells the strategies which requests are alike.
The oracle plans by service-time classes known in hindsight (quantiles of the whole trace).
The first ``warmup`` share of the requests warms up and is not scored; it is also the
history a static sizing reads. ``score_after`` (a time of the trace) replaces the share: every
request before it warms up, the rest is scored (a rolling origin: nothing of the scored part
has been seen), and ``score_until`` ends the run (later requests are not replayed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shardshape.allocator.pools_config import PoolsConfig, parse_pools_config
from shardshape.allocator.simulate.workload import Profile, Workload
from shardshape.core.trace import load_mapping, read_trace

DEFAULT_SLO_MS = 120_000.0


def trace_pools_config(service: str, target_utilisation: float = 0.7) -> PoolsConfig:
    """A pool of one-slot workers (each request holds a whole worker, as an image model does).

    Blocks are planned for the pool (``block_rounding = "pool"``,
    :mod:`shardshape.allocator.pooling`): each shard sees a request a minute or less, so the
    margins of per-shard plans for one-slot workers would add up to more than the work; the shards'
    queues lend to each other.
    """
    release = round(min(0.5, target_utilisation - 0.1), 3)
    return parse_pools_config(
        f"""
[block_types.worker]
cpu_millicores = 1000
memory_mib = 4096
concurrency = 1
cost = 1.0

[pools.main]
blocks = {{ worker = 10000 }}

[planning]
target_utilisation = {target_utilisation}
release_below_utilisation = {release}
block_rounding = "pool"

[services.{service}]
pool = "main"
min_blocks = 0
slo_p99_ms = {DEFAULT_SLO_MS}
prior_rps_per_core = 0.05
""",
        source="trace scenario pools",
    )


def trace_workload(
    paths: Sequence[str | Path],
    mapping: str | Path,
    config: PoolsConfig | None,
    *,
    speed: float = 1.0,
    warmup: float = 0.5,
    classes: int = 4,
    score_after: float | None = None,
    score_until: float | None = None,
) -> Workload:
    """Requests of the traces at ``paths``, ``speed`` times faster than recorded.

    ``config`` gives the block types and the service's SLO (None: :func:`trace_pools_config`).
    ``score_after`` and ``score_until`` (Unix seconds of the trace) bound the scored period
    in place of ``warmup`` (see the module notes).
    Raises :class:`ValueError` when the trace yields no events with a latency, when no event
    is scored or warms up, or when the mapping's service is not in ``config``.
    """
    if speed <= 0 or not 0 <= warmup < 1:
        raise ValueError(f"speed={speed} must be positive and warmup={warmup} in [0, 1)")
    trace_mapping = load_mapping(mapping)
    events = [e for e in read_trace(list(paths), trace_mapping) if e.latency_ms is not None]
    if score_until is not None:
        events = [e for e in events if e.ts < score_until]
    if not events:
        raise ValueError("the trace has no events with a latency: check the mapping's latency")
    service = trace_mapping.service
    config = config or trace_pools_config(service)
    if service not in config.services:
        raise ValueError(
            f"the mapping's service {service!r} is not in the pools config: add a "
            f"[services.{service}] table"
        )
    settings = config.shard_settings(service, 0)
    blocks = tuple(config.block_types[name] for name in settings.block_types)
    ts = np.array([e.ts for e in events])
    first = float(ts.min())
    arrival = (ts - first) / speed
    order = np.argsort(arrival, kind="stable")
    events = [events[i] for i in order.tolist()]
    arrival = arrival[order]
    names = tuple(dict.fromkeys(e.request_type for e in events))
    type_of = {name: i for i, name in enumerate(names)}
    request_type = np.array([type_of[e.request_type] for e in events], dtype=np.int64)
    service_s = np.array([e.latency_ms for e in events], dtype=float) / 1000.0
    slo = settings.slo_p99_ms or DEFAULT_SLO_MS
    edges = np.quantile(np.log(np.maximum(service_s, 1e-3)), np.linspace(0, 1, classes + 1))
    oracle = np.clip(
        np.searchsorted(edges[1:-1], np.log(np.maximum(service_s, 1e-3)), side="right"),
        0,
        classes - 1,
    )
    n = len(events)
    if score_after is None:
        score_from = float(arrival[min(int(warmup * n), n - 1)])
    else:
        score_from = (score_after - first) / speed
        if not 0 < score_from <= float(arrival[-1]):
            raise ValueError(
                f"--score-after {score_after:.0f} leaves no warm-up or nothing to score: the "
                f"trace runs from {first:.0f} to {float(ts.max()):.0f} (Unix seconds)"
            )
    return Workload(
        service=service,
        profiles=tuple(Profile(name, slo_ms=slo) for name in names),
        block_types=blocks,
        arrival=arrival,
        profile=request_type,
        request_type=request_type,
        type_names=names,
        user=[e.user_id for e in events],
        payload=np.array([e.payload_bytes for e in events], dtype=float),
        response=np.array([e.response_bytes or 0.0 for e in events], dtype=float),
        error=np.array([e.status != "ok" for e in events]),
        service_s=np.repeat(service_s[:, None], len(blocks), axis=1),
        attributes=[dict(e.attributes) for e in events],
        start=0.0,
        score_from=score_from,
        end=float(arrival[-1]) + 1.0,
        epoch=first,
        oracle_class=oracle.astype(np.int64),
        oracle_names=tuple(f"service time class {c + 1}" for c in range(classes)),
    )
