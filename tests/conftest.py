"""Shared fixtures: one real Kafka-protocol broker for the whole session, isolated topics per test.

The broker is, in order: ``SHARDSHAPE_TEST_BOOTSTRAP`` if set, testcontainers' Kafka when a
Docker engine answers, else the embedded Tansu broker that the project ships.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from shardshape.core.settings import Settings
from shardshape.infra.broker import EmbeddedBroker

REPO_ROOT = Path(__file__).resolve().parent.parent


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a real broker for this test session."""
    external = os.environ.get("SHARDSHAPE_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    if _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    log_dir = tmp_path_factory.mktemp("broker")
    with EmbeddedBroker(Settings(), log_dir=log_dir) as broker:
        yield broker.bootstrap


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


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a ``shardshape`` subprocess use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
    return {**env, **settings.as_environment()}


def shardshape_command(*args: str) -> list[str]:
    """The real console script of this environment."""
    return [str(Path(sys.executable).with_name("shardshape")), *args]


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """Run ``command`` in the background, stopping it (SIGINT, then SIGKILL) on the way out."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(2)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_line(log_path: Path, needle: str, process: subprocess.Popen, timeout_s: float) -> str:
    """Wait until ``needle`` appears in the log; fail with the log when the process dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if needle in text:
            return text
        if process.poll() is not None:
            pytest.fail(f"process exited with {process.returncode} before {needle!r}:\n{text}")
        time.sleep(0.2)
    pytest.fail(f"{needle!r} not seen within {timeout_s}s:\n{log_path.read_text(errors='replace')}")


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(") ", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def descendant_pids(pid: int) -> set[int]:
    """Children, grandchildren and so on of ``pid``, as they are now."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in child_pids(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_gone(pids: Iterable[int], timeout_s: float = 10.0) -> list[int]:
    """Wait until none of ``pids`` runs; return those still running when time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = sorted(pid for pid in pids if pid_alive(pid))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


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
