"""The ``mixed`` scenario: five request profiles over a daily cycle, with a ramp and a drift.

=============  ====================  =====================  ==============  ======  =========
profile        request type          who                    demand          SLO     rate
=============  ====================  =====================  ==============  ======  =========
interactive    ``GET /api/item``     3,000 users            4 ms CPU,       200 ms  12/s peak
                                                            16 kB out
export         ``POST /export``      400 users              1.5 s CPU       30 s    2.5/s peak
                                                            (3 s after the
                                                            drift)
batch          ``GET /api/item``     tenant ``batch-0..3``  150 ms CPU      120 s   0.3/s, and
                                                                                    bursts of
                                                                                    1,500 in
                                                                                    30 s
download       ``GET /download``     1,500 users            20 MB out       30 s    4/s peak
scraper        ``GET /api/item``     ``scraper-bot``        4 ms CPU,       none    6/s, 10-16 h
                                                            80% errors
=============  ====================  =====================  ==============  ======  =========

Demands have a log-normal spread (sigma 0.3, 0.35 for downloads). The daily cycle
(:func:`daily_factor`) is quiet at night, **ramps** from 0.2 to 1.0 between 07:45 and 08:00,
and eases off in the evening; the batch tenant bursts about every 20 minutes between 06:00
and 22:00; at 13:00 exports **drift** to twice their CPU. The batch tenant and the scraper
share the interactive profile's request type, so only behaviour (who calls, how it goes)
tells them apart. The scored day runs from 00:00 to 24:00 after ``warmup_h`` hours of the
evening before; ``history`` is the day before that, as logs a static sizing would read.

>>> w = mixed_workload(hours=0.5, warmup_h=0.25, seed=3, start_h=10.0)
>>> sorted({w.profiles[p].name for p in w.profile.tolist()})
['batch', 'download', 'export', 'interactive', 'scraper']
>>> daily_factor(np.array([3.0, 8.0, 13.0])).round(2).tolist()
[0.18, 1.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shardshape.allocator.blocks import BlockType
from shardshape.allocator.pools_config import PoolsConfig, parse_pools_config
from shardshape.allocator.simulate.workload import Profile, Workload, service_times

SERVICE = "shop"
PROFILES = (
    Profile("interactive", slo_ms=200.0),
    Profile("export", slo_ms=30_000.0),
    Profile("batch", slo_ms=120_000.0),
    Profile("download", slo_ms=30_000.0),
    Profile("scraper", slo_ms=None, anomalous=True),
)
TYPES = ("GET /api/item", "POST /export", "GET /download")
DRIFT_H = 13.0
# (hour, factor) knots of the daily cycle, linear in between.
_KNOTS = np.array(
    [
        (0.0, 0.22), (6.0, 0.15), (7.75, 0.2), (8.0, 1.0), (12.0, 0.85), (13.0, 1.0),
        (17.0, 0.9), (19.0, 0.55), (22.0, 0.35), (24.0, 0.22),
    ]
)  # fmt: skip


@dataclass(frozen=True)
class _Spec:
    profile: int
    request_type: int
    peak_rps: float
    cpu_s: float
    response_bytes: float
    payload_bytes: float
    error_rate: float
    sigma: float = 0.3


_SPECS = (
    _Spec(0, 0, 12.0, 0.004, 16_000, 300, 0.002),
    _Spec(1, 1, 2.5, 1.5, 400_000, 1_000, 0.01),
    _Spec(3, 2, 4.0, 0.02, 20_000_000, 200, 0.005, sigma=0.35),
)
_BATCH = _Spec(2, 0, 0.3, 0.15, 100_000, 5_000, 0.01)
_SCRAPER = _Spec(4, 0, 6.0, 0.004, 2_000, 300, 0.8)
_BURST_SIZE, _BURST_S, _BURST_GAP_S = 1_500, 30.0, 1_200.0


def daily_factor(hours: np.ndarray) -> np.ndarray:
    """Share of the peak rate at each hour of the day (periodic)."""
    return np.interp(np.mod(hours, 24.0), _KNOTS[:, 0], _KNOTS[:, 1])


def pools_config(
    quarantine_shard: int = 8, target_utilisation: float = 0.7, min_blocks: int = 1
) -> PoolsConfig:
    """The scenario's pool: one block type (1 core, 4 slots, 100 Mbit/s), plenty of blocks.

    The quarantine shard gets priority 0 and no minimum, as in ``examples/pools.toml``.
    """
    release = round(min(0.5, target_utilisation - 0.1), 3)
    return parse_pools_config(
        f"""
[block_types.block]
cpu_millicores = 1000
memory_mib = 1024
io_weight = 100
net_mbit = 100
concurrency = 4
cost = 1.0

[pools.main]
blocks = {{ block = 2000 }}

[planning]
target_utilisation = {target_utilisation}
release_below_utilisation = {release}
block_rounding = "pool"

[services.{SERVICE}]
pool = "main"
priority = 100
min_blocks = {min_blocks}
prior_rps_per_core = 1

[services.{SERVICE}.shards.{quarantine_shard}]
priority = 0
min_blocks = 0
""",
        source="mixed scenario pools",
    )


def mixed_workload(
    hours: float = 24.0,
    warmup_h: float = 3.0,
    seed: int = 0,
    block_types: tuple[BlockType, ...] | None = None,
    drift: bool = True,
    start_h: float = 0.0,
) -> Workload:
    """The scenario's requests from ``start_h - warmup_h`` to ``start_h + hours`` (hour 0 is
    midnight of the scored day; scoring starts at ``start_h``)."""
    if hours <= 0 or warmup_h < 0:
        raise ValueError(f"hours={hours} must be positive and warmup_h={warmup_h} not negative")
    blocks = block_types or tuple(pools_config().block_types.values())
    start = start_h * 3600.0
    return _generate(
        start - warmup_h * 3600.0, start + hours * 3600.0, seed, blocks, drift, score_from=start
    )


def mixed_history(
    warmup_h: float = 3.0,
    seed: int = 0,
    block_types: tuple[BlockType, ...] | None = None,
    start_h: float = 0.0,
) -> Workload:
    """The day before the run (no drift yet): what a static sizing reads from its logs."""
    blocks = block_types or tuple(pools_config().block_types.values())
    end = (start_h - warmup_h) * 3600.0
    return _generate(end - 86_400.0, end, seed + 7_919, blocks, drift=False, score_from=end)


def _generate(
    t0: float,
    t1: float,
    seed: int,
    blocks: tuple[BlockType, ...],
    drift: bool,
    score_from: float,
) -> Workload:
    rng = np.random.default_rng(seed)
    seconds = np.arange(np.floor(t0), np.ceil(t1))
    factor = daily_factor(seconds / 3600.0)
    parts = []
    for spec in _SPECS:
        counts = rng.poisson(spec.peak_rps * factor)
        parts.append((spec, _times(rng, seconds, counts)))
    steady = rng.poisson(np.where(_busy_hours(seconds), _BATCH.peak_rps, 0.0))
    batch = np.concatenate([_times(rng, seconds, steady), _bursts(rng, t0, t1)])
    parts.append((_BATCH, np.sort(batch)))
    active = (np.mod(seconds / 3600.0, 24.0) >= 10.0) & (np.mod(seconds / 3600.0, 24.0) < 16.0)
    parts.append((_SCRAPER, _times(rng, seconds, rng.poisson(_SCRAPER.peak_rps * active))))

    arrival = np.concatenate([t for _, t in parts])
    n_of = [len(t) for _, t in parts]
    spec_of = np.repeat(np.arange(len(parts)), n_of)
    specs = [s for s, _ in parts]
    order = np.argsort(arrival, kind="stable")
    arrival, spec_of = arrival[order], spec_of[order]
    n = len(arrival)
    pick = np.asarray(specs, dtype=object)[spec_of]
    profile = np.array([s.profile for s in pick], dtype=np.int64)
    request_type = np.array([s.request_type for s in pick], dtype=np.int64)

    def lognormal(field: str) -> np.ndarray:
        median = np.array([getattr(s, field) for s in specs])[spec_of]
        sigma = np.array([s.sigma for s in specs])[spec_of]
        return median * np.exp(rng.normal(0.0, 1.0, n) * sigma)

    cpu = lognormal("cpu_s")
    if drift:
        cpu[(profile == 1) & (arrival >= DRIFT_H * 3600.0)] *= 2.0
    response = lognormal("response_bytes")
    payload = np.round(lognormal("payload_bytes"))
    error = rng.random(n) < np.array([s.error_rate for s in specs])[spec_of]
    return Workload(
        service=SERVICE,
        profiles=PROFILES,
        block_types=blocks,
        arrival=arrival,
        profile=profile,
        request_type=request_type,
        type_names=TYPES,
        user=_users(rng, profile),
        payload=payload,
        response=response,
        error=error,
        service_s=service_times(np.zeros(n), cpu, response, blocks),
        attributes=_attributes(rng, profile),
        start=float(t0),
        score_from=float(score_from),
        end=float(t1),
    )


def _times(rng: np.random.Generator, seconds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Poisson arrivals: ``counts[i]`` uniform times within second ``seconds[i]``."""
    return np.repeat(seconds, counts) + rng.random(int(counts.sum()))


def _busy_hours(seconds: np.ndarray) -> np.ndarray:
    hour = np.mod(seconds / 3600.0, 24.0)
    return (hour >= 6.0) & (hour < 22.0)


def _bursts(rng: np.random.Generator, t0: float, t1: float) -> np.ndarray:
    """The batch tenant's bursts: about every 20 minutes from 06:00 to 22:00."""
    starts = []
    t = t0 + rng.exponential(_BURST_GAP_S)
    while t < t1 - _BURST_S:
        if _busy_hours(np.array([t]))[0]:
            starts.append(t)
        t += rng.exponential(_BURST_GAP_S)
    if not starts:
        return np.zeros(0)
    return np.concatenate([s + rng.random(_BURST_SIZE) * _BURST_S for s in starts])


def _users(rng: np.random.Generator, profile: np.ndarray) -> list[str]:
    n = len(profile)
    sizes = {0: 3_000, 1: 400, 3: 1_500}
    users = np.empty(n, dtype=object)
    for p, size in sizes.items():
        rows = np.flatnonzero(profile == p)
        users[rows] = [f"u{i}" for i in rng.integers(0, size, len(rows)).tolist()]
    rows = np.flatnonzero(profile == 2)
    users[rows] = [f"batch-{i}" for i in rng.integers(0, 4, len(rows)).tolist()]
    users[profile == 4] = "scraper-bot"
    return users.tolist()


def _attributes(rng: np.random.Generator, profile: np.ndarray) -> list[dict]:
    # Shared dicts (never mutated): one per distinct attribute set.
    eu, us = {"region": "eu"}, {"region": "us"}
    csv, xlsx = {"region": "eu", "format": "csv"}, {"region": "eu", "format": "xlsx"}
    region = rng.random(len(profile)) < 0.6
    fmt = rng.random(len(profile)) < 0.7
    out = []
    for p, r, f in zip(profile.tolist(), region.tolist(), fmt.tolist(), strict=True):
        if p == 1:
            out.append(csv if f else xlsx)
        else:
            out.append(eu if r or p >= 2 else us)
    return out
