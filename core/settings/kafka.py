"""The broker and how both Kafka clients reach it: embedded or external, and its security.

>>> from shardshape.core.settings import Settings
>>> Settings(kafka_bootstrap="kafka-1:9092", sasl_username="svc").confluent_config()
{'bootstrap.servers': 'kafka-1:9092', 'security.protocol': 'plaintext', 'sasl.username': 'svc'}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, model_validator

from shardshape.core.settings.group import ENV_PREFIX, SettingsError, SettingsGroup

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(SettingsGroup):
    """``broker_*``, ``kafka_bootstrap``, ``tansu_bin``; ``security_protocol``, ``sasl_*``,
    ``ssl_*`` (passed through to both Kafka clients)."""

    # Broker
    broker_mode: Literal["embedded", "external"] | None = Field(
        None, description="embedded (default) or external; a bootstrap alone selects external."
    )
    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port] of a cluster.")
    tansu_bin: Path | None = Field(None, description="Tansu binary for the embedded broker.")
    broker_port: int = Field(0, ge=0, le=65_535, description="Embedded broker port; 0 = free.")
    broker_start_timeout_s: float = Field(30.0, gt=0)

    # Security, passed through to both Kafka clients
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _check_kafka(self) -> Self:
        if self.broker_mode == "external" and not self.kafka_bootstrap:
            raise ValueError(
                "broker_mode is 'external' but no bootstrap servers are set: "
                f"set {ENV_PREFIX}KAFKA_BOOTSTRAP=host:port"
            )
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError(
                f"security_protocol {self.security_protocol} needs {ENV_PREFIX}SASL_MECHANISM "
                "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )
        return self

    @property
    def resolved_broker_mode(self) -> Literal["embedded", "external"]:
        if self.broker_mode:
            return self.broker_mode
        return "external" if self.kafka_bootstrap else "embedded"

    def require_bootstrap(self) -> str:
        if not self.kafka_bootstrap:
            raise SettingsError(
                f"no Kafka bootstrap servers: set {ENV_PREFIX}KAFKA_BOOTSTRAP=host:port, "
                "or use `shardshape run`, which starts an embedded broker"
            )
        return self.kafka_bootstrap

    def confluent_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration for confluent-kafka producers, consumers and admin clients."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.require_bootstrap(),
            "security.protocol": self.security_protocol.lower(),
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for key, path in (
            ("ssl.ca.location", self.ssl_cafile),
            ("ssl.certificate.location", self.ssl_certfile),
            ("ssl.key.location", self.ssl_keyfile),
        ):
            if path:
                conf[key] = str(path)
        conf.update(extra)
        return conf
