"""What a run scores: SLO attainment, latency quantiles and block-hours, per profile.

A request meets its SLO when it completed (not rejected) within its profile's ``slo_ms``.
Attainment is the share of scored requests that did; ``overall`` pools every profile that
has an SLO (best-effort profiles, such as a scraper, are reported but not pooled).
Latency quantiles include rejected requests at the time they gave up (``max_wait_s``), so
a strategy cannot improve its p99 by rejecting. ``block_hours`` are the blocks held,
integrated over the scored period; ``cost_hours`` weighs them by block cost.

>>> import numpy as np
>>> attainment(np.array([0.1, 0.3, 0.2]), np.array([False, False, True]), slo_ms=250)
0.3333333333333333
"""

from __future__ import annotations

import numpy as np

from shardshape.allocator.simulate.engine import RunResult

OVERALL = "overall"


def attainment(latency_s: np.ndarray, rejected: np.ndarray, slo_ms: float) -> float:
    """Share of requests completed within ``slo_ms`` (NaN for no requests)."""
    if not len(latency_s):
        return float("nan")
    met = ~rejected & (latency_s * 1000.0 <= slo_ms)
    return float(met.mean())


def summarise(result: RunResult) -> dict[str, object]:
    """The JSON summary of one run (see the module notes for each figure)."""
    w = result.workload
    scored = w.scored & ~np.isnan(result.latency_s)
    slo_attainment: dict[str, float] = {}
    p50: dict[str, float] = {}
    p99: dict[str, float] = {}
    requests: dict[str, int] = {}
    rejected: dict[str, int] = {}
    met_total = counted = 0
    for p, profile in enumerate(w.profiles):
        mine = scored & (w.profile == p)
        latency, dropped = result.latency_s[mine], result.rejected[mine]
        if not len(latency):
            continue
        requests[profile.name] = len(latency)
        rejected[profile.name] = int(dropped.sum())
        p50[profile.name] = _ms(latency, 50)
        p99[profile.name] = _ms(latency, 99)
        if profile.slo_ms is not None:
            share = attainment(latency, dropped, profile.slo_ms)
            slo_attainment[profile.name] = share
            met_total += round(share * len(latency))
            counted += len(latency)
    everyone = result.latency_s[scored]
    p50[OVERALL], p99[OVERALL] = _ms(everyone, 50), _ms(everyone, 99)
    never = w.scored & np.isnan(result.latency_s)
    churn = result.extras.get("shard_churn")
    extra = {"shard_churn": churn.as_json(w.hours * 3600.0)} if churn is not None else {}
    return {
        "slo_attainment": {
            OVERALL: met_total / counted if counted else float("nan"),
            **slo_attainment,
        },
        "p50_ms": p50,
        "p99_ms": p99,
        "block_hours": round(result.block_hours, 3),
        "cost_hours": round(result.cost_hours, 3),
        "rejected": int(result.rejected[scored].sum()),
        "rejected_per_profile": rejected,
        "requests": requests,
        "unfinished": int(never.sum()),
        **extra,
    }


def meets(summary: dict[str, object], target: float) -> bool:
    """Whether every profile with an SLO attains ``target`` (the equal-target criterion)."""
    shares = summary["slo_attainment"]
    assert isinstance(shares, dict)
    return all(share >= target for name, share in shares.items() if name != OVERALL)


def _ms(latency_s: np.ndarray, q: float) -> float:
    return round(float(np.percentile(latency_s, q)) * 1000.0, 1) if len(latency_s) else float("nan")
