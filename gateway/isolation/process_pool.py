"""Process-mode shard pools: each shard's requests run in its own worker processes, under OS limits.

Each shard of the plan in force gets ``concurrency`` worker processes (see
:mod:`shardshape.gateway.isolation.worker`) placed in the shard's cgroup, whose CPU quota, memory
limit and I/O weight come from the shard's per-replica resources; where the host has no cgroup
controller for a resource, each worker gets a per-process fallback (nice, RLIMIT_AS, ionice).
A request is a handler named ``module:function`` and JSON arguments; its result comes back
as JSON. Nothing is pickled.

This module is the pool's job: taking requests, applying plans, reacting to its workers'
events and closing, under one lock and with one thread that expires queued requests. The rest
lives in modules with one job each: a shard's workers and queue
(:mod:`~shardshape.gateway.isolation.shard_workers`), spawning and reading a worker
(:mod:`~shardshape.gateway.isolation.worker_process`), the child's loop
(:mod:`~shardshape.gateway.isolation.worker`), the pipe protocol
(:mod:`~shardshape.gateway.isolation.protocol`), restarting
(:mod:`~shardshape.gateway.isolation.restarts`) and the limits applied to a worker
(:mod:`~shardshape.gateway.isolation.worker_limits`).

A worker that dies (e.g. the kernel's OOM killer stops it at its shard's memory limit) fails
only the request it was running, with :class:`WorkerLost`, and is replaced; other shards never
notice. :meth:`ProcessShardPool.apply` resizes limits and worker counts live: a worker that
must go finishes its current request first.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from shardshape.core.contracts import AllocationPlan, ResourceSpec
from shardshape.core.environment import process_environment
from shardshape.core.settings import Settings, load_settings
from shardshape.gateway.isolation.cgroups import ShardGroup
from shardshape.gateway.isolation.detect import IsolationCapabilities, Mode, detect_capabilities
from shardshape.gateway.isolation.errors import (
    HandlerFailed,
    ShardPoolError,
    ShardUnavailable,
    WorkerLost,
)
from shardshape.gateway.isolation.protocol import task_line
from shardshape.gateway.isolation.restarts import exit_message, signal_name
from shardshape.gateway.isolation.shard_workers import PooledWorker, ShardWorkers, Task
from shardshape.gateway.isolation.worker import parse_handler
from shardshape.gateway.isolation.worker_limits import WorkerLimits, baseline_size
from shardshape.gateway.isolation.worker_process import WorkerProcess, worker_environment
from shardshape.gateway.status import ShardPoolStatus

log = logging.getLogger("shardshape.gateway.isolation")


class ProcessShardPool:
    """Worker processes per shard under OS limits, sized by live plans (a ``PlanBackend``).

    Parameters
    ----------
    service
        The service whose plans this pool applies.
    settings
        ``isolation_*`` (mode, cgroup parent and base) and ``gateway_queue_*`` (the queue of a
        shard whose plan gives none); read from the environment when None.
    capabilities
        The host's isolation, when already detected (:func:`detect_capabilities`).
    stop_timeout_s
        How long :meth:`close` lets running requests finish before it kills their workers.
    environment
        The environment workers start with, before ``PYTHONPATH`` is set to this interpreter's
        import path (default: this process's environment when the pool is made).

    Raises
    ------
    IsolationError
        When ``SHARDSHAPE_ISOLATION_MODE`` names a mode this host does not allow.
    """

    def __init__(
        self,
        service: str,
        settings: Settings | None = None,
        *,
        capabilities: IsolationCapabilities | None = None,
        stop_timeout_s: float = 10.0,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.service = service
        self.settings = settings or load_settings()
        caps = (capabilities or detect_capabilities(self.settings)).require()
        self.capabilities = caps
        self.stop_timeout_s = stop_timeout_s
        self.plan_version = 0
        self._limits = WorkerLimits(service, caps)
        if self.mode == "none":
            log.warning(
                "%s: the host allows no OS limits for shard workers (%s); they run with "
                "concurrency limits only, like in-process pools (see `shardshape doctor`)",
                service,
                "; ".join(caps.reasons) or "isolation mode none",
            )
        else:
            log.info(
                "%s: shard workers isolated by %s (%s)",
                service,
                self.mode,
                ", ".join(f"{r} via {h.via}" for r, h in caps.enforcement.items()),
            )
        self._environment = worker_environment(
            process_environment() if environment is None else environment
        )
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._shards: dict[int, ShardWorkers] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._reaper = threading.Thread(
            target=self._expire_queued, name=f"shardshape-pool-{service}-timeouts", daemon=True
        )
        self._reaper.start()
        atexit.register(self.close)

    @property
    def mode(self) -> Mode:
        """How the workers are isolated: the host's mode, or the fallback when the service's
        cgroups could not be made."""
        return self._limits.mode

    # -- requests ---------------------------------------------------------------------------
    def submit(self, shard_id: int, handler: str, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``handler(*args, **kwargs)`` in a worker of ``shard_id``; the future has its result.

        Raises :class:`ShardUnavailable` at once when the shard cannot take the request; the
        future fails with :class:`HandlerFailed`, :class:`WorkerLost` or
        :class:`ShardUnavailable` (waited past the queue timeout).
        """
        parse_handler(handler)
        task_id = next(self._ids)
        line = task_line(task_id, handler, args, kwargs)
        with self._lock:
            shard = self._accepting(shard_id)
            timeout_ms = shard.spec.queue_timeout_ms or self.settings.gateway_queue_timeout_ms
            task = Task(task_id, handler, line, time.monotonic() + timeout_ms / 1000)
            worker = shard.idle_worker()
            if worker is not None:
                worker.assign(task)
            else:
                bound = shard.spec.queue_size or self.settings.gateway_queue_size
                if len(shard.pending) >= bound:
                    shard.rejected += 1
                    raise ShardUnavailable(
                        f"shard {shard_id} of {self.service} is full: {len(shard.live())} "
                        f"workers busy and {bound} requests queued; retry later",
                        shard_id,
                    )
                shard.pending.append(task)
                self._wake.notify()
        if worker is not None:
            worker.send(task)
        return task.future

    def run(self, shard_id: int, handler: str, *args: Any, **kwargs: Any) -> Any:
        """:meth:`submit` and wait for the result."""
        return self.submit(shard_id, handler, *args, **kwargs).result()

    async def call(self, shard_id: int, handler: str, *args: Any, **kwargs: Any) -> Any:
        """:meth:`submit` for asyncio code (an ASGI middleware): await the result."""
        return await asyncio.wrap_future(self.submit(shard_id, handler, *args, **kwargs))

    def _accepting(self, shard_id: int) -> ShardWorkers:
        if self._closed:
            raise ShardUnavailable(f"the process pool of {self.service} is closed", shard_id)
        shard = self._shards.get(shard_id)
        if shard is None or shard.draining:
            known = sorted(s for s, found in self._shards.items() if not found.draining)
            raise ShardUnavailable(
                f"shard {shard_id} of {self.service} has no workers: the plan in force "
                f"(v{self.plan_version}) has shards {known}",
                shard_id,
            )
        if shard.restarts.broken:
            raise ShardUnavailable(shard.restarts.broken, shard_id)
        return shard

    def _expire_queued(self) -> None:
        """Fail queued requests that waited past their shard's queue timeout."""
        while True:
            expired: list[tuple[ShardWorkers, Task]] = []
            with self._wake:
                if self._closed:
                    return
                now = time.monotonic()
                soonest = None
                for shard in self._shards.values():
                    expired += [(shard, task) for task in shard.expire(now)]
                    if shard.pending:
                        head = shard.pending[0].deadline
                        soonest = head if soonest is None else min(soonest, head)
                if not expired:
                    self._wake.wait(None if soonest is None else max(soonest - now, 0.001))
            for shard, task in expired:
                if task.future.set_running_or_notify_cancel():
                    task.future.set_exception(
                        ShardUnavailable(
                            f"shard {shard.shard_id} of {self.service}: waited past its queue "
                            f"timeout with all {len(shard.live())} workers busy; retry later",
                            shard.shard_id,
                        )
                    )

    # -- plans ------------------------------------------------------------------------------
    def apply(self, plan: AllocationPlan) -> None:
        """Size every shard of ``plan`` (its per-replica resources); retire shards it drops.

        Limits change at once; worker counts change without failing a request in flight.
        """
        if plan.service != self.service:
            raise ValueError(
                f"plan v{plan.version} is for service {plan.service!r}; this pool runs "
                f"{self.service!r}"
            )
        to_start: list[ShardWorkers] = []
        with self._lock:
            if self._closed:
                raise ShardPoolError(f"the process pool of {self.service} is closed")
            wanted = {spec.shard_id: spec.per_replica for spec in plan.shards}
            for shard_id, spec in wanted.items():
                to_start += self._size(shard_id, spec)
            for shard_id in set(self._shards) - set(wanted):
                shard = self._shards[shard_id]
                shard.drain()
                self._remove_if_drained(shard)
            self.plan_version = plan.version
            ready = [w for s in self._shards.values() for w in s.live() if w.ready]
        for worker in ready:
            self._limit(worker)
        for shard in to_start:
            self._start_worker(shard)
        log.info(
            "%s: applied plan v%d to %d shards (%d workers started)",
            self.service,
            plan.version,
            len(wanted),
            len(to_start),
        )

    def _size(self, shard_id: int, spec: ResourceSpec) -> list[ShardWorkers]:
        """Set one shard's limits and worker count (under the lock); returns workers to start."""
        shard = self._shards.get(shard_id)
        if shard is None:
            group = self._limits.group(shard_id)
            shard = self._shards[shard_id] = ShardWorkers(shard_id, spec, group, self.service)
        missing = shard.resize(spec)
        self._limits.set_group_limits(shard.group, spec)
        return [shard] * missing

    def _remove_if_drained(self, shard: ShardWorkers) -> None:
        if shard.drained:
            if self._shards.get(shard.shard_id) is shard:
                del self._shards[shard.shard_id]
            self._limits.remove(shard.shard_id)
            log.info("%s: shard %d retired", self.service, shard.shard_id)

    # -- workers ----------------------------------------------------------------------------
    def _start_worker(self, shard: ShardWorkers) -> None:
        """Start one worker process for ``shard`` (its slot is counted in ``shard.starting``)."""
        try:
            process = WorkerProcess.spawn(self._environment)
        except OSError as exc:
            with self._lock:
                shard.starting -= 1
            log.error(
                "%s: cannot start a worker of shard %d: %s", self.service, shard.shard_id, exc
            )
            return
        worker = PooledWorker(process, shard)
        self._limits.place(worker.pid, shard.shard_id, shard.group)
        with self._lock:
            shard.starting -= 1
            shard.workers.append(worker)
            if self._closed or shard.draining or len(shard.live()) > shard.spec.concurrency:
                worker.retiring = True  # the plan shrank while it started
                worker.close_input()
        process.listen(
            f"shardshape-shard{shard.shard_id}-worker{worker.pid}",
            on_ready=lambda: self._on_ready(worker),
            on_reply=lambda message: self._on_reply(worker, message),
            on_exit=lambda returncode: self._on_exit(worker, returncode),
            service=self.service,
        )

    def _on_ready(self, worker: PooledWorker) -> None:
        worker.baseline_vsz = baseline_size(worker.pid)
        self._limit(worker)
        with self._lock:
            worker.ready = True
            worker.shard.restarts.ready()
            task = worker.shard.next_task(worker)
        if task is not None:
            worker.send(task)

    def _on_reply(self, worker: PooledWorker, message: dict[str, Any]) -> None:
        with self._lock:
            task = worker.task
            if task is None or message.get("id") != task.id:
                log.error(
                    "%s: worker %d answered a task it was not given", self.service, worker.pid
                )
                return
            worker.task = None
            following = worker.shard.next_task(worker)
        if message.get("ok"):
            task.future.set_result(message.get("result"))
        else:
            shard = worker.shard.shard_id
            task.future.set_exception(
                HandlerFailed(
                    f"{task.handler} failed in shard {shard}: {message.get('error')}: "
                    f"{message.get('message')}",
                    shard,
                    error_type=str(message.get("error")),
                    remote_traceback=str(message.get("traceback", "")),
                )
            )
        if following is not None:
            worker.send(following)

    def _on_exit(self, worker: PooledWorker, returncode: int) -> None:
        shard = worker.shard
        restarts = shard.restarts
        with self._lock:
            shard.workers.remove(worker)
            task, worker.task = worker.task, None
            oom = shard.oom_killed()
            expected = worker.retiring or self._closed
            restart = not expected and not shard.draining
            if restart:
                restart = restarts.after_exit(ready=worker.ready, returncode=returncode)
            if restart:
                shard.starting += 1
            if task is not None:
                shard.failures += 1
            lost = list(shard.pending) if restarts.broken else []
            if lost:
                shard.pending.clear()
            self._remove_if_drained(shard)
        why = exit_message(
            pid=worker.pid,
            shard_id=shard.shard_id,
            returncode=returncode,
            oom=oom,
            memory_mib=shard.spec.memory_mib,
            ready=worker.ready,
            expected=expected,
            restart=restart,
        )
        if task is not None:
            task.future.set_exception(
                WorkerLost(
                    f"{task.handler} did not complete: {why}",
                    shard.shard_id,
                    oom_killed=oom,
                    signal=signal_name(returncode),
                )
            )
        if not expected:
            log.warning("%s: %s", self.service, why)
        for queued in lost:
            if queued.future.set_running_or_notify_cancel():
                queued.future.set_exception(ShardUnavailable(restarts.broken or "", shard.shard_id))
        if restart:
            if restarts.backoff_s:
                time.sleep(restarts.backoff_s)  # the dead worker's thread backs off
            self._start_worker(shard)

    def _limit(self, worker: PooledWorker) -> None:
        shard = worker.shard
        self._limits.limit_process(
            worker.pid, shard.shard_id, shard.group, shard.spec, worker.baseline_vsz
        )

    # -- reading ----------------------------------------------------------------------------
    def status(self) -> list[ShardPoolStatus]:
        """Each shard's isolation, limits and load, for the gateway's status endpoint."""
        with self._lock:
            return [
                shard.status(self._limits.mode_of(shard.group))
                for shard in sorted(self._shards.values(), key=lambda s: s.shard_id)
            ]

    def queued_by_shard(self) -> dict[int, int]:
        """Requests waiting for a worker now, by shard; give it to
        :meth:`shardshape.gateway.reporter.Reporter.watch_queues` so the planner hears of them."""
        with self._lock:
            return {s.shard_id: len(s.pending) for s in self._shards.values() if s.pending}

    def worker_pids(self, shard_id: int) -> list[int]:
        """The processes serving ``shard_id`` now (workers finishing before they retire too)."""
        with self._lock:
            shard = self._shards.get(shard_id)
            return [w.pid for w in shard.workers] if shard else []

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        """Block until every shard has all its workers started and ready."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if all(
                    not s.starting and all(w.ready for w in s.live()) for s in self._shards.values()
                ):
                    return True
            time.sleep(0.02)
        return False

    def group(self, shard_id: int) -> ShardGroup | None:
        """The cgroup of ``shard_id`` (None without cgroups)."""
        with self._lock:
            shard = self._shards.get(shard_id)
            return shard.group if shard else None

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop accepting, let running requests finish (up to ``stop_timeout_s``), stop every
        worker and remove the shard cgroups. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
            queued = [t for s in self._shards.values() for t in s.pending]
            for shard in self._shards.values():
                shard.pending.clear()
                for worker in shard.workers:
                    worker.retiring = True
                    worker.close_input()
        atexit.unregister(self.close)
        for task in queued:
            if task.future.set_running_or_notify_cancel():
                task.future.set_exception(
                    ShardUnavailable(f"the process pool of {self.service} closed", None)
                )
        self._stop_workers(time.monotonic() + self.stop_timeout_s)
        self._limits.close()
        log.info("%s: process pool closed", self.service)

    def _stop_workers(self, deadline: float) -> None:
        """Wait for every worker to exit (killing those still busy at ``deadline``)."""
        while True:
            with self._lock:
                workers = [w for s in self._shards.values() for w in s.workers]
                starting = any(s.starting for s in self._shards.values())
            if not workers and not starting:
                return
            for worker in workers:
                worker.process.stop(deadline)
            time.sleep(0.01)  # a reader thread is still removing its worker, or one starts

    def __enter__(self) -> ProcessShardPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
