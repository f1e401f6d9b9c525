"""Running statistics of each profile key, updated in O(1) per event with plain floats.

A key's record is a short list (indices below), the cheapest mutable thing in CPython. Means
are exponentially weighted with ``alpha = max(1 / n, min_alpha)``: an exact running mean for a
young key, a fading one afterwards, so a key's old behaviour fades.

>>> table = KeyTable(min_alpha=0.1)
>>> rec = table.update("api|GET /a|u1", 10.0, [4.0, 0.0, 2.0, 0.0])
>>> rec = table.update("api|GET /a|u1", 12.0, [6.0, 1.0, 2.0, 0.0])
>>> rec[N], rec[LATENCY], rec[ERROR], rec[GAP]
(2, 5.0, 0.5, 2.0)
>>> table.rate_per_s(rec)
0.5
"""

from __future__ import annotations

from collections.abc import Iterator

# Record layout.
N, LAST_TS, GAP, LATENCY, ERROR, PAYLOAD, RESPONSE = range(7)
SHARD, PENDING, STREAK, CONFIDENCE, ANOMALY_STREAK, CALM_STREAK, QUARANTINED = range(7, 14)
BEHAVIOUR_SLICE = slice(LATENCY, RESPONSE + 1)
PUBLISHED_CONFIDENCE = 14  # the confidence the key's last RoutingEntry carried
RECORD_LENGTH = 15
NO_SHARD = -1


class KeyTable:
    """Per-key running statistics and routing state.

    Parameters
    ----------
    min_alpha
        Floor of the EWMA step: about ``1 / min_alpha`` recent events dominate a key's means.
    max_keys
        When exceeded, the least recently seen half of the keys is dropped.
    """

    def __init__(self, min_alpha: float = 0.05, max_keys: int = 1_000_000) -> None:
        self.min_alpha = min_alpha
        self.max_keys = max_keys
        self.records: dict[str, list] = {}

    def get(self, key: str) -> list | None:
        return self.records.get(key)

    def update(self, key: str, ts: float, behaviour: list[float]) -> list:
        """Fold one completed event into its key's record and return the record."""
        rec = self.records.get(key)
        if rec is None:
            if len(self.records) >= self.max_keys:
                self._evict()
            rec = [0, ts, 0.0, *behaviour, NO_SHARD, NO_SHARD, 0, 0.0, 0, 0, False, 0.0]
            self.records[key] = rec
        n = rec[N] + 1
        rec[N] = n
        a = max(1.0 / n, self.min_alpha)
        if n > 1:
            # Gap mean over the n - 1 gaps seen so far; out-of-order events count as a 0 gap.
            gap = max(ts - rec[LAST_TS], 0.0)
            rec[GAP] += max(1.0 / (n - 1), self.min_alpha) * (gap - rec[GAP])
            rec[LAST_TS] = max(ts, rec[LAST_TS])
            rec[LATENCY] += a * (behaviour[0] - rec[LATENCY])
            rec[ERROR] += a * (behaviour[1] - rec[ERROR])
            rec[PAYLOAD] += a * (behaviour[2] - rec[PAYLOAD])
            rec[RESPONSE] += a * (behaviour[3] - rec[RESPONSE])
        return rec

    @staticmethod
    def rate_per_s(rec: list) -> float:
        """Events per second of a key (0 until it has two events)."""
        return 1.0 / rec[GAP] if rec[GAP] > 0 else (0.0 if rec[N] < 2 else 1e6)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[tuple[str, list]]:
        return iter(self.records.items())

    def _evict(self) -> None:
        by_age = sorted(self.records, key=lambda k: self.records[k][LAST_TS])
        for key in by_age[: len(by_age) // 2]:
            del self.records[key]
