"""Slot lending between pools: reservations plus borrowing, the one rule for gateway and simulator.

Each pool's planned slots are its reservation. A request whose own pool has no free slot may
run on an idle slot of another pool (another shard's, or the default pool) when

* the lender has no requests of its own waiting;
* after lending, the lender still has at least its **reserve** of idle slots for its own next
  arrivals: ``floor(reserve_fraction * slots)`` of its ``slots`` (a pool of fewer than
  ``1 / reserve_fraction`` slots keeps none when it lends to an equal or higher priority);
* a pool lends to a pool of **lower priority** (the plan's ``priority``: the quarantine shard,
  the default pool) only when the policy says ``to_lower``, and then always keeps at least
  one slot idle, so a small high-priority shard is never left with no free slot by a
  lower-priority request. Without ``to_lower`` a pool lends only to equal or higher priority.

Among the pools that may lend, the borrower takes a slot of the one with the most idle slots
beyond its reserve (ties: the lowest priority, then the first listed), so the least used and
least important pool lends first. A borrowed request holds the lender's slot (and counts in
its memory) until it completes; it keeps its own pool's cache, bandwidth and accounting.

The gateway (:mod:`shardshape.gateway.pools`) calls :func:`choose_lender` when it admits or
dispatches a request; the simulator (:mod:`shardshape.allocator.simulate.engine`) calls
:meth:`LendingPolicy.allows` and :meth:`LendingPolicy.reserve` to find when a lender's idle slots
exceed its reserve, and
:func:`choose_lender` to pick the lender then.

>>> policy = LendingPolicy(reserve_fraction=0.25, to_lower=False)
>>> policy.reserve(4), policy.reserve(1), policy.reserve(8)
(1, 0, 2)
>>> lenders = [Lender("interactive", priority=200, slots=4, in_use=0),
...            Lender("default", priority=0, slots=4, in_use=3),
...            Lender("exports-2", priority=100, slots=8, in_use=5)]
>>> choose_lender(policy, 100, lenders)   # interactive ranks higher: it does not lend to 100
'exports-2'
>>> choose_lender(policy, 0, lenders) is None   # default keeps its one reserve slot idle
True
>>> choose_lender(policy, 100, [Lender("busy", 100, slots=4, in_use=1, waiting=1)]) is None
True
>>> downward = LendingPolicy(reserve_fraction=0.25, to_lower=True)
>>> choose_lender(downward, 0, lenders)   # the quarantine shard may borrow interactive's
'interactive'
>>> downward.reserve(1, lender_priority=200, borrower_priority=0)   # but never its last slot
1
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class LendingPolicy:
    """How much of its idle capacity a pool keeps for itself, and to whom it lends.

    Parameters
    ----------
    reserve_fraction
        Share of a lender's slots kept idle for its own arrivals (rounded down).
    to_lower
        Whether a pool also lends to pools of lower priority (keeping at least one slot).
    """

    reserve_fraction: float = 0.25
    to_lower: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.reserve_fraction <= 1:
            raise ValueError(f"reserve_fraction must be in [0, 1], got {self.reserve_fraction}")

    def allows(self, lender_priority: int, borrower_priority: int) -> bool:
        """Whether a pool of ``lender_priority`` may lend to one of ``borrower_priority``."""
        return self.to_lower or lender_priority <= borrower_priority

    def reserve(self, slots: int, lender_priority: int = 0, borrower_priority: int = 0) -> int:
        """Idle slots a pool of ``slots`` keeps for itself when it lends to a borrower."""
        keep = math.floor(self.reserve_fraction * max(slots, 0) + 1e-9)
        return max(keep, 1) if lender_priority > borrower_priority else keep

    def spare(
        self,
        slots: int,
        in_use: int,
        waiting: int = 0,
        lender_priority: int = 0,
        borrower_priority: int = 0,
    ) -> int:
        """Slots a pool may lend now: idle ones beyond its reserve, none while it has waiters.

        >>> LendingPolicy(0.25).spare(slots=8, in_use=3), LendingPolicy(0.25).spare(8, 3, 1)
        (3, 0)
        """
        if waiting or not self.allows(lender_priority, borrower_priority):
            return 0
        keep = self.reserve(slots, lender_priority, borrower_priority)
        return max(0, slots - in_use - keep)


@dataclass(frozen=True, slots=True)
class Lender(Generic[K]):
    """A pool that might lend: its key (what :func:`choose_lender` returns; the pool itself
    will do), priority, slots, slots in use and waiting requests."""

    key: K
    priority: int
    slots: int
    in_use: int
    waiting: int = 0


def choose_lender(
    policy: LendingPolicy, borrower_priority: int, lenders: Sequence[Lender[K]]
) -> K | None:
    """The key of the pool a request of ``borrower_priority`` borrows a slot from, or ``None``.

    ``lenders`` are the other pools (not the borrower's own). See the module notes.
    """
    best: Lender[K] | None = None
    best_spare = 0
    for lender in lenders:
        spare = policy.spare(
            lender.slots, lender.in_use, lender.waiting, lender.priority, borrower_priority
        )
        if spare > best_spare or (
            spare == best_spare and best is not None and spare and lender.priority < best.priority
        ):
            best, best_spare = lender, spare
    return best.key if best is not None and best_spare > 0 else None
