"""The Faust application: topics, agents and the worker entry point.

Agents stay short; what they do lives in plain functions (``streams.validation``).
Values on every topic are raw bytes decoded by ``streams.contracts``: nothing is unpickled.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time

import faust
from faust.types.auth import CredentialsT

from infra.net import ensure_port_free
from infra.settings import Settings
from streams.contracts import encode
from streams.validation import MessageOrigin, validate_message

log = logging.getLogger("shardshape.worker")

READY_LINE = "shardshape worker ready"


class PipelineCounters:
    """Totals the worker has seen since start, logged on a timer."""

    def __init__(self) -> None:
        self.messages = 0
        self.events = 0
        self.dead_letters = 0
        self._last_logged = (0, 0, 0)
        self._last_time = time.monotonic()

    def summary(self) -> str | None:
        """A log line when something changed since the last one, else None."""
        now = time.monotonic()
        current = (self.messages, self.events, self.dead_letters)
        if current == self._last_logged:
            return None
        rate = (self.events - self._last_logged[1]) / max(now - self._last_time, 1e-9)
        self._last_logged, self._last_time = current, now
        return (
            f"{self.messages} messages, {self.events} valid events ({rate:,.0f}/s), "
            f"{self.dead_letters} sent to the DLQ"
        )


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings`` (which must name the bootstrap servers)."""
    bootstrap = settings.require_bootstrap()
    worker_id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host.strip()}" for host in bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 3,
        consumer_auto_offset_reset="earliest",
        datadir=str(settings.data_dir / "worker"),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.requests_partitions,
        topic_replication_factor=settings.replication_factor,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind="127.0.0.1",
        autodiscover=False,
    )
    requests = app.topic(
        settings.topic_requests,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.requests_partitions,
    )
    dlq = app.topic(settings.topic_dlq, key_type=bytes, value_type=bytes)
    counters = PipelineCounters()
    app.shardshape_counters = counters  # read by tests and web views

    @app.agent(requests, name="shardshape.validate")
    async def validate_requests(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            origin = MessageOrigin(message.topic, message.partition, message.offset, message.key)
            result = validate_message(event.value, origin, worker_id)
            counters.messages += 1
            counters.events += len(result.events)
            for letter in result.dead_letters:
                log.warning(
                    "dead letter %s[%d]@%d: %s",
                    origin.topic,
                    origin.partition,
                    origin.offset,
                    letter.reason,
                )
                await dlq.send(key=message.key, value=encode(letter))
            counters.dead_letters += len(result.dead_letters)

    @app.timer(10.0)
    async def log_progress() -> None:
        line = counters.summary()
        if line:
            log.info(line)

    return app


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The security settings as Faust (aiokafka) credentials; None for PLAINTEXT."""
    protocol = settings.security_protocol
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
        )
        if settings.ssl_certfile:
            context.load_cert_chain(
                str(settings.ssl_certfile),
                str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
            )
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


class _Worker(faust.Worker):
    """Faust's worker, plus one plain "ready" line that people and tests can wait for."""

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        settings: Settings = self.app.shardshape_settings
        web = f", web on http://127.0.0.1:{settings.web_port}" if settings.web_enabled else ""
        print(
            f"{READY_LINE}: consuming {settings.topic_requests} on {settings.kafka_bootstrap}, "
            f"invalid messages to {settings.topic_dlq}{web}",
            flush=True,
        )


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until SIGINT/SIGTERM. Raises SystemExit when done."""
    if settings.web_enabled:
        ensure_port_free(settings.web_port, "WEB_PORT")
    (settings.data_dir / "worker").mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    app.shardshape_settings = settings
    # Faust and aiokafka are chatty at INFO; our own loggers ("shardshape.*") keep the level.
    framework_level = "warn" if settings.log_level in ("debug", "info") else settings.log_level
    worker = _Worker(app, loglevel=framework_level, quiet=True, redirect_stdouts=False)
    logging.getLogger("shardshape").setLevel(settings.log_level.upper().replace("WARN", "WARNING"))
    worker.execute_from_commandline()
