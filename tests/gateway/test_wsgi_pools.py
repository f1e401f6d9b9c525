"""The WSGI gateway's pools from the handler's side, the app called as a WSGI server calls it
(several threads, response iterables closed): slots held until the body is closed, thread
queues, memory admission, bandwidth pacing of the iterable, the shard's cache, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import orjson
import pytest

from shardshape.core.contracts import CachePolicy
from shardshape.core.settings import Settings
from shardshape.gateway.pools import current_slot
from shardshape.gateway.wsgi import WsgiGateway, install_wsgi
from shardshape.infra.topics import create_topics
from tests.support.plans import plan, shard
from tests.support.polling import wait_until

pytestmark = pytest.mark.broker  # shaped only with a broker (the plans here are applied directly)


class _Gate:
    """Where ``/gate`` requests wait until the test opens it, counting how many wait at once."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.most = 0  # the most requests inside the handler at one time
        self._inside = 0
        self._lock = threading.Lock()

    def pass_through(self) -> None:
        with self._lock:
            self._inside += 1
            self.most = max(self.most, self._inside)
        try:
            self.opened.wait(30)
        finally:
            with self._lock:
                self._inside -= 1


GATE = _Gate()


def _app(environ: dict, start_response) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    path = environ["PATH_INFO"]
    slot = current_slot()
    assert slot is not None
    if path == "/boom":
        raise RuntimeError("planted failure")
    if path.startswith("/cached/"):
        hit = slot.cache.get(path)
        slot.cache.set(path, b"x")
        start_response("200 OK", [("content-type", "text/plain")])
        return iter([b"hit" if hit else b"miss"])
    if path == "/gate":
        GATE.pass_through()
    size = int(environ.get("QUERY_STRING") or 0)
    start_response("200 OK", [("content-type", "application/octet-stream")])
    return iter([b"x" * 32 * 1024] * (size // (32 * 1024)))


def _call(gateway: WsgiGateway, path: str, query: str = "") -> tuple[int, dict, bytes]:
    answer: dict = {}

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        answer["status"] = int(status.split()[0])
        answer["headers"] = dict(headers)

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query}
    body = gateway(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return answer["status"], answer["headers"], data


@pytest.fixture
def shop(settings: Settings) -> Iterator[Callable[..., WsgiGateway]]:
    """``shop(**hooks)``: the app behind a WSGI gateway on the test's broker; stopped after."""
    create_topics(settings)
    made: list[WsgiGateway] = []

    def make(**hooks: object) -> WsgiGateway:
        made.append(install_wsgi(_app, service="shop", settings=settings, **hooks))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for gateway in made:
        gateway.stop()


def test_threads_queue_for_their_shards_slots_and_the_slot_is_held_until_the_body_closes(
    shop: Callable[..., WsgiGateway],
) -> None:
    gateway = shop()
    gateway.pools.apply(plan(1, shard(0, concurrency=1, queue=4, timeout_ms=5_000)))
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda: answers.append(_call(gateway, "/gate")[0]))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()

    def one_running_two_queued() -> bool:
        state = gateway.pools.state(0)
        return (state.in_use, state.queued) == (1, 2)

    wait_until(one_running_two_queued, 10, "one request running, two queued", every_s=0.01)
    GATE.opened.set()
    for thread in threads:
        thread.join()
    assert answers == [200, 200, 200] and GATE.most == 1  # one at a time
    assert (gateway.pools.state(0).in_use, gateway.pools.state(0).completed) == (0, 3)


def test_memory_admission_rejects_with_503_and_retry_after(
    shop: Callable[..., WsgiGateway],
) -> None:
    gateway = shop(expected_memory_mib=lambda event, shard_id: 128.0)
    gateway.pools.apply(plan(1, shard(0, concurrency=4, memory_mib=64)))
    status, headers, body = _call(gateway, "/anything")
    assert status == 503 and int(headers["retry-after"]) >= 1
    assert orjson.loads(body)["reason"] == "memory"
    metrics = gateway.core.metrics.exposition().decode()
    assert 'shard="0",status="rejected"} 1.0' in metrics


def test_the_response_iterable_is_paced_by_the_shards_bandwidth(
    shop: Callable[..., WsgiGateway],
) -> None:
    gateway = shop()
    gateway.pools.apply(plan(1, shard(0, concurrency=4, net_mbit=2.4)))  # 300 kB/s
    size = 32 * 32 * 1024  # 1 MiB
    started = time.monotonic()
    status, _, body = _call(gateway, "/download", str(size))
    took = time.monotonic() - started
    assert status == 200 and len(body) == size
    assert took >= (size - 64 * 1024) / 300_000 * 0.9  # a 64 KiB burst, then the rate


def test_handlers_reach_their_shards_cache_and_failures_free_the_slot(
    shop: Callable[..., WsgiGateway],
) -> None:
    gateway = shop()
    gateway.pools.apply(plan(1, shard(0, concurrency=2, cache=CachePolicy(policy="lru", size=8))))
    answers = [_call(gateway, "/cached/a")[2] for _ in range(3)]
    assert answers == [b"miss", b"hit", b"hit"]
    with pytest.raises(RuntimeError, match="planted"):
        _call(gateway, "/boom")
    state = gateway.pools.state(0)
    assert (state.in_use, state.completed, state.cache_hits) == (0, 4, 2)
    assert 'shard="0",status="error"} 1.0' in gateway.core.metrics.exposition().decode()
    assert current_slot() is None  # nothing left set in this thread
