"""Security: TLS/SASL settings reach every Kafka client, workers sign what they publish and
gateways check it, state-changing endpoints need the admin token, and nothing read from a
topic or a request is unpickled or evaluated (docs/security.md)."""

from __future__ import annotations

import ast
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from shardshape.allocator.client import AllocatorClient
from shardshape.core.contracts import RequestEvent
from shardshape.core.net import ensure_port_free
from shardshape.core.settings import Settings
from shardshape.core.signing import private_key_text, public_key_text, signer_from
from shardshape.gateway.reporter import Reporter
from shardshape.gateway.routing_table import RoutingTable
from shardshape.infra.topics import create_topics
from shardshape.models.synthetic import SyntheticStream
from shardshape.streams.publisher import RoutingPublisher
from shardshape.streams.replay import replay
from tests.support.paths import REPO_ROOT
from tests.support.polling import wait_until
from tests.support.processes import running, settings_env, shardshape_command, wait_for_line

TLS_HANDSHAKE = 0x16  # first byte of a TLS record carrying a ClientHello
SOURCE_DIRS = ("streams", "models", "allocator", "gateway", "infra", "examples", "benchmarks")


class FirstBytes:
    """A loopback TCP listener that records the first bytes of every connection and closes it:
    what a client sends first tells TLS (a handshake record) from plain Kafka (a length)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.address = f"127.0.0.1:{self._socket.getsockname()[1]}"
        self.seen: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FirstBytes:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                with contextlib.suppress(OSError):
                    self.seen.append(connection.recv(3))

    def wait_for(self, count: int, timeout_s: float) -> list[bytes]:
        """The first bytes of every connection so far, once ``count`` connections came."""
        wait_until(lambda: len(self.seen) >= count, timeout_s, f"{count} connections",
                   every_s=0.05)  # fmt: skip
        return list(self.seen)


def _secure(bootstrap: str, **update: object) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="shardshape",
        sasl_password="not-a-real-password",
        **update,
    )


def _speaks_tls(seen: list[bytes]) -> bool:
    return bool(seen) and all(first[:1] == bytes([TLS_HANDSHAKE]) for first in seen if first)


@pytest.fixture
def listener() -> Iterator[FirstBytes]:
    with FirstBytes() as server:
        yield server


def _event() -> RequestEvent:
    return RequestEvent(request_id="r", ts=1.0, service="shop", request_type="GET /x")


def test_the_listener_tells_plain_kafka_from_tls(listener: FirstBytes) -> None:
    stop = _publisher(Settings(kafka_bootstrap=listener.address))
    seen = listener.wait_for(1, 10)
    stop()
    assert seen and not _speaks_tls(seen), seen


QUICK = {"message.timeout.ms": 2_000}  # so that clients left with nothing to talk to give up


def _in_background(target: Callable[[], object]) -> Callable[[], None]:
    """Run a call that fails without a broker in a thread; the returned stop joins it."""

    def quietly() -> None:
        with contextlib.suppress(Exception):
            target()

    thread = threading.Thread(target=quietly, daemon=True)
    thread.start()
    return lambda: thread.join(30)


def _publisher(s: Settings) -> Callable[[], None]:
    publisher = RoutingPublisher(s.confluent_config(**QUICK), "t")
    publisher.publish(b"k", b"v")
    return lambda: publisher.flush(5)


def _reporter(s: Settings) -> Callable[[], None]:
    quick = s.model_copy(update={"reporter_stall_ms": 500, "reporter_delivery_timeout_ms": 1_000})
    reporter = Reporter(quick, gateway_id="gw")
    reporter.report(_event())
    return lambda: reporter.close(timeout=2)


def _routing_table(s: Settings) -> Callable[[], None]:
    return RoutingTable.from_settings(s).start().stop


def _allocator_client(s: Settings) -> Callable[[], None]:
    backend = SimpleNamespace(apply=lambda plan: None)
    return AllocatorClient.from_settings(s, "shop", backend).start().stop


CLIENTS: dict[str, Callable[[Settings], Callable[[], None]]] = {
    "routing publisher (worker)": _publisher,
    "routing table (gateway)": _routing_table,
    "allocator client (gateway)": _allocator_client,
    "reporter (gateway)": _reporter,
    "topic admin (infra)": lambda s: _in_background(lambda: create_topics(s, 2.0)),
    "trace replay": lambda s: _in_background(
        lambda: replay([_event()], s.confluent_config(**QUICK), "t", 1)
    ),
}


@pytest.mark.parametrize("client", CLIENTS)
def test_sasl_ssl_settings_reach_each_client(listener: FirstBytes, client: str) -> None:
    stop = CLIENTS[client](_secure(listener.address))
    # Not only the first connection: the next one (a reconnect, or to another broker) too.
    listener.wait_for(2, 15)
    stop()
    seen = list(listener.seen)
    assert _speaks_tls(seen), f"{client} spoke {seen[:3]} instead of TLS"


def test_a_worker_speaks_only_tls_with_sasl_ssl(listener: FirstBytes, tmp_path: Path) -> None:
    """The clients a worker starts first (Faust's aiokafka producer, the librdkafka routing
    publisher) connect with TLS; the worker gives up when no broker answers."""
    port = ensure_port_free(0, "WEB_PORT")
    settings = _secure(listener.address, data_dir=tmp_path / "data", web_port=port)
    log = tmp_path / "worker.log"
    with running(shardshape_command("worker"), settings_env(settings), log) as worker:
        worker.wait(120)
    seen = list(listener.seen)
    assert len(seen) >= 2, log.read_text(errors="replace")[-2000:]
    assert _speaks_tls(seen), seen
    assert "Unable to bootstrap" in log.read_text(errors="replace")


def test_faust_gets_the_sasl_credentials_and_tls_context() -> None:
    from shardshape.streams.app import create_app

    settings = _secure("127.0.0.1:9", web_enabled=False)
    credentials = create_app(settings).conf.broker_credentials
    assert credentials.username == "shardshape" and credentials.password == "not-a-real-password"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.protocol.value == "SASL_SSL" and credentials.ssl_context is not None


def test_web_views_bind_to_loopback_and_short_signing_keys_fail() -> None:
    assert Settings().web_bind == "127.0.0.1"
    with pytest.raises(ValueError, match="SHARDSHAPE_SIGNING_KEY"):
        Settings(signing_key="too-short")


_UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
_UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


def _unsafe_uses(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in _UNSAFE_MODULES:
                    yield f"{where} imports {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in _UNSAFE_MODULES:
                yield f"{where} imports from {node.module}"
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in _UNSAFE_CALLS:
                yield f"{where} calls {func.id}()"
            if (
                isinstance(func, ast.Attribute)
                and func.attr in ("load", "unsafe_load")
                and isinstance(func.value, ast.Name)
                and func.value.id == "yaml"
            ):
                yield f"{where} calls yaml.{func.attr}()"
            for keyword in node.keywords:
                value = keyword.value
                if keyword.arg == "allow_pickle" and not (
                    isinstance(value, ast.Constant) and value.value is False
                ):
                    yield f"{where} passes allow_pickle"
                if (
                    keyword.arg in ("serializer", "key_serializer", "value_serializer")
                    and isinstance(value, ast.Constant)
                    and value.value in ("pickle", "binary")
                ):
                    yield f"{where} uses Faust's {value.value} codec"


def test_nothing_is_unpickled_or_evaluated(tmp_path: Path) -> None:
    files = [path for name in SOURCE_DIRS for path in (REPO_ROOT / name).rglob("*.py")]
    assert len(files) > 50
    found = [use for path in files for use in _unsafe_uses(path)]
    assert found == [], found
    # The checker does find them.
    probe = tmp_path / "unsafe.py"
    probe.write_text("import pickle\neval('1')\nfaust_topic(value_serializer='pickle')\n")
    assert len(list(_unsafe_uses(probe))) == 3


POOLS = REPO_ROOT / "examples" / "pools.toml"


@pytest.mark.slow
def test_a_worker_signs_routes_snapshots_and_plans(settings: Settings, tmp_path: Path) -> None:
    # The worker holds the Ed25519 private key; gateways only a public key: the worker's, or
    # (an impostor's view) another one.
    private, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signed = settings.model_copy(
        update={
            "signing_private_key": SecretStr(private_key_text(private)),
            "pools_config": POOLS,
            "plan_window": "10s",
            "plan_horizon_s": 30,
            "snapshot_interval_s": 1,
        }
    )
    gateway = settings.model_copy(
        update={"signing_public_key": public_key_text(private.public_key())}
    )
    impostor = settings.model_copy(
        update={"signing_public_key": public_key_text(other.public_key())}
    )
    assert signer_from(signed) is not None and signer_from(gateway) is None
    create_topics(signed)
    events = list(SyntheticStream(seed=6, rate_per_s=400).events(8_000))
    log = tmp_path / "worker.log"
    backend = SimpleNamespace(applied=[], apply=lambda plan: backend.applied.append(plan))
    with running(shardshape_command("worker"), settings_env(signed), log) as worker:
        wait_for_line(log, "shardshape worker ready", worker, 90)
        replay(events, signed.confluent_config(), signed.topic_requests,
               signed.requests_partitions, max_rate=300)  # fmt: skip
        with (
            RoutingTable.from_settings(gateway) as table,
            AllocatorClient.from_settings(gateway, "shop", backend) as client,
        ):
            assert table.wait_for_snapshot("shop", timeout_s=60), log.read_text()[-3000:]
            assert client.wait_for_version(1, timeout_s=90), log.read_text()[-3000:]
            assert table.wait_caught_up(30)
            assert len(table) > 0 and table.rejected == 0 and client.ignored == 0
        with (
            RoutingTable.from_settings(impostor) as forged,
            AllocatorClient.from_settings(impostor, "shop", backend) as other,
        ):
            assert forged.wait_caught_up(30) and other.wait_caught_up(30)
    assert forged.snapshot_version("shop") == 0 and len(forged) == 0
    assert forged.rejected >= len(table) + 1
    assert other.applied is None and other.ignored >= 1
    assert "Traceback" not in log.read_text(errors="replace")
