"""Running statistics of each profile key, kept as columns of one numpy array.

A key's record is a row of :attr:`KeyTable.data` (indices below); :meth:`KeyTable.get` and
:attr:`KeyTable.records` hand it out as a short list of plain Python numbers (ints, floats
and a bool, as checkpoints store it) and take such lists back. :meth:`KeyTable.fold_many` folds
a batch of completed events into their keys' rows (the profiler's path);
:meth:`KeyTable.update` is the same code for one event. Means are exponentially weighted with
``alpha = max(1 / n, min_alpha)``: an exact running mean for a young key, a fading one
afterwards, so a key's old behaviour fades.

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
from typing import NamedTuple

import numpy as np

# Record layout.
N, LAST_TS, GAP, LATENCY, ERROR, PAYLOAD, RESPONSE = range(7)
SHARD, PENDING, STREAK, CONFIDENCE, ANOMALY_STREAK, CALM_STREAK, QUARANTINED = range(7, 14)
BEHAVIOUR_SLICE = slice(LATENCY, RESPONSE + 1)
PUBLISHED_CONFIDENCE = 14  # the confidence the key's last RoutingEntry carried
RECORD_LENGTH = 15
NO_SHARD = -1
INT_FIELDS = (N, SHARD, PENDING, STREAK, ANOMALY_STREAK, CALM_STREAK)  # the rest: floats, a bool
# Occurrence ranks with at most this many keys left are folded in event by event (fold_many).
_FEW_KEYS = 8


def new_record(ts: float, behaviour: Iterable[float]) -> list:
    """The record of a key before its first event is folded in (``N`` = 0)."""
    return [0, ts, 0.0, *behaviour, NO_SHARD, NO_SHARD, 0, 0.0, 0, 0, False, 0.0]


def row_to_record(row: list[float]) -> list:
    """A :attr:`KeyTable.data` row (as a list of floats) as a record of plain numbers."""
    for i in INT_FIELDS:
        row[i] = int(row[i])
    row[QUARANTINED] = bool(row[QUARANTINED])
    return row


def rates_per_s(count: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Events per second of keys with ``count`` events and mean gap ``gap`` (seconds): 0 until
    a key has two events, 1e6 for a key whose events all came at one instant."""
    with np.errstate(divide="ignore"):
        return np.where(gap > 0, 1.0 / gap, np.where(count < 2, 0.0, 1e6))


class Folded(NamedTuple):
    """What :meth:`KeyTable.fold_many` did, per event ``j`` (in the order given) and per key
    ``g`` of the batch (keys in the order of their rows)."""

    group: np.ndarray  # (events,): the key g of event j
    slots: np.ndarray  # (keys,): the row of key g in KeyTable.data
    records: np.ndarray  # (keys, RECORD_LENGTH): key g's record after the batch (a copy)
    count: np.ndarray  # (events,): the key's N after event j (floats)
    mean: np.ndarray  # (events, 4): the key's behaviour means after event j
    gap: np.ndarray  # (events,): the key's mean gap after event j


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
        """Fold one completed event into its key's record and return (a copy of) the record:
        :meth:`fold_many` with one event."""
        ts_arr, b = np.array([ts], dtype=float), np.array([behaviour], dtype=float)
        self.fold_many(self.rows_for([key], ts_arr, b), ts_arr, b)
        rec = self.get(key)
        assert rec is not None
        return rec

    @staticmethod
    def rate_per_s(rec: list) -> float:
        """Events per second of a key (see :func:`rates_per_s`)."""
        return float(rates_per_s(np.array([rec[N]]), np.array([rec[GAP]]))[0])

    # -- a batch of events ----------------------------------------------------------------
    def rows_for(
        self,
        keys: list[str],
        ts: np.ndarray,
        behaviour: np.ndarray,
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """The row of each event's key, adding the keys not held yet.

        Event ``j`` is of key ``keys[j]`` at ``ts[j]`` with ``behaviour[j]``; a new key's record
        starts from its first event here (:func:`new_record`, ``N`` = 0: :meth:`fold_many`
        counts it). A full table evicts keys other than ``keys`` (:meth:`allocate`). ``rows``:
        :meth:`rows_of` ``(keys)``, if the caller has it already.
        """
        if rows is None:
            rows = self.rows_of(keys)
        if not (rows < 0).any():
            return rows
        fresh: dict[str, int] = {}  # new key -> its first event, in order
        for j in np.flatnonzero(rows < 0).tolist():
            fresh.setdefault(keys[j], j)
        new = self.allocate(list(fresh), keep=keys)
        self.data[new] = [new_record(ts[j], behaviour[j].tolist()) for j in fresh.values()]
        return self.rows_of(keys)  # an eviction may have moved rows: look every key up again

    def fold_many(self, rows: np.ndarray, ts: np.ndarray, behaviour: np.ndarray) -> Folded:
        """Fold completed events, in order, into the records at ``rows`` (their keys' rows).

        The rule, per event of a key: ``n += 1``; from the second event on, the mean gap moves
        by ``max(1 / (n - 1), min_alpha)`` towards the gap since the key's last event (an event
        out of order counts as a 0 gap), the last time becomes the latest, and each behaviour
        mean moves by ``alpha = max(1 / n, min_alpha)`` towards the event's value.

        It is applied per occurrence rank (every key's first event of the batch, then every
        second one, ...), numpy over the keys of a rank (:func:`_fold_rank`); the last ranks,
        where at most ``_FEW_KEYS`` busy keys are left, go event by event with plain floats
        (:func:`_fold_in_order`), where a numpy step per rank would cost more (-6% of the
        profiler's throughput, docs/profiling.md). Both take the same floating-point steps: the
        results do not depend on how events are cut into batches
        (tests/models/test_profiler_batched.py).
        """
        nd = len(rows)
        group, rank, slots, counts = _group_by_key(rows)
        n_groups = len(slots)
        # Keys sorted by their number of events, so the keys with a q-th event are a prefix.
        by_count = np.argsort(-counts, kind="stable")
        inv = np.empty(n_groups, dtype=np.intp)
        inv[by_count] = np.arange(n_groups)
        state = self.data[slots][by_count]
        cell = np.full((n_groups, int(counts.max())), -1, dtype=np.intp)  # key, rank -> event
        cell[inv[group], rank] = np.arange(nd)
        # Each key's statistics after each event: count, means, mean gap.
        after = np.empty(nd), np.empty(behaviour.shape), np.empty(nd)
        active = np.searchsorted(
            -counts[by_count], -np.arange(1, cell.shape[1] + 1), "right"
        ).tolist()  # keys with a q-th event, per rank q
        tail = next((q for q, m in enumerate(active) if m <= _FEW_KEYS), len(active))
        for q, m in enumerate(active[:tail]):
            _fold_rank(state[:m], cell[:m, q], ts, behaviour, self.min_alpha, after)
        if tail < len(active):
            m = active[tail]
            state[:m] = _fold_in_order(
                state[:m].tolist(), cell[:m, tail:].tolist(), ts, behaviour, self.min_alpha, after
            )
        records = state[inv]
        self.data[slots] = records
        return Folded(group, slots, records, *after)

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


# Each key's count, means and mean gap after each event of a batch (Folded's last fields).
_After = tuple[np.ndarray, np.ndarray, np.ndarray]


def _group_by_key(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Events grouped by key: each event's key ``g`` and occurrence rank within the batch, and
    each key's row and number of events (keys in the order of their rows)."""
    nd = len(rows)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    first = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    counts = np.diff(np.r_[first, nd])
    group_sorted = np.repeat(np.arange(len(first)), counts)
    rank_sorted = np.arange(nd) - first[group_sorted]
    group = np.empty(nd, dtype=np.intp)
    group[order] = group_sorted
    rank = np.empty(nd, dtype=np.intp)
    rank[order] = rank_sorted
    return group, rank, sorted_rows[first], counts


def _fold_rank(
    state: np.ndarray,
    j: np.ndarray,
    ts: np.ndarray,
    b: np.ndarray,
    min_alpha: float,
    after: _After,
) -> None:
    """Fold event ``j[k]`` into record ``state[k]`` (in place), for every ``k`` at once, and
    note each key's statistics after it in ``after`` (see :meth:`KeyTable.fold_many`)."""
    nn = state[:, N] + 1.0
    state[:, N] = nn
    a = np.maximum(1.0 / nn, min_alpha)
    upd = nn > 1
    if not upd.all():
        j_u, st_u, a_u, nn_u = j[upd], state[upd], a[upd], nn[upd]
    else:
        j_u, st_u, a_u, nn_u = j, state, a, nn
    t = ts[j_u]
    gap = np.maximum(t - st_u[:, LAST_TS], 0.0)
    g = np.maximum(1.0 / (nn_u - 1.0), min_alpha)
    st_u[:, GAP] += g * (gap - st_u[:, GAP])
    st_u[:, LAST_TS] = np.maximum(t, st_u[:, LAST_TS])
    st_u[:, BEHAVIOUR_SLICE] += a_u[:, None] * (b[j_u] - st_u[:, BEHAVIOUR_SLICE])
    if st_u is not state:
        state[upd] = st_u
    count, mean, gap_mean = after
    count[j] = nn
    mean[j] = state[:, BEHAVIOUR_SLICE]
    gap_mean[j] = state[:, GAP]


def _fold_in_order(
    rows: list[list[float]],
    events: list[list[int]],
    ts: np.ndarray,
    b: np.ndarray,
    min_alpha: float,
    after: _After,
) -> list[list[float]]:
    """Fold events into records one at a time, with :func:`_fold_rank`'s float steps.

    ``rows[g]`` is a key's record (a list of floats), ``events[g]`` the events (indices into
    ``ts`` and ``b``) to fold into it in order, padded with -1. Each key's statistics after
    each event go to ``after``; the updated records are returned.
    """
    flat = [j for row in events for j in row if j >= 0]
    ts_of, b_of = ts[flat].tolist(), b[flat].tolist()
    n_out, mean_out, gap_out = [], [], []
    k = 0
    for row, todo in zip(rows, events, strict=True):
        n, last, gap_mean = row[N], row[LAST_TS], row[GAP]
        lat, err, pay, resp = row[BEHAVIOUR_SLICE]
        for j in todo:
            if j < 0:
                break
            n += 1.0
            if n > 1:
                t = ts_of[k]
                a = max(1.0 / n, min_alpha)
                gap_mean += max(1.0 / (n - 1.0), min_alpha) * (max(t - last, 0.0) - gap_mean)
                last = max(t, last)
                b_lat, b_err, b_pay, b_resp = b_of[k]
                lat += a * (b_lat - lat)
                err += a * (b_err - err)
                pay += a * (b_pay - pay)
                resp += a * (b_resp - resp)
            k += 1
            n_out.append(n)
            mean_out.append((lat, err, pay, resp))
            gap_out.append(gap_mean)
        row[N], row[LAST_TS], row[GAP] = n, last, gap_mean
        row[BEHAVIOUR_SLICE] = lat, err, pay, resp
    count, mean, gap = after
    count[flat] = n_out
    mean[flat] = mean_out
    gap[flat] = gap_out
    return rows


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
