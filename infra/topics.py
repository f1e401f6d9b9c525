"""Topic provisioning: create shardshape's topics (idempotently) and describe them."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from shardshape.core.contracts import MAX_MESSAGE_BYTES
from shardshape.core.settings import Settings

COMPACTED = {"cleanup.policy": "compact"}
# A dead letter carries a whole rejected message in base64 (4/3 of it) plus the reason; the
# brokers' 1 MB default would refuse the letters of large messages.
DEAD_LETTERS = {"max.message.bytes": str(2 * MAX_MESSAGE_BYTES)}
_SHOWN_CONFIGS = ("cleanup.policy", "retention.ms", "max.message.bytes")


@dataclass(frozen=True)
class TopicSpec:
    role: str
    name: str
    partitions: int
    config: dict[str, str]


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics shardshape needs, as the settings name and size them."""
    return [
        TopicSpec("requests", settings.topic_requests, settings.requests_partitions, {}),
        TopicSpec("dlq", settings.topic_dlq, settings.dlq_partitions, DEAD_LETTERS),
        TopicSpec("routing", settings.topic_routing, settings.routing_partitions, COMPACTED),
        TopicSpec("plans", settings.topic_plans, settings.plans_partitions, COMPACTED),
        # The planner's input (window reports, queue reports): one partition, one planner.
        TopicSpec("windows", settings.topic_windows, 1, {}),
    ]


def create_topics(settings: Settings, timeout_s: float = 15.0) -> dict[str, str]:
    """Create every missing topic; return topic name -> ``created`` or ``exists``.

    Running it again is harmless. A topic that exists with fewer partitions than configured is
    reported as ``exists`` and left alone (partitions are never changed behind your back).
    """
    admin = AdminClient(settings.confluent_config())
    new_topics = [
        NewTopic(spec.name, spec.partitions, settings.replication_factor, config=spec.config)
        for spec in topic_specs(settings)
    ]
    outcome: dict[str, str] = {}
    for name, future in admin.create_topics(new_topics, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            outcome[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            outcome[name] = "exists"
    return outcome


def describe_topics(settings: Settings, timeout_s: float = 15.0) -> list[TopicInfo]:
    """Partitions and main configs of shardshape's topics that exist on the cluster."""
    admin = AdminClient(settings.confluent_config())
    names = [spec.name for spec in topic_specs(settings)]
    metadata = admin.list_topics(timeout=timeout_s).topics
    present = [name for name in names if name in metadata and metadata[name].error is None]
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in present]
    configs: dict[str, dict[str, str]] = {name: {} for name in present}
    if resources:
        for resource, future in admin.describe_configs(resources).items():
            entries = future.result(timeout=timeout_s)
            configs[resource.name] = {
                key: entries[key].value for key in _SHOWN_CONFIGS if key in entries
            }
    return [TopicInfo(name, len(metadata[name].partitions), configs[name]) for name in present]
