"""What a caller of a process-mode pool sees: results as JSON, clear errors, fast rejection."""

from __future__ import annotations

import asyncio

import pytest

from shardshape.core.contracts import ResourceSpec
from shardshape.gateway.isolation import HandlerFailed, ShardUnavailable
from shardshape.gateway.isolation.worker import HandlerPathError
from tests.gateway.isolation_support import HERE, isolation_settings, plan, running_pool


def test_results_errors_and_rejections() -> None:
    settings = isolation_settings()
    busy = ResourceSpec(concurrency=1, queue_size=1, queue_timeout_ms=10_000)
    with running_pool("api", settings) as pool:
        pool.apply(plan("api", 1, {1: ResourceSpec(concurrency=2), 2: busy}))
        assert pool.wait_ready(30)
        assert pool.run(1, "math:hypot", 3, 4) == 5.0
        assert pool.run(1, f"{HERE}:whoami", tag="kw")["tag"] == "kw"

        with pytest.raises(HandlerFailed, match="ValueError") as failed:
            pool.run(1, "math:sqrt", -1)
        assert failed.value.error_type == "ValueError" and "math domain" in str(failed.value)
        with pytest.raises(HandlerFailed, match="not JSON"):
            pool.run(1, "os:urandom", 4)  # bytes are not JSON
        with pytest.raises(HandlerFailed, match="No module named"):
            pool.run(1, "no_such_module:f")
        with pytest.raises(HandlerPathError, match="module:function"):
            pool.submit(1, "math.hypot")
        with pytest.raises(TypeError, match="must be JSON"):
            pool.submit(1, "math:hypot", b"raw")
        with pytest.raises(ShardUnavailable, match=r"shard 9 of api has no workers.*\[1, 2\]"):
            pool.submit(9, "math:hypot", 1, 1)

        # Shard 2: one worker and one queue place. A third request is refused at once.
        running = pool.submit(2, f"{HERE}:nap", 0.5)
        queued = pool.submit(2, f"{HERE}:nap", 0.0)
        with pytest.raises(ShardUnavailable, match="shard 2 of api is full"):
            pool.submit(2, f"{HERE}:nap", 0.0)
        assert pool.queued_by_shard() == {2: 1}  # what its reporter tells the planner
        assert running.result(10) == queued.result(10)  # the same single worker
        assert pool.queued_by_shard() == {}
        assert {s.shard_id: s.rejected for s in pool.status()} == {1: 0, 2: 1}


def test_a_request_waiting_past_the_queue_timeout_is_refused() -> None:
    settings = isolation_settings()
    spec = ResourceSpec(concurrency=1, queue_size=4, queue_timeout_ms=200)
    with running_pool("slow", settings) as pool:
        pool.apply(plan("slow", 1, {1: spec}))
        assert pool.wait_ready(30)
        running = pool.submit(1, f"{HERE}:nap", 1.0)
        waiting = pool.submit(1, f"{HERE}:nap", 0.0)
        with pytest.raises(ShardUnavailable, match="waited past its queue timeout"):
            waiting.result(5)
        assert not running.done()  # the running request is not affected
        assert running.result(10) > 0
        assert pool.status()[0].rejected == 1


async def test_asyncio_callers_await_results() -> None:
    settings = isolation_settings()
    with running_pool("aio", settings) as pool:
        pool.apply(plan("aio", 1, {0: ResourceSpec(concurrency=2)}))
        results = await asyncio.gather(*(pool.call(0, "math:pow", 2, n) for n in range(4)))
        assert results == [1.0, 2.0, 4.0, 8.0]


def test_close_lets_running_requests_finish_and_refuses_new_ones() -> None:
    settings = isolation_settings()
    with running_pool("bye", settings) as pool:
        pool.apply(plan("bye", 1, {0: ResourceSpec()}))
        assert pool.wait_ready(30)
        running = pool.submit(0, f"{HERE}:nap", 0.3)
        pool.close()
        assert running.result(1) > 0
        with pytest.raises(ShardUnavailable, match="closed"):
            pool.submit(0, "math:hypot", 1, 1)
