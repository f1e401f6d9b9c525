"""Faust set up for the worker: the app configured from the settings, its broker credentials,
and the kinds of topics and tables it declares (raw bytes, decoded by the contracts)."""

from __future__ import annotations

import ssl

import faust
from faust.types.auth import CredentialsT

from shardshape.core.contracts import MAX_MESSAGE_BYTES
from shardshape.core.settings import Settings


def faust_app(settings: Settings) -> faust.App:
    """A Faust app configured from ``settings`` (which must name the bootstrap servers), with
    no topics, tables or agents yet."""
    bootstrap = settings.require_bootstrap()
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{host.strip()}" for host in bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 3,
        broker_commit_interval=settings.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        # A fetch returns up to this much per partition: with 100+ kB batches, aiokafka's 1 MB
        # default leaves the agent idle a third of the time, waiting for the next fetch.
        consumer_max_fetch_size=16 * 1024 * 1024,
        # A dead letter carries a whole rejected message (up to MAX_MESSAGE_BYTES) in base64.
        producer_max_request_size=2 * MAX_MESSAGE_BYTES,
        datadir=str(settings.data_dir / "worker"),
        store="memory://",
        # No standby replicas: Faust applies a standby's changelog records to the same table
        # data, in buffered batches at moments of its own, so a worker's views would count
        # some slots of partitions it does not own next to their owner's. A worker restores a
        # partition it takes over from the changelog anyway (memory store).
        table_standby_replicas=0,
        # Topics carry raw bytes (contracts decode them); table keys, such as the windowed
        # tables' (key, window) pairs, are JSON.
        key_serializer="json",
        value_serializer="raw",
        topic_partitions=settings.requests_partitions,
        topic_replication_factor=settings.replication_factor,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        autodiscover=False,
    )


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


def raw_topic(app: faust.App, name: str, partitions: int | None = None) -> faust.TopicT:
    """A topic of raw bytes: the contracts module decodes them, nothing is unpickled."""
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", partitions=partitions
    )


def bytes_table(app: faust.App, name: str, partitions: int) -> faust.TableT:
    """A table of raw-bytes values (JSON keys, as the app's), with no default value."""
    return app.Table(name, default=None, key_type=str, value_type=bytes, partitions=partitions)
