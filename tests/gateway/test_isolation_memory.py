"""A memory hog in one shard is stopped alone; the other shards keep serving, during and after."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future

import pytest

from shardshape.core.contracts import ResourceSpec
from shardshape.gateway.isolation import (
    HandlerFailed,
    ProcessShardPool,
    ShardUnavailable,
    WorkerLost,
)
from shardshape.gateway.isolation.process_limits import nice_for
from tests.gateway.isolation_support import (
    HERE,
    cgroup_capabilities,
    isolation_settings,
    plan,
    running_pool,
)
from tests.support.polling import wait_until
from tests.support.processes import pid_alive

HOG_MIB = 512
SHARDS = {
    1: ResourceSpec(cpu_millicores=500, memory_mib=64, concurrency=1),
    2: ResourceSpec(memory_mib=128, concurrency=2),
}


class _Neighbour:
    """Sends requests to shard 2 one after another until stopped, keeping every outcome."""

    def __init__(self, pool: ProcessShardPool) -> None:
        self.pool = pool
        self.answers: list[dict] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(self.pool.run(2, f"{HERE}:whoami", "neighbour"))
            except Exception as exc:
                self.errors.append(exc)

    def __enter__(self) -> _Neighbour:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _hog_while_neighbour_serves(pool: ProcessShardPool) -> tuple[Future, int]:
    """Run the hog in shard 1 while shard 2 serves; returns the hog's future and worker."""
    pool.apply(plan("mem", 1, SHARDS))
    assert pool.wait_ready(30)
    (hogger,) = pool.worker_pids(1)
    neighbours = set(pool.worker_pids(2))
    with _Neighbour(pool) as neighbour:
        wait_until(lambda: neighbour.answers, 10, "a first answer", every_s=0.01)
        before = len(neighbour.answers)
        hog = pool.submit(1, f"{HERE}:hog", HOG_MIB)
        hog.exception(60)
        served_during = len(neighbour.answers) - before
        wait_until(
            lambda: len(neighbour.answers) > before + served_during,
            10,
            "answers after",
            every_s=0.01,
        )  # and after
    assert not neighbour.errors, neighbour.errors
    assert served_during > 0
    assert {a["pid"] for a in neighbour.answers} <= neighbours
    assert set(pool.worker_pids(2)) == neighbours  # shard 2's workers never restarted
    return hog, hogger


def test_the_oom_killer_stops_only_the_hogging_shards_worker() -> None:
    settings = isolation_settings()
    caps = cgroup_capabilities(settings)
    if not caps.uses_cgroup("memory"):
        pytest.skip(f"no writable cgroup memory controller: {caps.enforcement['memory'].detail}")
    with running_pool("mem", settings, caps) as pool:
        hog, hogger = _hog_while_neighbour_serves(pool)
        error = hog.exception()
        assert isinstance(error, WorkerLost), error
        assert error.oom_killed and error.signal == "SIGKILL" and error.shard_id == 1
        assert "OOM killer" in str(error) and "memory limit of 64 MiB" in str(error)
        # The shard is served again by a new worker; the neighbour still answers after.
        again = pool.run(1, f"{HERE}:whoami", "after")
        assert again["tag"] == "after" and again["pid"] != hogger and not pid_alive(hogger)
        assert pool.run(2, f"{HERE}:whoami", "after")["tag"] == "after"
        status = {s.shard_id: s for s in pool.status()}
        assert (status[1].failures, status[2].failures) == (1, 0)
        assert status[1].mode == caps.mode


def test_with_rlimits_the_hog_gets_memory_error_and_the_worker_lives_on() -> None:
    settings = isolation_settings("rlimit")
    with running_pool("mem", settings) as pool:
        hog, hogger = _hog_while_neighbour_serves(pool)
        error = hog.exception()
        assert isinstance(error, HandlerFailed) and error.error_type == "MemoryError", error
        assert pool.worker_pids(1) == [hogger] and pid_alive(hogger)
        assert pool.run(1, f"{HERE}:hog", 16) == 16 << 20  # within its budget it works
        # CPU without cgroups is a priority: the half-CPU shard's worker runs at a higher nice.
        assert os.getpriority(os.PRIO_PROCESS, hogger) == nice_for(500, 1) > 0
        assert {s.mode for s in pool.status()} == {"rlimit"}


def test_a_memory_limit_too_small_to_start_a_worker_says_so_until_a_new_plan() -> None:
    settings = isolation_settings()
    caps = cgroup_capabilities(settings)
    if not caps.uses_cgroup("memory"):
        pytest.skip(f"no writable cgroup memory controller: {caps.enforcement['memory'].detail}")
    with running_pool("tiny", settings, caps) as pool:
        pool.apply(plan("tiny", 1, {1: ResourceSpec(memory_mib=2)}))
        waiting = pool.submit(1, "math:hypot", 3, 4)
        with pytest.raises(ShardUnavailable, match=r"exit as they start.*memory limit"):
            waiting.result(30)
        with pytest.raises(ShardUnavailable, match="exit as they start"):
            pool.submit(1, "math:hypot", 3, 4)
        pool.apply(plan("tiny", 2, {1: ResourceSpec(memory_mib=128)}))
        assert pool.run(1, "math:hypot", 3, 4) == 5.0
