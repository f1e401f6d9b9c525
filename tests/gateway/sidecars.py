"""A Node.js upstream (tests/gateway/upstream.js) and the real ``shardshape gateway`` sidecar in
front of it, each as its own process."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardshape.core.net import free_port
from shardshape.gateway.status import HEALTH_PATH
from tests.support.processes import running, shardshape_command, wait_for_line
from tests.support.serving import http_process

UPSTREAM_JS = Path(__file__).with_name("upstream.js")


def node() -> str:
    """The ``node`` executable; skips the test where Node.js is not installed."""
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed: the sidecar tests run a Node.js upstream service")
    return found


@contextlib.contextmanager
def node_upstream(log_path: Path, port: int = 0) -> Iterator[tuple[str, subprocess.Popen]]:
    """upstream.js on ``port`` (0: a free one); yield its URL and process."""
    command = [node(), str(UPSTREAM_JS), str(port)]
    with running(command, {}, log_path) as process:
        line = wait_for_line(log_path, "listening ", process, 30).split("listening ")[-1]
        yield f"http://127.0.0.1:{int(line.split()[0])}", process


@contextlib.contextmanager
def sidecar(
    env: dict[str, str], upstream: str, log_path: Path, *extra: str, service: str = "polyglot"
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``shardshape gateway --service service --upstream upstream`` on a free port; yield its
    URL and process once it answers."""
    url = f"http://127.0.0.1:{free_port()}"
    command = shardshape_command(
        "gateway", "--service", service, "--upstream", upstream, "--listen", url[7:], *extra
    )
    with http_process(command, env, log_path, url + HEALTH_PATH) as process:
        yield url, process
