"""The profile agent's work on the messages it takes at once, step by step, without Faust.

One call of :meth:`RequestPipeline.handle` takes the requests messages the agent found queued
(:func:`~shardshape.streams.intake.take_queued`) down these steps:

1. **skipped offsets**: before each message, those its consumer skipped, read again
   (:class:`~shardshape.streams.gaps.SkippedOffsets`);
2. **receive** (:class:`~shardshape.streams.receiving.Receiver`): validated, rejected parts
   to the DLQ, the sending gateway noted as a live replica;
3. the messages are joined into groups of at most ``max_events`` events
   (:func:`~shardshape.streams.intake.merge_groups`); per group:
4. **profile** (:class:`~shardshape.streams.profile_step.ProfileStep`): one profiler call,
   changed routes published, evicted keys retired
   (:class:`~shardshape.streams.eviction.EvictedKeys`);
5. **record** (:class:`~shardshape.streams.record_step.RecordStep`): per message, key
   checkpoints, shard metrics and counters.

Every collaborator is a plain object (the tables' dicts, a publisher, recorders), so the
pipeline runs, and is tested, without a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shardshape.streams.gaps import RawMessage
from shardshape.streams.intake import MERGE_EVENTS, Received, merge_groups
from shardshape.streams.profile_step import ProfileStep
from shardshape.streams.receiving import Receiver
from shardshape.streams.record_step import RecordStep


class Skipped(Protocol):
    """What finds the messages a consumer skipped (:class:`SkippedOffsets`)."""

    async def before(
        self, partition: int, offset: int, start: int | None = None
    ) -> list[RawMessage]: ...


@dataclass(slots=True)
class RequestPipeline:
    """The steps a batch of requests messages goes through (see the module docstring).

    Parameters
    ----------
    receiver, profile, record
        The steps.
    skipped
        Finds the messages the consumer skipped before each one.
    started
        Where the consumer started a partition (its committed offset), or None when unknown:
        asked before each message, for the partitions ``skipped`` has not seen yet.
    max_events
        Events profiled per call at most.
    """

    receiver: Receiver
    profile: ProfileStep
    record: RecordStep
    skipped: Skipped
    started: Callable[[int], int | None] = lambda partition: None
    max_events: int = MERGE_EVENTS

    async def handle(self, messages: Sequence[RawMessage]) -> None:
        """Take ``messages`` (in the order consumed) through every step."""
        received: list[Received] = []
        for message in messages:
            start = self.started(message.partition)
            for gone in await self.skipped.before(message.partition, message.offset, start):
                received.append(await self.receiver.receive(gone))
            received.append(await self.receiver.receive(message))
        for group in merge_groups(received, self.max_events):
            self.record.record(group, self.profile.profile(group))
