"""Noisy neighbour, with real processes and real HTTP load (the measurement: noisy.py).

The example service runs as its own process, routing and plans come from the broker.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from shardshape.core.settings import Settings
from shardshape.gateway.status import STATUS_PATH
from shardshape.infra.topics import create_topics
from tests.gateway.noisy import assert_isolated, measure, publish_reads_and_exports, wait_for_plan
from tests.support.processes import settings_env
from tests.support.serving import example, example_server

pytestmark = [pytest.mark.slow, pytest.mark.broker]

READ = "/items/{n}?read_ms=30"
EXPORT = "/exports/r{n}?scan_ms=150&rows=0"


def test_shaping_keeps_reads_fast_next_to_saturated_exports_and_one_pool_does_not(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    service = example("app").SERVICE
    publish_reads_and_exports(settings, service, "GET /items/{item_id}", "GET /exports/{report}")

    figures = {}
    for shaping in (True, False):
        env = {**settings_env(settings), "SHARDSHAPE_GATEWAY_SHAPING": str(shaping).lower()}
        with example_server(env, tmp_path / f"service-{shaping}.log") as url:
            status = wait_for_plan(url)
            assert status["shaping"] is shaping
            figures[shaping] = measure(url, READ, EXPORT)
            pools = {p["name"]: p for p in httpx.get(f"{url}{STATUS_PATH}").json()["pools"]}
        if shaping:
            assert {"shard 0", "shard 1", "default"} == set(pools)
        else:
            assert set(pools) == {"shared"} and pools["shared"]["limits"]["concurrency"] == 8
    assert_isolated(figures[True], figures[False])
