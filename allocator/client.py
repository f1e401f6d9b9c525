"""The allocator client: follows the plans topic and applies each new plan of one service.

It reads the compacted plans topic from its start (so a restarted client gets the plan in
force at once), validates every message, and hands each plan newer than the one applied to a
:class:`PlanBackend`. Malformed plans, plans of other services and stale versions are ignored
with a logged reason; a backend that fails keeps the last good plan in force. With a signer,
plans not signed with a key it accepts are ignored the same way (:mod:`shardshape.core.signing`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from shardshape.core.contracts import AllocationPlan, ContractError, decode
from shardshape.core.follower import TopicFollower
from shardshape.core.signing import Checker, checker_from

if TYPE_CHECKING:
    from shardshape.core.settings import Settings

log = logging.getLogger("shardshape.allocator")


class PlanBackend(Protocol):
    """What turns a plan into limits: in-process pools, OS limits (see the gateway)."""

    def apply(self, plan: AllocationPlan) -> None: ...


class AllocatorClient:
    """Applies the plans of ``service`` to ``backend`` as they arrive.

    Parameters
    ----------
    consumer_config
        librdkafka settings (``Settings.confluent_config()``).
    topic
        The plans topic.
    service
        Whose plans to apply.
    backend
        Where plans go.
    on_applied
        Called with each plan once the backend took it (e.g. to report the version).
    signer
        When given, plans not signed with a key it accepts are ignored (``checker_from``).
    """

    def __init__(
        self,
        consumer_config: dict,
        topic: str,
        service: str,
        backend: PlanBackend,
        on_applied: Callable[[AllocationPlan], None] = lambda plan: None,
        *,
        signer: Checker | None = None,
    ) -> None:
        self.service = service
        self.backend = backend
        self.on_applied = on_applied
        self.applied: AllocationPlan | None = None
        self.ignored = 0
        self._changed = threading.Condition()
        self._follower = TopicFollower(
            consumer_config,
            topic,
            self.handle,
            signer=signer,
            on_rejected=lambda key, reason: self._ignore(f"plan under key {key!r}: {reason}"),
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        service: str,
        backend: PlanBackend,
        on_applied: Callable[[AllocationPlan], None] = lambda plan: None,
    ) -> AllocatorClient:
        """The client of ``settings``: its security, plans topic and signing key."""
        return cls(
            settings.confluent_config(),
            settings.topic_plans,
            service,
            backend,
            on_applied,
            signer=checker_from(settings),
        )

    @property
    def applied_version(self) -> int:
        return self.applied.version if self.applied else 0

    def start(self) -> AllocatorClient:
        self._follower.start()
        return self

    def stop(self) -> None:
        self._follower.stop()

    def __enter__(self) -> AllocatorClient:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_caught_up(self, timeout_s: float) -> bool:
        """True once every plan on the topic at start has been read."""
        return self._follower.caught_up.wait(timeout_s)

    def wait_for_version(self, version: int, timeout_s: float) -> bool:
        """Block until a plan of at least ``version`` is applied."""
        with self._changed:
            return self._changed.wait_for(lambda: self.applied_version >= version, timeout_s)

    def handle(self, key: bytes | None, value: bytes | None) -> None:
        """Take one plans-topic message (the follower's callback; public for tools and tests)."""
        try:
            plan = decode(AllocationPlan, value)
        except ContractError as error:
            return self._ignore(f"malformed plan under key {key!r}: {error.reason}")
        if plan.service != self.service:
            return None  # another service's plan: not ours to apply, nothing to report
        if plan.version <= self.applied_version:
            return self._ignore(
                f"stale plan v{plan.version} of {plan.service} (v{self.applied_version} applied)"
            )
        try:
            self.backend.apply(plan)
        except Exception as error:  # the backend's failure must not stop the client
            return self._ignore(
                f"backend refused plan v{plan.version}: {error!r}; keeping the last"
            )
        with self._changed:
            self.applied = plan
            self._changed.notify_all()
        log.info("applied plan %s v%d", plan.service, plan.version)
        self.on_applied(plan)
        return None

    def _ignore(self, reason: str) -> None:
        self.ignored += 1
        log.warning("ignored %s", reason)
