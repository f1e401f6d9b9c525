"""Features of a request: what is known at arrival, and how it behaved once completed.

Two vectors describe a request:

* the **arrival vector** (what a gateway knows before running it): a bias, the log payload
  size, the key's history (its routed shard's centroid times the key's weight, a function of
  its confidence in that shard, see :mod:`shardshape.models.predictor`; zeros for an unseen key)
  and the request type, numeric and categorical attributes hashed into ``n_buckets`` slots;
* the **behaviour vector** (what the completed request did): log latency, error flag, log
  payload and log response size. Shards are clusters of behaviour vectors.

Hashing uses CRC-32 of a token (``"t=<request type>"`` and ``"c:<name>=<value>"`` with value 1,
``"n:<name>"`` with the attribute's signed log) modulo ``n_buckets``, so a gateway in any
language can compute the same vector from the snapshot's numbers alone. Heavy-tailed scales
(sizes, latencies, numeric attributes) enter as ``sign(x) * log1p(|x|)``. A missing value is
a zero slot, never an error.

With ``numeric_bins`` (the default), a numeric attribute also enters as a categorical token
``"b:<name>=<k>"`` (value 1), ``k = floor(signed_log(x) + 0.5)`` as a decimal integer: one bin
per factor of about e. The linear model can then fit a step (``pages`` 1-3 vs 40-60 taking
1 s vs 15 s) instead of a slope that also spreads requests of one behaviour across shards
(``pages`` 1 and 3 would differ by 0.6 in predicted log latency).

>>> space = FeatureSpace(n_buckets=8)
>>> space.names[:4]
['bias', 'log_payload_bytes', 'key_known', 'key_log_latency_ms']
>>> idx, val = space.arrival_sparse("GET /a", 1023.0, {"images": 8, "model": "M1", "fast": True})
>>> len(idx) == len(val) == 8, round(val[1], 3)
(True, 6.931)
>>> space.slot("b:images=2") in idx, space.slot("b:fast=1") in idx  # log1p(8) = 2.2, log1p(1) = 0.7
(True, True)
>>> behaviour(120.0, "error", 10.0, None)
[4.795790545596741, 1.0, 2.3978952727983707, 0.0]
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

# Defined beside partition_for (no numpy there: the gateway imports it); imported from here too.
from shardshape.core.partitioning import profile_key as profile_key

BEHAVIOUR_NAMES: tuple[str, ...] = (
    "log_latency_ms",
    "error",
    "log_payload_bytes",
    "log_response_bytes",
)
N_BEHAVIOUR = len(BEHAVIOUR_NAMES)
# Slots before the hashed block: bias, log payload, key-known flag, key centroid, and (with
# shape features, the default) the request shape's weight and weighted mean log latency.
KEY_SLICE = slice(3, 3 + N_BEHAVIOUR)
SHAPE_WEIGHT = 3 + N_BEHAVIOUR
SHAPE_LATENCY = SHAPE_WEIGHT + 1
N_FIXED = SHAPE_LATENCY + 1
_TOKEN_CACHE_LIMIT = 200_000
# Distinct (request type, attributes) rows kept by ``FeatureSpace.hashed_rows``.
_ROW_CACHE_LIMIT = 4_096


class ArrivalLike(Protocol):
    """What arrival features need from a request (a ``RequestEvent`` fits)."""

    service: str
    request_type: str
    user_id: str
    payload_bytes: float
    attributes: Mapping[str, float | bool | str]


def signed_log(x: float) -> float:
    """``sign(x) * log1p(|x|)``: compresses heavy tails, keeps zero at zero and the sign.

    >>> signed_log(0.0), round(signed_log(-9.0), 4)
    (0.0, -2.3026)
    """
    return math.copysign(math.log1p(abs(x)), x)


def shape_id(request_type: str, attributes: Mapping[str, float | bool | str]) -> int:
    """The request's shape: CRC-32 of its type and every attribute with its exact value.

    Tokens ``t=<type>``, ``c:<name>=<value>`` for text and ``v:<name>=<value>`` for numbers
    (printf ``%.6g``; a boolean is 1 or 0), sorted and joined by newlines: the same number in
    any language, whatever the attributes' order. Two requests of one shape differ only in
    payload size and in who sends them.

    >>> shape_id("GET /a", {"pages": 3, "region": "eu"}) == shape_id(
    ...     "GET /a", {"region": "eu", "pages": 3.0})
    True
    >>> shape_id("GET /a", {"pages": 3}) != shape_id("GET /a", {"pages": 4})
    True
    """
    tokens = ["t=" + request_type]
    for name, value in attributes.items():
        if isinstance(value, str):
            tokens.append(f"c:{name}={value}")
        else:
            tokens.append(f"v:{name}={float(value):.6g}")
    return zlib.crc32("\n".join(sorted(tokens)).encode())


def behaviour(
    latency_ms: float | None, status: str, payload_bytes: float, response_bytes: float | None
) -> list[float]:
    """Behaviour vector of a completed request; a missing latency or response size counts as 0."""
    return [
        math.log1p(latency_ms or 0.0),
        0.0 if status == "ok" else 1.0,
        math.log1p(payload_bytes),
        math.log1p(response_bytes or 0.0),
    ]


def behaviour_matrix(events: Sequence) -> np.ndarray:
    """Behaviour vectors of many completed ``RequestEvent``s, shape ``(n, N_BEHAVIOUR)``."""
    out = np.empty((len(events), N_BEHAVIOUR))
    for row, e in enumerate(events):
        out[row] = behaviour(e.latency_ms, e.status, e.payload_bytes, e.response_bytes)
    return out


class FeatureSpace:
    """Maps arrival information to a fixed-length vector of ``n_fixed + n_buckets`` numbers.

    Parameters
    ----------
    n_buckets
        Hashed slots for the request type and the attributes.
    numeric_bins
        Also hash each numeric attribute's bin token (see the module docstring).
    shapes
        Two slots for the request shape's memory (see :mod:`shardshape.models.shapes`):
        its weight and its weighted mean log latency, filled in by the predictor.
    """

    def __init__(
        self, n_buckets: int = 128, numeric_bins: bool = True, shapes: bool = True
    ) -> None:
        self.n_buckets = n_buckets
        self.numeric_bins = numeric_bins
        self.shapes = shapes
        self.n_fixed = N_FIXED if shapes else SHAPE_WEIGHT
        self.n_features = self.n_fixed + n_buckets
        self.names = [
            "bias",
            "log_payload_bytes",
            "key_known",
            *(f"key_{name}" for name in BEHAVIOUR_NAMES),
            *(("shape_known", "shape_log_latency_ms") if shapes else ()),
            *(f"hash_{i}" for i in range(n_buckets)),
        ]
        self._slots: dict[str, int] = {}
        # (name, value) -> (slot, signed log, bin slot or -1): one lookup per numeric attribute.
        self._numeric: dict[tuple[str, float], tuple[int, float, int]] = {}
        # (request type, attribute items) -> row of ``_rows``: the arrival vector without the
        # payload and key parts, built once per distinct request shape; ``_shape_ids`` holds
        # each row's shape id (:func:`shape_id`).
        self._row_of: dict[tuple, int] = {}
        self._rows = np.zeros((64, self.n_features))
        self._shape_ids = np.zeros(64, dtype=np.int64)

    def slot(self, token: str) -> int:
        """Vector index of a hashed token (cached: CRC-32 costs more than a dict lookup)."""
        index = self._slots.get(token)
        if index is None:
            if len(self._slots) >= _TOKEN_CACHE_LIMIT:
                self._slots.clear()
            index = self.n_fixed + zlib.crc32(token.encode()) % self.n_buckets
            self._slots[token] = index
        return index

    def arrival_sparse(
        self,
        request_type: str,
        payload_bytes: float,
        attributes: Mapping[str, float | bool | str],
    ) -> tuple[list[int], list[float]]:
        """Non-zero slots of the arrival vector, without the key part (indices may repeat)."""
        slot = self.slot
        idx = [0, 1, slot("t=" + request_type)]
        val = [1.0, math.log1p(payload_bytes), 1.0]
        for name, value in attributes.items():
            if isinstance(value, str):
                idx.append(slot(f"c:{name}={value}"))
                val.append(1.0)
            else:
                # bool is an int: True -> log1p(1); a categorical reading would double the slots.
                numeric = self._numeric.get((name, value)) or self._numeric_slots(name, value)
                idx.append(numeric[0])
                val.append(numeric[1])
                if numeric[2] >= 0:
                    idx.append(numeric[2])
                    val.append(1.0)
        return idx, val

    def _numeric_slots(self, name: str, value: float) -> tuple[int, float, int]:
        x = signed_log(float(value))
        binned = -1
        if self.numeric_bins and math.isfinite(x):
            binned = self.slot(f"b:{name}={math.floor(x + 0.5)}")
        out = (self.slot("n:" + name), x, binned)
        if len(self._numeric) >= _TOKEN_CACHE_LIMIT:
            self._numeric.clear()
        self._numeric[(name, value)] = out
        return out

    def hashed_rows(
        self,
        request_types: Sequence[str],
        attributes: Sequence[Mapping[str, float | bool | str]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows of :attr:`row_matrix` with each request's bias and hashed slots, and the rows'
        distinct values (the request shapes present).

        ``row_matrix[rows]`` plus the log payload in column 1 and the key block is exactly
        what :meth:`arrival_matrix` builds, at one dict lookup per request.
        """
        row_of = self._row_of
        shapes = [(t, tuple(a.items())) for t, a in zip(request_types, attributes, strict=True)]
        rows = [row_of.get(shape, -1) for shape in shapes]
        if -1 in rows:
            missing = {shape for shape, row in zip(shapes, rows, strict=True) if row < 0}
            if len(row_of) + len(missing) > _ROW_CACHE_LIMIT:
                row_of.clear()
                missing = set(shapes)
            self._add_rows(missing)
            rows = [row_of[shape] for shape in shapes]
        rows_arr = np.array(rows, dtype=np.intp)
        return rows_arr, np.unique(rows_arr)

    @property
    def row_matrix(self) -> np.ndarray:
        """See :meth:`hashed_rows`."""
        return self._rows

    @property
    def row_shape_ids(self) -> np.ndarray:
        """The shape id (:func:`shape_id`) of each row of :attr:`row_matrix`."""
        return self._shape_ids

    def _add_rows(self, shapes: set[tuple]) -> None:
        row_of = self._row_of
        start = len(row_of)
        end = start + len(shapes)
        if end > len(self._rows):
            grown = np.zeros((max(2 * len(self._rows), end), self.n_features))
            grown[:start] = self._rows[:start]
            self._rows = grown
            ids = np.zeros(len(grown), dtype=np.int64)
            ids[:start] = self._shape_ids[:start]
            self._shape_ids = ids
        for row, shape in enumerate(shapes, start):
            idx, val = self.arrival_sparse(shape[0], 0.0, dict(shape[1]))
            self._rows[row] = 0.0
            np.add.at(self._rows[row], np.asarray(idx, dtype=np.intp), val)
            self._rows[row, 1] = 0.0  # the log payload is set per request
            self._shape_ids[row] = shape_id(shape[0], dict(shape[1]))
            row_of[shape] = row

    def arrival_matrix(
        self, events: Sequence[ArrivalLike], key_rows: np.ndarray, key_weights: np.ndarray
    ) -> np.ndarray:
        """Arrival vectors of many requests, shape ``(n, n_features)``.

        ``key_rows`` is ``(n, N_BEHAVIOUR)``: each key's routed-shard centroid, NaN for an
        unseen key; ``key_weights`` (n,) is the key's confidence in that shard, which scales
        the key block (a key that spreads over shards says little about its next request).
        """
        n = len(events)
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for row, e in enumerate(events):
            idx, val = self.arrival_sparse(e.request_type, e.payload_bytes, e.attributes)
            rows.extend([row] * len(idx))
            cols.extend(idx)
            vals.extend(val)
        x = np.zeros((n, self.n_features))
        # add.at, not assignment: two attributes may hash to the same slot.
        np.add.at(x, (np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)), vals)
        known = ~np.isnan(key_rows[:, 0])
        x[known, 2] = key_weights[known]
        x[known, KEY_SLICE] = key_rows[known] * key_weights[known, None]
        return x
