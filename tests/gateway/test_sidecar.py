"""The sidecar (``shardshape gateway``) in front of a Node.js service, all real processes on the
real broker: forwarding and reporting, large bodies streamed, upstream failures, a client that
leaves, ``shardshape doctor``, and the noisy neighbour."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from shardshape.core.settings import Settings
from shardshape.gateway.status import STATUS_PATH
from shardshape.infra.memory import process_memory
from shardshape.infra.topics import create_topics
from tests.gateway.noisy import assert_isolated, measure, publish_reads_and_exports, wait_for_plan
from tests.gateway.reporting import consume_batches
from tests.gateway.sidecars import node_upstream, sidecar
from tests.support.polling import until
from tests.support.processes import settings_env, shardshape_command

MIB = 1024 * 1024


def _in_flight(url: str) -> int:
    return sum(p["in_flight"] for p in httpx.get(url + STATUS_PATH).json()["pools"])


@pytest.mark.broker
def test_sidecar_forwards_reports_and_is_read_by_doctor(settings: Settings, tmp_path: Path) -> None:
    create_topics(settings)
    routes = tmp_path / "routes.toml"
    routes.write_text('routes = ["GET /items/{item}"]\n')
    with (
        node_upstream(tmp_path / "node.log") as (upstream, _),
        sidecar(
            settings_env(settings), upstream, tmp_path / "sidecar.log", "--routes", str(routes)
        ) as (url, _),
    ):
        item = httpx.get(f"{url}/items/7?ms=1", headers={"x-user-id": "ann", "x-request-id": "r1"})
        assert item.status_code == 200 and item.json() == {"item": "7"}
        seen = httpx.get(
            f"{url}/headers", headers={"x-user-id": "ann", "x-request-id": "r2", "te": "trailers"}
        ).json()
        assert seen["x-shardshape-shard"] == "0" and seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["x-forwarded-proto"] == "http" and "te" not in seen
        assert seen["x-user-id"] == "ann"
        missing = httpx.get(f"{url}/orders/123e4567-e89b-12d3-a456-426614174000/lines/3",
                            headers={"x-request-id": "r3"})  # fmt: skip
        assert missing.status_code == 404  # the upstream's own answer, passed on

        doctor = subprocess.run(
            shardshape_command("doctor", "--gateway-url", url, "--json"),
            env={**os.environ, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert doctor.returncode == 0, doctor.stderr
        gateway = json.loads(doctor.stdout)["gateway"]
        assert gateway["service"] == "polyglot"
        assert [p["name"] for p in gateway["pools"]] == ["default"]
        assert gateway["reporter"]["reported"] == 3
        metrics = httpx.get(f"{url}/metrics").text
        assert 'shardshape_shard_requests_total{arm="",service="polyglot",shard="0",' in metrics

    batches = consume_batches(settings, lambda b: sum(len(x.events) for _, x in b) >= 3, 30)
    events = {e.request_id: e for _, batch in batches for e in batch.events}
    assert events["r1"].request_type == "GET /items/{item}"  # from the routes file
    assert events["r1"].user_id == "ann" and events["r1"].status == "ok"
    assert events["r2"].request_type == "GET /headers"
    assert events["r3"].request_type == "GET /orders/{id}/lines/{id}"  # normalised
    assert events["r1"].response_bytes == len(item.content)


@pytest.mark.broker
def test_large_bodies_stream_through_without_growing_the_sidecar(
    settings: Settings, tmp_path: Path
) -> None:
    env = {**settings_env(settings), "SHARDSHAPE_KAFKA_BOOTSTRAP": ""}
    upload = os.urandom(MIB) * 50
    with (
        node_upstream(tmp_path / "node.log") as (upstream, _),
        sidecar(env, upstream, tmp_path / "sidecar.log") as (url, process),
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        http.get("/bytes/1")  # warm: imports, the upstream connection pool
        http.post("/upload", content=b"x" * MIB)
        before = process_memory(process.pid).rss_bytes / MIB
        received = 0
        with http.stream("GET", "/bytes/50") as response:
            for chunk in response.iter_raw():
                received += len(chunk)
        assert response.status_code == 200 and received == 50 * MIB
        after_download = process_memory(process.pid).rss_bytes / MIB

        def chunks():
            for start in range(0, len(upload), MIB):
                yield upload[start : start + MIB]

        answer = http.post("/upload", content=chunks()).json()
        after_upload = process_memory(process.pid).rss_bytes / MIB
    assert answer == {"bytes": 50 * MIB, "sha256": hashlib.sha256(upload).hexdigest()}
    grown = max(after_download, after_upload) - before
    print(f"sidecar RSS {before:.1f} MiB, +{grown:.1f} MiB after 50 MiB each way")
    assert grown < 20, (before, after_download, after_upload)


@pytest.mark.broker
def test_upstream_down_slow_or_left_by_its_client(settings: Settings, tmp_path: Path) -> None:
    create_topics(settings)
    env = {**settings_env(settings), "SHARDSHAPE_GATEWAY_UPSTREAM_TIMEOUT_MS": "3000"}

    async def others_meanwhile(http: httpx.AsyncClient, stop: asyncio.Event) -> list[int]:
        statuses = []
        while not stop.is_set():
            statuses.append((await http.get("/items/1?ms=5")).status_code)
            await asyncio.sleep(0.02)  # the other clients' pace
        return statuses

    async def hang_then_leave(url: str) -> tuple[int, float, list[int]]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            stop = asyncio.Event()
            others = asyncio.create_task(others_meanwhile(http, stop))
            started = time.monotonic()
            hung = await http.get("/hang")
            waited = time.monotonic() - started
            # A client that gives up frees its slot at once, while the upstream still hangs.
            with pytest.raises(httpx.ReadTimeout):
                await http.get("/hang", timeout=0.3)
            stop.set()
            served = await others

            async def freed() -> bool:
                return await asyncio.to_thread(_in_flight, url) == 0

            # Well before the upstream's 3 s timeout would free it.
            await until(freed, 1.5, "the slot of the client that left freed")
            return hung.status_code, waited, served

    with node_upstream(tmp_path / "node.log") as (upstream, node):
        port = upstream.rsplit(":", 1)[1]
        with sidecar(env, upstream, tmp_path / "sidecar.log") as (url, _):
            status, waited, others = asyncio.run(hang_then_leave(url))
            assert status == 504 and 3 <= waited < 6, (status, waited)
            assert others and set(others) == {200}, others

            node.terminate()
            node.wait(10)
            started = time.monotonic()
            down = httpx.get(f"{url}/items/2?ms=1", timeout=5)
            assert down.status_code == 502 and time.monotonic() - started < 1
            assert upstream in down.text
            # The sidecar itself keeps serving: its status, and the upstream once it is back.
            assert httpx.get(url + STATUS_PATH).status_code == 200
            with node_upstream(tmp_path / "node-again.log", int(port)):
                assert httpx.get(f"{url}/items/3?ms=1").status_code == 200


@pytest.mark.slow
@pytest.mark.broker
def test_noisy_neighbour_through_the_sidecar(settings: Settings, tmp_path: Path) -> None:
    create_topics(settings)
    publish_reads_and_exports(settings, "polyglot", "GET /items/{id}", "GET /exports/{id}")
    figures = {}
    with node_upstream(tmp_path / "node.log") as (upstream, _):
        for shaping in (True, False):
            env = {**settings_env(settings), "SHARDSHAPE_GATEWAY_SHAPING": str(shaping).lower()}
            with sidecar(env, upstream, tmp_path / f"sidecar-{shaping}.log") as (url, _):
                assert wait_for_plan(url)["shaping"] is shaping
                figures[shaping] = measure(url, "/items/{n}?ms=30", "/exports/{n}?ms=150")
    assert_isolated(figures[True], figures[False])
