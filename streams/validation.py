"""Validation of requests-topic messages: split one message into good events and dead letters.

Plain functions, no Faust: the agent calls them, tests call them directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shardshape.core.columns import EventColumns, columns_of, decode_columns
from shardshape.core.contracts import (
    ContractError,
    DeadLetter,
    dead_letter,
    decode_request_message,
    salvage_requests,
)

_EMPTY = ContractError(
    "empty message: a request message is a JSON RequestBatch or RequestEvent", "empty"
)


@dataclass(frozen=True)
class MessageOrigin:
    """Where a message came from, so a dead letter can point back at it."""

    topic: str
    partition: int = -1
    offset: int = -1
    key: bytes | None = None


@dataclass
class ValidatedMessage:
    batch: EventColumns  # the valid events
    dead_letters: list[DeadLetter] = field(default_factory=list)
    gateway_id: str = ""  # the sending gateway (a replica of the service); "" when unknown


def validate_message(
    value: bytes | None, origin: MessageOrigin, worker: str = ""
) -> ValidatedMessage:
    """Decode a requests-topic message; every rejected part becomes a :class:`DeadLetter`.

    A batch with some bad events keeps its good ones: only the bad events go to the DLQ, each
    with its own reason. A message that cannot be read at all goes to the DLQ whole. Plain
    valid batches take the fast path (:func:`shardshape.core.columns.decode_columns`); anything
    else goes through the schema, which gives the reasons. An empty message or a null value (a
    tombstone) is a dead letter too.

    >>> validate_message(None, MessageOrigin("requests")).dead_letters[0].reason
    'empty message: a request message is a JSON RequestBatch or RequestEvent'
    """
    if not value:
        return ValidatedMessage(columns_of([]), [_letter(b"", _EMPTY, origin, worker)])
    fast = decode_columns(value)
    if fast is not None:
        return ValidatedMessage(fast[1], gateway_id=fast[0])
    try:
        gateway_id, events = decode_request_message(value)
        return ValidatedMessage(columns_of(events), gateway_id=gateway_id)
    except ContractError as whole_error:
        try:
            events, rejects = salvage_requests(value)
        except ContractError:
            return ValidatedMessage(columns_of([]), [_letter(value, whole_error, origin, worker)])
        if not rejects:  # the batch itself was bad (e.g. too many events), not its events
            return ValidatedMessage(columns_of([]), [_letter(value, whole_error, origin, worker)])
        letters = [_letter(raw, error, origin, worker) for raw, error in rejects]
        return ValidatedMessage(columns_of(events), letters)


def _letter(data: bytes, error: ContractError, origin: MessageOrigin, worker: str) -> DeadLetter:
    return dead_letter(
        data,
        error,
        source_topic=origin.topic,
        partition=origin.partition,
        offset=origin.offset,
        key=origin.key,
        worker=worker,
        ts=time.time(),
    )
