"""The first step of a requests message: validated, its rejected parts to the DLQ, its gateway
noted as a live replica of its services."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from shardshape.allocator.planning import ReplicaTracker
from shardshape.core.contracts import encode
from shardshape.streams.gaps import RawMessage
from shardshape.streams.intake import Received
from shardshape.streams.validation import MessageOrigin, validate_message

log = logging.getLogger("shardshape.worker")


class DeadLetterTopic(Protocol):
    """Where dead letters go (the DLQ topic, a Faust topic in the worker)."""

    async def send(self, *, key: bytes | None, value: bytes) -> object: ...


@dataclass(slots=True)
class Receiver:
    """Validates requests-topic messages (:func:`~shardshape.streams.validation.validate_message`).

    Parameters
    ----------
    topic
        The requests topic (named in dead letters).
    worker_id
        This worker (named in dead letters).
    dlq
        Where each rejected part goes, keyed as its message.
    replicas
        Notes the gateway that sent each message with valid events.
    """

    topic: str
    worker_id: str
    dlq: DeadLetterTopic
    replicas: ReplicaTracker

    async def receive(self, message: RawMessage) -> Received:
        """``message`` validated: its valid events; its rejected parts sent to the DLQ."""
        origin = MessageOrigin(self.topic, message.partition, message.offset, message.key)
        result = validate_message(message.value, origin, self.worker_id)
        batch = result.batch
        if len(batch):
            self.replicas.saw(result.gateway_id, set(batch.service), time.time())
        for letter in result.dead_letters:
            log.warning("dead letter %s[%d]@%d: %s", origin.topic, origin.partition,
                        origin.offset, letter.reason)  # fmt: skip
            await self.dlq.send(key=message.key, value=encode(letter))
        return Received(
            message.partition, message.offset, message.timestamp, batch, len(result.dead_letters)
        )
