"""The token bucket paces bytes at its rate, lets a burst through, and follows rate changes."""

from __future__ import annotations

import asyncio
import time

import pytest

from shardshape.gateway.bandwidth import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_bytes_wait_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_bytes_per_s=1_000, burst_bytes=200, clock=clock)
    assert bucket.take(200) == 0.0
    assert bucket.take(100) == pytest.approx(0.1)
    assert bucket.take(100) == pytest.approx(0.2)  # queued behind the first one's debt
    clock.now = 0.2
    assert bucket.take(0) == 0.0  # the debt is repaid
    clock.now = 10.0
    assert bucket.take(200) == 0.0 and bucket.take(1) > 0  # idle time refills to the burst only


def test_a_chunk_larger_than_the_burst_goes_out_whole_after_its_debt() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_bytes_per_s=1_000, burst_bytes=100, clock=clock)
    assert bucket.take(1_100) == pytest.approx(1.0)
    assert bucket.waited_s == pytest.approx(1.0)


def test_a_rate_change_keeps_the_debt_and_zero_means_unlimited() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_bytes_per_s=1_000, burst_bytes=100, clock=clock)
    bucket.take(300)  # 200 in debt
    bucket.set_rate(2_000, burst_bytes=100)
    assert bucket.take(0) == pytest.approx(0.1)
    bucket.set_rate(0)
    assert bucket.take(10**9) == 0.0
    with pytest.raises(ValueError, match="must be >= 0"):
        bucket.set_rate(-1)


async def test_consume_paces_concurrent_senders_to_the_rate() -> None:
    bucket = TokenBucket(rate_bytes_per_s=200_000, burst_bytes=10_000)
    started = time.monotonic()
    await asyncio.gather(*(bucket.consume(30_000) for _ in range(3)))
    elapsed = time.monotonic() - started
    assert elapsed >= (90_000 - 10_000) / 200_000 * 0.95
