"""A request's slot in a pool, and where the running request finds it (:func:`current_slot`).

While a request holds a slot, :func:`current_slot` returns it, in async and in sync endpoints
alike: the handler reaches its shard's cache and bandwidth through it.
"""

from __future__ import annotations

import contextlib
import contextvars
import time

from shardshape.gateway.cache import CacheLookup, request_lookup
from shardshape.gateway.shard_pool import ShardPool


class Slot:
    """A request's place in a pool, handed out by ``async with pools.slot(...)`` (or, in a
    thread, ``with pools.hold(...)``) of :class:`~shardshape.gateway.pools.ShardPools`.

    ``cache`` is the pool's cache; ``throttle(n)`` waits until ``n`` more response bytes may
    go out under the pool's bandwidth limit (``pace(n)`` blocks the thread for it);
    ``cache_hit`` says whether the request's first lookup in ``cache`` hit (``None`` until it
    looks something up). ``lender`` is the pool whose slot a borrowed request holds (``None``
    for a slot of its own pool). ``shard_id`` is the shard the request was predicted to.
    """

    __slots__ = (
        "_lookup",
        "_started",
        "arm",
        "cache",
        "lender",
        "memory_mib",
        "pool",
        "shard_id",
        "waited_s",
    )

    def __init__(
        self,
        pool: ShardPool,
        memory_mib: float,
        waited_s: float,
        lender: ShardPool | None = None,
    ) -> None:
        self.pool = pool
        self.lender = lender
        self.shard_id = pool.key.shard_id
        self.arm = pool.key.arm
        self.cache = pool.cache
        self.memory_mib = memory_mib
        self.waited_s = waited_s
        self._started = time.monotonic()
        self._lookup = CacheLookup()

    @property
    def cache_hit(self) -> bool | None:
        return self._lookup.hit

    async def throttle(self, nbytes: int) -> None:
        await self.pool.bucket.consume(nbytes)

    def pace(self, nbytes: int) -> None:
        """Block this thread until ``nbytes`` more response bytes may go out."""
        self.pool.bucket.pace(nbytes)


_current: contextvars.ContextVar[Slot | None] = contextvars.ContextVar("shardshape_slot")


def current_slot() -> Slot | None:
    """The slot the running request holds (inside the middleware), else ``None``."""
    return _current.get(None)


class Binding:
    """A slot made the running request's (:func:`current_slot`, and its cache lookups) until
    :meth:`undo`."""

    __slots__ = ("_lookup_token", "_token")

    def __init__(self, slot: Slot) -> None:
        self._token = _current.set(slot)
        self._lookup_token = request_lookup.set(slot._lookup)

    def undo(self) -> None:
        with contextlib.suppress(ValueError):  # left in another context (a WSGI body's close)
            request_lookup.reset(self._lookup_token)
            _current.reset(self._token)
