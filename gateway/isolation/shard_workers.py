"""One shard of a process-mode pool: its workers, its queue and its counts.

:class:`~shardshape.gateway.isolation.process_pool.ProcessShardPool` holds one
:class:`ShardWorkers` per shard it runs and changes it only under its lock. Nothing here starts
a process or a thread: a shard is plain state, sized by plans (:meth:`ShardWorkers.resize`,
:meth:`ShardWorkers.drain`) and fed from its queue as workers become free
(:meth:`ShardWorkers.next_task`). A worker is told to go by closing its input: it exits after
the request it runs, so no request in flight is lost to a smaller plan.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from typing import Any, Protocol

from shardshape.core.contracts import ResourceSpec
from shardshape.gateway.isolation.cgroups import ShardGroup
from shardshape.gateway.isolation.detect import Mode
from shardshape.gateway.isolation.restarts import Restarts
from shardshape.gateway.status import ShardPoolStatus


class Task:
    """One request for a worker: its protocol line, its queue deadline and its future."""

    __slots__ = ("deadline", "future", "handler", "id", "line")

    def __init__(self, task_id: int, handler: str, line: bytes, deadline: float) -> None:
        self.id = task_id
        self.handler = handler
        self.line = line
        self.deadline = deadline
        self.future: Future[Any] = Future()


class Process(Protocol):
    """What a shard needs of a worker process (a :class:`~.worker_process.WorkerProcess`)."""

    pid: int
    input_closed: bool

    def send(self, line: bytes) -> None: ...

    def close_input(self) -> None: ...


class PooledWorker:
    """A worker process as its shard sees it: the request it runs and where it stands."""

    def __init__(self, process: Process, shard: ShardWorkers) -> None:
        self.process = process
        self.pid = process.pid
        self.shard = shard
        self.task: Task | None = None
        self.ready = False
        self.retiring = False
        self.baseline_vsz = 0  # its address space when it got ready (for RLIMIT_AS)

    @property
    def idle(self) -> bool:
        return self.ready and self.task is None and not self.retiring

    def send(self, task: Task) -> None:
        self.process.send(task.line)

    def close_input(self) -> None:
        self.process.close_input()

    def assign(self, task: Task) -> bool:
        """Take ``task``; False when its caller cancelled it meanwhile."""
        if not task.future.set_running_or_notify_cancel():
            return False
        self.task = task
        return True


class ShardWorkers:
    """The workers, queue and counts of one shard.

    Parameters
    ----------
    shard_id
        The shard.
    spec
        Its per-replica resources in the plan in force (``concurrency`` workers).
    group
        Its cgroup (None: per-process limits or none).
    service
        The service, for messages.
    """

    def __init__(
        self, shard_id: int, spec: ResourceSpec, group: ShardGroup | None, service: str
    ) -> None:
        self.shard_id = shard_id
        self.spec = spec
        self.group = group
        self.workers: list[PooledWorker] = []
        self.starting = 0  # workers being started, not yet in ``workers``
        self.pending: deque[Task] = deque()
        self.draining = False
        self.restarts = Restarts(f"shard {shard_id} of {service}")
        self.rejected = 0
        self.failures = 0
        self.oom_seen = group.oom_kills() if group else 0

    def live(self) -> list[PooledWorker]:
        """Workers that stay (not retiring)."""
        return [w for w in self.workers if not w.retiring]

    def idle_worker(self) -> PooledWorker | None:
        return next((w for w in self.workers if w.idle), None)

    @property
    def drained(self) -> bool:
        """Retired by a plan, and its last worker gone."""
        return self.draining and not self.workers and not self.starting

    def resize(self, spec: ResourceSpec) -> int:
        """Take a new plan's ``spec``; returns how many workers to start (counted as starting).

        Surplus workers retire, idle ones first; busy ones finish their request, then exit.
        Workers still finishing are taken back before new ones are started.
        """
        self.spec, self.draining = spec, False
        self.restarts.reset()
        live = self.live()
        surplus = len(live) + self.starting - spec.concurrency
        for worker in sorted(live, key=lambda w: w.task is not None)[: max(surplus, 0)]:
            worker.retiring = True
            if worker.task is None:
                worker.close_input()
        for worker in self.workers:
            if surplus < 0 and worker.retiring and not worker.process.input_closed:
                worker.retiring = False
                surplus += 1
        missing = max(-surplus, 0)
        self.starting += missing
        return missing

    def drain(self) -> None:
        """The plan dropped the shard: idle workers go now, busy ones after their request."""
        if self.draining:
            return
        self.draining = True
        for worker in self.workers:
            if worker.task is None:
                worker.retiring = True
                worker.close_input()

    def next_task(self, worker: PooledWorker) -> Task | None:
        """The next queued task for ``worker``, which just became free (or None: it waits,
        or it is told to go when the shard drains or it retires)."""
        while worker.idle and self.pending:
            task = self.pending.popleft()
            if worker.assign(task):
                return task
        if self.draining and not self.pending and not worker.retiring:
            worker.retiring = True
            worker.close_input()
        elif worker.retiring and worker.task is None:
            worker.close_input()
        return None

    def expire(self, now: float) -> list[Task]:
        """Take the queued tasks whose deadline has passed out of the queue (counted)."""
        expired = []
        while self.pending and self.pending[0].deadline <= now:
            expired.append(self.pending.popleft())
            self.rejected += 1
        return expired

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer stopped a process of the shard's cgroup since the
        last call."""
        if self.group is None:
            return False
        kills = self.group.oom_kills()
        oom, self.oom_seen = kills > self.oom_seen, kills
        return oom

    def status(self, mode: Mode) -> ShardPoolStatus:
        return ShardPoolStatus(
            shard_id=self.shard_id,
            name=f"shard {self.shard_id}",
            mode=mode,
            limits=self.spec,
            in_flight=sum(w.task is not None for w in self.workers),
            queued=len(self.pending),
            rejected=self.rejected,
            workers=len(self.live()) + self.starting,
            failures=self.failures,
            draining=self.draining,
        )
