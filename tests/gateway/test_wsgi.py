"""The WSGI gateway: a Flask app (tests/gateway/flask_service.py) under gunicorn's threaded
workers, each worker its own process, on the real broker."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from shardshape.core.contracts import encode
from shardshape.core.net import free_port
from shardshape.core.settings import Settings
from shardshape.gateway.status import HEALTH_PATH, STATUS_PATH
from shardshape.infra.topics import create_topics
from tests.gateway.noisy import (
    assert_isolated,
    measure,
    pool_load,
    publish_reads_and_exports,
    wait_for_plan,
)
from tests.gateway.reporting import consume_batches
from tests.support.paths import REPO_ROOT
from tests.support.plans import plan, shard
from tests.support.polling import wait_until
from tests.support.processes import settings_env
from tests.support.serving import http_process

pytest.importorskip("flask", reason="the WSGI tests need flask (pip install -e '.[dev]')")
pytestmark = pytest.mark.broker

SERVICE = "flaskshop"
READ_TYPE = "GET /items/<int:item_id>"
EXPORT_TYPE = "GET /exports/<name>"


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log_path: Path, workers: int = 1) -> Iterator[str]:
    """The Flask service under gunicorn (64 threads a worker) on a free port; yield its URL."""
    executable = Path(sys.executable).with_name("gunicorn")
    if not executable.exists():
        pytest.skip("gunicorn is not installed (pip install -e '.[dev]')")
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        str(executable), "-k", "gthread", "--threads", "64", "--workers", str(workers),
        "--bind", url[7:], "--chdir", str(REPO_ROOT), "--graceful-timeout", "10",
        "tests.gateway.flask_service:app",
    ]  # fmt: skip
    with http_process(command, env, log_path, f"{url}/healthz"):
        yield url


def test_flask_route_templates_reach_the_requests_topic_from_each_worker(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    with gunicorn(settings_env(settings), tmp_path / "gunicorn.log", workers=2) as url:
        ids = set()
        deadline = time.monotonic() + 30
        while len(ids) < 2 and time.monotonic() < deadline:  # each worker: a replica of its own
            with httpx.Client() as fresh:
                ids.add(fresh.get(url + STATUS_PATH).json()["gateway_id"])
        assert len(ids) == 2, ids
        for n in range(10):
            answer = httpx.get(
                f"{url}/items/{n}?ms=1", headers={"x-user-id": "ann", "x-request-id": f"r{n}"}
            )
            assert answer.status_code == 200 and answer.json()["shard"] == 0
        assert httpx.get(f"{url}/nowhere", headers={"x-request-id": "lost"}).status_code == 404
        # The gateway's own endpoints, answered by the wrapper before the app.
        assert httpx.get(url + HEALTH_PATH).json()["alive"] is True
        scrape = httpx.get(f"{url}/metrics")
        assert scrape.status_code == 200 and "shardshape_gateway_pool_slots" in scrape.text

    batches = consume_batches(settings, lambda b: sum(len(x.events) for _, x in b) >= 11, 30)
    events = {e.request_id: e for _, batch in batches for e in batch.events}
    assert {events[f"r{n}"].request_type for n in range(10)} == {READ_TYPE}
    assert {events[f"r{n}"].user_id for n in range(10)} == {"ann"}
    assert events["lost"].request_type == "GET <unmatched>" and events["lost"].status == "ok"
    assert {batch.gateway_id for _, batch in batches} <= ids


def test_a_shard_shrunk_to_one_slot_queues_then_sheds_while_another_is_unaffected(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    publish_reads_and_exports(settings, SERVICE, READ_TYPE, EXPORT_TYPE)
    with gunicorn(settings_env(settings), tmp_path / "gunicorn.log") as url:
        wait_for_plan(url)
        shrunk = plan(
            2,
            shard(0, concurrency=4, timeout_ms=20_000),
            shard(1, concurrency=1, queue=1, timeout_ms=1000),
            service=SERVICE,
        )
        producer = Producer(settings.confluent_config())
        producer.produce(settings.topic_plans, key=SERVICE.encode(), value=encode(shrunk))
        assert producer.flush(10) == 0
        wait_for_plan(url, version=2)

        def export(n: int) -> tuple[int, str | None, str | None, float]:
            started = time.monotonic()
            answer = httpx.get(
                f"{url}/exports/e{n}?ms=3000", headers={"x-user-id": "exporter"}, timeout=30
            )
            reason = answer.json().get("reason") if answer.status_code == 503 else None
            waited = time.monotonic() - started
            return answer.status_code, answer.headers.get("retry-after"), reason, waited

        def read(n: int) -> tuple[int, int | None]:
            answer = httpx.get(f"{url}/items/{n}?ms=20", headers={"x-user-id": "reader"})
            return answer.status_code, answer.json()["shard"]

        def shard_1_at(load: tuple[int, int], what: str) -> None:
            wait_until(lambda: pool_load(url, "shard 1") == load, 10,
                       f"shard 1 (in flight, queued) at {load}: {what}", every_s=0.02,
                       explain=lambda: f"shard 1 at {pool_load(url, 'shard 1')}")  # fmt: skip

        with ThreadPoolExecutor(16) as workers:
            # In order: the first export runs, the second queues (for its 1 s queue timeout),
            # the last two find the queue full.
            exports = [workers.submit(export, 0)]
            shard_1_at((1, 0), "the first export running")
            exports.append(workers.submit(export, 1))
            shard_1_at((1, 1), "the second export queued")
            exports += [workers.submit(export, n) for n in (2, 3)]
            reads = list(workers.map(read, range(12)))
            results = [f.result() for f in exports]

    statuses = [(r[0], r[2]) for r in results]
    assert statuses == [(200, None), (503, "queue_timeout"), (503, "queue_full"),
                        (503, "queue_full")], results  # fmt: skip
    assert all(r[1] is not None and int(r[1]) >= 1 for r in results[1:]), results
    assert results[1][3] >= 1.0  # it waited its queue timeout, then was shed
    assert reads == [(200, 0)] * 12


@pytest.mark.slow
def test_noisy_neighbour_under_gunicorn(settings: Settings, tmp_path: Path) -> None:
    create_topics(settings)
    publish_reads_and_exports(settings, SERVICE, READ_TYPE, EXPORT_TYPE)
    figures = {}
    for shaping in (True, False):
        env = {**settings_env(settings), "SHARDSHAPE_GATEWAY_SHAPING": str(shaping).lower()}
        with gunicorn(env, tmp_path / f"gunicorn-{shaping}.log") as url:
            assert wait_for_plan(url)["shaping"] is shaping
            figures[shaping] = measure(url, "/items/{n}?ms=30", "/exports/r{n}?ms=150")
    assert_isolated(figures[True], figures[False])
