"""A worker killed with SIGKILL in the middle of a replay: the survivor takes its partitions
over, every event is counted exactly once in the shard metrics (before and after the killed
worker is restarted), and the planner's leadership fails over so plans keep coming."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from shardshape.core.contracts import AllocationPlan, decode
from shardshape.core.follower import TopicFollower
from shardshape.core.metrics import decode_window, partition_of, stored_offset
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.replay import replay
from tests.support.paths import REPO_ROOT
from tests.support.polling import wait_until
from tests.support.processes import pid_alive
from tests.support.workers import (
    Worker,
    counted_by,
    counted_by_window,
    events_by_window,
    read_table,
    settled,
    tails,
    worker,
)

PARTITIONS = 6
RATE = 2_000  # events/s: the replay lasts about 15 s
EVENTS = 30_000
WARM_UP = 2_000  # events before the replay, so that a plan is out before the kill
KILL_AFTER_S = 6.0

WORKER_ENV = {
    "pools_config": str(REPO_ROOT / "examples" / "pools.toml"),
    "plan_window": "10s",
    "plan_horizon_s": "30",
    "snapshot_interval_s": "1",
}


class _Plans:
    """The plan versions published on the plans topic, as they arrive."""

    def __init__(self, settings: Settings) -> None:
        self.versions: list[int] = []
        self._follower = TopicFollower(settings.confluent_config(), settings.topic_plans, self._add)

    def _add(self, key: bytes | None, value: bytes | None) -> None:
        self.versions.append(decode(AllocationPlan, value).version)

    def __enter__(self) -> _Plans:
        self._follower.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._follower.stop()


def _send(settings: Settings, events: list, **pacing: float) -> None:
    replay(events, settings.confluent_config(), settings.topic_requests, PARTITIONS, **pacing)


def _exactly_once(settings: Settings, workers: list[Worker], produced: int) -> None:
    """Every produced event counted once in both window sizes (on failure: where not)."""
    with contextlib.suppress(pytest.fail.Exception):  # the check below says where
        # Settled: nothing left to handle or replay, so the counts below are final.
        wait_until(lambda: settled(settings, workers), 90, "every message handled and committed",
                   every_s=0.5)  # fmt: skip
    for size, size_s in (("1m", 60.0), ("10s", 10.0)):
        each = {w.name: counted_by([w], size) for w in workers}
        if sum(each.values()) == produced:
            continue
        truth, seen = events_by_window(settings, size_s), counted_by_window(workers, size)
        wrong = {k: (seen[k], truth[k]) for k in truth.keys() | seen.keys() if seen[k] != truth[k]}
        slots = {
            w.name: {
                slot: data
                for window in w.windows(size)
                for slot, data in window["slots"].items()
                if (partition_of(slot), round(window["start"], 3)) in wrong
            }
            for w in workers
        }
        changelog = {
            key.decode(): (sum(s.count for s in decode_window(value)[0].values()),
                           stored_offset(value))
            for key, value in read_table(settings, f"shard-windows-{size}").items()
            if any(f"#{p}" in key.decode() and str(int(w)) in key.decode() for p, w in wrong)
        }  # fmt: skip
        pytest.fail(
            f"{size} windows counted {each} of {produced}; (partition, window start): "
            f"(counted, on the topic) where they differ: {wrong}\nslots there: {slots}\n"
            f"their newest changelog records (count, offset): {changelog}\n"
            + "\n".join(w.tail() for w in workers)
        )


@pytest.mark.slow
def test_a_killed_worker_loses_nothing_counts_nothing_twice_and_hands_over_planning(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"requests_partitions": PARTITIONS})
    create_topics(settings)
    events = list(SyntheticStream(seed=21, rate_per_s=RATE).events(WARM_UP + EVENTS))
    warm_up, load = events[:WARM_UP], events[WARM_UP:]
    with (
        _Plans(settings) as plans,
        worker(settings, tmp_path, "a", **WORKER_ENV) as a,
        worker(settings, tmp_path, "b", **WORKER_ENV) as b,
    ):
        wait_until(
            lambda: a.partitions(settings.topic_requests) and b.partitions(settings.topic_requests),
            90, "both workers own partitions", every_s=0.5, explain=tails([a, b]),
        )  # fmt: skip
        _send(settings, warm_up, max_rate=RATE)
        wait_until(lambda: plans.versions, 90, "a first plan", every_s=0.5, explain=tails([a, b]))
        planner, survivor = (a, b) if "published plan" in a.log.read_text() else (b, a)

        sender = threading.Thread(target=_send, args=(settings, load), kwargs={"max_rate": RATE})
        started = time.monotonic()
        sender.start()
        time.sleep(KILL_AFTER_S)
        counted_at_kill = counted_by([planner, survivor])
        before_kill = max(plans.versions)
        os.kill(planner.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        sender.join(60)
        replay_s = time.monotonic() - started
        assert not pid_alive(planner.process.pid) and not sender.is_alive()
        assert WARM_UP < counted_at_kill < WARM_UP + EVENTS, "killed in the middle of the replay"

        wait_until(
            lambda: survivor.partitions(settings.topic_requests) == set(range(PARTITIONS)),
            90, "the survivor owns every partition", every_s=0.5, explain=tails([survivor]),
        )  # fmt: skip
        took_over_s = time.monotonic() - killed
        _exactly_once(settings, [survivor], WARM_UP + EVENTS)

        # Leadership moved: the survivor plans, continuing after the versions published.
        wait_until(
            lambda: max(plans.versions) > before_kill,
            120,
            "a newer plan",
            every_s=0.5,
            explain=tails([survivor]),
        )
        planned_s = time.monotonic() - killed
        newest = max(plans.versions)
        assert f"published plan shop v{newest}:" in survivor.log.read_text()

        # Restarted, the killed worker takes partitions back; still each event counted once.
        with worker(settings, tmp_path, "a-restarted", **WORKER_ENV) as restarted:
            wait_until(
                lambda: restarted.partitions(settings.topic_requests), 90, "a rebalance",
                every_s=0.5, explain=tails([survivor, restarted]),
            )  # fmt: skip
            _exactly_once(settings, [survivor, restarted], WARM_UP + EVENTS)
    skips = sum(w.log.read_text().count("the consumer skipped offsets") for w in (a, b, restarted))
    print(
        f"\nreplay {EVENTS:,} events in {replay_s:.1f} s, worker killed after {KILL_AFTER_S} s "
        f"({counted_at_kill:,} counted by then); survivor owned every partition "
        f"{took_over_s:.1f} s later; plan v{before_kill} before the kill, v{newest} "
        f"{planned_s:.1f} s after it; consumer skips read again directly (streams.gaps): "
        f"{skips}"
    )
