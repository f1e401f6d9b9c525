"""Settings from the environment (prefix ``SHARDSHAPE_``), validated once at start.

A bad value fails fast with :class:`SettingsError`, whose message names the environment
variable, the value given and what is accepted.

>>> Settings(kafka_bootstrap="kafka-1:9092").resolved_broker_mode
'external'
>>> Settings().resolved_broker_mode
'embedded'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shardshape.core.contracts import MAX_BATCH_EVENTS
from shardshape.core.environment import (
    FILE_SUFFIX,
    FileSettingsSource,
    FileValueError,
    warn_unknown,
)

ENV_PREFIX = "SHARDSHAPE_"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LogLevel = Literal["debug", "info", "warn", "error", "critical"]
# Standard names as operators write them (any case) -> the LogLevel they mean.
_LOG_LEVEL_NAMES = {"warning": "warn", "fatal": "critical"}
_MIN_QUEUE_INTERVAL_MS = 100


class SettingsError(ValueError):
    """A setting has a bad value; the message names it and says what is accepted."""


class Settings(BaseSettings):
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
    signing_private_key: SecretStr | None = Field(
        None,
        description="Ed25519 private key (PEM, or base64 of its 32-byte seed; `shardshape "
        "signing-keys` makes a pair) workers sign routing entries, snapshots and plans with. "
        "Only workers hold it (docs/security.md).",
    )
    signing_public_key: str | None = Field(
        None,
        description="Ed25519 public key(s) whose signatures gateways (and workers) accept: PEM, "
        "or base64 of 32 bytes; two (comma-separated, or two PEM blocks) while rotating.",
        json_schema_extra={"file": True},
    )
    signing_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key (at least 32 characters), the fallback to Ed25519: workers "
        "sign with it and gateways check with it, so every holder can sign (docs/security.md).",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token that web endpoints which change state require; "
        "unset, such endpoints refuse every call.",
    )

    # Topics
    topic_requests: str = Field("shardshape.requests", min_length=1, max_length=249)
    topic_dlq: str = Field("shardshape.requests.dlq", min_length=1, max_length=249)
    topic_routing: str = Field("shardshape.routing", min_length=1, max_length=249)
    topic_plans: str = Field("shardshape.plans", min_length=1, max_length=249)
    requests_partitions: int = Field(4, ge=1, le=10_000)
    dlq_partitions: int = Field(1, ge=1, le=10_000)
    routing_partitions: int = Field(1, ge=1, le=10_000)
    plans_partitions: int = Field(1, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=16)

    # Worker
    app_id: str = Field("shardshape", min_length=1, max_length=128)
    worker_id: str = Field("", max_length=128, description="Defaults to host name and pid.")
    data_dir: Path = Path(".shardshape")
    session_timeout_s: float = Field(
        10.0, ge=1, le=3_600, description="Consumer group session timeout (Tansu joins in ~half)."
    )
    end_offset_correction: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Read partitions' true end offsets for table recovery (Tansu reports the "
        "last batch's base offset plus one); auto: unless the cluster id is Apache Kafka's "
        "generated form (docs/reliability.md).",
    )
    fetch_max_wait_ms: int = Field(
        50, ge=1, le=10_000, description="Longest a worker's fetch waits for new events."
    )
    commit_interval_s: float = Field(2.8, gt=0, le=600, description="Offset commit interval.")
    web_port: int = Field(6066, ge=0, le=65_535)
    web_enabled: bool = True
    web_bind: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=253,
        description="Address the worker's web views (dashboard, /metrics, stats) listen on; "
        "loopback unless you put them behind your own access control.",
    )
    log_level: LogLevel = Field(
        "info",
        description="debug, info, warn (or warning), error or critical, in any case.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="json: one JSON object a line, with the service, shard, snapshot and plan "
        "versions known at the time (docs/observability.md).",
    )

    # Profiling
    max_shards: int = Field(8, ge=1, le=64, description="Most behaviour shards per service.")
    snapshot_interval_s: float = Field(
        5.0, gt=0, le=3_600, description="How often workers share summaries and snapshots merge."
    )
    checkpoint_interval_s: float = Field(
        30.0,
        ge=0,
        le=3_600,
        description="Longest a changed key's statistics wait to be written to the key-stats table.",
    )
    max_keys: int = Field(
        1_000_000,
        ge=10_000,
        le=100_000_000,
        description="Most profile keys a worker keeps per service (memory and the key-stats "
        "table); the least recently seen are evicted and counted.",
    )
    metrics_write_interval_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Longest shard metrics wait in memory before they are written to their table.",
    )

    # Planning
    pools_config: Path | None = Field(
        None,
        description="TOML of block types, pools and services (examples/pools.toml); "
        "without it no plans are made.",
    )
    plan_window: Literal["10s", "1m"] = Field(
        "1m", description="Metrics window that is one forecast step of the planner."
    )
    plan_horizon_s: float = Field(120.0, gt=0, le=86_400, description="How far plans look ahead.")

    # Experiments the planner proposes and decides
    # (shardshape.allocator.experiments.ExperimentPolicy), see docs/feedback.md
    experiments_enabled: bool = Field(
        True, description="false: the planner proposes no experiments (running ones finish)."
    )
    experiments_budget: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of a service's traffic that may run in variant arms at once.",
    )
    experiments_variant_weight: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="A proposed variant's weight within its shard, when the budget leaves room.",
    )
    experiments_min_variant_weight: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Below this variant weight (the budget nearly spent) nothing is proposed.",
    )
    experiments_trigger_windows: int = Field(
        2,
        ge=1,
        le=1_000,
        description="Consecutive plan windows missing the SLO (or with a low cache hit rate) "
        "before the planner proposes an experiment on a shard.",
    )
    experiments_min_window_requests: int = Field(
        100,
        ge=1,
        le=100_000_000,
        description="Requests a shard needs in a plan window for it to count towards a proposal.",
    )
    experiments_low_hit_rate: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A shard's cache hit rate below this is low (counts towards a proposal).",
    )
    experiments_cache_size: int = Field(
        1_024,
        ge=1,
        le=1_000_000,
        description="Entries of the cache proposed for a shard that has none.",
    )
    experiments_min_requests: int = Field(
        200,
        ge=10,
        le=100_000_000,
        description="Requests each arm needs before the sequential test decides anything.",
    )
    experiments_max_duration_s: float = Field(
        3_600.0,
        gt=0,
        le=30 * 86_400,
        description="An experiment still undecided this long after it started expires.",
    )
    experiments_cooldown_s: float = Field(
        300.0,
        ge=0,
        le=30 * 86_400,
        description="After an experiment on a shard ends, how long before the next is proposed.",
    )

    # Gateway reporter (completed requests -> requests topic), see docs/reporter.md
    reporter_batch_events: int = Field(
        500, ge=1, le=MAX_BATCH_EVENTS, description="Most events in one RequestBatch message."
    )
    reporter_linger_ms: float = Field(
        200.0, ge=0, le=60_000, description="Longest an event waits for its batch to fill."
    )
    reporter_max_buffered: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description="Most events held unacknowledged (memory and producer queue); "
        "beyond it report() drops.",
    )
    reporter_stall_ms: int = Field(
        2_000,
        ge=10,
        le=600_000,
        description="A batch unacknowledged this long marks Kafka unreachable: "
        "batches are dropped or spooled, one probe batch at a time, until one is acknowledged.",
    )
    reporter_delivery_timeout_ms: int = Field(
        10_000,
        ge=100,
        le=3_600_000,
        description="librdkafka message.timeout.ms: a batch not acknowledged by then fails.",
    )
    reporter_spool_path: Path | None = Field(
        None, description="JSON-lines file for batches Kafka cannot take; unset = drop them."
    )
    reporter_spool_max_bytes: int = Field(
        64 * 1024 * 1024, ge=64 * 1024, le=1 << 40, description="Bound of the spool file."
    )
    reporter_queue_interval_ms: int = Field(
        5_000,
        ge=0,
        le=10_000,
        description="How often a gateway tells the planner how many requests wait in its pools, "
        "by shard (a QueueReport, while any wait); 0: never. At least 100 when set; at most "
        "10,000, since the planner forgets a report after 30 s.",
    )

    # Gateway in-process shard pools and middleware, see docs/gateway.md
    gateway_shaping: bool = Field(
        True, description="Per-shard pools; false runs every request in one shared pool."
    )
    gateway_default_concurrency: int = Field(
        16,
        ge=1,
        le=100_000,
        description="Slots of the default pool: requests before any plan and of unplanned shards.",
    )
    gateway_queue_size: int = Field(
        64, ge=0, le=1_000_000, description="Queue of a pool whose plan gives none (0: no queue)."
    )
    gateway_queue_timeout_ms: float = Field(
        2_000, gt=0, le=600_000, description="Longest wait in a queue whose plan gives none."
    )
    gateway_total_slots: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Slots shared by all pools (0: none); when plans over-commit it, "
        "waiting shards are served in proportion to their io_weight.",
    )
    gateway_lending: bool = Field(
        False,
        description="Work-conserving pools: a request whose shard's slots are all busy borrows "
        "an idle slot of a pool of equal or lower priority that keeps its reserve.",
    )
    gateway_lending_reserve: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Share of a lender's slots kept idle for its own arrivals (rounded down).",
    )
    gateway_lending_to_lower: bool = Field(
        True,
        description="Lending: a pool also lends to pools of lower priority (the quarantine "
        "shard, the default pool), beyond its reserve and always keeping one slot idle.",
    )
    gateway_max_routes: int = Field(
        1_000_000,
        ge=1_000,
        le=100_000_000,
        description="Most routing entries a gateway's routing table holds; the least recently "
        "seen are evicted and counted (their keys are predicted by the snapshot's model).",
    )
    gateway_user_header: str = Field(
        "x-user-id", min_length=1, max_length=128, description="Header naming the request's user."
    )
    gateway_upstream_timeout_ms: float = Field(
        30_000,
        gt=0,
        le=3_600_000,
        description="Sidecar (`shardshape gateway`): longest wait for the upstream service to "
        "connect, take or send a chunk; past it the client gets 504.",
    )

    # Gateway process-mode shard pools (OS limits), see docs/isolation.md
    isolation_mode: Literal["auto", "cgroup2", "cgroup1", "rlimit", "none"] = Field(
        "auto",
        description="OS limits of shard worker processes: auto takes the best the host allows "
        "(`shardshape doctor` shows it); a named mode fails at start if the host lacks it.",
    )
    isolation_cgroup_parent: str = Field(
        "shardshape",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$",
        description="cgroup made under the base to hold a group per service and shard.",
    )
    isolation_cgroup_base: str = Field(
        "",
        pattern=r"^(/[A-Za-z0-9_@:=+-][A-Za-z0-9_.@:=+-]*)*$",
        description="cgroup (path inside each hierarchy, e.g. /app.slice) under which the "
        "parent goes; empty = the gateway's own cgroup.",
    )

    # Trace data used by tests, benchmarks and examples
    trace_dir: Path = Path("../shared/data")

    @field_validator("log_level", mode="before")
    @classmethod
    def _standard_level_names(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return _LOG_LEVEL_NAMES.get(value, value)
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.broker_mode == "external" and not self.kafka_bootstrap:
            raise ValueError(
                "broker_mode is 'external' but no bootstrap servers are set: "
                f"set {ENV_PREFIX}KAFKA_BOOTSTRAP=host:port"
            )
        if self.pools_config is not None and not Path(self.pools_config).is_file():
            raise ValueError(
                f"{ENV_PREFIX}POOLS_CONFIG={self.pools_config} is not a file: point it at a "
                "pools TOML (see examples/pools.toml) or unset it to run without planning"
            )
        if self.reporter_max_buffered < self.reporter_batch_events:
            raise ValueError(
                f"{ENV_PREFIX}REPORTER_MAX_BUFFERED={self.reporter_max_buffered} is smaller than "
                f"{ENV_PREFIX}REPORTER_BATCH_EVENTS={self.reporter_batch_events}: a batch could "
                "never fill; raise the first or lower the second"
            )
        if self.reporter_stall_ms >= self.reporter_delivery_timeout_ms:
            raise ValueError(
                f"{ENV_PREFIX}REPORTER_STALL_MS={self.reporter_stall_ms} must be below "
                f"{ENV_PREFIX}REPORTER_DELIVERY_TIMEOUT_MS={self.reporter_delivery_timeout_ms}: "
                "a stall is noticed before a batch times out"
            )
        if 0 < self.reporter_queue_interval_ms < _MIN_QUEUE_INTERVAL_MS:
            raise ValueError(
                f"{ENV_PREFIX}REPORTER_QUEUE_INTERVAL_MS={self.reporter_queue_interval_ms} is "
                f"below {_MIN_QUEUE_INTERVAL_MS}: queue reports that often would load the "
                "planner's one partition; use 100 or more, or 0 to send none"
            )
        if self.signing_key is not None and len(self.signing_key.get_secret_value()) < 32:
            raise ValueError(
                f"{ENV_PREFIX}SIGNING_KEY has {len(self.signing_key.get_secret_value())} "
                "characters: use at least 32 random ones (e.g. `openssl rand -hex 32`), the same "
                "on every worker and gateway"
            )
        _check_signing_keys(self)
        if self.experiments_min_variant_weight > self.experiments_variant_weight:
            raise ValueError(
                f"{ENV_PREFIX}EXPERIMENTS_MIN_VARIANT_WEIGHT={self.experiments_min_variant_weight} "
                f"is above {ENV_PREFIX}EXPERIMENTS_VARIANT_WEIGHT="
                f"{self.experiments_variant_weight}: no experiment could ever be proposed; "
                "lower the first or raise the second"
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


def _check_signing_keys(settings: Settings) -> None:
    """The Ed25519 keys parse, at most two are accepted at once, and HMAC is not set too."""
    from shardshape.core.signing import MAX_PUBLIC_KEYS, load_private_key, load_public_keys

    private, public = settings.signing_private_key, settings.signing_public_key
    if private is None and not public:
        return
    if settings.signing_key is not None:
        raise ValueError(
            f"both {ENV_PREFIX}SIGNING_KEY (HMAC) and Ed25519 keys are set: keep the Ed25519 "
            f"keys ({ENV_PREFIX}SIGNING_PRIVATE_KEY on workers, {ENV_PREFIX}SIGNING_PUBLIC_KEY "
            "on gateways) and unset the HMAC key"
        )
    accepted = set()
    try:
        if private is not None:
            accepted.add(_raw(load_private_key(private.get_secret_value()).public_key()))
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}SIGNING_PRIVATE_KEY: {exc}") from None
    try:
        accepted |= {_raw(key) for key in load_public_keys(public or "")}
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}SIGNING_PUBLIC_KEY: {exc}") from None
    if len(accepted) > MAX_PUBLIC_KEYS:
        raise ValueError(
            f"{len(accepted)} signing keys accepted at once (the private key's and "
            f"{ENV_PREFIX}SIGNING_PUBLIC_KEY's): at most {MAX_PUBLIC_KEYS}, the key in force and "
            "the next during a rotation"
        )


def _raw(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def file_settings() -> list[str]:
    """Settings that may also be given as ``SHARDSHAPE_NAME_FILE``: the secrets, and the fields
    marked ``json_schema_extra={"file": True}``.

    >>> file_settings()
    ['sasl_password', 'signing_private_key', 'signing_public_key', 'signing_key', 'admin_token']
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
