"""Workers' /healthz and /readyz on a real worker and broker: 503 with the reason before the
worker has joined its group, 200 once it has joined, got partitions, recovered its tables and
read the routing topic (the latest shard snapshot adopted)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from shardshape.core.net import ensure_port_free
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics
from tests.support.polling import poll
from tests.support.processes import running, settings_env, shardshape_command

pytestmark = pytest.mark.broker

CHECKS = {"joined", "assigned", "recovered", "snapshot"}


def get_json(port: int, path: str) -> tuple[int, dict] | None:
    """Status and JSON body of ``path`` on 127.0.0.1:``port``; None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return None


def test_readyz_is_503_until_the_worker_has_joined(settings: Settings, tmp_path: Path) -> None:
    create_topics(settings)
    port = ensure_port_free(0, "WEB_PORT")
    env = settings_env(settings)
    # Tansu completes a join about half a session timeout after it starts: with 30 s the worker
    # serves its web views for many seconds before it can have joined.
    env.update(SHARDSHAPE_WEB_ENABLED="true", SHARDSHAPE_WEB_PORT=str(port),
               SHARDSHAPE_WORKER_ID="health-1", SHARDSHAPE_SESSION_TIMEOUT_S="30")  # fmt: skip
    log = tmp_path / "worker.log"
    answers: list[tuple[int, dict]] = []
    with running(shardshape_command("worker"), env, log) as process:

        def ready_or_gone() -> bool:
            answer = get_json(port, "/readyz")
            if answer is not None:
                answers.append(answer)
            return process.poll() is not None or (answer is not None and answer[0] == 200)

        poll(ready_or_gone, 150, every_s=0.2)  # the answers seen say what went wrong, if anything
        health = get_json(port, "/healthz")
    tail = log.read_text(errors="replace")[-3000:]
    assert answers, f"/readyz never answered:\n{tail}"

    status, first = answers[0]
    assert status == 503 and first["ready"] is False, first
    assert first["checks"]["joined"] is False
    assert f"joining consumer group {settings.app_id}" in first["reason"]
    assert set(first["checks"]) == CHECKS

    status, last = answers[-1]
    assert status == 200, f"never ready; last answer {last}\n{tail}"
    assert last == {"ready": True, "reason": "ready", "checks": dict.fromkeys(CHECKS, True)}
    assert all(code in (200, 503) for code, _ in answers)

    assert health is not None and health[0] == 200 and health[1]["alive"] is True
    assert health[1]["pid"] == process.pid
