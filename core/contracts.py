"""Wire contracts: what travels on shardshape's topics, as JSON with a version field ``v``.

Importable without Faust or a Kafka client, so gateways and tools in any process can use it.
Every string, map and list is bounded and every number is finite; anything else is rejected
with a readable reason by :func:`decode` (never an exception of another type, never a crash).

>>> event = RequestEvent(request_id="r1", ts=1.0, service="api", request_type="GET /items")
>>> decode(RequestEvent, encode(event)) == event
True
>>> try:
...     decode(RequestEvent, b'{"v": 1, "request_id": "r2", "ts": -1}')
... except ContractError as err:
...     print(err.reason)
RequestEvent: ts: Input should be greater than or equal to 0; service: Field required; ...
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

CONTRACT_VERSION = 1

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_BATCH_EVENTS = 5_000
MAX_ATTRIBUTES = 32
MAX_ID_CHARS = 128
MAX_LABEL_CHARS = 256
MAX_TEXT_CHARS = 4_096
MAX_SHARDS = 256
MAX_FEATURES = 512
MAX_COUNT = 2**63 - 1  # counts, ids and versions fit a signed 64-bit integer in any language
# Attributes of a RequestEvent that the workers read (set by services and by the gateway).
BUSY_ATTRIBUTE = "busy_ms"  # services that measure busy time report it as this attribute
CACHE_HIT_ATTRIBUTE = "cache_hit"  # a bool: did the request's shard cache answer it
_MAX_DEAD_LETTER_BYTES = 2 * MAX_MESSAGE_BYTES  # base64 of a whole message plus the reason
_UNSUPPORTED_VERSION = f"v: unsupported contract version (this build speaks v{CONTRACT_VERSION})"

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
OptionalId = Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)]
Label = Annotated[str, StringConstraints(max_length=MAX_LABEL_CHARS)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
AttrName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Status = Literal["ok", "error", "timeout", "rejected"]
CachePolicyName = Literal["lru", "lfu", "ttl", "none"]


class Contract(BaseModel):
    """Base of every wire contract: strict about unknown fields, NaN and infinity."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, defer_build=True)

    v: Literal[1] = CONTRACT_VERSION


class RequestEvent(Contract):
    """One request as the gateway saw it: known at arrival, plus its outcome once completed."""

    request_id: Id
    ts: NonNegative = Field(description="Arrival time, seconds since the Unix epoch.")
    service: Id
    request_type: Id
    user_id: OptionalId = ""
    payload_bytes: NonNegative = 0
    response_bytes: NonNegative | None = None
    latency_ms: NonNegative | None = Field(None, description="Observed response time.")
    status: Status = "ok"
    shard_id: Count | None = None
    arm: OptionalId | None = None
    attributes: dict[AttrName, float | bool | Label] = Field(
        default_factory=dict, max_length=MAX_ATTRIBUTES
    )


class RequestBatch(Contract):
    """Many events in one message, so the per-message cost of the pipeline is paid per batch."""

    gateway_id: Id
    sent_ts: NonNegative = 0
    events: list[RequestEvent] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class RoutingEntry(Contract):
    """The shard a profile key routes to, as last decided by the profile agent."""

    service: Id
    key: Id
    shard_id: Count
    snapshot_version: Count
    confidence: Fraction = 1.0
    anomalous: bool = False
    updated_ts: NonNegative = 0


class ShardProfile(Contract):
    """What one shard stands for, in plain numbers and a human-readable summary."""

    shard_id: Count
    summary: Label = ""
    centroid: list[float] = Field(default_factory=list, max_length=MAX_FEATURES)
    weight: NonNegative = 0
    latency_ms_p50: NonNegative | None = None
    error_rate: Fraction | None = None
    quarantine: bool = False


class ShardSnapshot(Contract):
    """Everything a gateway needs to predict a shard locally: plain numbers, never pickle."""

    service: Id
    version: Count
    created_ts: NonNegative = 0
    feature_names: list[Label] = Field(default_factory=list, max_length=MAX_FEATURES)
    shards: list[ShardProfile] = Field(default_factory=list, max_length=MAX_SHARDS)
    default_shard: Count = 0
    quarantine_shard: Count | None = None
    model: dict[AttrName, list[float] | list[list[float]] | float | Label] = Field(
        default_factory=dict, max_length=64
    )


class ResourceSpec(Contract):
    """Resources for one shard slice, in total or per replica."""

    cpu_millicores: Count = 0
    memory_mib: Count = 0
    io_weight: Annotated[int, Field(ge=1, le=10_000)] = 100
    net_mbit: NonNegative = 0
    concurrency: Annotated[int, Field(ge=1, le=100_000)] = 1
    queue_size: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    queue_timeout_ms: NonNegative = 0


class CachePolicy(Contract):
    policy: CachePolicyName = "none"
    size: Count = 0
    ttl_s: NonNegative | None = None


class ShardSpec(Contract):
    """One shard's share of a plan: blocks per block type and what they amount to."""

    shard_id: Count
    priority: Annotated[int, Field(ge=0, le=1_000)] = 0
    slo_p99_ms: NonNegative | None = None
    blocks: dict[Id, Count] = Field(default_factory=dict, max_length=64)
    # Contract defaults come from factories: an instance made at import time would build its
    # validator there and then (defer_build), about 30 ms of every gateway's import.
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    per_replica: ResourceSpec = Field(default_factory=ResourceSpec)
    cache: CachePolicy = Field(default_factory=CachePolicy)
    forecast_rps: NonNegative | None = None


class ArmOverrides(Contract):
    cache: CachePolicy | None = None
    block_type: Id | None = None
    concurrency: Annotated[int, Field(ge=1, le=100_000)] | None = None
    queue_timeout_ms: NonNegative | None = None


class Arm(Contract):
    name: Id
    weight: Fraction
    overrides: ArmOverrides = Field(default_factory=ArmOverrides)


class ArmEvidence(Contract):
    """What one arm showed so far: its requests, observed figures and tests against control."""

    arm: Id
    requests: Count = 0
    figures: dict[AttrName, float] = Field(default_factory=dict, max_length=32)


class ExperimentDecision(Contract):
    """How an experiment ended, why, and (when promoted) the shard's definition from then on."""

    outcome: Literal["promoted", "rejected", "aborted", "expired"]
    arm: OptionalId = ""
    ts: NonNegative = 0
    reason: Label = ""
    adopted: ArmOverrides | None = None


class Experiment(Contract):
    experiment_id: Id
    shard_id: Count
    arms: list[Arm] = Field(min_length=2, max_length=8)
    primary_metric: Literal["p95_latency", "mean_latency", "cost_per_request"] = "p95_latency"
    started_ts: NonNegative = 0
    max_duration_s: NonNegative = 3_600
    status: Literal["running", "promoted", "rejected", "aborted", "expired"] = "running"
    reason: Label = Field("", description="Why the experiment was started.")
    evidence: list[ArmEvidence] = Field(default_factory=list, max_length=8)
    decision: ExperimentDecision | None = None


class AllocationPlan(Contract):
    """The control message: how a service's shards are sized, cached and experimented on."""

    plan_id: Id
    version: Count
    service: Id
    pool_id: Id
    created_ts: NonNegative = 0
    snapshot_version: Count | None = None
    replicas: list[Id] = Field(default_factory=list, max_length=1_024)
    shards: list[ShardSpec] = Field(default_factory=list, max_length=MAX_SHARDS)
    experiments: list[Experiment] = Field(default_factory=list, max_length=MAX_SHARDS)
    rationale: Text = ""


class QueuedShard(Contract):
    """Requests of one (predicted) shard waiting for a slot, in a :class:`QueueReport`."""

    shard_id: Count
    queued: Count


class QueueReport(Contract):
    """Requests waiting for a slot in one gateway's pools, by predicted shard.

    The planner learns demand from completed requests, a window late; a burst waiting in a
    gateway's queue is demand it has not seen yet. Gateways send this every few seconds while
    anything waits (and once more when nothing does), keyed :data:`QUEUE_REPORT_KEY`, on the
    planner's topic (``Settings.topic_windows``); each report replaces the gateway's last.
    """

    gateway_id: Id
    service: Id
    ts: NonNegative = Field(description="When the queues were counted, seconds since the epoch.")
    shards: list[QueuedShard] = Field(default_factory=list, max_length=MAX_SHARDS)

    @classmethod
    def counted(
        cls, gateway_id: str, service: str, ts: float, waiting: Mapping[int, int]
    ) -> QueueReport:
        """The report of ``waiting`` (requests by shard id); shards with none are left out.

        >>> QueueReport.counted("gw-1", "shop", 0.0, {3: 2, 1: 0, 0: 5}).shards[-1]
        QueuedShard(v=1, shard_id=3, queued=2)
        """
        shards = [QueuedShard(shard_id=s, queued=n) for s, n in sorted(waiting.items()) if n]
        return cls(gateway_id=gateway_id, service=service, ts=ts, shards=shards)


class DeadLetter(Contract):
    """A message the pipeline could not accept, kept whole with the reason."""

    source_topic: Id
    partition: int = -1
    offset: int = -1
    key_b64: str | None = None
    original_b64: str = Field(max_length=2 * MAX_MESSAGE_BYTES)
    reason: Text
    error_class: Id
    worker: OptionalId = ""
    ts: NonNegative = 0

    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)


SNAPSHOT_KEY_PREFIX = "__snapshot__/"
QUEUE_REPORT_KEY = b"queued"  # the key of every QueueReport on the planner's topic


def snapshot_key(service: str) -> bytes:
    """Routing-topic key of a service's :class:`ShardSnapshot` (entries use profile keys)."""
    return f"{SNAPSHOT_KEY_PREFIX}{service}".encode()


class ContractError(ValueError):
    """Bytes that are not a valid contract message; ``reason`` says why in one line."""

    def __init__(self, reason: str, error_class: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_class = error_class


C = TypeVar("C", bound=Contract)

CONTRACTS: tuple[type[Contract], ...] = (
    RequestEvent,
    RequestBatch,
    RoutingEntry,
    ShardSnapshot,
    AllocationPlan,
    QueueReport,
    DeadLetter,
)


def encode(message: Contract) -> bytes:
    """Serialise a contract to compact JSON bytes."""
    return message.__pydantic_serializer__.to_json(message)


def decode(model: type[C], data: Any) -> C:
    """Parse and validate ``data`` (bytes) as ``model``, or raise one :class:`ContractError`."""
    # A dead letter wraps a whole rejected message in base64, so it may be larger than one.
    limit = _MAX_DEAD_LETTER_BYTES if issubclass(model, DeadLetter) else MAX_MESSAGE_BYTES
    _check_size(data, limit)
    try:
        # Strict: the wire is JSON typed as the exported schemas say; no "12" for 12.
        return model.model_validate_json(data, strict=True)
    except ValidationError as exc:
        raise _contract_error(model, exc) from None


def decode_requests(data: Any) -> list[RequestEvent]:
    """Decode a requests-topic message: a :class:`RequestBatch` or a single :class:`RequestEvent`.

    The whole message must be valid; use :func:`salvage_requests` to keep the good events of a
    partly bad batch.
    """
    return decode_request_message(data)[1]


def decode_request_message(data: Any) -> tuple[str, list[RequestEvent]]:
    """Like :func:`decode_requests`, with the sending gateway's id ("" for a single event)."""
    _check_size(data)
    # Both shapes are JSON objects; a batch is the one whose top level has "events". The quick
    # byte test can also hit an event that merely contains the string "events" (a service,
    # user or attribute named so): such a message has no top-level "events" and is an event.
    if (b'"events"' if not isinstance(data, str) else '"events"') in data:
        try:
            batch = RequestBatch.model_validate_json(data, strict=True)
            return batch.gateway_id, batch.events
        except ValidationError as exc:
            if not any(e["type"] == "missing" and e["loc"] == ("events",) for e in exc.errors()):
                raise _contract_error(RequestBatch, exc) from None
    return "", [decode(RequestEvent, data)]


def salvage_requests(data: bytes) -> tuple[list[RequestEvent], list[tuple[bytes, ContractError]]]:
    """Split a partly bad batch into its valid events and (raw event, error) pairs.

    Raises :class:`ContractError` when the message is not a batch-shaped JSON object at all.
    """
    _check_size(data)
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"not JSON: {exc}", "json_invalid") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("events"), list):
        raise ContractError("not a RequestBatch: expected an object with an 'events' list", "shape")
    version = raw.get("v", CONTRACT_VERSION)
    if version != CONTRACT_VERSION or isinstance(version, bool):
        # Events of another version's batch may omit their own "v"; never read them as v1.
        raise ContractError(f"RequestBatch: {_UNSUPPORTED_VERSION}", "version")
    if len(raw["events"]) > MAX_BATCH_EVENTS:
        raise ContractError(
            f"RequestBatch: events: {len(raw['events'])} events exceed the limit of "
            f"{MAX_BATCH_EVENTS}",
            "too_long",
        )
    good: list[RequestEvent] = []
    bad: list[tuple[bytes, ContractError]] = []
    for index, item in enumerate(raw["events"]):
        try:
            item_bytes = orjson.dumps(item)
        except orjson.JSONEncodeError as exc:  # orjson writes less depth than it reads
            raise ContractError(f"RequestBatch: events.{index}: {exc}", "json_invalid") from None
        try:
            good.append(decode(RequestEvent, item_bytes))
        except ContractError as err:
            bad.append((item_bytes, err))
    return good, bad


def dead_letter(
    data: bytes,
    error: ContractError,
    *,
    source_topic: str,
    partition: int = -1,
    offset: int = -1,
    key: bytes | None = None,
    worker: str = "",
    ts: float = 0.0,
) -> DeadLetter:
    """Wrap rejected bytes and the reason into a :class:`DeadLetter` record."""
    return DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        original_b64=base64.b64encode(data[:MAX_MESSAGE_BYTES]).decode(),
        reason=error.reason[:MAX_TEXT_CHARS],
        error_class=error.error_class[:MAX_ID_CHARS] or "invalid",
        worker=worker[:MAX_ID_CHARS],
        ts=ts,
    )


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every contract, by contract name, for gateways in other languages."""
    return {model.__name__: model.model_json_schema() for model in CONTRACTS}


def _check_size(data: Any, limit: int = MAX_MESSAGE_BYTES) -> None:
    if not isinstance(data, bytes | bytearray | memoryview | str):
        raise ContractError(f"expected bytes, got {type(data).__name__}", "type")
    if len(data) > limit:
        raise ContractError(
            f"message of {len(data)} bytes exceeds the {limit}-byte limit", "too_large"
        )


def _contract_error(model: type[Contract], exc: ValidationError) -> ContractError:
    return ContractError(f"{model.__name__}: {_explain(exc)}", _error_class(exc))


def _explain(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        if err["loc"] == ("v",):
            parts.append(_UNSUPPORTED_VERSION)
        else:
            parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _error_class(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    return "version" if first["loc"] == ("v",) else str(first["type"])
