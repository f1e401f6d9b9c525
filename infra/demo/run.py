"""Run the demo: broker, topics, worker, the example service and its load (or a trace replay),
a live view of what the worker learns, and a summary; everything stopped on the way out.

Children run in their own process groups (:class:`shardshape.infra.processes.ChildProcesses`):
Ctrl-C reaches only the demo, which stops the load, then the service, then the worker, then the
broker, and exits 0. SIGTERM does the same and exits 143 (SIGHUP, 129).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from shardshape.core.net import ensure_port_free, free_port
from shardshape.core.settings import ENV_PREFIX, Settings
from shardshape.infra.broker import kafka_bootstrap
from shardshape.infra.demo.examples import POOLS_EXAMPLE
from shardshape.infra.demo.view import live_view, status_line, summary
from shardshape.infra.processes import ChildProcesses, wait_for_text
from shardshape.infra.topics import create_topics

# Quicker than the defaults, so that plans come within a minute; a variable set wins.
DEMO_DEFAULTS: dict[str, Any] = {
    "plan_window": "10s",
    "snapshot_interval_s": 2.0,
    "session_timeout_s": 6.0,
}
STATE_PATH = "/dashboard/api/state"
_STATUS_EVERY_S = 10.0
_FOREVER_S = 10 * 365 * 86_400.0


class DemoError(RuntimeError):
    """The demo could not start or a part of it died; the message says where to look."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``shardshape demo`` was asked for."""

    duration_s: float | None = None
    traces: tuple[Path, ...] = ()
    mapping: Path | None = None
    speed: float | None = None
    max_rate: float | None = None


def demo_settings(settings: Settings) -> Settings:
    """``settings`` with the demo's defaults for what the environment leaves unset, and the
    example pools when no pools config is set.

    >>> demo_settings(Settings(plan_window="1m")).plan_window, demo_settings(Settings()).plan_window
    ('1m', '10s')
    """
    update = {k: v for k, v in DEMO_DEFAULTS.items() if k not in settings.model_fields_set}
    if settings.pools_config is None and POOLS_EXAMPLE.is_file():
        update["pools_config"] = POOLS_EXAMPLE
    return settings.model_copy(update=update).revalidated()


def run_demo(settings: Settings, options: DemoOptions, out: Console) -> int:
    """Run the demo until ``options.duration_s`` has passed or Ctrl-C; return the exit code."""
    if not settings.web_enabled:
        raise DemoError(f"the demo shows the worker's dashboard: unset {ENV_PREFIX}WEB_ENABLED")
    ensure_port_free(settings.web_port, "WEB_PORT")
    if not out.is_terminal:
        out.width = max(out.width, 120)  # a log or a pipe: room for the tables
    watch = _Watch(f"http://127.0.0.1:{settings.web_port}", out)
    code = 0
    try:
        with _sigterm_exits(), kafka_bootstrap(settings) as bootstrap:
            out.print(f"broker: {bootstrap} ({settings.resolved_broker_mode})")
            settings = settings.with_bootstrap(bootstrap)
            create_topics(settings)
            with ChildProcesses(settings.data_dir / "demo") as children:
                _start(children, settings, options, out)
                out.print(f"dashboard: {watch.base}/dashboard  metrics: {watch.base}/metrics")
                watch.run(children, options.duration_s, must_run=("worker", "service"))
    except KeyboardInterrupt:
        out.print("stopping (Ctrl-C)")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        out.print(summary(watch.doc, watch.events, watch.elapsed()))
    return code


def _start(
    children: ChildProcesses, settings: Settings, options: DemoOptions, out: Console
) -> None:
    from shardshape.streams.app import READY_LINE

    env = settings.child_environment()
    python = sys.executable
    worker = children.start("worker", [python, "-m", "shardshape.infra.cli", "worker"], env)
    out.print(f"started worker (pid {worker.pid}, log {children.log_path('worker')})")
    if not wait_for_text(children.log_path("worker"), READY_LINE, worker, 120):
        raise DemoError(_died("worker", children))
    seconds = str(options.duration_s or _FOREVER_S)
    if options.traces:
        command = [python, "-m", "shardshape.infra.cli", "replay", *map(str, options.traces),
                   "--mapping", str(options.mapping)]  # fmt: skip
        if options.speed:
            command += ["--speed", str(options.speed)]
        if options.max_rate:
            command += ["--max-rate", str(options.max_rate)]
        replay = children.start("replay", command, env)
        out.print(f"started replay (pid {replay.pid}, log {children.log_path('replay')})")
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = children.start(
        "service", [python, "-m", "shardshape.infra.demo.service", "--port", str(port)], env
    )
    out.print(f"started service (pid {service.pid}, {url}, log {children.log_path('service')})")
    if not _answers(f"{url}/healthz", service, 60):
        raise DemoError(_died("service", children))
    load = children.start(
        "load",
        [python, "-m", "shardshape.infra.demo.load", "--url", url, "--seconds", seconds],
        env,
    )
    out.print(
        f"started load (pid {load.pid}): shoppers, partners, analysts, media; a scraper "
        f"joins after 20 s (log {children.log_path('load')})"
    )


def _answers(url: str, process: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return True
        time.sleep(0.2)
    return False


def _died(name: str, children: ChildProcesses, lines: int = 15) -> str:
    path = children.log_path(name)
    with contextlib.suppress(OSError):
        tail = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return f"the {name} did not start or stopped; the end of {path}:\n{tail}"
    return f"the {name} did not start; no log at {path}"


class _Watch:
    """Polls the worker's dashboard document, prints what happened, keeps the last one."""

    def __init__(self, base: str, out: Console) -> None:
        self.base = base
        self.out = out
        self.doc: dict[str, Any] | None = None
        self.events: list[dict[str, Any]] = []
        self._started = time.monotonic()
        self._last_event = 0

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def stamp(self) -> str:
        seconds = int(self.elapsed())
        return f"[{seconds // 60}:{seconds % 60:02d}]"

    def poll(self) -> None:
        try:
            with urllib.request.urlopen(self.base + STATE_PATH, timeout=3) as response:
                self.doc = json.loads(response.read())
        except (OSError, ValueError):
            return  # the worker is busy or starting: keep the last document
        for event in self.doc["events"]:
            if event["id"] > self._last_event:
                self._last_event = event["id"]
                self.events.append(event)
                self.out.print(f"{self.stamp()} {event['text']}", highlight=False)

    def run(self, children: ChildProcesses, duration_s: float | None, must_run: tuple) -> None:
        until = None if duration_s is None else self._started + duration_s
        header = lambda: (  # noqa: E731
            f"shardshape demo {self.stamp()} · dashboard {self.base}/dashboard · Ctrl-C stops"
        )
        live = None
        if self.out.is_terminal:  # the view is redrawn in place; a pipe gets a status line
            live = Live(live_view(None, header()), console=self.out, transient=True)
        next_status = time.monotonic() + _STATUS_EVERY_S
        with live or contextlib.nullcontext():
            while until is None or time.monotonic() < until:
                self.poll()
                for name in must_run:
                    if name in children.pids() and not children.running(name):
                        raise DemoError(_died(name, children))
                if live is not None:
                    live.update(live_view(self.doc, header()))
                elif self.doc is not None and time.monotonic() >= next_status:
                    next_status += _STATUS_EVERY_S
                    self.out.print(f"{self.stamp()} {status_line(self.doc)}", highlight=False)
                time.sleep(1.0)
            self.poll()


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM (and SIGHUP, a closed terminal) become SystemExit(128 + signal), so every
    ``finally`` (and the children's stop) runs."""

    def _raise(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, _raise) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
