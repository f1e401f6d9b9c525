"""The event loop: per-queue multi-server FIFO queues, driven in ticks by a strategy.

It stays one module (about 530 lines): the tick, FIFO service, lending and capacity changes
are one algorithm whose order of steps, below, is the model; apart, each would read half of it.

Time advances in ticks (10 s by default). In each tick, in this order:

1. the strategy **routes** the requests arriving in the tick to queues (it decides with what
   it knew at the tick's start, as a gateway predicts with the snapshot it holds);
2. every queue **serves** its waiting requests first come, first served: each server (one
   request slot of a block) is a ``(free_at, block type)`` entry of a heap, and the head of
   the queue takes the server that frees first, for its service time on that server's block
   type. This is exact event-driven FIFO service within the tick: a request starts at
   ``max(arrival, free_at)`` and holds the slot for its service time. A request that would
   start after the tick's end waits for the next tick (capacity may change at the boundary);
   one that has waited ``max_wait_s`` is rejected (a client or gateway timeout) and never
   holds a slot;
   If the strategy lends (it has a ``lending`` policy,
   :class:`shardshape.allocator.lending.LendingPolicy`, and a ``priority(queue)`` method),
   the queues are served together, in arrival order, by the gateway's rule
   (:mod:`shardshape.allocator.lending`): a request whose own queue has no free slot at its arrival
   starts at the first moment either its own queue frees a slot or another queue that may lend to
   it (by priority), with no request of its own waiting, has more idle slots than its reserve (on
   the slot of the lender :func:`shardshape.allocator.lending.choose_lender` picks then).
   A borrowed request holds the lender's slot, on the lender's block type, and is reported
   as its own queue's. (Queues are merged by arrival, so a lender's own request that
   arrives while a borrowed one is being placed may find its slot taken, as in a gateway.)
3. the requests that completed (or were rejected) in the tick are **reported** to the
   strategy, as a gateway's reporter would, in completion order;
4. the strategy **controls** capacity: it may set the blocks of any queue; added slots can
   become ready after a delay (a replica starting), removed slots take no new request but
   finish the one they hold (a pool shrinking), the ones that free first go first.

Capacity changes only at tick boundaries, which is where every strategy decides anyway (an
autoscaler's sync period, a planner's window). The cost per request is one heap operation
(``O(log slots)``) in a Python loop; everything per tick (routing, learning, planning) is the
strategies' batch code.

>>> import numpy as np
>>> from shardshape.allocator.blocks import BlockType
>>> from shardshape.allocator.simulate.workload import Profile, Workload
>>> block = BlockType(name="b", cpu_millicores=1000, memory_mib=1, concurrency=1, cost=1)
>>> n = 4
>>> w = Workload("svc", (Profile("p", slo_ms=1_500),), (block,), np.array([0.0, 0.1, 0.2, 0.3]),
...              np.zeros(n, int), np.zeros(n, int), ("GET",), ["u"] * n, np.zeros(n),
...              np.zeros(n), np.zeros(n, bool), np.ones((n, 1)), [{}] * n, 0.0, 0.0, 10.0)
>>> class One:
...     name = "one"
...     def start(self, workload): return {"q": {"b": 1}}
...     def route(self, lo, hi, now): return ["q"] * (hi - lo)
...     def observe(self, done, now): pass
...     def control(self, now, view): return None
>>> result = Simulation(w, One(), tick_s=5.0).run()
>>> result.latency_s.round(1).tolist()   # one slot, 1 s each: everyone waits for the one before
[1.0, 1.9, 2.8, 3.7]
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from shardshape.allocator.lending import Lender, LendingPolicy, choose_lender
from shardshape.allocator.simulate.workload import Workload

QueueKey = Hashable
Allocation = Mapping[QueueKey, Mapping[str, int]]


@dataclass(frozen=True)
class Completed:
    """Requests that completed or were rejected in one tick, in completion order."""

    index: np.ndarray  # request indices into the workload
    latency_s: np.ndarray  # response time: queueing + service, or the wait until rejected
    service_s: np.ndarray  # time holding a slot (0 when rejected)
    rejected: np.ndarray  # bool
    queue: list[QueueKey]  # where each one ran


class Strategy(Protocol):
    """What the engine asks of a strategy (see the module docstring for the order)."""

    name: str

    def start(self, workload: Workload) -> Allocation:
        """Initial blocks per queue, before the first tick."""
        ...

    def route(self, lo: int, hi: int, now: float) -> Sequence[QueueKey]:
        """Queue of each request ``lo .. hi-1`` (they arrive in the tick starting at ``now``)."""
        ...

    def observe(self, done: Completed, now: float) -> None:
        """What the gateways report about the requests that completed in the tick."""
        ...

    def control(self, now: float, view: EngineView) -> Allocation | None:
        """New blocks per queue (only the queues that change), or None."""
        ...


class EngineView(Protocol):
    """Read-only state a controller may measure (what a metrics pipeline would show)."""

    def busy_slots(self, key: QueueKey, now: float) -> int: ...

    def ready_slots(self, key: QueueKey, now: float) -> int: ...

    def slots(self, key: QueueKey) -> int: ...

    def blocks(self, key: QueueKey) -> dict[str, int]: ...

    def waiting(self) -> list[int]: ...


@dataclass
class RunResult:
    """Everything a run measured; :mod:`shardshape.allocator.simulate.results` summarises it."""

    strategy: str
    workload: Workload
    latency_s: np.ndarray  # per request; NaN if it never completed before the end
    rejected: np.ndarray
    queue: list[QueueKey | None]
    block_seconds: dict[str, float]  # per block type, over the scored period
    timeline_s: np.ndarray  # sample times
    timeline: dict[str, np.ndarray]  # blocks held per queue (as a string) at each sample
    extras: dict[str, object] = field(default_factory=dict)  # strategy-specific series
    lent: dict[str, int] = field(default_factory=dict)  # requests served on each queue's slots
    # for another queue (scored or not), when the strategy lends

    @property
    def block_hours(self) -> float:
        return sum(self.block_seconds.values()) / 3600.0

    @property
    def cost_hours(self) -> float:
        costs = {b.name: b.cost for b in self.workload.block_types}
        return sum(costs[t] * s for t, s in self.block_seconds.items()) / 3600.0


class _Queue:
    __slots__ = ("blocks", "heap", "key", "starting", "waiting")

    def __init__(self, key: QueueKey = None) -> None:
        self.key = key
        self.heap: list[tuple[float, int]] = []  # (free_at, block type index)
        self.waiting: deque[int] = deque()
        self.blocks: dict[int, int] = {}
        self.starting: list[float] = []  # ready times of slots still starting


class _Ledger:
    """What serving records: each request's latency and busy time (the whole run's), and the
    requests started (with their finish times) and dropped in the current tick."""

    __slots__ = ("dropped", "finished", "held", "latency", "max_wait", "served")

    def __init__(self, latency: list[float], held: list[float], max_wait: float) -> None:
        self.latency, self.held, self.max_wait = latency, held, max_wait
        self.served: list[int] = []
        self.finished: list[float] = []
        self.dropped: list[int] = []

    def new_tick(self) -> None:
        self.served, self.finished, self.dropped = [], [], []

    def drop(self, i: int) -> None:
        """Request ``i`` waited ``max_wait`` and was turned away."""
        self.latency[i] = self.max_wait
        self.dropped.append(i)

    def start(self, i: int, arrival: float, begin: float, service: float) -> None:
        """Request ``i`` (arrived at ``arrival``) runs from ``begin`` for ``service`` s."""
        self.latency[i] = begin + service - arrival
        self.held[i] = service
        self.served.append(i)
        self.finished.append(begin + service)


class Simulation:
    """One strategy over one workload.

    Parameters
    ----------
    workload
        The requests (see :class:`~shardshape.allocator.simulate.workload.Workload`).
    strategy
        Routes requests and sets blocks (see :class:`Strategy`).
    tick_s
        Length of one tick.
    max_wait_s
        Longest a request waits for a slot before it is rejected.
    ready_delay_s
        Delay before added slots serve (a strategy may set ``ready_delay_s`` itself).
    sample_s
        Interval of the blocks timeline.
    """

    def __init__(
        self,
        workload: Workload,
        strategy: Strategy,
        *,
        tick_s: float = 10.0,
        max_wait_s: float = 120.0,
        ready_delay_s: float = 0.0,
        sample_s: float = 60.0,
    ) -> None:
        if tick_s <= 0 or max_wait_s <= 0:
            raise ValueError(f"tick_s={tick_s} and max_wait_s={max_wait_s} must be positive")
        self.w = workload
        self.strategy = strategy
        self.tick_s = tick_s
        self.max_wait_s = max_wait_s
        self.ready_delay_s = float(getattr(strategy, "ready_delay_s", ready_delay_s))
        self.sample_s = sample_s
        self._types = {b.name: i for i, b in enumerate(workload.block_types)}
        self._slots = [b.concurrency for b in workload.block_types]
        self._queues: dict[QueueKey, _Queue] = {}
        self.lending: LendingPolicy | None = getattr(strategy, "lending", None)
        self._lent: dict[QueueKey, int] = {}

    # -- the view a controller measures ---------------------------------------------------
    def busy_slots(self, key: QueueKey, now: float) -> int:
        """Slots serving a request at ``now`` (all ready ones while requests wait)."""
        q = self._queues.get(key)
        if q is None:
            return 0
        starting = sum(1 for ready in q.starting if ready > now)
        if q.waiting:
            return len(q.heap) - starting
        return sum(1 for free, _ in q.heap if free > now) - starting

    def waiting(self) -> list[int]:
        """The requests (workload rows) waiting for a slot in any queue."""
        return [i for q in self._queues.values() for i in q.waiting]

    def ready_slots(self, key: QueueKey, now: float) -> int:
        """Slots that exist and have started at ``now``."""
        q = self._queues.get(key)
        if q is None:
            return 0
        return len(q.heap) - sum(1 for ready in q.starting if ready > now)

    def slots(self, key: QueueKey) -> int:
        """Slots a queue holds, started or starting."""
        q = self._queues.get(key)
        return len(q.heap) if q else 0

    def blocks(self, key: QueueKey) -> dict[str, int]:
        """Blocks a queue holds, by block type name."""
        q = self._queues.get(key)
        names = self.w.block_types
        return {names[t].name: n for t, n in q.blocks.items() if n} if q else {}

    # -- the run --------------------------------------------------------------------------
    def run(self, progress: Callable[[float], None] | None = None) -> RunResult:
        """Simulate from the workload's start to its end, then drain what is still queued;
        ``progress(fraction)`` is called after every tick."""
        w = self.w
        n = len(w)
        # Arrivals stop at the end; the run goes on until what arrived before it is served.
        longest = float(w.service_s.max()) if n else 0.0
        drain = self.max_wait_s + min(longest, 3_600.0)
        n_ticks = math.ceil((w.end + drain - w.start) / self.tick_s)
        edges = w.start + self.tick_s * np.arange(n_ticks + 1)
        bounds = np.searchsorted(w.arrival, edges, side="left").tolist()
        n_arriving = int(np.searchsorted(w.arrival, w.end, side="left"))
        arrival = w.arrival.tolist()
        service = [w.service_s[:, t].tolist() for t in range(len(w.block_types))]
        latency = [math.nan] * n
        held = [0.0] * n
        ledger = _Ledger(latency, held, self.max_wait_s)
        rejected = [False] * n
        queue_of: list[QueueKey | None] = [None] * n
        pending_idx = np.zeros(0, dtype=np.int64)
        pending_fin = np.zeros(0)
        block_seconds = np.zeros(len(w.block_types))
        samples: list[tuple[float, dict[str, int]]] = []
        next_sample = w.start

        self._apply(self.strategy.start(w), w.start, delay=0.0)
        for k in range(n_ticks):
            t0, t1 = float(edges[k]), float(edges[k + 1])
            lo, hi = bounds[k], bounds[k + 1]
            if hi > lo and lo < n_arriving:
                hi = min(hi, n_arriving)
                keys = self.strategy.route(lo, hi, t0)
                queues = self._queues
                for i, key in zip(range(lo, hi), keys, strict=True):
                    q = queues.get(key)
                    if q is None:
                        q = queues[key] = _Queue(key)
                    q.waiting.append(i)
                    queue_of[i] = key
            ledger.new_tick()
            if self.lending is not None:
                self._serve_lending(t1, arrival, service, ledger)
            else:
                for q in self._queues.values():
                    if q.waiting:
                        self._serve(q, t1, arrival, service, ledger)
            served, finished, dropped = ledger.served, ledger.finished, ledger.dropped
            for i in dropped:
                rejected[i] = True
            if served:
                pending_idx = np.concatenate([pending_idx, np.asarray(served, dtype=np.int64)])
                pending_fin = np.concatenate([pending_fin, np.asarray(finished)])
            now_done = pending_fin < t1
            done_idx = pending_idx[now_done]
            done_at = pending_fin[now_done]
            pending_idx, pending_fin = pending_idx[~now_done], pending_fin[~now_done]
            if dropped:
                drop = np.asarray(dropped, dtype=np.int64)
                done_idx = np.concatenate([done_idx, drop])
                done_at = np.concatenate([done_at, w.arrival[drop] + self.max_wait_s])
            if len(done_idx):
                order = np.argsort(done_at, kind="stable")
                done_idx = done_idx[order]
                self.strategy.observe(
                    Completed(
                        index=done_idx,
                        latency_s=np.asarray([latency[i] for i in done_idx.tolist()]),
                        service_s=np.asarray([held[i] for i in done_idx.tolist()]),
                        rejected=np.asarray([rejected[i] for i in done_idx.tolist()]),
                        queue=[queue_of[i] for i in done_idx.tolist()],
                    ),
                    t1,
                )
            # Blocks held during the tick (changes take effect at its end).
            in_scored = max(0.0, min(t1, w.end) - max(t0, w.score_from))
            if in_scored > 0:
                for q in self._queues.values():
                    for t, count in q.blocks.items():
                        block_seconds[t] += count * in_scored
            while next_sample <= t0:
                samples.append(
                    (next_sample, {str(key): self._total(q) for key, q in self._queues.items()})
                )
                next_sample += self.sample_s
            change = self.strategy.control(t1, self)
            if change:
                self._apply(change, t1, self.ready_delay_s)
            if progress is not None:
                progress((k + 1) / n_ticks)

        names = sorted({key for _, blocks in samples for key in blocks})
        timeline = {
            name: np.array([blocks.get(name, 0) for _, blocks in samples], dtype=float)
            for name in names
        }
        return RunResult(
            strategy=self.strategy.name,
            workload=w,
            latency_s=np.asarray(latency),
            rejected=np.asarray(rejected),
            queue=queue_of,
            block_seconds={
                b.name: float(s) for b, s in zip(w.block_types, block_seconds, strict=True)
            },
            timeline_s=np.array([t for t, _ in samples]),
            timeline=timeline,
            extras=dict(getattr(self.strategy, "extras", {}) or {}),
            lent={str(key): n for key, n in self._lent.items()},
        )

    def _serve(
        self,
        q: _Queue,
        t_end: float,
        arrival: list[float],
        service: list[list[float]],
        ledger: _Ledger,
    ) -> None:
        """FIFO service of ``q``'s waiting requests that start before ``t_end``."""
        heap, waiting, max_wait = q.heap, q.waiting, self.max_wait_s
        replace, popleft = heapq.heapreplace, waiting.popleft
        while waiting:
            i = waiting[0]
            a = arrival[i]
            if not heap:
                if a + max_wait < t_end:
                    popleft()
                    ledger.drop(i)
                    continue
                return
            free, t = heap[0]
            begin = a if a > free else free
            if begin - a > max_wait:
                if a + max_wait >= t_end:
                    return  # may still be served after the boundary's capacity change
                popleft()
                ledger.drop(i)
                continue
            if begin >= t_end:
                return
            popleft()
            s = service[t][i]
            replace(heap, (begin + s, t))
            ledger.start(i, a, begin, s)

    def _serve_lending(
        self, t_end: float, arrival: list[float], service: list[list[float]], ledger: _Ledger
    ) -> None:
        """Every queue's waiting requests in arrival order, each on its own queue's slot or,
        when that one frees later, on a slot borrowed by the lending rule (module notes)."""
        policy = self.lending
        assert policy is not None
        queues = self._queues
        priority_of = self.strategy.priority  # type: ignore[attr-defined]
        priority = {key: int(priority_of(key)) for key in queues}
        lenders_of = {
            key: [
                lender
                for k, lender in queues.items()
                if k != key and policy.allows(priority[k], priority[key])
            ]
            for key, q in queues.items()
            if q.waiting
        }
        heads = [
            (arrival[q.waiting[0]], n, key)
            for n, (key, q) in enumerate(queues.items())
            if q.waiting
        ]
        heapq.heapify(heads)
        max_wait, inf = self.max_wait_s, math.inf
        while heads:
            a, n, key = heads[0]
            q = queues[key]
            i = q.waiting[0]
            own = q.heap[0][0] if q.heap else inf
            begin, lender = (a if a > own else own), q
            if begin > a:  # its own slots are busy: may it borrow one sooner?
                begin, lender = self._lender(policy, key, a, begin, lenders_of[key], priority)
            if begin - a > max_wait:
                if a + max_wait >= t_end:
                    heapq.heappop(heads)  # may still be served after the boundary
                    continue
                q.waiting.popleft()
                ledger.drop(i)
            elif begin >= t_end:
                heapq.heappop(heads)
                continue
            else:
                q.waiting.popleft()
                _, t = lender.heap[0]
                s = service[t][i]
                heapq.heapreplace(lender.heap, (begin + s, t))
                ledger.start(i, a, begin, s)
                if lender is not q:
                    self._lent[lender.key] = self._lent.get(lender.key, 0) + 1
            if q.waiting:
                heapq.heapreplace(heads, (arrival[q.waiting[0]], n, key))
            else:
                heapq.heappop(heads)

    def _lender(
        self,
        policy: LendingPolicy,
        key: QueueKey,
        a: float,
        own: float,
        lenders: list[_Queue],
        priority: dict[QueueKey, int],
    ) -> tuple[float, _Queue]:
        """When and where a request of ``key`` arriving at ``a`` starts: the first moment
        before ``own`` (when its own queue has a slot) at which some lender has more idle
        slots than its reserve and no waiting request, on the slot of the lender
        :func:`shardshape.allocator.lending.choose_lender` picks then; else ``own`` on its own
        queue."""
        ready: list[tuple[float, _Queue]] = []
        arrival = self.w.arrival
        for lender in lenders:
            heap = lender.heap
            keep = policy.reserve(len(heap), priority[lender.key], priority[key])
            if len(heap) <= keep:
                continue
            free = heap[0][0] if keep == 0 else heapq.nsmallest(keep + 1, heap)[-1][0]
            if free < own:
                ready.append((free, lender))
        q = self._queues[key]
        if not ready:
            return own, q
        begin = max(a, min(free for free, _ in ready))
        states = []
        for free, lender in ready:
            if free > begin or (lender.waiting and arrival[lender.waiting[0]] <= begin):
                continue  # not idle beyond its reserve yet, or its own requests wait
            busy = sum(f > begin for f, _ in lender.heap)
            states.append(Lender(lender, priority[lender.key], len(lender.heap), busy))
        chosen = choose_lender(policy, priority[key], states)
        if chosen is None:
            return own, q
        return begin, chosen

    def _total(self, q: _Queue) -> int:
        return sum(q.blocks.values())

    def _apply(self, change: Allocation, now: float, delay: float) -> None:
        for key, blocks in change.items():
            q = self._queues.get(key)
            if q is None:
                q = self._queues[key] = _Queue(key)
            wanted: dict[int, int] = {}
            for name, count in blocks.items():
                if name not in self._types:
                    known = ", ".join(self._types)
                    raise KeyError(f"queue {key!r}: unknown block type {name!r}; known: {known}")
                wanted[self._types[name]] = int(count)
            for t in set(q.blocks) | set(wanted):
                diff = wanted.get(t, 0) - q.blocks.get(t, 0)
                slots = self._slots[t]
                if diff > 0:
                    ready = now + delay
                    for _ in range(diff * slots):
                        heapq.heappush(q.heap, (ready, t))
                    if delay > 0:
                        q.starting.extend([ready] * (diff * slots))
                elif diff < 0:
                    of_type = sorted(e for e in q.heap if e[1] == t)
                    keep = [e for e in q.heap if e[1] != t] + of_type[-diff * slots :]
                    heapq.heapify(keep)
                    q.heap = keep
                q.blocks[t] = wanted.get(t, 0)
            q.starting = [r for r in q.starting if r > now]
