"""Shared fixtures: one real Kafka-protocol broker for the whole session, isolated topics per test.

The broker is, in order: ``SHARDSHAPE_TEST_BOOTSTRAP`` if set, testcontainers' Kafka when a
Docker engine answers, else the embedded Tansu broker that the project ships. Helpers that tests
import live in ``tests/support``; this file holds fixtures only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardshape.core.settings import Settings
from tests.support.broker import session_broker


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a real broker for this test session."""
    with session_broker(tmp_path_factory.mktemp("broker")) as bootstrap:
        yield bootstrap


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(kafka_bootstrap: str, unique: str, tmp_path: Path) -> Settings:
    """Settings on the session broker with topic names and group id of this test alone."""
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        app_id=f"test-{unique}",
        topic_requests=f"t{unique}.requests",
        topic_dlq=f"t{unique}.requests.dlq",
        topic_routing=f"t{unique}.routing",
        topic_plans=f"t{unique}.plans",
        data_dir=tmp_path / "data",
        session_timeout_s=6,
        web_enabled=False,
    )
