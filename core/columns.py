"""A batch of request events as columns, and the profile agent's fast decoder for them.

The agent never needs 500 ``RequestEvent`` objects: the models read a batch field by field.
:func:`decode_columns` decodes a ``RequestBatch`` message with msgspec into light structs that
state the :class:`~shardshape.core.contracts.RequestEvent` schema's rules again (about 0.8 us an
event, where pydantic takes 2.2 us), then turns them into columns. It is a fast path only: whatever
it refuses, the caller decodes with pydantic, which accepts it or rejects it with the reason. So
the fast path may refuse what the schema accepts, never the reverse:
tests/core/test_columns.py holds it to that on generated good and bad messages.

>>> from shardshape.core.contracts import RequestBatch, RequestEvent, encode
>>> event = RequestEvent(request_id="r1", ts=5.0, service="api", request_type="GET /a",
...                      latency_ms=12.5, attributes={"region": "eu"})
>>> gateway, batch = decode_columns(encode(RequestBatch(gateway_id="g1", events=[event])))
>>> gateway, len(batch), batch.service, batch.latency_ms, batch.user_id
('g1', 1, ('api',), (12.5,), ('',))
>>> decode_columns(b'{"gateway_id": "g1", "events": [{"request_id": "r1"}]}') is None
True
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Annotated, Literal

import msgspec
import numpy as np

from shardshape.core.contracts import (
    CONTRACT_VERSION,
    MAX_ATTRIBUTES,
    MAX_BATCH_EVENTS,
    MAX_COUNT,
    MAX_ID_CHARS,
    MAX_LABEL_CHARS,
    MAX_MESSAGE_BYTES,
    RequestEvent,
)


@dataclass(frozen=True, slots=True)
class EventColumns:
    """Events ``0 .. n-1`` of a batch, one sequence per :class:`RequestEvent` field."""

    request_id: Sequence[str]
    ts: Sequence[float]
    service: Sequence[str]
    request_type: Sequence[str]
    user_id: Sequence[str]
    payload_bytes: Sequence[float]
    response_bytes: Sequence[float | None]
    latency_ms: Sequence[float | None]
    status: Sequence[str]
    shard_id: Sequence[int | None]
    arm: Sequence[str | None]
    attributes: Sequence[dict[str, float | bool | str]]

    def __len__(self) -> int:
        return len(self.request_id)

    def take(self, rows: Sequence[int]) -> EventColumns:
        """The events at ``rows``, in that order."""
        return EventColumns(*([column[i] for i in rows] for column in _fields(self)))


_FIELDS = tuple(EventColumns.__dataclass_fields__)
_fields = attrgetter(*_FIELDS)  # of an event, or the columns of an EventColumns


def zeros_for_none(values: Sequence[float | None]) -> np.ndarray:
    """An optional numeric column as floats, 0 where a value is missing.

    >>> zeros_for_none([1.5, None]).tolist(), zeros_for_none([None, None]).tolist()
    ([1.5, 0.0], [0.0, 0.0])
    """
    try:
        array = np.fromiter(values, dtype=float, count=len(values))  # no None: the fast way
    except TypeError:
        if values.count(None) == len(values):  # a column nobody reports (20x faster)
            return np.zeros(len(values))
        array = np.array(values, dtype=float)  # None -> NaN
    array[np.isnan(array)] = 0.0
    return array


def concat_columns(parts: Sequence[EventColumns]) -> EventColumns:
    """The events of ``parts``, one part after the other.

    >>> one = columns_of([RequestEvent(request_id="r1", ts=1.0, service="a", request_type="t")])
    >>> concat_columns([one, one]).request_id
    ('r1', 'r1')
    """
    if len(parts) == 1:
        return parts[0]
    columns = zip(*map(_fields, parts), strict=True)
    return EventColumns(*(tuple(chain.from_iterable(column)) for column in columns))


def columns_of(events: Sequence[RequestEvent] | EventColumns) -> EventColumns:
    """Events as columns (columns are returned as they are)."""
    if isinstance(events, EventColumns):
        return events
    if not events:
        return EventColumns(*(() for _ in _FIELDS))
    return EventColumns(*zip(*map(_fields, events), strict=True))


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
_OptionalId = Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)]
_Label = Annotated[str, msgspec.Meta(max_length=MAX_LABEL_CHARS)]
_NonNegative = Annotated[float, msgspec.Meta(ge=0, le=sys.float_info.max)]  # finite
_Finite = Annotated[float, msgspec.Meta(ge=-1e300, le=1e300)]
_AttrName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class _Event(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    request_id: _Id
    ts: _NonNegative
    service: _Id
    request_type: _Id
    v: Literal[1] = CONTRACT_VERSION
    user_id: _OptionalId = ""
    payload_bytes: _NonNegative = 0.0
    response_bytes: _NonNegative | None = None
    latency_ms: _NonNegative | None = None
    status: Literal["ok", "error", "timeout", "rejected"] = "ok"
    shard_id: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)] | None = None
    arm: _OptionalId | None = None
    attributes: Annotated[
        dict[_AttrName, _Finite | bool | _Label], msgspec.Meta(max_length=MAX_ATTRIBUTES)
    ] = msgspec.field(default_factory=dict)


class _Batch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    gateway_id: _Id
    events: Annotated[list[_Event], msgspec.Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]
    v: Literal[1] = CONTRACT_VERSION
    sent_ts: _NonNegative = 0.0


_decoder = msgspec.json.Decoder(_Batch)
# A struct as a tuple is its fields in declaration order: ``v`` is the one EventColumns lacks.
_V = _Event.__struct_fields__.index("v")
assert _Event.__struct_fields__[:_V] + _Event.__struct_fields__[_V + 1 :] == _FIELDS


def decode_columns(data: bytes) -> tuple[str, EventColumns] | None:
    """A valid ``RequestBatch`` message as (gateway id, columns), or None to use the schema."""
    if not isinstance(data, bytes) or len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        batch = _decoder.decode(data)
    except msgspec.DecodeError:  # also msgspec.ValidationError
        return None
    # astuple and one zip: half the time of reading the fields by name
    columns = list(zip(*map(msgspec.structs.astuple, batch.events), strict=True))
    del columns[_V]
    return batch.gateway_id, EventColumns(*columns)
