"""What a running gateway reports about itself (JSON at :data:`STATUS_PATH`), read by
``shardshape doctor --gateway-url``, and its health next to it (:func:`health_endpoints`).

>>> from shardshape.core.contracts import ResourceSpec
>>> status = GatewayStatus(
...     service="shop",
...     routing_entries=12,
...     snapshot_versions={"shop": 3},
...     plan_version=5,
...     pools=[ShardPoolStatus(shard_id=0, mode="in-process", limits=ResourceSpec(concurrency=8))],
... )
>>> GatewayStatus.from_json(status.to_json()) == status
True
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shardshape.core.contracts import CachePolicy, ResourceSpec
from shardshape.core.health import liveness, readiness
from shardshape.gateway.endpoints import Endpoint, json_endpoint

if TYPE_CHECKING:
    from rich.console import RenderableType

    from shardshape.allocator.client import AllocatorClient
    from shardshape.gateway.pools import PoolState, ShardPools
    from shardshape.gateway.reporter import Reporter
    from shardshape.gateway.routing_table import RoutingTable

STATUS_PATH = "/shardshape/gateway/status"
HEALTH_PATH = "/shardshape/gateway/healthz"
READY_PATH = "/shardshape/gateway/readyz"

PoolMode = Literal["in-process", "cgroup2", "cgroup1", "rlimit", "none"]
Count = Annotated[int, Field(ge=0)]
_BYTES_PER_MBIT = 125_000


class ShardPoolStatus(BaseModel):
    """One pool: how it is isolated, its limits in force and its load right now."""

    # Unknown fields are ignored, so a doctor reads the status of a newer gateway.
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    shard_id: Count | None = Field(description="None for the default (or shared) pool.")
    mode: PoolMode = Field(
        description="in-process (limits inside the gateway) or the OS isolation of its workers."
    )
    limits: ResourceSpec = Field(description="The per-replica resources in force.")
    in_flight: Count = 0
    queued: Count = 0
    rejected: Count = Field(0, description="Requests refused since start (full queue, timeout).")
    name: str = ""
    arm: str | None = None
    cache: CachePolicy | None = None
    workers: Count | None = Field(None, description="Worker processes (process mode only).")
    failures: Count = Field(0, description="Requests lost to a worker that died (e.g. OOM).")
    draining: bool = False
    lent: Count = Field(0, description="Requests of other pools run on this pool's idle slots.")
    borrowed: Count = Field(0, description="Requests of this pool run on other pools' slots.")


class ReporterStatus(BaseModel):
    """The counters of the gateway's reporter (:class:`shardshape.gateway.reporter.ReporterStats`),
    in events since start."""

    model_config = ConfigDict(extra="ignore", frozen=True, from_attributes=True, defer_build=True)

    reported: Count = 0
    sent: Count = 0
    delivered: Count = Field(0, description="Acknowledged by Kafka (live and replayed).")
    dropped: dict[str, Count] = Field(default_factory=dict, description="Dropped, by reason.")
    spooled: Count = 0
    replayed: Count = 0
    buffered: Count = 0
    in_flight: Count = 0
    spool_bytes: Count = 0
    last_error: str | None = None
    kafka_reachable: bool = True
    queue_reports: Count = Field(0, description="Queue reports acknowledged (messages).")

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class GatewayStatus(BaseModel):
    """A gateway's routing table, plan, pools and, when it reports, its reporter."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    service: str = ""
    gateway_id: str = ""
    routing_entries: Count = Field(0, description="Profile keys in the routing table.")
    routing_evicted: Count = Field(
        0, description="Entries evicted since start to stay within gateway_max_routes."
    )
    routing_rejected: Count = Field(
        0, description="Routing messages ignored: malformed, unsigned or forged."
    )
    snapshot_versions: dict[str, Count] = Field(
        default_factory=dict, description="Shard snapshot version per service."
    )
    plan_version: Count = Field(0, description="Version of the plan applied (0: none yet).")
    shaping: bool = Field(
        True, description="False: one shared pool for every request (gateway_shaping)."
    )
    pools: list[ShardPoolStatus] = Field(default_factory=list)
    reporter: ReporterStatus | None = Field(None, description="None: the gateway reports nowhere.")

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> GatewayStatus:
        return cls.model_validate_json(data)


def in_process_status(state: PoolState) -> ShardPoolStatus:
    """The status of one in-process pool (:meth:`shardshape.gateway.pools.ShardPools.states`)."""
    limits = state.limits
    return ShardPoolStatus(
        shard_id=state.key.shard_id,
        arm=state.key.arm,
        name=state.name,
        mode="in-process",
        limits=ResourceSpec(
            concurrency=limits.concurrency,
            queue_size=limits.queue_size,
            queue_timeout_ms=limits.queue_timeout_s * 1000,
            memory_mib=round(limits.memory_mib),
            net_mbit=limits.net_bytes_per_s / _BYTES_PER_MBIT,
            io_weight=limits.io_weight,
        ),
        cache=limits.cache,
        in_flight=state.in_use,
        queued=state.queued,
        rejected=sum(state.rejected.values()),
        draining=state.draining,
        lent=state.lent,
        borrowed=state.borrowed,
    )


def gateway_status(
    service: str,
    pools: ShardPools | None,
    routing: RoutingTable | None,
    allocator: AllocatorClient | None,
    *,
    gateway_id: str = "",
    process_pools: Iterable[ShardPoolStatus] = (),
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """The JSON body of the status endpoint for a gateway built of these parts.

    ``process_pools`` adds the shards of a process-mode pool
    (:meth:`shardshape.gateway.isolation.ProcessShardPool.status`); ``reporter`` adds its counters.
    """
    plan_version = allocator.applied_version if allocator else 0
    if not plan_version and pools is not None:
        plan_version = pools.plan_version
    status = GatewayStatus(
        service=service,
        gateway_id=gateway_id,
        routing_entries=len(routing) if routing else 0,
        routing_evicted=routing.evicted if routing else 0,
        routing_rejected=routing.rejected if routing else 0,
        snapshot_versions={service: routing.snapshot_version(service)} if routing else {},
        plan_version=plan_version,
        shaping=pools.shaping if pools is not None else True,
        pools=[
            *(in_process_status(state) for state in (pools.states() if pools else ())),
            *process_pools,
        ],
        reporter=ReporterStatus.model_validate(reporter.stats()) if reporter else None,
    )
    return status.model_dump(mode="json")


def health_endpoints(
    routing: RoutingTable | None, allocator: AllocatorClient | None
) -> dict[str, Endpoint]:
    """:data:`HEALTH_PATH` (200 while the app serves) and :data:`READY_PATH` (200 once the
    routing and plans topics have been read to their end, else 503 naming which is not), as
    endpoints for :func:`~shardshape.gateway.endpoints.with_endpoints`."""

    def ready() -> tuple[int, dict[str, Any]]:
        return readiness(
            {
                "routing": (
                    routing is None or routing.wait_caught_up(0),
                    "reading the routing topic (the latest snapshot not adopted yet)",
                ),
                "plans": (
                    allocator is None or allocator.wait_caught_up(0),
                    "reading the plans topic (the latest plan not applied yet)",
                ),
            }
        )

    return {HEALTH_PATH: json_endpoint(liveness), READY_PATH: json_endpoint(ready)}


class StatusUnavailable(RuntimeError):
    """No gateway status could be read at an address; the message says what to check."""


def status_url(address: str) -> str:
    """The status endpoint of a gateway at ``address`` (a base URL, or the endpoint itself).

    >>> status_url("http://127.0.0.1:8000")
    'http://127.0.0.1:8000/shardshape/gateway/status'
    >>> status_url("http://127.0.0.1:8000/gateway/status")
    'http://127.0.0.1:8000/gateway/status'
    """
    if urllib.parse.urlsplit(address).path.strip("/"):
        return address
    return address.rstrip("/") + STATUS_PATH


def fetch_status(address: str, timeout_s: float = 5.0) -> GatewayStatus:
    """Read a running gateway's :class:`GatewayStatus`, or raise :class:`StatusUnavailable`."""
    import urllib.request  # only `shardshape doctor` reads a status; a gateway never does

    url = status_url(address)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return GatewayStatus.from_json(response.read())
    except (OSError, ValueError) as exc:  # URLError is an OSError
        why = (
            f"not a gateway status: {exc.error_count()} invalid fields"
            if isinstance(exc, ValidationError)
            else str(exc)
        )
        raise StatusUnavailable(
            f"no shardshape gateway status at {url} ({why}): check that the gateway runs and "
            f"serves {STATUS_PATH}, or pass the status endpoint's full URL"
        ) from None


def status_report(status: GatewayStatus) -> list[RenderableType]:
    """``shardshape doctor``'s view of a running gateway, as rich renderables."""
    from rich.table import Table
    from rich.text import Text

    snapshots = ", ".join(f"{s} v{v}" for s, v in sorted(status.snapshot_versions.items()))
    who = " ".join(
        part for part in (status.service, status.gateway_id and f"({status.gateway_id})") if part
    )
    summary = Text(
        f"gateway {who or '(unnamed)'}: {status.routing_entries:,} routing entries, "
        f"snapshot {snapshots or 'none yet'}, plan "
        + (f"v{status.plan_version}" if status.plan_version else "none yet")
    )
    table = Table(
        "pool", "mode", "slots", "cpu m", "memory MiB", "io weight", "in flight", "queued",
        "rejected", "workers", "failures", title="pools",
    )  # fmt: skip
    for pool in status.pools:
        name = pool.name or ("default" if pool.shard_id is None else f"shard {pool.shard_id}")
        limits = pool.limits
        table.add_row(
            name + (" (draining)" if pool.draining else ""),
            pool.mode,
            str(limits.concurrency),
            str(limits.cpu_millicores or "-"),
            str(limits.memory_mib or "-"),
            str(limits.io_weight),
            str(pool.in_flight),
            str(pool.queued),
            str(pool.rejected),
            "-" if pool.workers is None else str(pool.workers),
            str(pool.failures),
        )
    parts: list[RenderableType] = [summary, table]
    if status.reporter is not None:
        parts.append(Text(_reporter_line(status.reporter)))
    return parts


def _reporter_line(reporter: ReporterStatus) -> str:
    """One line of the reporter's counters.

    >>> line = _reporter_line(ReporterStatus(reported=9, delivered=5, kafka_reachable=False,
    ...                                      dropped={"kafka_unreachable": 4}, last_error="down"))
    >>> line.split(", ")[:3]
    ['reporter: 9 reported', '5 delivered', '4 dropped (kafka_unreachable 4)']
    >>> line.split("; ")[1]
    'Kafka unreachable (last error: down)'
    """
    dropped = f"{reporter.dropped_total:,} dropped"
    if reporter.dropped:
        dropped += " (" + ", ".join(f"{why} {n:,}" for why, n in sorted(reporter.dropped.items()))
        dropped += ")"
    kafka = "Kafka reachable" if reporter.kafka_reachable else "Kafka unreachable"
    if reporter.last_error and not reporter.kafka_reachable:
        kafka += f" (last error: {reporter.last_error})"
    spool = f" ({reporter.spool_bytes:,} bytes to replay)" if reporter.spool_bytes else ""
    return (
        f"reporter: {reporter.reported:,} reported, {reporter.delivered:,} delivered, {dropped}, "
        f"{reporter.spooled:,} spooled{spool}, {reporter.buffered:,} buffered, "
        f"{reporter.in_flight:,} in flight; {kafka}"
    )
