"""Seek back to committed offsets partition by partition, past partitions a rebalance took.

While a rebalance suspends its flow, Faust drops what the consumer fetched and seeks every
assigned partition back to its committed offset (aiokafka's ``seek_to_committed``). That call
takes the assignment once, then asks the broker each partition's committed offset in turn: when
the next rebalance revokes a partition meanwhile, seeking it raises ``IllegalStateError`` and
the loop stops there. Faust logs "exception performing seek when flow not active" and goes on,
and the partitions after it in the loop keep a fetch position past records fetched and dropped
since the new assignment: the worker never processes them, and their committed offset stays
behind the end until the next restart or rebalance. (The warning shows in scale-out runs; one
such run, ``tests/streams/test_scale_out.py``, once ended with a partition one message short,
though not proven to be from this race.)

:func:`seek_back_past_revoked` seeks each partition still assigned on its own and leaves out
those revoked meanwhile (their next owner starts from their committed offset). Otherwise it
does what aiokafka's does: a partition with nothing committed keeps its position (sought to its
start, it would replay what was handled and not yet committed).
"""

from __future__ import annotations

import logging

from aiokafka.errors import IllegalStateError
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

log = logging.getLogger("shardshape.worker")


async def seek_to_committed(consumer) -> dict:  # type: ignore[no-untyped-def]
    """Seek every partition ``consumer`` (aiokafka) holds to its committed offset; the
    committed offsets of those still held (None: nothing committed yet)."""
    committed = {}
    for tp in sorted(consumer.assignment()):
        try:
            offset = await consumer.committed(tp)
            if offset:  # as aiokafka: a partition with nothing committed keeps its position
                consumer.seek(tp, offset)
        except IllegalStateError:
            log.info("partition %s was revoked while seeking back; its next owner resumes it", tp)
            continue
        committed[tp] = offset
    return committed


def seek_back_past_revoked() -> None:
    """Make Faust's consumers seek back with :func:`seek_to_committed`."""

    async def patched(self):  # type: ignore[no-untyped-def]
        return await self.call_thread(seek_to_committed, self._ensure_consumer())

    AIOKafkaConsumerThread.seek_to_committed = patched
