"""Serving apps for tests: uvicorn in-process on a real socket, or the example service (or any
HTTP server) as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import uvicorn

from shardshape.core.net import free_port
from shardshape.infra.demo.examples import example_module
from tests.support.paths import REPO_ROOT
from tests.support.polling import until, wait_until
from tests.support.processes import running

EXAMPLE_DIR = REPO_ROOT / "examples" / "service"


def example(name: str) -> ModuleType:
    """A module of examples/service (``app`` or ``loadgen``), imported from its file."""
    return example_module(name)


@contextlib.asynccontextmanager
async def serve(app: object, lifespan: str = "on") -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on this event loop, on a real loopback socket; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    def started() -> bool:
        if task.done():
            task.result()  # raises what stopped the server
        return server.started

    try:
        await until(started, 30, "uvicorn serving", every_s=0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


@contextlib.contextmanager
def http_process(
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    health_url: str,
    timeout_s: float = 60,
) -> Iterator[subprocess.Popen]:
    """``command`` as its own process, yielded once ``health_url`` answers 200."""
    with running(command, env, log_path) as process:

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{command[0]} exited:\n{log_path.read_text()}")
            return httpx.get(health_url, timeout=1).status_code == 200

        wait_until(healthy, timeout_s, f"{command} answering {health_url}",
                   ignoring=(httpx.TransportError,), explain=log_path.read_text)  # fmt: skip
        yield process


@contextlib.contextmanager
def example_server(env: dict[str, str], log_path: Path, timeout_s: float = 60) -> Iterator[str]:
    """The example service as its own process on a free port; yield its URL once it answers."""
    port = free_port()
    command = [sys.executable, str(EXAMPLE_DIR / "app.py"), "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with http_process(command, env, log_path, f"{url}/healthz", timeout_s):
        yield url
