"""A shard's cache: policy and size from the plan (LRU, LFU, TTL or none), swappable live.

Handlers reach their shard's cache through the slot they run in (``current_slot().cache``).
The cache is safe to use from the event loop and from worker threads (sync endpoints), and it
counts hits and misses so an experiment can compare policies.

>>> from shardshape.core.contracts import CachePolicy
>>> cache = ShardCache(CachePolicy(policy="lru", size=2))
>>> cache.set("a", 1); cache.set("b", 2); cache.get("a"); cache.set("c", 3)
1
>>> cache.get("b") is None, len(cache)  # "b" was the least recently used
(True, 2)
>>> cache.reconfigure(CachePolicy(policy="lfu", size=8)); sorted(cache.keys())
['a', 'c']
>>> cache.reconfigure(CachePolicy(policy="none")); len(cache), cache.get("a")
(0, None)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from typing import Any

import cachetools

from shardshape.core.contracts import CachePolicy

DEFAULT_TTL_S = 60.0  # a "ttl" policy that does not say how long


class CacheLookup:
    """Whether a request's first lookup in a shard cache hit (``None``: it looked nothing up)."""

    __slots__ = ("hit",)

    def __init__(self) -> None:
        self.hit: bool | None = None


# Set per request by the pools; a sync handler's thread sees it through the copied context.
request_lookup: ContextVar[CacheLookup | None] = ContextVar("shardshape_lookup", default=None)


def new_cache(policy: CachePolicy, timer: Callable[[], float] = time.monotonic) -> cachetools.Cache:
    """The cachetools cache a policy describes; ``none`` (or size 0) is a cache that keeps nothing.

    >>> type(new_cache(CachePolicy(policy="ttl", size=10, ttl_s=5))).__name__
    'TTLCache'
    """
    if policy.policy == "none" or policy.size == 0:
        return cachetools.Cache(maxsize=0)
    if policy.policy == "lru":
        return cachetools.LRUCache(maxsize=policy.size)
    if policy.policy == "lfu":
        return cachetools.LFUCache(maxsize=policy.size)
    ttl = policy.ttl_s if policy.ttl_s else DEFAULT_TTL_S
    return cachetools.TTLCache(maxsize=policy.size, ttl=ttl, timer=timer)


class ShardCache:
    """Thread-safe get/set over the cache of a :class:`CachePolicy`, with hit counters."""

    def __init__(
        self, policy: CachePolicy | None = None, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self._timer = timer
        self.policy = policy or CachePolicy()
        self._cache = new_cache(self.policy, timer)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            try:
                value = self._cache[key]
            except KeyError:
                self.misses += 1
                _note(False)
                return default
            self.hits += 1
            _note(True)
            return value

    def set(self, key: Hashable, value: Any) -> None:
        """Store ``value``; a no-op under the ``none`` policy."""
        if self._cache.maxsize == 0:
            return
        with self._lock:
            self._cache[key] = value

    def pop(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            return self._cache.pop(key, default)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def keys(self) -> Iterator[Hashable]:
        with self._lock:
            return iter(list(self._cache.keys()))

    def __len__(self) -> int:
        return len(self._cache)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._cache

    def reconfigure(self, policy: CachePolicy) -> None:
        """Swap to ``policy``, keeping the most valuable entries that fit.

        The old cache is drained with its own eviction order (``popitem``: least recently used
        for LRU and TTL, least frequently used for LFU), and the last ``size`` entries, the most
        valuable, move to the new cache in that order. ``none`` keeps nothing; moved entries
        start fresh use counts and times to live. The same policy changes nothing.
        """
        if policy == self.policy:
            return
        fresh = new_cache(policy, self._timer)
        with self._lock:
            drained = []
            while self._cache:
                try:
                    drained.append(self._cache.popitem())
                except KeyError:  # TTL entries that expired while draining
                    break
            if fresh.maxsize > 0:
                for key, value in drained[-int(fresh.maxsize) :]:
                    fresh[key] = value
            self._cache = fresh
            self.policy = policy


def _note(hit: bool) -> None:
    lookup = request_lookup.get()
    if lookup is not None and lookup.hit is None:
        lookup.hit = hit
