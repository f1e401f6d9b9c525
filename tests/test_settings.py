"""Settings: defaults, the bootstrap-selects-external rule, security pass-through, clear errors."""

from __future__ import annotations

import faust
import pytest

from shardshape.infra.settings import Settings, SettingsError, load_settings
from shardshape.streams.app import faust_credentials


def test_bootstrap_alone_selects_the_external_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDSHAPE_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    settings = load_settings()
    assert settings.resolved_broker_mode == "external"
    assert settings.confluent_config()["bootstrap.servers"] == "kafka-1:9092,kafka-2:9092"


def test_defaults_are_embedded_with_the_documented_topics() -> None:
    settings = Settings()
    assert settings.resolved_broker_mode == "embedded"
    assert settings.topics == {
        "requests": "shardshape.requests",
        "dlq": "shardshape.requests.dlq",
        "routing": "shardshape.routing",
        "plans": "shardshape.plans",
        "windows": "shardshape-windows",
    }


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SHARDSHAPE_BROKER_MODE", "cloud", "'embedded' or 'external'"),
        ("SHARDSHAPE_REQUESTS_PARTITIONS", "0", "greater than or equal to 1"),
        (
            "SHARDSHAPE_SECURITY_PROTOCOL",
            "TLS",
            "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'",
        ),
        ("SHARDSHAPE_LOG_LEVEL", "warning", "'warn'"),
        ("SHARDSHAPE_WEB_PORT", "http", "valid integer"),
    ],
)
def test_a_bad_value_names_the_setting_and_what_is_accepted(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert f"{variable}={value}" in str(info.value)
    assert expected in str(info.value)


def test_inconsistent_settings_say_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDSHAPE_BROKER_MODE", "external")
    with pytest.raises(SettingsError, match="SHARDSHAPE_KAFKA_BOOTSTRAP"):
        load_settings()
    monkeypatch.delenv("SHARDSHAPE_BROKER_MODE")
    monkeypatch.setenv("SHARDSHAPE_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(SettingsError, match="SHARDSHAPE_SASL_MECHANISM"):
        load_settings()


def test_security_settings_reach_both_kafka_clients() -> None:
    settings = Settings(
        kafka_bootstrap="k:9093",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="svc",
        sasl_password="s3cret",
    )
    conf = settings.confluent_config()
    assert conf["security.protocol"] == "sasl_plaintext"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-256"
    assert (conf["sasl.username"], conf["sasl.password"]) == ("svc", "s3cret")
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "svc" and credentials.password == "s3cret"
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert faust_credentials(Settings()) is None
    assert "s3cret" not in repr(settings)
