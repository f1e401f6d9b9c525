"""The two classic ways to run a mixed stream: one autoscaled pool, or fixed partitions.

* :class:`SharedReactive` (``shared-reactive``): every request in one FIFO pool of blocks of
  the service's default type, scaled on utilisation as a horizontal pod autoscaler does:
  ``desired = ceil(blocks * utilisation / target)`` with a 10% tolerance, utilisation the mean
  share of busy slots over the last minute (slots still starting count as idle), new blocks
  ready after a start-up delay, and scale-down only to the highest desire of the last five
  minutes (the stabilisation window). It sees utilisation only: not the queue, not who calls.
* :class:`StaticByType` (``static-by-type``): one fixed partition per request type, sized from
  the previous day's logs in proportion to each type's peak hourly busy slots; request types
  the logs never saw go to the largest partition.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from shardshape.allocator.simulate.engine import Allocation, Completed, EngineView, QueueKey
from shardshape.allocator.simulate.names import BLOCK_START_S
from shardshape.allocator.simulate.workload import Workload

SHARED = "shared"


class SharedReactive:
    """One shared FIFO pool, autoscaled reactively on utilisation (see the module notes).

    Parameters
    ----------
    workload
        The run's requests (only its block types are read).
    target_utilisation
        The autoscaler's target: the knob that trades blocks for latency.
    block_type
        The pool's block type (default: the workload's first).
    """

    name = "shared-reactive"

    def __init__(
        self,
        workload: Workload,
        *,
        target_utilisation: float = 0.7,
        block_type: str | None = None,
        window_s: float = 60.0,
        ready_delay_s: float = BLOCK_START_S,
        stabilisation_s: float = 300.0,
        tolerance: float = 0.1,
        min_blocks: int = 1,
        max_blocks: int = 10_000,
        initial_blocks: int = 4,
    ) -> None:
        if not 0 < target_utilisation <= 1:
            raise ValueError(f"target_utilisation={target_utilisation}: must be in (0, 1]")
        self.target = target_utilisation
        self.block_type = block_type or workload.block_types[0].name
        self.ready_delay_s = ready_delay_s
        self.window_s = window_s
        self.stabilisation_s = stabilisation_s
        self.tolerance = tolerance
        self.min_blocks, self.max_blocks = min_blocks, max_blocks
        self.blocks = max(min_blocks, initial_blocks)
        self._samples: deque[tuple[float, float]] = deque()  # (time, busy share)
        self._desired: deque[tuple[float, int]] = deque()
        self.extras: dict[str, object] = {}

    def start(self, workload: Workload) -> Allocation:
        return {SHARED: {self.block_type: self.blocks}}

    def route(self, lo: int, hi: int, now: float) -> Sequence[QueueKey]:
        return [SHARED] * (hi - lo)

    def observe(self, done: Completed, now: float) -> None:
        pass

    def control(self, now: float, view: EngineView) -> Allocation | None:
        slots = view.slots(SHARED)
        share = view.busy_slots(SHARED, now) / slots if slots else 1.0
        self._samples.append((now, share))
        while self._samples[0][0] <= now - self.window_s:
            self._samples.popleft()
        utilisation = sum(s for _, s in self._samples) / len(self._samples)
        ratio = utilisation / self.target
        desired = self.blocks
        if abs(ratio - 1.0) > self.tolerance:
            desired = math.ceil(self.blocks * ratio)
        desired = min(max(desired, self.min_blocks), self.max_blocks, 2 * self.blocks + 4)
        self._desired.append((now, desired))
        while self._desired[0][0] <= now - self.stabilisation_s:
            self._desired.popleft()
        wanted = max(d for _, d in self._desired)  # scale down only as far as all recent agree
        if wanted == self.blocks:
            return None
        self.blocks = wanted
        return {SHARED: {self.block_type: wanted}}


class StaticByType:
    """Fixed partitions per request type, sized from history (see the module notes).

    Parameters
    ----------
    workload
        The run's requests (request types are read at arrival, as a router would).
    history
        Earlier requests with their service times: the logs the sizing reads.
    total_blocks
        Blocks shared out among the partitions: the knob.
    block_type
        The partitions' block type (default: the workload's first).
    """

    name = "static-by-type"

    def __init__(
        self,
        workload: Workload,
        history: Workload,
        *,
        total_blocks: int,
        block_type: str | None = None,
    ) -> None:
        self.block_type = block_type or workload.block_types[0].name
        self.sizes = partition_sizes(history, total_blocks, self.block_type)
        largest = max(self.sizes, key=lambda name: self.sizes[name])
        names = workload.type_names
        self._queue_of_type = [name if name in self.sizes else largest for name in names]
        self._types = workload.request_type
        self.extras: dict[str, object] = {"partitions": dict(self.sizes)}

    def start(self, workload: Workload) -> Allocation:
        return {name: {self.block_type: n} for name, n in self.sizes.items()}

    def route(self, lo: int, hi: int, now: float) -> Sequence[QueueKey]:
        lookup = self._queue_of_type
        return [lookup[t] for t in self._types[lo:hi].tolist()]

    def observe(self, done: Completed, now: float) -> None:
        pass

    def control(self, now: float, view: EngineView) -> Allocation | None:
        return None


def partition_sizes(history: Workload, total_blocks: int, block_type: str) -> dict[str, int]:
    """Blocks per request type: ``total_blocks`` in proportion to each type's peak hourly
    busy slots in ``history``, at least one each (largest remainders get the rest).

    >>> from shardshape.allocator.simulate.mixed import mixed_history
    >>> sizes = partition_sizes(mixed_history(), 20, "block")
    >>> sum(sizes.values()), min(sizes.values()) >= 1
    (20, True)
    """
    names = history.type_names
    if total_blocks < len(names):
        raise ValueError(
            f"total_blocks={total_blocks}: need at least one block per request type "
            f"({len(names)}: {', '.join(names)})"
        )
    t = history.type_index(block_type)
    hour = np.floor((history.arrival - history.arrival.min()) / 3600.0).astype(np.int64)
    peak = np.zeros(len(names))
    for i in range(len(names)):
        mine = history.request_type == i
        if mine.any():
            busy = np.bincount(hour[mine], weights=history.service_s[mine, t]) / 3600.0
            peak[i] = busy.max()
    share = peak / peak.sum() if peak.sum() > 0 else np.full(len(names), 1 / len(names))
    spare = total_blocks - len(names)
    exact = share * spare
    sizes = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - sizes), kind="stable")[: spare - int(sizes.sum())]:
        sizes[i] += 1
    return {name: int(n) + 1 for name, n in zip(names, sizes.tolist(), strict=True)}
