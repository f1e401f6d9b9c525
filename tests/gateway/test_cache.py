"""Shard caches: each policy evicts what it should, and a live swap keeps the valuable entries."""

from __future__ import annotations

import threading

from shardshape.core.contracts import CachePolicy
from shardshape.gateway.cache import ShardCache


def test_lru_evicts_the_least_recently_used() -> None:
    cache = ShardCache(CachePolicy(policy="lru", size=2))
    cache.set("a", 1)
    cache.set("b", 2)
    cache.get("a")
    cache.set("c", 3)
    assert sorted(cache.keys()) == ["a", "c"]


def test_lfu_evicts_the_least_frequently_used() -> None:
    cache = ShardCache(CachePolicy(policy="lfu", size=2))
    cache.set("a", 1)
    cache.set("b", 2)
    for _ in range(3):
        cache.get("b")
    cache.get("a")
    cache.set("c", 3)  # "a" was read once, "b" three times
    assert sorted(cache.keys()) == ["b", "c"]
    assert (cache.hits, cache.misses) == (4, 0)


def test_ttl_entries_expire_and_none_keeps_nothing() -> None:
    now = [0.0]
    cache = ShardCache(CachePolicy(policy="ttl", size=10, ttl_s=5), timer=lambda: now[0])
    cache.set("a", 1)
    now[0] = 4.9
    assert cache.get("a") == 1
    now[0] = 5.1
    assert cache.get("a") is None and cache.misses == 1
    none = ShardCache(CachePolicy(policy="none"))
    none.set("a", 1)
    assert len(none) == 0 and none.get("a", "miss") == "miss"


def test_a_swap_from_lru_to_a_smaller_lfu_keeps_the_most_recently_used() -> None:
    cache = ShardCache(CachePolicy(policy="lru", size=4))
    for key in "abcd":
        cache.set(key, key.upper())
    cache.get("a")  # recency now: b c d a
    cache.reconfigure(CachePolicy(policy="lfu", size=2))
    assert cache.policy.policy == "lfu"
    assert sorted(cache.keys()) == ["a", "d"]
    assert cache.get("a") == "A"


def test_a_swap_from_lfu_keeps_the_most_frequently_used() -> None:
    cache = ShardCache(CachePolicy(policy="lfu", size=3))
    for key, reads in (("a", 5), ("b", 0), ("c", 2)):
        cache.set(key, key)
        for _ in range(reads):
            cache.get(key)
    cache.reconfigure(CachePolicy(policy="ttl", size=2, ttl_s=60))
    assert sorted(cache.keys()) == ["a", "c"]


def test_the_cache_is_safe_from_several_threads() -> None:
    cache = ShardCache(CachePolicy(policy="lru", size=64))

    def work(offset: int) -> None:
        for i in range(5_000):
            cache.set((offset, i % 100), i)
            cache.get((offset, (i * 7) % 100))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 64
    assert cache.hits + cache.misses == 20_000
