"""Process-mode shard pools: each shard's requests run in its own worker processes, under OS limits.

Each shard of the plan in force gets ``concurrency`` worker processes (see
:mod:`shardshape.gateway.isolation.worker`) placed in the shard's cgroup, whose CPU quota, memory
limit and I/O weight come from the shard's per-replica resources; where the host has no cgroup
controller for a resource, each worker gets a per-process fallback (nice, RLIMIT_AS, ionice).
A request is a handler named ``module:function`` and JSON arguments; its result comes back
as JSON. Nothing is pickled.

A worker that dies (e.g. the kernel's OOM killer stops it at its shard's memory limit) fails
only the request it was running, with :class:`WorkerLost`, and is replaced; other shards never
notice. :meth:`ProcessShardPool.apply` resizes limits and worker counts live: a worker that
must go finishes its current request first.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson

from shardshape.core.contracts import AllocationPlan, ResourceSpec
from shardshape.core.settings import Settings, load_settings
from shardshape.gateway.isolation import process_limits
from shardshape.gateway.isolation.cgroups import CgroupTree, ShardGroup
from shardshape.gateway.isolation.detect import IsolationCapabilities, Mode, detect_capabilities
from shardshape.gateway.isolation.errors import (
    HandlerFailed,
    ShardPoolError,
    ShardUnavailable,
    WorkerLost,
)
from shardshape.gateway.isolation.layout import Resource
from shardshape.gateway.isolation.probe import explain_os_error
from shardshape.gateway.isolation.worker import parse_handler
from shardshape.gateway.status import ShardPoolStatus

log = logging.getLogger("shardshape.gateway.isolation")

MAX_START_FAILURES = 3  # workers of a shard that die before they are ready, in a row
_PROCESS_VIA = ("nice", "rlimit", "ionice")


class _Task:
    __slots__ = ("deadline", "future", "handler", "id", "line")

    def __init__(self, task_id: int, handler: str, line: bytes, deadline: float) -> None:
        self.id = task_id
        self.handler = handler
        self.line = line
        self.deadline = deadline
        self.future: Future[Any] = Future()


class _Worker:
    def __init__(self, process: subprocess.Popen[bytes], shard: _Shard) -> None:
        self.process = process
        self.pid = process.pid
        self.shard = shard
        self.task: _Task | None = None
        self.ready = False
        self.retiring = False
        self.input_closed = False
        self.baseline_vsz = 0
        self.thread: threading.Thread | None = None

    @property
    def idle(self) -> bool:
        return self.ready and self.task is None and not self.retiring

    def send(self, task: _Task) -> None:
        """Write a task line; a dead worker's failure is reported by its reader thread."""
        assert self.process.stdin is not None
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.write(task.line)
            self.process.stdin.flush()

    def close_input(self) -> None:
        """End of input: the worker exits after its current task."""
        if not self.input_closed:
            self.input_closed = True
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.close()  # type: ignore[union-attr]


class _Shard:
    def __init__(self, shard_id: int, spec: ResourceSpec, group: ShardGroup | None) -> None:
        self.shard_id = shard_id
        self.spec = spec
        self.group = group
        self.workers: list[_Worker] = []
        self.starting = 0
        self.pending: deque[_Task] = deque()
        self.draining = False
        self.broken: str | None = None
        self.start_failures = 0
        self.rejected = 0
        self.failures = 0
        self.oom_seen = group.oom_kills() if group else 0

    def live(self) -> list[_Worker]:
        return [w for w in self.workers if not w.retiring]

    def idle_worker(self) -> _Worker | None:
        return next((w for w in self.workers if w.idle), None)


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
    ) -> None:
        self.service = service
        self.settings = settings or load_settings()
        caps = (capabilities or detect_capabilities(self.settings)).require()
        self.capabilities = caps
        self.mode: Mode = caps.mode
        self.stop_timeout_s = stop_timeout_s
        self.plan_version = 0
        self._tree: CgroupTree | None = None
        self._process_resources = {
            r for r, how in caps.enforcement.items() if how.via in _PROCESS_VIA
        }
        if caps.cgroup_version:
            try:
                self._tree = CgroupTree(caps, service)
            except OSError as exc:
                self._fall_back(
                    explain_os_error(exc, Path(exc.filename or "."), caps.cgroup_version)
                )
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
        self._env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._shards: dict[int, _Shard] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._reaper = threading.Thread(
            target=self._expire_queued, name=f"shardshape-pool-{service}-timeouts", daemon=True
        )
        self._reaper.start()
        atexit.register(self.close)

    def _fall_back(self, why: str) -> None:
        ok, _ = process_limits.available()
        self.mode = "rlimit" if ok else "none"
        self._tree = None
        self._process_resources = self._fallback_resources()
        log.warning(
            "%s: cannot create the shard cgroups (%s); falling back to %s limits",
            self.service,
            why,
            self.mode,
        )

    def _fallback_resources(self) -> set[Resource]:
        if not process_limits.available()[0]:
            return set()
        return {"cpu", "memory"} | ({"io"} if process_limits.ionice_available() else set())

    # -- requests ---------------------------------------------------------------------------
    def submit(self, shard_id: int, handler: str, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``handler(*args, **kwargs)`` in a worker of ``shard_id``; the future has its result.

        Raises :class:`ShardUnavailable` at once when the shard cannot take the request; the
        future fails with :class:`HandlerFailed`, :class:`WorkerLost` or
        :class:`ShardUnavailable` (waited past the queue timeout).
        """
        parse_handler(handler)
        task_id = next(self._ids)
        try:
            line = orjson.dumps({"id": task_id, "handler": handler, "args": args, "kwargs": kwargs})
        except TypeError as exc:
            raise TypeError(f"arguments of {handler} must be JSON: {exc}") from None
        with self._lock:
            shard = self._accepting(shard_id)
            timeout_ms = shard.spec.queue_timeout_ms or self.settings.gateway_queue_timeout_ms
            task = _Task(task_id, handler, line + b"\n", time.monotonic() + timeout_ms / 1000)
            worker = shard.idle_worker()
            if worker is not None:
                self._assign(worker, task)
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

    def _accepting(self, shard_id: int) -> _Shard:
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
        if shard.broken:
            raise ShardUnavailable(shard.broken, shard_id)
        return shard

    def _assign(self, worker: _Worker, task: _Task) -> bool:
        """Give ``task`` to ``worker`` (under the lock); False when the caller cancelled it."""
        if not task.future.set_running_or_notify_cancel():
            return False
        worker.task = task
        return True

    def _next_task(self, worker: _Worker) -> _Task | None:
        """The next queued task for a worker that just became free (under the lock)."""
        shard = worker.shard
        while worker.idle and shard.pending:
            task = shard.pending.popleft()
            if self._assign(worker, task):
                return task
        if shard.draining and not shard.pending and not worker.retiring:
            worker.retiring = True
            worker.close_input()
        elif worker.retiring and worker.task is None:
            worker.close_input()
        return None

    def _expire_queued(self) -> None:
        """Fail queued requests that waited past their shard's queue timeout."""
        while True:
            expired: list[tuple[_Shard, _Task]] = []
            with self._wake:
                if self._closed:
                    return
                now = time.monotonic()
                soonest = None
                for shard in self._shards.values():
                    while shard.pending and shard.pending[0].deadline <= now:
                        expired.append((shard, shard.pending.popleft()))
                        shard.rejected += 1
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
        to_start: list[_Shard] = []
        with self._lock:
            if self._closed:
                raise ShardPoolError(f"the process pool of {self.service} is closed")
            wanted = {spec.shard_id: spec.per_replica for spec in plan.shards}
            for shard_id, spec in wanted.items():
                to_start += self._size(shard_id, spec)
            for shard_id in set(self._shards) - set(wanted):
                self._drain(self._shards[shard_id])
            self.plan_version = plan.version
            ready = [w for s in self._shards.values() for w in s.live() if w.ready]
        for worker in ready:
            self._limit_process(worker)
        for shard in to_start:
            self._start_worker(shard)
        log.info(
            "%s: applied plan v%d to %d shards (%d workers started)",
            self.service,
            plan.version,
            len(wanted),
            len(to_start),
        )

    def _size(self, shard_id: int, spec: ResourceSpec) -> list[_Shard]:
        """Set one shard's limits and worker count (under the lock); returns workers to start."""
        shard = self._shards.get(shard_id)
        if shard is None:
            shard = self._shards[shard_id] = _Shard(shard_id, spec, self._group(shard_id))
        shard.spec, shard.draining, shard.broken, shard.start_failures = spec, False, None, 0
        if shard.group is not None:
            for problem in shard.group.set_limits(spec):
                log.warning("%s: %s", self.service, problem)
        live = shard.live()
        surplus = len(live) + shard.starting - spec.concurrency
        # Idle workers go first; busy ones finish their request, then exit.
        for worker in sorted(live, key=lambda w: w.task is not None)[: max(surplus, 0)]:
            worker.retiring = True
            if worker.task is None:
                worker.close_input()
        for worker in shard.workers:  # take back workers still finishing, before starting new
            if surplus < 0 and worker.retiring and not worker.input_closed:
                worker.retiring = False
                surplus += 1
        missing = max(-surplus, 0)
        shard.starting += missing
        return [shard] * missing

    def _group(self, shard_id: int) -> ShardGroup | None:
        if self._tree is None:
            return None
        try:
            return self._tree.shard(shard_id)
        except OSError as exc:
            log.warning(
                "%s: no cgroup for shard %d (%s); its workers get per-process limits",
                self.service,
                shard_id,
                explain_os_error(exc, Path(exc.filename or "."), self._tree.version),
            )
            return None

    def _drain(self, shard: _Shard) -> None:
        if shard.draining:
            return
        shard.draining = True
        for worker in shard.workers:
            if worker.task is None:
                worker.retiring = True
                worker.close_input()
        self._remove_if_drained(shard)

    def _remove_if_drained(self, shard: _Shard) -> None:
        if shard.draining and not shard.workers and not shard.starting:
            if self._shards.get(shard.shard_id) is shard:
                del self._shards[shard.shard_id]
            if self._tree is not None:
                self._tree.remove_shard(shard.shard_id)
            log.info("%s: shard %d retired", self.service, shard.shard_id)

    # -- workers ----------------------------------------------------------------------------
    def _start_worker(self, shard: _Shard) -> None:
        """Start one worker process for ``shard`` (its slot is counted in ``shard.starting``)."""
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "shardshape.gateway.isolation.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self._env,
            )
        except OSError as exc:
            with self._lock:
                shard.starting -= 1
            log.error(
                "%s: cannot start a worker of shard %d: %s", self.service, shard.shard_id, exc
            )
            return
        worker = _Worker(process, shard)
        if shard.group is not None:
            try:
                shard.group.add(worker.pid)
            except OSError as exc:
                log.warning(
                    "%s: worker %d of shard %d runs outside its cgroup: %s",
                    self.service,
                    worker.pid,
                    shard.shard_id,
                    exc,
                )
        with self._lock:
            shard.starting -= 1
            shard.workers.append(worker)
            if self._closed or shard.draining or len(shard.live()) > shard.spec.concurrency:
                worker.retiring = True  # the plan shrank while it started
                worker.close_input()
        worker.thread = threading.Thread(
            target=self._read,
            args=(worker,),
            name=f"shardshape-shard{shard.shard_id}-worker{worker.pid}",
            daemon=True,
        )
        worker.thread.start()

    def _read(self, worker: _Worker) -> None:
        """The reader thread of one worker: replies in, until the worker exits."""
        assert worker.process.stdout is not None
        for line in worker.process.stdout:
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.error("%s: worker %d wrote a non-protocol line", self.service, worker.pid)
                worker.process.kill()
                break
            if "ready" in message:
                self._on_ready(worker)
            else:
                self._on_reply(worker, message)
        self._on_exit(worker, worker.process.wait())

    def _on_ready(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError):
            worker.baseline_vsz = process_limits.virtual_size(worker.pid)
        self._limit_process(worker)
        with self._lock:
            worker.ready = True
            worker.shard.start_failures = 0
            task = self._next_task(worker)
        if task is not None:
            worker.send(task)

    def _on_reply(self, worker: _Worker, message: dict[str, Any]) -> None:
        with self._lock:
            task = worker.task
            if task is None or message.get("id") != task.id:
                log.error(
                    "%s: worker %d answered a task it was not given", self.service, worker.pid
                )
                return
            worker.task = None
            following = self._next_task(worker)
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

    def _on_exit(self, worker: _Worker, returncode: int) -> None:
        shard = worker.shard
        with self._lock:
            shard.workers.remove(worker)
            task, worker.task = worker.task, None
            oom = False
            if shard.group is not None:
                kills = shard.group.oom_kills()
                oom, shard.oom_seen = kills > shard.oom_seen, kills
            expected = worker.retiring or self._closed
            restart = not expected and not shard.draining
            if restart and not worker.ready:
                shard.start_failures += 1
                if shard.start_failures >= MAX_START_FAILURES:
                    restart = False
                    shard.broken = (
                        f"workers of shard {shard.shard_id} of {self.service} exit as they start "
                        f"(status {returncode}, {MAX_START_FAILURES} times in a row): see the "
                        "gateway's stderr; a memory limit below Python's start-up size does this"
                    )
            if restart:
                shard.starting += 1
            if task is not None:
                shard.failures += 1
            lost = list(shard.pending) if shard.broken else []
            if lost:
                shard.pending.clear()
            self._remove_if_drained(shard)
        why = _death(worker, returncode, oom, shard.spec.memory_mib, expected, restart)
        if task is not None:
            task.future.set_exception(
                WorkerLost(
                    f"{task.handler} did not complete: {why}",
                    shard.shard_id,
                    oom_killed=oom,
                    signal=signal.Signals(-returncode).name if returncode < 0 else None,
                )
            )
        if not expected:
            log.warning("%s: %s", self.service, why)
        for queued in lost:
            if queued.future.set_running_or_notify_cancel():
                queued.future.set_exception(ShardUnavailable(shard.broken or "", shard.shard_id))
        if restart:
            if shard.start_failures:
                time.sleep(0.2 * shard.start_failures)  # the dead worker's thread backs off
            self._start_worker(shard)

    def _limit_process(self, worker: _Worker) -> None:
        """Set the per-process limits of a worker whose resources have no cgroup controller."""
        shard, pid = worker.shard, worker.pid
        spec, workers = shard.spec, max(shard.spec.concurrency, 1)
        outside = self._tree is not None and shard.group is None  # its cgroup failed
        resources = self._fallback_resources() if outside else self._process_resources
        try:
            if "cpu" in resources:
                process_limits.set_nice(pid, process_limits.nice_for(spec.cpu_millicores, workers))
            if "memory" in resources:
                process_limits.set_address_space(
                    pid,
                    process_limits.address_space_limit(
                        worker.baseline_vsz, spec.memory_mib, workers
                    ),
                )
            if "io" in resources:
                process_limits.set_ionice(pid, process_limits.ioprio_level_for(spec.io_weight))
        except ProcessLookupError:
            pass  # it exited; its reader thread reports why
        except OSError as exc:
            log.warning(
                "%s: limits of worker %d of shard %d: %s", self.service, pid, shard.shard_id, exc
            )

    def _shard_mode(self, shard: _Shard) -> Mode:
        if self._tree is None or shard.group is not None:
            return self.mode
        return "rlimit" if self._fallback_resources() else "none"

    # -- reading ----------------------------------------------------------------------------
    def status(self) -> list[ShardPoolStatus]:
        """Each shard's isolation, limits and load, for the gateway's status endpoint."""
        with self._lock:
            return [
                ShardPoolStatus(
                    shard_id=shard.shard_id,
                    name=f"shard {shard.shard_id}",
                    mode=self._shard_mode(shard),
                    limits=shard.spec,
                    in_flight=sum(w.task is not None for w in shard.workers),
                    queued=len(shard.pending),
                    rejected=shard.rejected,
                    workers=len(shard.live()) + shard.starting,
                    failures=shard.failures,
                    draining=shard.draining,
                )
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
        if self._tree is not None:
            left = self._tree.close()
            if left:
                log.warning("%s: cgroups still in use, not removed: %s", self.service, left)
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
                try:
                    worker.process.wait(max(deadline - time.monotonic(), 0))
                except subprocess.TimeoutExpired:
                    worker.process.kill()  # its reader thread fails the request it ran
                    worker.process.wait()
                if worker.thread is not None:
                    worker.thread.join(5)
            time.sleep(0.01)  # a reader thread is still removing its worker, or one starts

    def __enter__(self) -> ProcessShardPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _death(
    worker: _Worker, returncode: int, oom: bool, memory_mib: int, expected: bool, restart: bool
) -> str:
    shard = worker.shard.shard_id
    if returncode < 0:
        how = f"was killed by {signal.Signals(-returncode).name}"
    else:
        how = f"exited with status {returncode}"
    cause = (
        f" from the kernel's OOM killer: shard {shard} reached its memory limit of {memory_mib} MiB"
        if oom
        else ""
    )
    after = "; a new worker takes its place" if restart else ""
    state = "" if worker.ready or expected else " before it was ready"
    return f"worker {worker.pid} of shard {shard} {how}{cause}{state}{after}"
