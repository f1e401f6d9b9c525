"""The profile agent's intake: every queued requests message at once, merged per profiler call.

A Faust agent pays a fixed cost per message and the profiler one per call (about 0.7 ms per
500-event batch in all). When messages queue up (a backlog, a burst), :func:`take_queued`
hands the agent all that is queued, up to a bound, and :func:`merge_groups` joins their
events into profiler calls of up to ``max_events``: the fixed costs are paid once per group.

:func:`take_queued` is Faust's ``Stream.take_events(max_, within)`` with one change: the
buffer goes to the agent as soon as the stream's queue is empty, not only when it is full or
``within`` has passed. ``take_events`` would hold a lone message for up to ``within``
(routing latency); a plain ``async for`` that kept messages back while asking for the next one
could hold unacked messages while it waits, and Faust's rebalance waits for those to be acked
(a deadlock). As in ``take_events``, the events are acked after the agent is done with them,
so no offset is committed for a message that is only buffered, and ``within`` bounds how long
an event waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import faust
from faust.types import EventT
from mode.utils.aiter import aiter

from shardshape.core.columns import EventColumns
from shardshape.streams.gaps import RawMessage

# The profile agent takes up to TAKE_MESSAGES queued messages at once and profiles up to
# MERGE_EVENTS of their events per call; a buffered message waits at most TAKE_WITHIN_S (it
# normally waits not at all: the buffer goes when the queue is empty).
TAKE_MESSAGES = 16
MERGE_EVENTS = 1_000
TAKE_WITHIN_S = 0.2


@dataclass(frozen=True, slots=True)
class Received:
    """One requests-topic message, validated: where it came from and its valid events."""

    partition: int
    offset: int
    timestamp: float
    batch: EventColumns
    dead_letters: int = 0


def merge_groups(received: Sequence[Received], max_events: int) -> list[list[Received]]:
    """Consecutive messages joined into groups of at most ``max_events`` valid events (a
    bigger message is a group of its own).

    >>> from shardshape.core.columns import columns_of
    >>> def msg(offset, n):
    ...     return Received(0, offset, 0.0, columns_of([]), 0) if n == 0 else Received(
    ...         0, offset, 0.0, EventColumns(*([None] * n for _ in range(12))))
    >>> [[r.offset for r in g] for g in merge_groups([msg(1, 400), msg(2, 0), msg(3, 500),
    ...                                                msg(4, 1200), msg(5, 100)], 1000)]
    [[1, 2, 3], [4], [5]]
    """
    groups: list[list[Received]] = []
    size = 0
    for message in received:
        n = len(message.batch)
        if groups and size + n <= max_events:
            groups[-1].append(message)
            size += n
        else:
            groups.append([message])
            size = n
    return groups


def raw_message(event: EventT) -> RawMessage:
    """What the pipeline reads of a consumed requests message (its value: raw bytes)."""
    message = event.message
    return RawMessage(message.partition, message.offset, message.timestamp, message.key,
                      event.value)  # fmt: skip


async def take_queued(
    stream: faust.StreamT, max_: int, within: float
) -> AsyncIterator[list[EventT]]:
    """Events of ``stream`` in lists: what is queued when the agent asks, at most ``max_``.

    Acks each list's events once the agent asks for the next list (see the module docstring).
    """
    buffer: list[EventT] = []
    full = asyncio.Event()  # the agent may take the buffer
    consumed = asyncio.Event()
    consuming: asyncio.Future | None = None
    queue = stream.channel.queue  # type: ignore[attr-defined]
    enable_acks = stream.enable_acks

    async def add_to_buffer(value: object) -> object:
        # A stream processor: runs in the task that iterates the stream (passively).
        nonlocal consuming
        if consuming is not None:
            try:
                await consuming
            finally:
                consuming = None
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_queued: no current event")
        buffer.append(event)
        if len(buffer) >= max_ or queue.empty():
            full.set()
            consumed.clear()
            await stream.wait(consumed)  # type: ignore[arg-type]
        return value

    stream.enable_acks = False  # acked here, after the agent's work
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))  # type: ignore[attr-defined]
    try:
        while not stream.should_stop:  # type: ignore[attr-defined]
            await stream.wait_for_stopped(full, timeout=within)  # type: ignore[attr-defined]
            if not buffer:
                continue
            consuming = asyncio.get_running_loop().create_future()
            try:
                yield list(buffer)
            finally:
                events = list(buffer)
                buffer.clear()
                for event in events:
                    await stream.ack(event)
                if not consuming.done():
                    consuming.set_result(None)
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)  # type: ignore[attr-defined]
