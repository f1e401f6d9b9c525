"""Settings from the environment (prefix ``SHARDSHAPE_``), validated once at start.

A bad value fails fast with :class:`SettingsError`, whose message names the environment
variable, the value given and what is accepted.

Each component's fields and checks are a group in a module of their own (:data:`GROUPS`, in
this order: :mod:`~.kafka`, :mod:`~.auth`, :mod:`~.topics`, :mod:`~.worker`, :mod:`~.web`,
:mod:`~.logs`, :mod:`~.profiling`, :mod:`~.planning`, :mod:`~.experiments`, :mod:`~.reporter`,
:mod:`~.gateway`, :mod:`~.isolation`). :class:`Settings` inherits them all: one flat model,
the only one that reads the environment, in which every field keeps its name
(``settings.gateway_queue_size``) and its variable (``SHARDSHAPE_GATEWAY_QUEUE_SIZE``). A
component may take its group's type (``detect_capabilities(settings: IsolationSettings)``);
every ``Settings`` is one.

>>> Settings(kafka_bootstrap="kafka-1:9092").resolved_broker_mode
'external'
>>> Settings().resolved_broker_mode
'embedded'
>>> isinstance(Settings(), GatewaySettings)
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shardshape.core.environment import (
    FILE_SUFFIX,
    FileSettingsSource,
    FileValueError,
    process_environment,
    warn_unknown,
)
from shardshape.core.settings.auth import AuthSettings
from shardshape.core.settings.experiments import ExperimentSettings
from shardshape.core.settings.gateway import GatewaySettings
from shardshape.core.settings.group import ENV_PREFIX, SettingsError, SettingsGroup
from shardshape.core.settings.isolation import IsolationSettings
from shardshape.core.settings.kafka import KafkaSettings, SaslMechanism, SecurityProtocol
from shardshape.core.settings.logs import LogLevel, LogSettings
from shardshape.core.settings.planning import PlanningSettings
from shardshape.core.settings.profiling import ProfilingSettings
from shardshape.core.settings.reporter import ReporterSettings
from shardshape.core.settings.topics import TopicSettings
from shardshape.core.settings.web import WebSettings
from shardshape.core.settings.worker import WorkerSettings

# The groups in the order their fields are listed (`shardshape settings`) and checked.
GROUPS: tuple[type[SettingsGroup], ...] = (
    KafkaSettings,
    AuthSettings,
    TopicSettings,
    WorkerSettings,
    WebSettings,
    LogSettings,
    ProfilingSettings,
    PlanningSettings,
    ExperimentSettings,
    ReporterSettings,
    GatewaySettings,
    IsolationSettings,
)

__all__ = [
    "ENV_PREFIX",
    "GROUPS",
    "AuthSettings",
    "ExperimentSettings",
    "GatewaySettings",
    "IsolationSettings",
    "KafkaSettings",
    "LogLevel",
    "LogSettings",
    "PlanningSettings",
    "ProfilingSettings",
    "ReporterSettings",
    "SaslMechanism",
    "SecurityProtocol",
    "Settings",
    "SettingsError",
    "TopicSettings",
    "WebSettings",
    "WorkerSettings",
    "file_settings",
    "known_variables",
    "load_settings",
]


# pydantic lists the fields (and runs the checks) of the bases last to first, so they are
# written here in the reverse of GROUPS.
class Settings(
    IsolationSettings,
    GatewaySettings,
    ReporterSettings,
    ExperimentSettings,
    PlanningSettings,
    ProfilingSettings,
    LogSettings,
    WebSettings,
    WorkerSettings,
    TopicSettings,
    AuthSettings,
    KafkaSettings,
    BaseSettings,
):
    """Every knob of shardshape. Each field ``name`` is read from ``SHARDSHAPE_NAME``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = FileSettingsSource(settings_cls, ENV_PREFIX, file_settings())
        return init_settings, env_settings, files, dotenv_settings, file_secret_settings

    # Trace data used by tests, benchmarks and examples
    trace_dir: Path = Path("../shared/data")

    @property
    def topic_windows(self) -> str:
        """The planner's one-partition input: the workers' window reports and the gateways'
        :class:`~shardshape.core.contracts.QueueReport` messages."""
        return f"{self.app_id}-windows"

    @property
    def topics(self) -> dict[str, str]:
        """Topic role -> topic name."""
        return {
            "requests": self.topic_requests,
            "dlq": self.topic_dlq,
            "routing": self.topic_routing,
            "plans": self.topic_plans,
            "windows": self.topic_windows,
        }

    def as_environment(self) -> dict[str, str]:
        """These settings as ``SHARDSHAPE_*`` variables, for a child process to load them again.

        >>> env = Settings(kafka_bootstrap="k:9092", web_enabled=False).as_environment()
        >>> env["SHARDSHAPE_KAFKA_BOOTSTRAP"], env["SHARDSHAPE_WEB_ENABLED"]
        ('k:9092', 'false')
        """
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"{ENV_PREFIX}{name.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
        return env

    def child_environment(self) -> dict[str, str]:
        """The environment of a child process that runs on these settings: this process's,
        without its own ``SHARDSHAPE_*`` variables, and these settings (secrets included).

        >>> env = Settings(web_port=7000).child_environment()
        >>> env["SHARDSHAPE_WEB_PORT"], "PATH" in env
        ('7000', True)
        """
        env = {k: v for k, v in process_environment().items() if not k.startswith(ENV_PREFIX)}
        env.update(self.as_environment())
        return env

    def with_bootstrap(self, bootstrap: str) -> Settings:
        """The same settings pointed at ``bootstrap`` (e.g. an embedded broker just started)."""
        return self.model_copy(update={"kafka_bootstrap": bootstrap})

    def revalidated(self) -> Settings:
        """These settings validated again; a bad value raises :class:`SettingsError` naming it.

        ``model_copy(update=...)`` skips validation, so a component that takes ``Settings``
        calls this once at start and fails there, not deep inside.

        >>> try:
        ...     Settings().model_copy(update={"requests_partitions": 0}).revalidated()
        ... except SettingsError as error:
        ...     print(error)
        invalid shardshape settings:
          SHARDSHAPE_REQUESTS_PARTITIONS=0: Input should be greater than or equal to 1
        """
        return load_settings(**self.model_dump())


def file_settings() -> list[str]:
    """Settings that may also be given as ``SHARDSHAPE_NAME_FILE``: the secrets, and the fields
    marked ``json_schema_extra={"file": True}``.

    >>> file_settings()
    ['sasl_password', 'signing_private_key', 'signing_public_key', 'signing_key']
    """
    return [
        name
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
        or (isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("file"))
    ]


def known_variables() -> set[str]:
    """Every ``SHARDSHAPE_*`` variable shardshape reads."""
    names = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    return names | {f"{ENV_PREFIX}{name.upper()}{FILE_SUFFIX}" for name in file_settings()}


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, or raise :class:`SettingsError` naming the bad one.

    Warns (once per process) about ``SHARDSHAPE_*`` variables that name no setting.
    """
    warn_unknown(ENV_PREFIX, known_variables())
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_explain(exc)) from None
    except FileValueError as exc:
        raise SettingsError(f"invalid shardshape settings:\n  {exc}") from None


def _explain(exc: ValidationError) -> str:
    lines = ["invalid shardshape settings:"]
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"])
        if field:
            given = err.get("input")
            lines.append(f"  {ENV_PREFIX}{field.upper()}={given!s}: {err['msg']}")
        else:
            lines.append(f"  {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)
