"""An in-process gateway's health next to its status page: /readyz is 503 until the routing and
plans topics have been read to their end (here: until they exist), then 200; /healthz is 200
while the app serves."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from shardshape.core.settings import Settings
from shardshape.gateway.status import HEALTH_PATH, READY_PATH
from shardshape.infra.topics import create_topics
from tests.support.polling import until
from tests.support.serving import example, serve

pytestmark = pytest.mark.broker


async def test_readyz_waits_for_the_routing_and_plans_topics(settings: Settings) -> None:
    app = example("app").create_app(settings)  # its own reporter; topics do not exist yet
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        health = await client.get(HEALTH_PATH)
        assert health.status_code == 200 and health.json()["alive"] is True

        waiting = await client.get(READY_PATH)
        assert waiting.status_code == 503
        assert waiting.json()["checks"] == {"routing": False, "plans": False}
        assert "reading the routing topic" in waiting.json()["reason"]

        await asyncio.to_thread(create_topics, settings)

        async def ready_answer() -> httpx.Response | None:
            answer = await client.get(READY_PATH)
            return answer if answer.status_code == 200 else None

        ready = await until(ready_answer, 60, "/readyz answering 200", every_s=0.2)
        assert ready.json() == {
            "ready": True,
            "reason": "ready",
            "checks": {"routing": True, "plans": True},
        }
