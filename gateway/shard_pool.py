"""One in-process pool: its key, limits, live counts and queue, and how it turns requests away.

A pool is plain state; :class:`~shardshape.gateway.pools.ShardPools` admits requests to its
pools, queues and releases them, and resizes them with each plan.

>>> str(PoolKey(3)), str(PoolKey(3, "b")), str(PoolKey(None))
('shard 3', 'shard 3 arm b', 'default')
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from dataclasses import dataclass
from typing import Literal, NamedTuple

from shardshape.gateway.bandwidth import TokenBucket
from shardshape.gateway.cache import ShardCache
from shardshape.gateway.limits import PoolLimits

RejectReason = Literal["queue_full", "queue_timeout", "memory"]
_MAX_RETRY_S = 60.0
_HOLD_EWMA = 0.1


class PoolKey(NamedTuple):
    """Which pool: a shard (``None`` for the default or shared pool) and an experiment arm."""

    shard_id: int | None
    arm: str | None = None

    def __str__(self) -> str:
        name = "default" if self.shard_id is None else f"shard {self.shard_id}"
        return f"{name} arm {self.arm}" if self.arm else name


class ShardRejected(Exception):
    """A request the pool turned away at once; answer 503 with ``Retry-After``.

    Attributes
    ----------
    reason
        ``queue_full``, ``queue_timeout`` or ``memory`` (larger than the pool's whole budget).
    pool
        The name of the pool that rejected it (``shard 3``, ``shard 3 arm b``, ``default``).
    retry_after_s
        When a retry has a fair chance: the pool's queue drain time, or a plan interval.
    """

    def __init__(self, reason: RejectReason, pool: str, retry_after_s: float, why: str) -> None:
        super().__init__(f"{pool} pool rejected the request ({reason}): {why}")
        self.reason = reason
        self.pool = pool
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class PoolState:
    """A pool at one moment, for ``shardshape doctor``, status pages and tests."""

    name: str
    key: PoolKey
    limits: PoolLimits
    in_use: int
    queued: int
    memory_in_use_mib: float
    admitted: int
    completed: int
    rejected: dict[str, int]
    cache_entries: int
    cache_hits: int
    cache_misses: int
    draining: bool
    lent: int = 0  # requests that ran on this pool's slots for another pool
    borrowed: int = 0  # requests of this pool that ran on another pool's slots


Grant = asyncio.Future["ShardPool | None"] | concurrent.futures.Future["ShardPool | None"]


class Waiter:
    """A request waiting in a pool's queue for ``memory`` MiB and a slot.

    Its future's result is the pool that lends the slot, or None for one of the pool's own: an
    asyncio future for a request on the event loop, a concurrent one for a thread's.
    """

    __slots__ = ("future", "memory")

    def __init__(self, future: Grant, memory: float) -> None:
        self.future = future
        self.memory = memory


class ShardPool:
    """One pool's limits and live counts. Its owner,
    :class:`~shardshape.gateway.pools.ShardPools`, admits and releases."""

    def __init__(self, key: PoolKey, limits: PoolLimits, name: str | None = None) -> None:
        self.key = key
        self.name = name or str(key)
        self.limits = limits
        self.in_use = 0
        self.memory_in_use = 0.0
        self.waiters: deque[Waiter] = deque()
        self.bucket = TokenBucket(limits.net_bytes_per_s)
        self.cache = ShardCache(limits.cache)
        self.admitted = 0
        self.completed = 0
        self.rejected: dict[str, int] = {}
        self.draining = False
        self.lent = 0
        self.borrowed = 0
        self.pass_ = 0.0
        self.hold_s = 0.05  # moving average of how long a request holds a slot

    def fits(self, memory: float) -> bool:
        limits = self.limits
        if self.in_use >= limits.concurrency:
            return False
        return not limits.memory_mib or self.memory_in_use + memory <= limits.memory_mib

    def reconfigure(self, limits: PoolLimits) -> None:
        """New limits for the same pool: slots and budgets change, in-flight requests stay."""
        if limits.net_bytes_per_s != self.limits.net_bytes_per_s:
            self.bucket.set_rate(limits.net_bytes_per_s)
        self.cache.reconfigure(limits.cache)
        self.limits = limits

    def record_hold(self, held_s: float) -> None:
        """A request held a slot for ``held_s`` seconds (for :meth:`retry_after_s`)."""
        self.hold_s += _HOLD_EWMA * (held_s - self.hold_s)

    def retry_after_s(self) -> float:
        drain = self.hold_s * (len(self.waiters) + 1) / self.limits.concurrency
        return min(max(drain, 0.05), _MAX_RETRY_S)

    def state(self) -> PoolState:
        return PoolState(
            name=self.name,
            key=self.key,
            limits=self.limits,
            in_use=self.in_use,
            queued=len(self.waiters),
            memory_in_use_mib=self.memory_in_use,
            admitted=self.admitted,
            completed=self.completed,
            rejected=dict(self.rejected),
            cache_entries=len(self.cache),
            cache_hits=self.cache.hits,
            cache_misses=self.cache.misses,
            draining=self.draining,
            lent=self.lent,
            borrowed=self.borrowed,
        )
