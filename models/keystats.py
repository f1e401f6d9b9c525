"""Running statistics of each profile key, kept as columns of one numpy array.

A key's record is a row of :attr:`KeyTable.data` (indices below); :meth:`KeyTable.get` and
:attr:`KeyTable.records` hand it out as a short list of plain Python numbers (ints, floats
and a bool, as checkpoints store it) and take such lists back. The profiler updates the rows
of a whole batch at once (:mod:`shardshape.models.profiler`); :meth:`KeyTable.update` folds one
event in. Means are exponentially weighted with ``alpha = max(1 / n, min_alpha)``: an exact running
mean for a young key, a fading one afterwards, so a key's old behaviour fades.

>>> table = KeyTable(min_alpha=0.1)
>>> rec = table.update("api|GET /a|u1", 10.0, [4.0, 0.0, 2.0, 0.0])
>>> rec = table.update("api|GET /a|u1", 12.0, [6.0, 1.0, 2.0, 0.0])
>>> rec[N], rec[LATENCY], rec[ERROR], rec[GAP]
(2, 5.0, 0.5, 2.0)
>>> table.rate_per_s(rec)
0.5
>>> stored = [3, 5.0, 1.0, 1.0, 0.0, 0.0, 0.0, 2, 2, 0, 0.9, 0, 0, False, 0.9]
>>> table.records["api|GET /a|u2"] = stored
>>> table.get("api|GET /a|u2")[SHARD], len(table), [key for key, _ in table]
(2, 2, ['api|GET /a|u1', 'api|GET /a|u2'])

A full table evicts the keys seen longest ago:

>>> small = KeyTable(max_keys=3)
>>> for i, ts in enumerate([5.0, 1.0, 9.0, 7.0]):
...     _ = small.update(f"k{i}", ts, [1.0, 0.0, 0.0, 0.0])
>>> sorted(small.slots), small.evicted
(['k0', 'k2', 'k3'], 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from itertools import repeat

import numpy as np

# Record layout.
N, LAST_TS, GAP, LATENCY, ERROR, PAYLOAD, RESPONSE = range(7)
SHARD, PENDING, STREAK, CONFIDENCE, ANOMALY_STREAK, CALM_STREAK, QUARANTINED = range(7, 14)
BEHAVIOUR_SLICE = slice(LATENCY, RESPONSE + 1)
PUBLISHED_CONFIDENCE = 14  # the confidence the key's last RoutingEntry carried
RECORD_LENGTH = 15
NO_SHARD = -1
_INTS = (N, SHARD, PENDING, STREAK, ANOMALY_STREAK, CALM_STREAK)


def new_record(ts: float, behaviour: Iterable[float]) -> list:
    """The record of a key before its first event is folded in (``N`` = 0)."""
    return [0, ts, 0.0, *behaviour, NO_SHARD, NO_SHARD, 0, 0.0, 0, 0, False, 0.0]


def row_to_record(row: list[float]) -> list:
    """A :attr:`KeyTable.data` row (as a list of floats) as a record of plain numbers."""
    for i in _INTS:
        row[i] = int(row[i])
    row[QUARANTINED] = bool(row[QUARANTINED])
    return row


class KeyTable:
    """Per-key running statistics and routing state.

    Parameters
    ----------
    min_alpha
        Floor of the EWMA step: about ``1 / min_alpha`` recent events dominate a key's means.
    max_keys
        Most keys held. When a new key would exceed it, the least recently seen tenth of
        the keys (by their last event's time) is dropped and counted in :attr:`evicted`.

    Attributes
    ----------
    evicted
        Keys evicted since the table was made.
    on_evict
        Called with the keys of each eviction (e.g. to retire their stored copies too).
    data
        ``(capacity, RECORD_LENGTH)`` floats; row ``slots[key]`` is the key's record.
    slots
        Key -> row of ``data``, in the order keys were first seen.
    records
        A mutable mapping view: key -> record list (a copy; assigning a list stores it).
    """

    def __init__(self, min_alpha: float = 0.05, max_keys: int = 1_000_000) -> None:
        self.min_alpha = min_alpha
        self.max_keys = max_keys
        self.evicted = 0
        self.on_evict: Callable[[list[str]], None] | None = None
        self.slots: dict[str, int] = {}
        self._keys: list[str] = []  # row -> key
        self.data = np.zeros((1024, RECORD_LENGTH))
        self.records = _Records(self)

    # -- one key --------------------------------------------------------------------------
    def get(self, key: str) -> list | None:
        """A copy of the key's record, or None for an unknown key."""
        slot = self.slots.get(key)
        return None if slot is None else row_to_record(self.data[slot].tolist())

    def put(self, key: str, rec: list) -> None:
        """Store a record (a list in the layout above) for ``key``."""
        slot = self.slots.get(key)
        if slot is None:
            slot = self.allocate([key])[0]
        self.data[slot] = [float(v) for v in rec]

    def update(self, key: str, ts: float, behaviour: list[float]) -> list:
        """Fold one completed event into its key's record and return (a copy of) the record."""
        rec = self.get(key)
        if rec is None:
            rec = new_record(ts, behaviour)
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
        self.put(key, rec)
        return rec

    @staticmethod
    def rate_per_s(rec: list) -> float:
        """Events per second of a key (0 until it has two events)."""
        return 1.0 / rec[GAP] if rec[GAP] > 0 else (0.0 if rec[N] < 2 else 1e6)

    # -- many keys ------------------------------------------------------------------------
    def rows_of(self, keys: list[str]) -> np.ndarray:
        """Row of each key in :attr:`data`, -1 for an unknown key."""
        return np.fromiter(map(self.slots.get, keys, repeat(-1)), dtype=np.intp, count=len(keys))

    def allocate(self, keys: list[str], keep: Iterable[str] = ()) -> list[int]:
        """Rows for new ``keys`` (zeroed), evicting old keys first if the table is full.

        ``keep``: keys that must survive an eviction (those of the batch being processed).
        """
        excess = len(self.slots) + len(keys) - self.max_keys
        if excess > 0:
            self._evict(max(excess, self.max_keys // 10), set(keep))
        start = len(self._keys)
        end = start + len(keys)
        if end > len(self.data):
            grown = np.zeros((max(2 * len(self.data), end), RECORD_LENGTH))
            grown[:start] = self.data[:start]
            self.data = grown
        self.data[start:end] = 0.0
        slots = list(range(start, end))
        self.slots.update(zip(keys, slots, strict=True))
        self._keys.extend(keys)
        return slots

    def __len__(self) -> int:
        return len(self.slots)

    def __iter__(self) -> Iterator[tuple[str, list]]:
        """``(key, record copy)`` pairs, in the order keys were first seen."""
        rows = self.data[: len(self._keys)].tolist()
        return iter([(key, row_to_record(row)) for key, row in zip(self._keys, rows, strict=True)])

    def remove(self, keys: Iterable[str]) -> None:
        """Drop keys; the others keep their order (rows are compacted)."""
        drop = {self.slots[key] for key in keys if key in self.slots}
        if not drop:
            return
        kept = [slot for slot in range(len(self._keys)) if slot not in drop]
        self.data[: len(kept)] = self.data[kept]
        self._keys = [self._keys[slot] for slot in kept]
        self.slots = {key: slot for slot, key in enumerate(self._keys)}

    def _evict(self, count: int, keep: set[str]) -> None:
        """Drop the ``count`` least recently seen keys, sparing ``keep``."""
        ts = self.data[: len(self._keys), LAST_TS]
        oldest = np.argsort(ts, kind="stable")[: count + len(keep)].tolist()
        drop = [key for key in map(self._keys.__getitem__, oldest) if key not in keep][:count]
        self.remove(drop)
        self.evicted += len(drop)
        if self.on_evict is not None:
            self.on_evict(drop)


class _Records(MutableMapping):
    """``KeyTable.records``: key -> record list; reads are copies, assignments store."""

    def __init__(self, table: KeyTable) -> None:
        self._table = table

    def __getitem__(self, key: str) -> list:
        rec = self._table.get(key)
        if rec is None:
            raise KeyError(key)
        return rec

    def __setitem__(self, key: str, rec: list) -> None:
        self._table.put(key, rec)

    def __delitem__(self, key: str) -> None:
        if key not in self._table.slots:
            raise KeyError(key)
        self._table.remove([key])

    def __contains__(self, key: object) -> bool:
        return key in self._table.slots

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._table.slots))

    def __len__(self) -> int:
        return len(self._table.slots)
