"""A process-mode shard's bookkeeping and the pipe protocol, without starting a process."""

from __future__ import annotations

import io

import pytest

from shardshape.core.contracts import ResourceSpec
from shardshape.gateway.isolation.protocol import is_ready, read_line, task_line
from shardshape.gateway.isolation.restarts import MAX_START_FAILURES, Restarts
from shardshape.gateway.isolation.shard_workers import PooledWorker, ShardWorkers, Task
from shardshape.gateway.isolation.worker import serve


class _Pipe:
    """A worker process's input as the shard sees it: lines sent, and whether it was closed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.input_closed = False
        self.sent: list[bytes] = []

    def send(self, line: bytes) -> None:
        self.sent.append(line)

    def close_input(self) -> None:
        self.input_closed = True


def _shard(concurrency: int) -> ShardWorkers:
    return ShardWorkers(3, ResourceSpec(concurrency=concurrency), None, "api")


def _started(shard: ShardWorkers, count: int) -> list[PooledWorker]:
    """Start ``count`` workers the way the pool does, and make them ready."""
    workers = []
    for _ in range(count):
        shard.starting -= 1
        worker = PooledWorker(_Pipe(100 + len(shard.workers)), shard)
        worker.ready = True
        shard.workers.append(worker)
        workers.append(worker)
    return workers


def _task(task_id: int, deadline: float = 10.0) -> Task:
    return Task(task_id, "math:hypot", task_line(task_id, "math:hypot", (3, 4), {}), deadline)


def test_a_smaller_plan_retires_idle_workers_first_and_busy_ones_after_their_request() -> None:
    shard = _shard(3)
    assert shard.resize(ResourceSpec(concurrency=3)) == 3
    busy_a, busy_b, idle = _started(shard, 3)
    assert busy_a.assign(_task(1)) and busy_b.assign(_task(2))

    assert shard.resize(ResourceSpec(concurrency=1)) == 0
    assert [w.retiring for w in (busy_a, busy_b, idle)] == [True, False, True]
    assert idle.process.input_closed
    assert not busy_a.process.input_closed  # it finishes its request first
    busy_a.task = None
    assert shard.next_task(busy_a) is None and busy_a.process.input_closed


def test_a_larger_plan_takes_back_workers_still_finishing_before_starting_new_ones() -> None:
    shard = _shard(2)
    shard.resize(ResourceSpec(concurrency=2))
    first, second = _started(shard, 2)
    first.assign(_task(1))
    second.assign(_task(2))
    shard.resize(ResourceSpec(concurrency=1))
    assert first.retiring and not first.process.input_closed  # busy: its input stays open

    assert shard.resize(ResourceSpec(concurrency=3)) == 1
    assert not first.retiring and not second.retiring and shard.starting == 1


def test_a_free_worker_takes_the_queue_in_order_skipping_cancelled_requests() -> None:
    shard = _shard(1)
    shard.resize(ResourceSpec(concurrency=1))
    (worker,) = _started(shard, 1)
    cancelled, waiting = _task(1), _task(2)
    cancelled.future.cancel()
    shard.pending.extend([cancelled, waiting])
    assert shard.next_task(worker) is waiting and worker.task is waiting
    assert not shard.pending


def test_a_drained_shard_lets_its_workers_go_once_its_queue_is_empty() -> None:
    shard = _shard(2)
    shard.resize(ResourceSpec(concurrency=2))
    busy, idle = _started(shard, 2)
    busy.assign(_task(1))
    shard.pending.append(_task(2))
    shard.drain()
    assert idle.retiring and idle.process.input_closed and not busy.retiring
    busy.task = None
    assert shard.next_task(busy) is not None  # the queue is served before it goes
    busy.task = None
    assert shard.next_task(busy) is None and busy.retiring and busy.process.input_closed
    shard.workers.clear()
    assert shard.drained


def test_queued_requests_past_their_deadline_are_taken_out_and_counted() -> None:
    shard = _shard(1)
    shard.pending.extend([_task(1, deadline=1.0), _task(2, deadline=2.0), _task(3, deadline=9.0)])
    assert [t.id for t in shard.expire(now=2.0)] == [1, 2]
    assert [t.id for t in shard.pending] == [3] and shard.rejected == 2


def test_workers_dying_before_they_are_ready_break_the_shard_until_the_next_plan() -> None:
    restarts = Restarts("shard 3 of api")
    outcomes = [restarts.after_exit(ready=False, returncode=1) for _ in range(MAX_START_FAILURES)]
    assert outcomes == [True] * (MAX_START_FAILURES - 1) + [False]
    assert restarts.broken is not None and "shard 3 of api exit as they start" in restarts.broken
    restarts.reset()
    assert restarts.broken is None and restarts.after_exit(ready=False, returncode=1)
    restarts.ready()
    assert restarts.start_failures == 0 and restarts.backoff_s == 0


def test_the_childs_loop_answers_the_pools_lines() -> None:
    requests = io.BytesIO(
        task_line(1, "math:hypot", (3, 4), {}) + task_line(2, "math:sqrt", (-1,), {})
    )
    replies = io.BytesIO()
    serve(requests, replies)
    ready, ok, failed = (read_line(line) for line in replies.getvalue().splitlines())
    assert is_ready(ready) and not is_ready(ok)
    assert (ok["id"], ok["ok"], ok["result"]) == (1, True, 5.0)
    assert (failed["id"], failed["ok"], failed["error"]) == (2, False, "ValueError")


def test_arguments_that_are_not_json_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(TypeError, match="arguments of math:hypot must be JSON"):
        task_line(1, "math:hypot", (b"raw",), {})
