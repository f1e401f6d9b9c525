"""A token bucket that paces a shard's response bytes to its network share.

The bucket holds up to ``burst_bytes`` tokens and refills at ``rate_bytes_per_s``. Sending
``n`` bytes takes ``n`` tokens; a send larger than what is left drives the bucket into debt
and waits until the debt is repaid, so a body chunk larger than the burst still goes out whole
and concurrent senders queue behind each other's debt at exactly the configured rate.

>>> now = [0.0]
>>> bucket = TokenBucket(rate_bytes_per_s=1_000, burst_bytes=500, clock=lambda: now[0])
>>> bucket.take(300), bucket.take(700)  # 500 in the bucket at start: the second goes into debt
(0.0, 0.5)
>>> now[0] = 1.0  # a second later the debt of 500 is repaid and the bucket is full again
>>> bucket.take(500), bucket.take(1)
(0.0, 0.001)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

BURST_SECONDS = 0.1  # default burst: this many seconds of the rate


class TokenBucket:
    """Byte pacing at ``rate_bytes_per_s`` (0 means unlimited).

    Parameters
    ----------
    rate_bytes_per_s
        Long-run rate; 0 switches pacing off.
    burst_bytes
        Most bytes sent without waiting after an idle period (default: ``BURST_SECONDS`` of the
        rate, at least 64 KiB so one ordinary body chunk never waits on an idle bucket).
    clock
        Monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        rate_bytes_per_s: float,
        burst_bytes: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # threads (WSGI) take tokens concurrently
        self.rate = 0.0
        self.burst = 0.0
        self._tokens = 0.0
        self._last = clock()
        self.waited_s = 0.0  # total pacing delay handed out, for pool stats
        self.set_rate(rate_bytes_per_s, burst_bytes)
        self._tokens = self.burst

    def set_rate(self, rate_bytes_per_s: float, burst_bytes: float | None = None) -> None:
        """Change the rate (a live plan); tokens and debt carry over, capped at the new burst."""
        if rate_bytes_per_s < 0 or (burst_bytes is not None and burst_bytes < 0):
            raise ValueError(
                f"token bucket rate {rate_bytes_per_s} and burst {burst_bytes} must be >= 0"
            )
        self._refill()
        self.rate = float(rate_bytes_per_s)
        self.burst = (
            float(burst_bytes)
            if burst_bytes is not None
            else max(self.rate * BURST_SECONDS, 64 * 1024.0)
        )
        self._tokens = min(self._tokens, self.burst)

    def take(self, nbytes: float) -> float:
        """Take ``nbytes`` tokens now; return how long the caller must wait before sending."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            self._refill()
            self._tokens -= nbytes
            if self._tokens >= 0:
                return 0.0
            delay = -self._tokens / self.rate
            self.waited_s += delay
        return delay

    async def consume(self, nbytes: float) -> None:
        """Wait until ``nbytes`` may be sent at this bucket's rate."""
        delay = self.take(nbytes)
        if delay > 0:
            await asyncio.sleep(delay)

    def pace(self, nbytes: float) -> None:
        """Block this thread until ``nbytes`` may be sent at this bucket's rate."""
        delay = self.take(nbytes)
        if delay > 0:
            time.sleep(delay)

    def _refill(self) -> None:
        now = self._clock()
        if self.rate > 0:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
