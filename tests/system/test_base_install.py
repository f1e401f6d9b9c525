"""The base install, as a service adopting the gateway meets it: the wheel built from this
repository, installed without extras into a fresh virtual environment, next to a service that
has its own ``models`` and ``gateway`` packages.

The service imports both of its packages and ``shardshape.gateway.install``, installs the
gateway on a Starlette app (shaped: the session broker is configured) and serves a request
through it, driving the ASGI app directly (lifespan included). After that request none of the
worker stack is imported, and none of it is installed; ``shardshape --help`` works, and
``shardshape worker`` stops with exit status 2 naming the extra to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics
from tests.support.paths import REPO_ROOT
from tests.support.processes import settings_env

pytestmark = [pytest.mark.slow, pytest.mark.broker]

WORKER_STACK = ["faust", "river", "scipy", "matplotlib", "aiokafka"]
NOT_SOURCES = (
    ".git",
    ".venv",
    ".shardshape",
    "build",
    "*.egg-info",
    "__pycache__",
    ".*cache*",
    "test-artifacts",
)

SERVICE = '''
"""A user's service with its own models and gateway packages, shaped by shardshape."""
import asyncio
import importlib.util
import json
import sys

import gateway  # the service's own packages, beside this file
import models
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shardshape.gateway import install

WORKER_STACK = %(worker_stack)r


async def hello(request):
    return PlainTextResponse(f"{models.NAME} and {gateway.NAME}")


app = Starlette(routes=[Route("/hello", hello)])
shaped = install(app, "shop")


async def serve_one_request():
    to_app, from_app = asyncio.Queue(), asyncio.Queue()
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, to_app.get,
            from_app.put)
    )
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/hello", "raw_path": b"/hello", "query_string": b"",
        "root_path": "", "headers": [(b"x-user-id", b"u1")], "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80), "state": {},
    }
    await app(scope, receive, send)
    reported = shaped.reporter.stats().reported
    await to_app.put({"type": "lifespan.shutdown"})
    assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
    await lifespan
    return sent, reported


sent, reported = asyncio.run(serve_one_request())
print(json.dumps({
    "status": sent[0]["status"],
    "body": b"".join(m.get("body", b"") for m in sent[1:]).decode(),
    "shaped": shaped.shaped,
    "reported": reported,
    "loaded": [name for name in WORKER_STACK if name in sys.modules],
    "installed": [name for name in WORKER_STACK if importlib.util.find_spec(name) is not None],
    "shardshape": importlib.util.find_spec("shardshape.gateway").submodule_search_locations[0],
}))
'''


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel of this repository and no extras."""
    root = tmp_path_factory.mktemp("base-install")
    # Built from a copy: setuptools builds in the source tree, and a build/ left there by an
    # earlier build could slip stale modules into the wheel.
    source = root / "source"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root), str(source)]
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = root.glob("shardshape-*.whl")
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr
    installed = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)])
    assert installed.returncode == 0, installed.stderr
    return venv


def test_a_service_with_its_own_models_and_gateway_is_shaped_by_a_base_install(
    base_venv: Path, settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    service = tmp_path / "service"
    for package in ("models", "gateway"):
        (service / package).mkdir(parents=True)
        (service / package / "__init__.py").write_text(f'NAME = "the service\'s {package}"\n')
    (service / "app.py").write_text(SERVICE % {"worker_stack": WORKER_STACK})

    done = _run(
        [str(base_venv / "bin" / "python"), "app.py"], cwd=service, env=settings_env(settings)
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert (result["status"], result["body"]) == (
        200,
        "the service's models and the service's gateway",
    )
    assert result["shaped"] and result["reported"] == 1, "the request went through the gateway"
    assert result["loaded"] == [], "the gateway imported part of the worker stack"
    assert result["installed"] == [], "the base install brought part of the worker stack"
    assert Path(result["shardshape"]).is_relative_to(base_venv), "the wheel, not this checkout"


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["worker"], "worker"),
        (["run"], "worker"),
        (["demo"], "demo"),
        (["simulate", "--hours", "1"], "worker"),
        (["broker"], "broker"),
        (["gateway", "--service", "s", "--upstream", "http://127.0.0.1:9"], "sidecar"),
    ],
)
def test_a_base_install_names_the_extra_a_command_needs(
    base_venv: Path, args: list[str], extra: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDSHAPE_")}
    env["PATH"] = f"{base_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if args == ["broker"] and shutil.which("tansu", path=env["PATH"]):
        pytest.skip("a tansu binary on PATH serves `shardshape broker` without the extra")
    shardshape = str(base_venv / "bin" / "shardshape")
    assert _run([shardshape, "--help"], env=env).returncode == 0
    done = _run([shardshape, *args], env=env)
    assert done.returncode == 2, done.stderr
    assert f"needs the \"{extra}\" extra: pip install 'shardshape[{extra}]'" in done.stderr
