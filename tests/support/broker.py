"""The broker of a test session, and a broker paused under a test's feet."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from shardshape.core.settings import Settings
from shardshape.infra.broker import EmbeddedBroker


def docker_available() -> bool:
    """Whether a Docker engine answers (then testcontainers can start Kafka)."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def session_broker(log_dir: Path) -> Iterator[str]:
    """host:port of a real Kafka-protocol broker: ``SHARDSHAPE_TEST_BOOTSTRAP`` if set,
    testcontainers' Kafka when a Docker engine answers, else the embedded Tansu broker that the
    project ships (logging to ``log_dir``)."""
    external = os.environ.get("SHARDSHAPE_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    with EmbeddedBroker(Settings(), log_dir=log_dir) as broker:
        yield broker.bootstrap


@contextlib.contextmanager
def paused_broker(broker: EmbeddedBroker) -> Iterator[None]:
    """SIGSTOP the broker's process group (it has its own), SIGCONT it on the way out."""
    assert broker.process is not None
    group = os.getpgid(broker.process.pid)
    assert group == broker.process.pid, "the broker leads its own process group"
    os.killpg(group, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(group, signal.SIGCONT)
