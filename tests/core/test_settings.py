"""Settings: defaults, the bootstrap-selects-external rule, security pass-through, clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import faust
import pytest

from shardshape.core import environment
from shardshape.core.settings import Settings, SettingsError, file_settings, load_settings
from shardshape.streams.faust_setup import faust_credentials
from tests.support.settings_errors import assert_refused


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
        ("SHARDSHAPE_LOG_LEVEL", "verbose", "'warn'"),
        ("SHARDSHAPE_WEB_PORT", "http", "valid integer"),
    ],
)
def test_a_bad_value_names_the_setting_and_what_is_accepted(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    assert_refused(monkeypatch, variable, value, expected)


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


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("INFO", "info"),
        ("warning", "warn"),
        ("WARNING", "warn"),
        ("Warn", "warn"),
        ("DEBUG", "debug"),
    ],
)
def test_log_levels_are_read_as_operators_write_them(
    monkeypatch: pytest.MonkeyPatch, value: str, level: str
) -> None:
    monkeypatch.setenv("SHARDSHAPE_LOG_LEVEL", value)
    assert load_settings().log_level == level


def test_every_secret_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert {"sasl_password", "signing_private_key"} <= set(file_settings())
    keys = {"signing_private_key", "signing_public_key"}  # from files in tests/core/test_signing.py
    for name in set(file_settings()) - keys - {"signing_key"}:  # HMAC: not with Ed25519
        secret = tmp_path / name
        secret.write_text(f"{name}-" + "s" * 40 + "\n")  # as `echo` writes it
        monkeypatch.setenv(f"SHARDSHAPE_{name.upper()}_FILE", str(secret))
    monkeypatch.setenv("SHARDSHAPE_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SHARDSHAPE_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("SHARDSHAPE_KAFKA_BOOTSTRAP", "k:9093")
    settings = load_settings()
    assert settings.confluent_config()["sasl.password"] == "sasl_password-" + "s" * 40
    monkeypatch.setenv("SHARDSHAPE_SIGNING_KEY_FILE", str(tmp_path / "sasl_password"))
    assert load_settings().signing_key.get_secret_value() == "sasl_password-" + "s" * 40


def test_a_missing_secret_file_or_a_clash_says_what_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHARDSHAPE_SASL_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert f"SHARDSHAPE_SASL_PASSWORD_FILE={tmp_path / 'absent'} cannot be read" in str(info.value)
    (tmp_path / "present").write_text("pw")
    monkeypatch.setenv("SHARDSHAPE_SASL_PASSWORD_FILE", str(tmp_path / "present"))
    monkeypatch.setenv("SHARDSHAPE_SASL_PASSWORD", "pw")
    with pytest.raises(SettingsError, match=r"both SHARDSHAPE_SASL_PASSWORD and \S+_FILE are set"):
        load_settings()


def test_an_unknown_variable_is_warned_about_once_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(environment, "_warned", set())
    monkeypatch.setenv("SHARDSHAPE_KAFKA_BOOTSTRAPS", "k:9092")
    monkeypatch.setenv("SHARDSHAPE_SASL_PASSWORD_FILE_PATH", "/nowhere")
    monkeypatch.setenv("SHARDSHAPE_LOG_LEVEL", "info")
    with caplog.at_level(logging.WARNING, logger="shardshape.settings"):
        load_settings()
        load_settings()
    warnings = [r.getMessage() for r in caplog.records if r.name == "shardshape.settings"]
    assert len(warnings) == 2, warnings
    assert "SHARDSHAPE_KAFKA_BOOTSTRAPS is not a shardshape setting" in warnings[0]
    assert "did you mean SHARDSHAPE_KAFKA_BOOTSTRAP?" in warnings[0]
    assert "did you mean SHARDSHAPE_SASL_PASSWORD_FILE?" in warnings[1]
