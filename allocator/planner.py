"""Planning one pool over time: shard demands from forecasts, a minimum interval, smoothing.

The planner timer keeps one :class:`PoolPlanner` per pool and calls :meth:`PoolPlanner.plan`
on every tick with the demands of every shard of every service in the pool, so the pool bound
holds for all of them together.

>>> from shardshape.allocator.pools_config import parse_pools_config
>>> config = parse_pools_config('''
... [block_types.small]
... cpu_millicores = 500
... memory_mib = 256
... cost = 1.0
... [pools.main]
... blocks = { small = 10 }
... [services.shop]
... pool = "main"
... ''')
>>> planner = PoolPlanner.from_config(config, "main")
>>> demand = ShardDemand("shop", 0, demand_rps=70, capacity_rps={"small": 50},
...                      target_utilisation=0.7)
>>> step = planner.plan([demand], now=0.0)
>>> step.replanned, step.allocation.shards["shop", 0].blocks
(True, {'small': 2})
>>> planner.plan([demand], now=5.0).reason
'held: the last plan is 5 s old, the minimum interval is 30 s'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from shardshape.allocator.calibration import Calibrator, CapacityEstimate, ShardKey
from shardshape.allocator.optimiser import Allocation, ShardDemand, Smoothing, solve
from shardshape.allocator.pooling import pool_rounded
from shardshape.allocator.pools_config import PoolsConfig


@dataclass(frozen=True, slots=True)
class PlanStep:
    """What one tick decided: the allocation in force, whether it is new, and why."""

    allocation: Allocation
    replanned: bool
    reason: str


class PoolPlanner:
    """Keeps one pool's last allocation and decides when and how far it may change.

    Within ``min_interval_s`` of the last plan the previous allocation stays in force, unless a
    shard is new or its forecast exceeds the full capacity of what it holds (overload does not
    wait). Every new plan starts from the previous one under ``smoothing``.
    """

    def __init__(
        self,
        pool_id: str,
        pool: Mapping[str, int],
        costs: Mapping[str, float],
        *,
        smoothing: Smoothing | None = None,
        min_interval_s: float = 30.0,
        pooled: bool = False,
    ) -> None:
        self.pool_id = pool_id
        self.pool = dict(pool)
        self.costs = dict(costs)
        self.smoothing = smoothing or Smoothing()
        self.min_interval_s = min_interval_s
        self.pooled = pooled
        self.previous: Allocation | None = None
        self.last_ts: float | None = None

    @classmethod
    def from_config(cls, config: PoolsConfig, pool_id: str) -> PoolPlanner:
        """A planner for ``pool_id`` with the pool, costs and ``[planning]`` of ``config``."""
        if pool_id not in config.pools:
            known = ", ".join(sorted(config.pools)) or "(none)"
            raise KeyError(f"pool {pool_id!r} is not in the pools config; known: {known}")
        policy = config.planning
        return cls(
            pool_id,
            config.pools[pool_id].blocks,
            {name: bt.cost for name, bt in config.pool_block_types(pool_id).items()},
            smoothing=Smoothing(
                max_step_up=policy.max_step_up,
                max_step_down=policy.max_step_down,
                step_fraction=policy.step_fraction,
                release_below_utilisation=policy.release_below_utilisation,
            ),
            min_interval_s=policy.min_interval_s,
            pooled=policy.block_rounding == "pool",
        )

    def plan(self, demands: Sequence[ShardDemand], *, now: float, force: bool = False) -> PlanStep:
        """Re-plan the pool if it is time (or urgent), else keep the allocation in force."""
        if self.pooled:
            demands = pool_rounded(demands, self.costs)
        if self.previous is not None and self.last_ts is not None and not force:
            age = now - self.last_ts
            urgent = self._urgent(demands, self.previous)
            if age < self.min_interval_s and not urgent:
                return PlanStep(
                    self.previous,
                    False,
                    f"held: the last plan is {age:.0f} s old, "
                    f"the minimum interval is {self.min_interval_s:.0f} s",
                )
        previous = self.previous.blocks() if self.previous is not None else None
        allocation = solve(
            demands, self.pool, self.costs, previous=previous, smoothing=self.smoothing
        )
        self.previous, self.last_ts = allocation, now
        return PlanStep(allocation, True, "first plan" if previous is None else "re-planned")

    @staticmethod
    def _urgent(demands: Sequence[ShardDemand], previous: Allocation) -> str:
        for d in demands:
            held = previous.shards.get(d.key)
            if held is None:
                return f"shard {d.key} is new"
            capacity = sum(d.capacity_rps.get(t, 0.0) * n for t, n in held.blocks.items())
            # A shard the pool could not cover last time stays short until the pool changes:
            # urgent only when its demand grew past what that plan was made for.
            if d.demand_rps > max(capacity, held.demand.demand_rps if held.shortfall_rps else 0):
                return f"shard {d.key} is overloaded"
        return ""


def shard_demands(
    config: PoolsConfig,
    calibrator: Calibrator,
    pool_id: str,
    forecasts: Mapping[ShardKey, float],
    means: Mapping[ShardKey, float] | None = None,
    quantiles: Mapping[ShardKey, float] | None = None,
) -> list[ShardDemand]:
    """Optimiser inputs for every forecast shard of the services in ``pool_id``.

    ``forecasts`` maps (service, shard id) to the forecast at ``[planning].forecast_quantile``
    (or at the shard's own quantile in ``quantiles``: 0.5 for a shard planned at its mean);
    shards of services in other pools are ignored. With the mean forecasts (``means``), a
    shard's capacities are :func:`joint_capacity`: demand and capacity uncertainty make one
    quantile of load together. Without, they are the calibrator's conservative estimates.
    """
    services = set(config.services_of(pool_id))
    quantiles = quantiles or {}
    demands = []
    for (service, shard_id), rps in sorted(forecasts.items()):
        if service not in services:
            continue
        settings = config.shard_settings(service, shard_id)
        q = quantiles.get((service, shard_id), config.planning.forecast_quantile)
        if means is None:
            capacity = calibrator.capacities(service, shard_id, settings.block_types)
        else:
            mean = means.get((service, shard_id), rps)
            capacity = {
                t: joint_capacity(calibrator.estimate(service, shard_id, t), mean, rps, q)
                for t in settings.block_types
            }
        demands.append(
            ShardDemand(
                service=service,
                shard_id=shard_id,
                demand_rps=rps,
                capacity_rps=capacity,
                priority=settings.priority,
                min_blocks=settings.min_blocks,
                target_utilisation=settings.target_utilisation,
                quantile=q,
                slo_p99_ms=settings.slo_p99_ms,
                mean_rps=None if means is None else means.get((service, shard_id), rps),
            )
        )
    return demands


def joint_capacity(
    estimate: CapacityEstimate, mean_rps: float, quantile_rps: float, q: float
) -> float:
    """The per-block capacity that makes ``quantile_rps`` over it the ``q`` quantile of load.

    Load (blocks needed) is demand over capacity, two independent uncertain quantities.
    Planning with the ``q`` quantile of demand over a low quantile of capacity stacks two
    margins: both would have to go wrong at once, which is rarer than ``q`` says. Taken as
    log-normal, ``log(load)`` has sd ``hypot(s_d, s_c)``: ``s_d`` is the forecast's (from its
    quantile over its mean), ``s_c`` the calibration's relative sd. The capacity returned is
    ``mean * exp(-z (hypot(s_d, s_c) - s_d))`` with ``z`` the normal ``q`` quantile, so the
    demand quantile over it is the ``q`` quantile of load: only the part of the capacity
    uncertainty the demand band does not already cover is added.

    >>> est = CapacityEstimate(mean_rps=10.0, sd_rps=1.0, conservative_rps=9.0,
    ...                        confidence=0.8, completions=1e4)
    >>> round(joint_capacity(est, 100.0, 100.0, 0.9), 2)  # no demand spread: capacity's alone
    8.8
    >>> round(joint_capacity(est, 100.0, 130.0, 0.9), 2)  # a wide demand band covers most
    9.71
    """
    mean_c = estimate.mean_rps
    if mean_c <= 0:
        return 0.0
    z = NormalDist().inv_cdf(q)
    if z <= 0:
        return mean_c
    s_c = estimate.sd_rps / mean_c
    if quantile_rps > 0 and mean_rps <= 0:
        return mean_c  # a band with no mean under it covers any capacity spread
    s_d = math.log(quantile_rps / mean_rps) / z if quantile_rps > mean_rps > 0 else 0.0
    return mean_c * math.exp(-z * (math.hypot(s_d, s_c) - s_d))


def calibrator_for(config: PoolsConfig, **options: float) -> Calibrator:
    """A :class:`Calibrator` over every block type of ``config``, with each service's
    ``prior_rps_per_core`` as its prior; ``options`` go to :class:`Calibrator`."""
    priors = {name: svc.prior_rps_per_core for name, svc in config.services.items()}
    return Calibrator(config.block_types, service_priors=priors, **options)
