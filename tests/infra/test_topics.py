"""Topic provisioning on the real broker: idempotent, partitions and compaction as configured."""

from __future__ import annotations

import json
import subprocess

from shardshape.core.contracts import MAX_MESSAGE_BYTES
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics, describe_topics
from tests.support.processes import settings_env, shardshape_command


def test_create_is_idempotent_with_configured_partitions_and_compaction(settings: Settings) -> None:
    settings = settings.model_copy(update={"requests_partitions": 3, "routing_partitions": 2})
    first = create_topics(settings)
    assert set(first.values()) == {"created"} and len(first) == 5
    second = create_topics(settings)
    assert set(second.values()) == {"exists"}

    infos = {info.name: info for info in describe_topics(settings)}
    assert infos[settings.topic_requests].partitions == 3
    assert infos[settings.topic_routing].partitions == 2
    assert infos[settings.topic_dlq].partitions == 1
    assert infos[settings.topic_windows].partitions == 1  # one planner reads it in order
    assert infos[settings.topic_routing].config["cleanup.policy"] == "compact"
    assert infos[settings.topic_plans].config["cleanup.policy"] == "compact"
    assert infos[settings.topic_requests].config.get("cleanup.policy", "delete") == "delete"
    # The DLQ takes the dead letter of a message of the largest size accepted.
    assert int(infos[settings.topic_dlq].config["max.message.bytes"]) >= 2 * MAX_MESSAGE_BYTES


def test_cli_topics_create_twice_and_list(settings: Settings) -> None:
    env = settings_env(settings)
    for expected in ("created", "exists"):
        done = subprocess.run(
            shardshape_command("topics", "create"), env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert f"topic {settings.topic_plans}: {expected}" in done.stderr
    listed = subprocess.run(
        shardshape_command("topics", "list", "--json"), env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    topics = {t["name"]: t for t in json.loads(listed.stdout)}
    assert set(topics) == set(settings.topics.values())
    assert topics[settings.topic_requests]["partitions"] == settings.requests_partitions
    assert topics[settings.topic_plans]["config"]["cleanup.policy"] == "compact"
