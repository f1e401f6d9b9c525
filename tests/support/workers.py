"""Worker processes for the scale-out, crash and outage tests: start one with its own web
port, read its pages, count the events its shard-metrics windows hold, and read what the
workers' group committed and wrote."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from shardshape.core.contracts import decode_requests
from shardshape.core.follower import TopicFollower
from shardshape.core.metrics import ShardStats, merged_series, partition_of
from shardshape.core.net import ensure_port_free
from shardshape.core.settings import Settings
from shardshape.streams.highwater import end_offsets
from tests.support.processes import running, settings_env, shardshape_command, wait_for_line


@dataclass
class Worker:
    """One ``shardshape worker`` process and where to read it."""

    name: str
    process: Popen
    log: Path
    port: int

    def page(self, path: str) -> dict:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=20) as response:  # a busy worker is slow
            return json.loads(response.read())

    def ready(self) -> bool:
        """Whether ``/readyz`` says ready: joined and not rebalancing, partitions assigned,
        tables recovered from their changelogs, the routing topic read to its end."""
        try:
            return self.page("/readyz")["ready"] is True
        except urllib.error.HTTPError:  # 503 while not ready
            return False

    def stats(self) -> dict:
        return self.page("/shardshape/stats")

    def windows(self, size: str = "1m") -> list[dict]:
        """This worker's windows of one metrics table (``/shardshape/shards``)."""
        return self.page("/shardshape/shards")[size]

    def partitions(self, topic: str) -> set[int]:
        """The partitions of ``topic`` this worker owns now."""
        return set(self.stats()["assignment"].get(topic, []))

    def tail(self, chars: int = 3_000) -> str:
        return f"--- {self.name} ---\n{self.log.read_text(errors='replace')[-chars:]}"


@contextlib.contextmanager
def worker(
    settings: Settings, log_dir: Path, name: str, *, wait_ready: bool = True, **env: str
) -> Iterator[Worker]:
    """A worker on ``settings`` with its web views on a free port, ready (joined the group)
    on entry unless not ``wait_ready``, and stopped on exit; ``env`` adds ``SHARDSHAPE_*``
    variables."""
    port = ensure_port_free(0, "WEB_PORT")
    variables = settings_env(settings)
    variables.update(
        SHARDSHAPE_WEB_ENABLED="true",
        SHARDSHAPE_WEB_PORT=str(port),
        SHARDSHAPE_WORKER_ID=name,
        **{f"SHARDSHAPE_{key.upper()}": value for key, value in env.items()},
    )
    log = log_dir / f"{name}.log"
    with running(shardshape_command("worker"), variables, log) as process:
        if wait_ready:
            wait_for_line(log, "shardshape worker ready", process, 120)
        yield Worker(name, process, log, port)


def counted(windows: Iterable[dict]) -> int:
    """Events in windows of one size (every event is in exactly one tumbling window)."""
    return sum(
        stats.count
        for window in windows
        for stats in merged_series(
            (slot, data.encode()) for slot, data in window["slots"].items()
        ).values()
    )


def counted_by(workers: Iterable[Worker], size: str = "1m") -> int:
    """Events in the ``size`` windows of all ``workers`` together."""
    return sum(counted(w.windows(size)) for w in workers)


def tails(workers: Iterable[Worker]) -> Callable[[], str]:
    """The end of each worker's log, read when called: what a failed wait shows."""
    workers = list(workers)
    return lambda: "\n".join(w.tail() for w in workers)


def all_committed(settings: Settings, ends: Mapping[int, int] | None = None) -> bool:
    """True when the workers' group has committed every requests-topic message, up to ``ends``
    (partition -> offset after its last message; by default the partitions' end offsets). Then
    every message was handled and its counts written before the commit, so a count read now is
    final, and stopping or moving a partition replays nothing."""
    if ends is None:
        ends = _request_ends(settings)
    committed = committed_offsets(settings, ends)
    return all(end == 0 or committed[p] >= end for p, end in ends.items())


def committed_offsets(settings: Settings, partitions: Iterable[int]) -> dict[int, int]:
    """The workers' group's committed offset of each of the requests topic's ``partitions``
    (negative where it has committed none)."""
    # An admin request, not a consumer of the workers' group: nothing that could take part in
    # the group's coordination while they commit.
    wanted = [TopicPartition(settings.topic_requests, p) for p in partitions]
    request = ConsumerGroupTopicPartitions(settings.app_id, wanted)
    admin = AdminClient(settings.confluent_config())
    answer = admin.list_consumer_group_offsets([request])[settings.app_id].result(timeout=10)
    return {tp.partition: tp.offset for tp in answer.topic_partitions}


def settled(settings: Settings, workers: Iterable[Worker]) -> bool:
    """True when every worker is ready (in the group and not rebalancing, tables recovered) and
    the group has committed every requests-topic message: nothing is left to handle or to
    replay, so what the workers count now is final."""
    return all(w.ready() for w in workers) and all_committed(settings)


def unsettled(settings: Settings, workers: Iterable[Worker]) -> Callable[[], str]:
    """What keeps ``workers`` from being :func:`settled`, read when called (for a failed wait):
    the /readyz answers, the committed and end offsets, the logs' ends."""
    workers = list(workers)

    def explain() -> str:
        ready = {}
        for w in workers:
            try:
                ready[w.name] = w.page("/readyz")
            except OSError as error:  # 503 while not ready: its body says why
                body = getattr(error, "read", lambda: b"")()
                ready[w.name] = body.decode(errors="replace") or repr(error)
        ends = _request_ends(settings)
        committed = committed_offsets(settings, ends)
        return f"readiness: {ready}\ncommitted: {committed}\nends: {ends}\n" + "\n".join(
            w.tail() for w in workers
        )

    return explain


def _request_ends(settings: Settings) -> dict[int, int]:
    return end_offsets(settings.confluent_config(), settings.topic_requests,
                       settings.requests_partitions)  # fmt: skip


def read_table(settings: Settings, table: str, timeout_s: float = 30.0) -> dict[bytes, bytes]:
    """The latest value of every key in a worker table's changelog topic."""
    return read_topic(settings, f"{settings.app_id}-{table}-changelog", timeout_s)


def read_topic(settings: Settings, topic: str, timeout_s: float = 30.0) -> dict[bytes, bytes]:
    """The latest value of every key in ``topic``, read from its start to its end."""
    latest: dict[bytes, bytes] = {}

    def keep(key: bytes | None, value: bytes | None) -> None:
        if key is not None and value is not None:
            latest[key] = value

    follower = TopicFollower(settings.confluent_config(), topic, keep).start()
    try:
        if not follower.caught_up.wait(timeout_s):
            pytest.fail(f"could not read {topic} to its end within {timeout_s:.0f} s")
    finally:
        follower.stop()
    return latest


@contextlib.contextmanager
def following(
    settings: Settings, topic: str, on_message: Callable[[bytes | None, bytes | None], None]
) -> Iterator[TopicFollower]:
    """Every message of ``topic``, from its start and as it comes, given to ``on_message``
    (key, value) on a thread of its own until the block ends."""
    follower = TopicFollower(settings.confluent_config(), topic, on_message).start()
    try:
        yield follower
    finally:
        follower.stop()


def requests_on_topic(settings: Settings) -> Iterator[Message]:
    """Every message on the requests topic, read to its end (partition by partition order)."""
    return messages_on(settings, settings.topic_requests, settings.requests_partitions)


def messages_on(
    settings: Settings, topic: str, partitions: int, **config: object
) -> Iterator[Message]:
    """Every message on ``topic``, read to its end as it is now (partition by partition order);
    ``config`` adds consumer settings."""
    ends = end_offsets(settings.confluent_config(), topic, partitions)
    consumer = Consumer(
        settings.confluent_config(**{"group.id": "read-" + uuid.uuid4().hex[:8], **config})
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends if ends[p]])
    left = {p for p, end in ends.items() if end}
    deadline = time.monotonic() + 60
    try:
        while left and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            yield message
            if message.offset() + 1 >= ends[message.partition()]:
                left.discard(message.partition())
    finally:
        consumer.close()
    assert not left, f"{topic}: partitions {sorted(left)} not read to their end"


def topic_request_ids(settings: Settings) -> Counter[str]:
    """How often each request id is on the requests topic."""
    return Counter(
        event.request_id
        for message in requests_on_topic(settings)
        for event in decode_requests(message.value())
    )


def events_by_window(settings: Settings, size_s: float) -> Counter[tuple[int, float]]:
    """Events on the requests topic per (partition, window start): what the workers' metric
    slots of that partition and window must add up to (a message's window is its timestamp's)."""
    counts: Counter[tuple[int, float]] = Counter()
    for message in requests_on_topic(settings):
        timestamp = message.timestamp()[1] / 1000
        start = timestamp - timestamp % size_s
        counts[message.partition(), round(start, 3)] += len(decode_requests(message.value()))
    return counts


def counted_by_window(workers: Iterable[Worker], size: str) -> Counter[tuple[int, float]]:
    """Events the ``workers``' ``size`` windows hold per (partition, window start)."""
    counts: Counter[tuple[int, float]] = Counter()
    for w in workers:
        for window in w.windows(size):
            for slot, data in window["slots"].items():
                count = ShardStats.from_bytes(data.encode()).count
                counts[partition_of(slot), round(window["start"], 3)] += count
    return counts
