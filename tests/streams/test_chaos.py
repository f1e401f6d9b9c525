"""Chained takeovers: workers killed with SIGKILL one after another while events flow (some
while the previous takeover is still settling) and replaced by fresh ones, so a partition can
pass through several owners; every event is still counted once, per partition and window."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.app import READY_LINE
from shardshape.streams.replay import replay
from tests.support.polling import wait_until
from tests.support.processes import wait_for_line
from tests.support.workers import (
    Worker,
    all_committed,
    counted_by,
    counted_by_window,
    events_by_window,
    tails,
    worker,
)

PARTITIONS = 6
WORKERS = 2  # live at any time, bar the moments between a kill and the replacement's start
BATCH = 40  # events per requests message, as a busy gateway's reporter sends them
WORKER_ENV = {"snapshot_interval_s": "1"}
_ASSIGNED = re.compile(r"partitions of \S+ now \[([\d, ]*)\] \(were \[[\d, ]*\], generation (\d+)")


@dataclass
class ChaosReport:
    """What a chaos run counted against what is on the topic."""

    produced: int
    kills: list[str]  # the workers killed, in order
    counted: dict[str, Counter]  # window size -> (partition, window start) -> events counted
    on_topic: dict[str, Counter]  # window size -> (partition, window start) -> events there
    # partition -> its owners, each with whether it held the partition to its end
    owners: dict[int, list[tuple[str, bool]]] = field(default_factory=dict)

    def wrong(self, size: str) -> dict[tuple[int, float], tuple[int, int]]:
        """(partition, window start) -> (counted, on the topic) where the two differ."""
        seen, truth = self.counted[size], self.on_topic[size]
        return {k: (seen[k], truth[k]) for k in sorted(seen.keys() | truth.keys())
                if seen[k] != truth[k]}  # fmt: skip

    def takeovers(self, partition: int) -> int:
        """How often ``partition`` changed owners because its owner was killed."""
        chain = self.owners.get(partition, [])[:-1]
        return sum(1 for name, held in chain if held and name in self.kills)

    def table(self, size: str = "1m") -> str:
        """Per partition: counted / on the topic / takeovers (owner changes after a kill), and
        its owners (* killed while it held the partition)."""
        lines = [f"{size} windows, {self.produced:,} events produced; killed: {self.kills}",
                 "partition  counted  on topic  takeovers  owners"]  # fmt: skip
        for p in range(PARTITIONS):
            seen = sum(n for (q, _), n in self.counted[size].items() if q == p)
            truth = sum(n for (q, _), n in self.on_topic[size].items() if q == p)
            owners = self.owners.get(p, [])
            chain = " > ".join(
                f"{name}*" if held and name in self.kills else name for name, held in owners
            )
            mark = "" if seen == truth else "  <-- differs"
            lines.append(f"{p:>9}  {seen:>7,}  {truth:>8,}  {self.takeovers(p):>9}  "
                         f"{chain}{mark}")  # fmt: skip
        return "\n".join(lines)


def owners_by_partition(logs: list[Path]) -> dict[int, list[tuple[str, bool]]]:
    """Each requests partition's owners in the order of the group generations (worker logs),
    each with whether it still held the partition in the last generation it saw (so lost it
    only by dying, or still holds it)."""
    by_generation: dict[int, dict[int, str]] = {}
    last: dict[str, int] = {}  # worker -> the last generation it saw
    for log in logs:
        for now, generation in _ASSIGNED.findall(log.read_text(errors="replace")):
            last[log.stem] = max(last.get(log.stem, -1), int(generation))
            for p in filter(None, now.replace(" ", "").split(",")):
                by_generation.setdefault(int(generation), {})[int(p)] = log.stem
    owners: dict[int, list[tuple[str, bool]]] = {}
    for generation in sorted(by_generation):
        for p, name in by_generation[generation].items():
            chain = owners.setdefault(p, [])
            if chain and chain[-1][0] == name:
                chain.pop()
            chain.append((name, generation == last[name]))
    return owners


@dataclass(frozen=True)
class Kill:
    """One round: wait ``after_s`` seconds, then kill a worker with SIGKILL and start a fresh
    one in its place.

    ``settled``: first wait until the live workers own every partition (the previous takeover
    is done), and kill the worker that took partitions over last, so that a partition it took
    from a killed worker passes to a third owner. Otherwise ``after_s`` counts from the
    previous kill, and the victim is any live worker that owns partitions, or any live one.
    """

    after_s: float
    settled: bool = False


def run_chaos(
    settings: Settings,
    log_dir: Path,
    schedule: list[Kill],
    *,
    events: int,
    rate: float,
    seed: int = 0,
    settle_s: float = 120.0,
) -> ChaosReport:
    """Run ``WORKERS`` workers while ``events`` flow at ``rate``/s in ``BATCH``-event messages
    and the ``schedule`` kills workers (fresh ones, with new ids and data directories, start
    in their place without waiting for them to join); then wait until every message is
    committed and counted (or ``settle_s``) and compare. ``seed`` picks the events and the
    victims."""
    settings = settings.model_copy(update={"requests_partitions": PARTITIONS})
    create_topics(settings)
    topic = settings.topic_requests
    rng = random.Random(seed)
    load = list(SyntheticStream(seed=seed, rate_per_s=rate).events(events))
    started_workers = 0
    kills: list[str] = []
    with contextlib.ExitStack() as stack:

        def start(wait_ready: bool = True) -> Worker:
            nonlocal started_workers
            name = f"w{started_workers}"
            started_workers += 1
            own = settings.model_copy(update={"data_dir": log_dir / name})
            return stack.enter_context(
                worker(own, log_dir, name, wait_ready=wait_ready, **WORKER_ENV)
            )

        def owned(w: Worker) -> set[int]:
            try:
                return w.partitions(topic)
            except (OSError, KeyError):  # not serving yet
                return set()

        live = [start() for _ in range(WORKERS)]
        wait_until(
            lambda: all(owned(w) for w in live),
            90,
            "every worker owns partitions",
            every_s=0.5,
            explain=tails(live),
        )
        sender = threading.Thread(
            target=replay,
            args=(load, settings.confluent_config(), topic, PARTITIONS),
            kwargs={"batch_size": BATCH, "max_rate": rate, "linger_s": BATCH / rate},
        )
        sender.start()
        last_kill = time.monotonic()
        for kill in schedule:
            if kill.settled:
                wait_until(
                    lambda: set().union(*map(owned, live)) == set(range(PARTITIONS)),
                    90, "the live workers own every partition", every_s=0.5, explain=tails(live),
                )  # fmt: skip
                time.sleep(kill.after_s)
                victim = [w for w in live if owned(w)][-1]  # the newest owner
            else:
                time.sleep(max(0.0, last_kill + kill.after_s - time.monotonic()))
                victim = rng.choice([w for w in live if owned(w)] or live)
            live.remove(victim)
            os.kill(victim.process.pid, signal.SIGKILL)
            victim.process.wait()
            last_kill = time.monotonic()
            kills.append(victim.name)
            # Not waiting for it to join: the next kill may come while the group rebalances.
            live.append(start(wait_ready=False))
        sender.join(120)
        assert not sender.is_alive(), "the producer did not finish"
        for w in live:
            wait_for_line(w.log, READY_LINE, w.process, 120)

        def settled() -> bool:
            return (
                set().union(*map(owned, live)) == set(range(PARTITIONS))
                and all_committed(settings)
                and counted_by(live) >= events
                and counted_by(live, "10s") >= events
            )

        with contextlib.suppress(pytest.fail.Exception):  # the comparison below says where
            wait_until(
                settled,
                settle_s,
                "every message committed and counted",
                every_s=0.5,
                explain=tails(live),
            )
        sizes = {"1m": 60.0, "10s": 10.0}
        return ChaosReport(
            produced=events,
            kills=kills,
            counted={size: counted_by_window(live, size) for size in sizes},
            on_topic={size: events_by_window(settings, s) for size, s in sizes.items()},
            owners=owners_by_partition(sorted(log_dir.glob("w*.log"))),
        )


def random_schedule(seed: int, rounds: int) -> list[Kill]:
    """``rounds`` kills: the first 2-4 s into the flow, then each either 1-4 s after the one
    before (the group still waits a session timeout for the killed worker: the takeover is not
    settled) or 0.5-3 s after the takeover settled; at least one of each.

    >>> random_schedule(1, 4) == random_schedule(1, 4)
    True
    >>> schedule = random_schedule(2, 4)
    >>> len(schedule), schedule[0].settled, {kill.settled for kill in schedule[1:]}
    (4, False, {False, True})
    """
    rng = random.Random(seed)
    kinds = [True, False] + [rng.random() < 0.5 for _ in range(rounds - 3)]
    rng.shuffle(kinds)
    return [Kill(round(rng.uniform(2.0, 4.0), 2))] + [
        Kill(round(rng.uniform(0.5, 3.0), 2), True)
        if settled
        else Kill(round(rng.uniform(1.0, 4.0), 2))
        for settled in kinds
    ]


RATE = 3_000  # events/s
EVENTS = 60_000  # 20 s of flow
ROUNDS = 4


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chained_takeovers_count_every_event_once(
    settings: Settings, tmp_path: Path, seed: int
) -> None:
    schedule = random_schedule(seed, ROUNDS)
    report = run_chaos(settings, tmp_path, schedule, events=EVENTS, rate=RATE, seed=seed)
    print(f"\nseed {seed}, {schedule}\n{report.table()}")
    assert max(map(report.takeovers, range(PARTITIONS))) >= 2, (
        f"no partition passed through two killed owners\n{report.table()}"
    )
    for size in ("1m", "10s"):
        wrong = report.wrong(size)
        assert not wrong, (
            f"seed {seed}, {schedule}: events not counted once\n{report.table(size)}\n"
            f"(partition, window start): (counted, on the topic) where they differ: {wrong}"
        )
