"""In-process shard pools: each shard runs its requests in its own slots, queue and budgets.

Per pool (one per shard of the plan, one per arm of a running experiment, plus the default
pool): a number of slots, a bounded FIFO queue whose waiters time out, a memory budget that
admits a request only when its expected memory fits, a token bucket for response bytes, and a
cache. A full queue, a queue timeout, or a request larger than the whole memory budget raises
:class:`ShardRejected` at once, with a retry hint; nothing waits without a deadline. A shard
only ever takes its own slots, so one shard's overload leaves the others' slots free.

Optionally the pools also share a budget of ``total_slots`` (the process's own limit). When a
plan over-commits it, waiting pools are served by stride scheduling on their ``io_weight``:
each grant advances a pool's pass by ``1 / io_weight`` and the waiting pool with the lowest pass
goes next, so a shard of weight 300 gets three slots for every one of a shard of weight 100,
and no waiting shard starves. A pool that was idle joins at the current pass, so idling
banks no credit.

Optionally (``lending``) the pools are work-conserving: a shard's planned slots are its
reservation, and a request whose pool has no free slot borrows an idle slot of another pool
(another shard's or the default pool) by the rule of :mod:`shardshape.allocator.lending`: only
from a pool with no waiters of its own that keeps its reserve of idle slots, and from a pool of
higher priority only when the policy lends ``to_lower`` (it then keeps at least one slot idle).
A borrowed request holds the lender's slot (and memory) and keeps its own pool's cache,
bandwidth and counts. Experiment arms neither lend nor borrow (an arm is measured on its own
resources).

One pool's state and its rejections live in :mod:`shardshape.gateway.shard_pool`, a request's
slot and :func:`current_slot` in :mod:`shardshape.gateway.slots`, and what a plan asks of the
pools in :mod:`shardshape.gateway.pool_layout`. :class:`ShardPools` stays one class of ~470
lines because admission, the queues, stride order and lending read and change one state (each
pool's counts and queue, the waiting pools, the shared slot count and pass) in one step, on the
event loop or under one lock; pulled apart, each piece would reach into the others' internals.

>>> import asyncio
>>> pools = ShardPools(PoolDefaults(concurrency=1, queue_size=0))
>>> async def two_at_once():
...     async with pools.slot(7):
...         try:
...             async with pools.slot(7):
...                 pass
...         except ShardRejected as rejected:
...             return rejected.reason
>>> asyncio.run(two_at_once())  # the default pool has one slot and no queue
'queue_full'
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING

from shardshape.allocator.lending import Lender, LendingPolicy, choose_lender
from shardshape.core.contracts import AllocationPlan
from shardshape.gateway.limits import PoolDefaults
from shardshape.gateway.pool_layout import ArmPools, PoolLayout, plan_layout
from shardshape.gateway.shard_pool import (
    Grant,
    PoolKey,
    PoolState,
    RejectReason,
    ShardPool,
    ShardRejected,
    Waiter,
)
from shardshape.gateway.slots import Binding, Slot, current_slot

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from shardshape.core.settings import GatewaySettings

log = logging.getLogger("shardshape.gateway.pools")

_MEMORY_RETRY_S = 30.0  # a request larger than its whole budget fits only after a new plan

# The pools' API, imported from here wherever its names live.
__all__ = [
    "PoolDefaults",
    "PoolKey",
    "PoolState",
    "ShardPool",
    "ShardPools",
    "ShardRejected",
    "Slot",
    "current_slot",
]


class _SlotContext:
    __slots__ = ("_binding", "_key", "_memory", "_pools", "_shard", "_slot")

    def __init__(self, pools: ShardPools, shard_id: int, memory: float, key: str) -> None:
        self._pools = pools
        self._shard = shard_id
        self._memory = memory
        self._key = key

    async def __aenter__(self) -> Slot:
        slot = self._pools._acquire(self._shard, self._memory, self._key)
        return self._enter(slot if isinstance(slot, Slot) else await slot)

    async def __aexit__(self, *exc_info: object) -> None:
        self._pools._release(self._exit())

    def __enter__(self) -> Slot:
        return self._enter(self._pools._acquire_blocking(self._shard, self._memory, self._key))

    def __exit__(self, *exc_info: object) -> None:
        slot = self._exit()
        with self._pools._lock:
            self._pools._release(slot)

    def _enter(self, slot: Slot) -> Slot:
        slot.shard_id = self._shard
        self._slot = slot
        self._binding = Binding(slot)
        return slot

    def _exit(self) -> Slot:
        self._binding.undo()
        return self._slot


class ShardPools:
    """Every pool of one gateway process, resized by live plans (a ``PlanBackend``).

    Parameters
    ----------
    defaults
        The default pool's limits and the queue defaults for plans that give none.
    shaping
        ``False`` runs every request in one shared pool holding the plan's total resources
        (for comparison; nothing is isolated).
    total_slots
        Slots shared by all pools (0: none beyond each pool's own). See the module docstring
        for how ``io_weight`` orders waiting pools when this budget binds.
    lending
        The rule by which a busy pool borrows idle slots of others (``None``: no lending,
        every pool takes only its own slots). See :mod:`shardshape.allocator.lending`.
    """

    def __init__(
        self,
        defaults: PoolDefaults | None = None,
        *,
        shaping: bool = True,
        total_slots: int = 0,
        lending: LendingPolicy | None = None,
    ) -> None:
        if total_slots < 0:
            raise ValueError(f"total_slots must be >= 0 (0 = no shared budget), got {total_slots}")
        self.defaults = defaults or PoolDefaults()
        self.shaping = shaping
        self.total_slots = total_slots
        self.lending = lending if shaping else None
        self.plan_version = 0
        self._default = ShardPool(PoolKey(None), self.defaults.default_pool())
        self._shared = ShardPool(PoolKey(None), self.defaults.default_pool(), name="shared")
        self._pools: dict[PoolKey, ShardPool] = {}
        self._routes: dict[int, ShardPool] = {}
        self._arms: dict[int, ArmPools] = {}
        self._draining: list[ShardPool] = []
        self._queued: set[ShardPool] = set()
        self._waiting: dict[int, int] = {}  # predicted shard -> requests waiting in any pool
        self._in_use = 0
        self._vtime = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ShardPools:
        """Pools as the ``gateway_*`` settings say."""
        return cls(
            PoolDefaults(
                concurrency=settings.gateway_default_concurrency,
                queue_size=settings.gateway_queue_size,
                queue_timeout_s=settings.gateway_queue_timeout_ms / 1000,
            ),
            shaping=settings.gateway_shaping,
            total_slots=settings.gateway_total_slots,
            lending=(
                LendingPolicy(settings.gateway_lending_reserve, settings.gateway_lending_to_lower)
                if settings.gateway_lending
                else None
            ),
        )

    # -- requests ---------------------------------------------------------------------------
    def slot(
        self, shard_id: int, *, expected_memory_mib: float = 0.0, key: str = ""
    ) -> _SlotContext:
        """``async with pools.slot(shard)`` holds one slot of the shard's pool for the block.

        ``key`` picks the arm when the shard runs an experiment (the same key, the same arm).
        Raises :class:`ShardRejected` when the pool cannot take the request.
        """
        return _SlotContext(self, shard_id, expected_memory_mib, key)

    def hold(
        self, shard_id: int, *, expected_memory_mib: float = 0.0, key: str = ""
    ) -> _SlotContext:
        """``with pools.hold(shard)``: :meth:`slot` for threads (WSGI), blocking while queued.

        The same pools, queue, timeout and rejections; one ``ShardPools`` serves either one
        event loop or threads, not both.

        >>> import threading
        >>> pools = ShardPools(PoolDefaults(concurrency=1, queue_size=1, queue_timeout_s=0.05))
        >>> with pools.hold(7):
        ...     outcome = []
        ...     waiter = threading.Thread(target=lambda: outcome.append(_try_hold(pools, 7)))
        ...     waiter.start(); waiter.join()
        >>> outcome  # the one slot was held: the second request queued, then timed out
        ['queue_timeout']
        """
        return _SlotContext(self, shard_id, expected_memory_mib, key)

    def pool_for(self, shard_id: int, key: str = "") -> ShardPool:
        """The pool a request of ``shard_id`` runs in now."""
        if not self.shaping:
            return self._shared
        if self._arms:
            arms = self._arms.get(shard_id)
            if arms is not None:
                return arms.pick(key)
        return self._routes.get(shard_id, self._default)

    def _acquire(self, shard_id: int, memory: float, key: str) -> Slot | Awaitable[Slot]:
        """A slot now if the pool has one free, else the wait for one (a coroutine to await).

        Not a coroutine itself: most requests find a free slot and should not pay for one.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        pool, slot = self._admit(shard_id, memory, key)
        if slot is not None:
            return slot
        return self._wait(loop, pool, memory, shard_id)

    def _acquire_blocking(self, shard_id: int, memory: float, key: str) -> Slot:
        with self._lock:
            loop = self._loop
            if loop is not None and not loop.is_closed() and loop.is_running():
                raise RuntimeError(
                    "these ShardPools serve an event loop: use `async with pools.slot(...)` "
                    "there, and ShardPools of their own for threads (pools.hold)"
                )
            pool, slot = self._admit(shard_id, memory, key)
            if slot is not None:
                return slot
            waiter = self._enqueue(pool, concurrent.futures.Future(), memory, shard_id)
        started = time.monotonic()
        try:
            lender = waiter.future.result(timeout=pool.limits.queue_timeout_s)
        except concurrent.futures.TimeoutError:
            with self._lock:
                self._expire(pool, waiter)
            lender = waiter.future.result(0)  # granted just before the timeout, else raises
        finally:
            with self._lock:
                self._stop_waiting(shard_id)
        return Slot(pool, memory, time.monotonic() - started, lender)

    def _admit(self, shard_id: int, memory: float, key: str) -> tuple[ShardPool, Slot | None]:
        """A slot granted at once, or the pool to wait in; raises when it rejects at once."""
        pool = self.pool_for(shard_id, key)
        limits = pool.limits
        if limits.memory_mib and memory > limits.memory_mib:
            raise self._reject(
                pool,
                "memory",
                f"the request expects {memory:g} MiB and the pool's whole budget is "
                f"{limits.memory_mib:g} MiB: give the shard more memory in the plan or lower "
                "the request's expected memory",
            )
        if not pool.waiters and self._shared_free():
            if pool.fits(memory):
                self._grant(pool, memory)
                return pool, Slot(pool, memory, 0.0)
            lender = self._lender(pool, memory)
            if lender is not None:
                self._grant(pool, memory, lender)
                return pool, Slot(pool, memory, 0.0, lender)
        if len(pool.waiters) >= limits.queue_size:
            raise self._reject(
                pool,
                "queue_full",
                f"{pool.in_use} of {limits.concurrency} slots busy and {len(pool.waiters)} "
                f"waiting (queue size {limits.queue_size})",
            )
        return pool, None

    def _enqueue(self, pool: ShardPool, future: Grant, memory: float, shard_id: int) -> Waiter:
        waiter = Waiter(future, memory)
        if not pool.waiters:
            pool.pass_ = max(pool.pass_, self._vtime)
        pool.waiters.append(waiter)
        self._queued.add(pool)
        self._waiting[shard_id] = self._waiting.get(shard_id, 0) + 1
        return waiter

    async def _wait(
        self, loop: asyncio.AbstractEventLoop, pool: ShardPool, memory: float, shard_id: int
    ) -> Slot:
        waiter = self._enqueue(pool, loop.create_future(), memory, shard_id)
        started = time.monotonic()
        timer = loop.call_later(pool.limits.queue_timeout_s, self._expire, pool, waiter)
        try:
            lender = await waiter.future
        except asyncio.CancelledError:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                # granted just before the cancel
                self._release(Slot(pool, memory, 0.0, future.result()))
            else:
                self._forget(pool, waiter)
            raise
        finally:
            timer.cancel()
            self._stop_waiting(shard_id)
        return Slot(pool, memory, time.monotonic() - started, lender)

    def _stop_waiting(self, shard_id: int) -> None:
        left = self._waiting[shard_id] - 1
        if left:
            self._waiting[shard_id] = left
        else:
            del self._waiting[shard_id]

    def _expire(self, pool: ShardPool, waiter: Waiter) -> None:
        if waiter.future.done():
            return
        timeout = pool.limits.queue_timeout_s
        waiter.future.set_exception(
            self._reject(
                pool,
                "queue_timeout",
                f"waited {timeout:g} s in the queue with {pool.in_use} of "
                f"{pool.limits.concurrency} slots busy",
            )
        )
        self._forget(pool, waiter)

    def _forget(self, pool: ShardPool, waiter: Waiter) -> None:
        with contextlib.suppress(ValueError):  # already granted, expired or skipped
            pool.waiters.remove(waiter)
        self._retire_if_drained(pool)
        self._dispatch(pool)  # a blocked head may have gone: those behind it may fit now

    def _reject(self, pool: ShardPool, reason: RejectReason, why: str) -> ShardRejected:
        pool.rejected[reason] = pool.rejected.get(reason, 0) + 1
        retry = _MEMORY_RETRY_S if reason == "memory" else pool.retry_after_s()
        return ShardRejected(reason, pool.name, retry, why)

    def _shared_free(self) -> bool:
        return not self.total_slots or self._in_use < self.total_slots

    def _grant(self, pool: ShardPool, memory: float, lender: ShardPool | None = None) -> None:
        holder = lender or pool
        holder.in_use += 1
        holder.memory_in_use += memory
        pool.admitted += 1
        if lender is not None:
            lender.lent += 1
            pool.borrowed += 1
        self._in_use += 1
        self._vtime = max(self._vtime, pool.pass_)
        pool.pass_ += 1.0 / pool.limits.io_weight

    def _release(self, slot: Slot) -> None:
        pool = slot.pool
        holder = slot.lender or pool
        holder.in_use -= 1
        holder.memory_in_use = max(holder.memory_in_use - slot.memory_mib, 0.0)
        pool.completed += 1
        self._in_use -= 1
        pool.record_hold(time.monotonic() - slot._started)
        self._retire_if_drained(pool)
        if holder is not pool:
            self._retire_if_drained(holder)
        if self._queued:
            self._dispatch(holder)

    def _retire_if_drained(self, pool: ShardPool) -> None:
        if pool.draining and not pool.in_use and not pool.waiters:
            pool.draining = False
            self._draining.remove(pool)
            log.info("%s drained and retired", pool.name)

    def _dispatch(self, released: ShardPool | None = None) -> None:
        """Grant queued requests whatever now fits, in stride order when slots are shared."""
        if not self.total_slots:
            for pool in [released] if released is not None else list(self._queued):
                self._drain(pool, limit=None)
            while self._queued and self._lend_to_queued():
                pass
            return
        while self._in_use < self.total_slots:
            ready = [p for p in self._queued if self._head_fits(p)]
            if ready:
                self._drain(min(ready, key=lambda p: p.pass_), limit=1)
            elif not self._lend_to_queued():
                return

    def _head(self, pool: ShardPool) -> Waiter | None:
        """The pool's first live waiter (cancelled or timed-out ones are dropped)."""
        while pool.waiters and pool.waiters[0].future.done():
            pool.waiters.popleft()  # cancelled or timed out
        if not pool.waiters:
            self._queued.discard(pool)
            return None
        return pool.waiters[0]

    def _head_fits(self, pool: ShardPool) -> bool:
        head = self._head(pool)
        return head is not None and pool.fits(head.memory)

    def _lender(self, pool: ShardPool, memory: float) -> ShardPool | None:
        """The pool whose idle slot a request of ``pool`` borrows now
        (:mod:`shardshape.allocator.lending`)."""
        if self.lending is None or pool.key.arm is not None or pool.draining:
            return None
        candidates = [
            other
            for other in (*self._pools.values(), self._default)
            if other is not pool
            and other.key.arm is None
            and (
                not other.limits.memory_mib
                or other.memory_in_use + memory <= other.limits.memory_mib
            )
        ]
        return choose_lender(
            self.lending,
            pool.limits.priority,
            [
                Lender(p, p.limits.priority, p.limits.concurrency, p.in_use, len(p.waiters))
                for p in candidates
            ],
        )

    def _lend_to_queued(self) -> bool:
        """Grant one waiting request (stride order) a borrowed slot; whether one was granted."""
        if self.lending is None or not self._shared_free():
            return False
        for pool in sorted(self._queued, key=lambda p: p.pass_):
            head = self._head(pool)
            if head is None:
                continue
            lender = self._lender(pool, head.memory)
            if lender is None:
                continue
            pool.waiters.popleft()
            self._grant(pool, head.memory, lender)
            head.future.set_result(lender)
            if not pool.waiters:
                self._queued.discard(pool)
            return True
        return False

    def _drain(self, pool: ShardPool, limit: int | None) -> None:
        granted = 0
        while self._head_fits(pool) and self._shared_free() and granted != limit:
            waiter = pool.waiters.popleft()
            self._grant(pool, waiter.memory)
            waiter.future.set_result(None)
            granted += 1
        if not pool.waiters:
            self._queued.discard(pool)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._loop is not None and not self._loop.is_closed() and self._loop.is_running():
                raise RuntimeError(
                    "these ShardPools already serve another running event loop: create one "
                    "ShardPools per event loop (per server process or thread)"
                )
            self._loop = loop

    # -- plans ------------------------------------------------------------------------------
    def apply(self, plan: AllocationPlan) -> None:
        """Take a new plan (thread-safe: the allocator client calls it from its own thread).

        The plan is checked here, in the caller's thread; pools change on the event loop, in
        one step between requests. New shards get pools, kept shards are resized in place
        (in-flight requests finish; a smaller pool admits again once below its new limit),
        shards the plan no longer names stop taking requests and drain. Requests of shards
        the plan does not know run in the default pool.
        """
        layout = plan_layout(plan, self.defaults, shaping=self.shaping)
        with self._lock:
            loop = self._loop
            if loop is None or loop.is_closed() or not loop.is_running():
                self._install(layout)
                return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._install(layout)
        else:
            loop.call_soon_threadsafe(self._install, layout)

    def _install(self, layout: PoolLayout) -> None:
        retired = {key: pool for key, pool in self._pools.items() if key not in layout.pools}
        draining = {pool.key: pool for pool in self._draining}
        for key, limits in layout.pools.items():
            pool = self._pools.get(key) or draining.get(key)
            if pool is None:
                self._pools[key] = ShardPool(key, limits)
                continue
            if pool.draining:  # the shard is back before its old pool emptied: revive it
                pool.draining = False
                self._draining.remove(pool)
                self._pools[key] = pool
            pool.reconfigure(limits)
        for key, pool in retired.items():
            del self._pools[key]
            if pool.in_use or pool.waiters:
                pool.draining = True
                self._draining.append(pool)
        self._routes = {
            key.shard_id: pool
            for key, pool in self._pools.items()
            if key.shard_id is not None and key.arm is None
        }
        self._arms = {
            shard: ArmPools(
                assigner, [self._pools[PoolKey(shard, name)] for name in assigner.names]
            )
            for shard, assigner in layout.arms.items()
        }
        self._shared.reconfigure(layout.shared)
        self.plan_version = layout.version
        self._dispatch()  # grown pools admit their queues at once
        log.info(
            "pools follow plan v%d: %d pools, %d draining (%s)",
            layout.version,
            len(self._pools),
            len(self._draining),
            "shaped" if self.shaping else "one shared pool",
        )

    # -- reading ----------------------------------------------------------------------------
    def states(self) -> list[PoolState]:
        """Every pool's state: the plan's, then the draining, default and shared pools."""
        pools = [*self._pools.values(), *self._draining]
        pools.append(self._default if self.shaping else self._shared)
        return [pool.state() for pool in pools]

    def state(self, shard_id: int | None, arm: str | None = None) -> PoolState | None:
        """The state of one pool of the plan (``None`` when the plan has no such pool)."""
        if shard_id is None:
            return (self._default if self.shaping else self._shared).state()
        pool = self._pools.get(PoolKey(shard_id, arm))
        return pool.state() if pool else None

    def queued_by_shard(self) -> dict[int, int]:
        """Requests waiting for a slot now, by the shard they were predicted to (the
        ``shard_id`` given to :meth:`slot`), whichever pool they wait in: the default pool for
        a shard the plan does not know, an experiment arm's pool, or the shared pool when
        shaping is off. Shards with none waiting are left out.

        Safe to call from any thread (the reporter's thread samples it): it returns a copy
        made in one step.

        >>> pools = ShardPools(PoolDefaults(concurrency=1, queue_size=4))
        >>> async def one_running_two_waiting():
        ...     hold = asyncio.Event()
        ...     async def request(shard_id):
        ...         async with pools.slot(shard_id):
        ...             await hold.wait()
        ...     tasks = [asyncio.create_task(request(s)) for s in (7, 7, 9)]
        ...     await asyncio.sleep(0)
        ...     waiting = pools.queued_by_shard()
        ...     hold.set()
        ...     await asyncio.gather(*tasks)
        ...     return waiting, pools.queued_by_shard()
        >>> asyncio.run(one_running_two_waiting())  # all in the default pool: no plan yet
        ({7: 1, 9: 1}, {})
        """
        # dict.copy() of int keys and values runs without releasing the GIL: never torn.
        return self._waiting.copy()

    @property
    def rejected(self) -> int:
        """Requests rejected by pools that still exist (retired, drained pools drop out)."""
        return sum(sum(s.rejected.values()) for s in self.states())


def _try_hold(pools: ShardPools, shard_id: int) -> str:
    """``ok`` when a thread got a slot of ``shard_id`` at once or after waiting, else why not."""
    try:
        with pools.hold(shard_id):
            return "ok"
    except ShardRejected as rejected:
        return rejected.reason
