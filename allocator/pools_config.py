"""Pools, block types and services from a TOML file, validated with errors that teach.

Every problem names the key (as a dotted path), the value given and the fix; all problems are
reported at once in one :class:`PoolsConfigError`.

>>> config = parse_pools_config('''
... [block_types.small]
... cpu_millicores = 250
... memory_mib = 256
... cost = 1.0
... [pools.main]
... blocks = { small = 8 }
... [services.shop]
... pool = "main"
... ''')
>>> config.pools["main"].blocks, config.shard_settings("shop", 3).priority
({'small': 8}, 100)
>>> try:
...     parse_pools_config('[pools.main]\\nblocks = { huge = 1 }', source="pools.toml")
... except PoolsConfigError as err:
...     print(err)
pools.toml: 1 problem
  pools.main.blocks.huge: no block type 'huge'. Fix: define [block_types.huge] or use one of:
  (none defined)
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shardshape.allocator.blocks import BlockType

Name = Annotated[str, Field(min_length=1, max_length=128)]


class PoolsConfigError(ValueError):
    """The pools file is invalid; ``problems`` lists one line per bad key, each with its fix."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__("\n  ".join([f"{source}: {count}", *problems]))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PlanningPolicy(_Strict):
    """How plans are made and how fast they may change (the ``[planning]`` table)."""

    forecast_quantile: float = Field(0.9, gt=0, lt=1)
    target_utilisation: float = Field(0.7, gt=0, le=1)
    min_interval_s: float = Field(30.0, ge=0, le=86_400)
    max_step_up: int = Field(8, ge=1, le=100_000)
    max_step_down: int = Field(2, ge=0, le=100_000)
    step_fraction: float = Field(0.5, ge=0, le=10)
    release_below_utilisation: float = Field(0.5, ge=0, lt=1)
    # "pool": round whole blocks once for the pool, not per shard (allocator/pooling.py);
    # only with the gateway's lending, which runs a shard's fraction on others' idle slots.
    block_rounding: Literal["shard", "pool"] = "shard"
    # Requests waiting in the gateways (their QueueReports) count as demand to serve within
    # queue_drain_s: n waiting add n / queue_drain_s requests/s to the shard's forecast. While
    # any wait, the planner plans every queue_replan_s, not only when a window closes.
    # queue_drain_s = 0 ignores queue reports.
    queue_drain_s: float = Field(40.0, ge=0, le=3_600)
    queue_replan_s: float = Field(10.0, gt=0, le=3_600)
    # How long a block the planner adds takes to serve (a replica starting). A shard whose SLO
    # leaves its requests the time to wait for one (a gateway's queue report, a replan, this)
    # beyond their service time is planned at its mean forecast, not the forecast quantile:
    # its bursts wait for the blocks the queue reports bring, within the SLO
    # (allocator/planning.py).
    block_start_s: float = Field(30.0, ge=0, le=3_600)

    @model_validator(mode="after")
    def _band(self) -> PlanningPolicy:
        if self.release_below_utilisation >= self.target_utilisation:
            raise ValueError(
                f"release_below_utilisation ({self.release_below_utilisation}) must be below "
                f"target_utilisation ({self.target_utilisation}), or blocks are released as soon "
                "as they are granted; e.g. set it to 0.2 below the target"
            )
        return self


class PoolConfig(_Strict):
    """A global pool: how many blocks of each type exist to share (``[pools.<id>]``)."""

    blocks: dict[Name, Annotated[int, Field(ge=0, le=10_000_000)]]


class ShardOverride(_Strict):
    """Settings of one shard that differ from its service's (``[services.<s>.shards.<id>]``)."""

    priority: int | None = Field(None, ge=0, le=1_000)
    slo_p99_ms: float | None = Field(None, gt=0)
    min_blocks: int | None = Field(None, ge=0, le=100_000)
    target_utilisation: float | None = Field(None, gt=0, le=1)


class ServiceConfig(_Strict):
    """A service drawing on one pool, with the defaults of its shards (``[services.<name>]``)."""

    pool: Name
    priority: int = Field(100, ge=0, le=1_000)
    slo_p99_ms: float | None = Field(None, gt=0)
    min_blocks: int = Field(1, ge=0, le=100_000)
    target_utilisation: float | None = Field(None, gt=0, le=1)
    block_types: list[Name] | None = None
    prior_rps_per_core: float = Field(100.0, gt=0, le=1e9)
    shards: dict[Annotated[str, Field(pattern=r"^[0-9]{1,6}$")], ShardOverride] = Field(
        default_factory=dict
    )


@dataclass(frozen=True, slots=True)
class ShardSettings:
    """What the optimiser needs to know about one shard besides its forecast and capacity."""

    priority: int
    slo_p99_ms: float | None
    min_blocks: int
    target_utilisation: float
    block_types: tuple[str, ...]


class PoolsConfig(_Strict):
    """The whole file: ``[block_types.*]``, ``[pools.*]``, ``[services.*]`` and ``[planning]``."""

    block_types: dict[Name, BlockType] = Field(default_factory=dict)
    pools: dict[Name, PoolConfig] = Field(default_factory=dict)
    services: dict[Name, ServiceConfig] = Field(default_factory=dict)
    planning: PlanningPolicy = PlanningPolicy()

    @model_validator(mode="before")
    @classmethod
    def _name_block_types(cls, data: Any) -> Any:
        # A block type's name is its table key; copy it in so BlockType stands alone.
        if isinstance(data, dict) and isinstance(data.get("block_types"), dict):
            named = {}
            for key, value in data["block_types"].items():
                named[key] = {**value, "name": key} if isinstance(value, dict) else value
            data = {**data, "block_types": named}
        return data

    def pool_block_types(self, pool_id: str) -> dict[str, BlockType]:
        """The block types a pool holds, by name."""
        return {name: self.block_types[name] for name in self.pools[pool_id].blocks}

    def services_of(self, pool_id: str) -> list[str]:
        """Names of the services that draw on ``pool_id``."""
        return sorted(name for name, svc in self.services.items() if svc.pool == pool_id)

    def shard_settings(self, service: str, shard_id: int) -> ShardSettings:
        """A shard's priority, SLO, minimum, target utilisation and allowed block types.

        Raises :class:`KeyError` naming the configured services when ``service`` is unknown.
        """
        if service not in self.services:
            known = ", ".join(sorted(self.services)) or "(none)"
            raise KeyError(f"service {service!r} is not in the pools config; known: {known}")
        svc = self.services[service]
        over = svc.shards.get(str(shard_id), ShardOverride())
        target = over.target_utilisation or svc.target_utilisation
        return ShardSettings(
            priority=svc.priority if over.priority is None else over.priority,
            slo_p99_ms=over.slo_p99_ms if over.slo_p99_ms is not None else svc.slo_p99_ms,
            min_blocks=svc.min_blocks if over.min_blocks is None else over.min_blocks,
            target_utilisation=target or self.planning.target_utilisation,
            block_types=tuple(svc.block_types or self.pools[svc.pool].blocks),
        )


def load_pools_config(path: str | Path) -> PoolsConfig:
    """Read and validate a pools TOML file, or raise :class:`PoolsConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PoolsConfigError(
            str(path), [f"cannot read the file ({exc.strerror}). Fix: check the path"]
        ) from None
    return parse_pools_config(text, source=path.name)


def parse_pools_config(text: str, source: str = "<pools config>") -> PoolsConfig:
    """Validate TOML text as a :class:`PoolsConfig`, or raise :class:`PoolsConfigError`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PoolsConfigError(
            source, [f"not valid TOML: {exc}. Fix: correct the syntax at that line"]
        ) from None
    try:
        config = PoolsConfig.model_validate(raw)
    except ValidationError as exc:
        raise PoolsConfigError(source, [_explain(err) for err in exc.errors()]) from None
    problems = _cross_check(config)
    if problems:
        raise PoolsConfigError(source, problems)
    return config


def _cross_check(config: PoolsConfig) -> list[str]:
    problems: list[str] = []
    defined = ", ".join(sorted(config.block_types)) or "(none defined)"
    for pool_id, pool in config.pools.items():
        for name in pool.blocks:
            if name not in config.block_types:
                problems.append(
                    f"pools.{pool_id}.blocks.{name}: no block type {name!r}. "
                    f"Fix: define [block_types.{name}] or use one of: {defined}"
                )
    pools = ", ".join(sorted(config.pools)) or "(none defined)"
    for svc_name, svc in config.services.items():
        if svc.pool not in config.pools:
            problems.append(
                f"services.{svc_name}.pool = {svc.pool!r}: no pool of that name. "
                f"Fix: use one of: {pools}, or add a [pools.{svc.pool}] table"
            )
            continue
        held = config.pools[svc.pool].blocks
        for name in svc.block_types or ():
            if name not in held:
                problems.append(
                    f"services.{svc_name}.block_types: {name!r} is not held by pool "
                    f"{svc.pool!r}. Fix: use one of: {', '.join(sorted(held)) or '(none)'}, "
                    f"or add it to [pools.{svc.pool}].blocks"
                )
        if svc.block_types == []:
            problems.append(
                f"services.{svc_name}.block_types = []: the service could get no blocks. "
                "Fix: list at least one block type, or remove the key to allow all of its pool's"
            )
    return problems


def _explain(err: Any) -> str:
    loc = tuple(err["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        table = ".".join(str(p) for p in loc[:-1])
        return f"{where}: required. Fix: add `{loc[-1]} = ...` to [{table or 'top level'}]"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return f"{where}: unknown key. Fix: remove it or correct its spelling{hint}"
    given = err.get("input")
    shown = f" = {given!r}" if not isinstance(given, dict | list) else ""
    if kind == "value_error":
        return f"{where}: {msg}"
    return f"{where}{shown}: {msg}. Fix: give a value that satisfies this"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the table at ``loc`` accepts, found by walking the models' annotations."""
    model: Any = PoolsConfig
    skip_key = False
    for part in loc:
        if skip_key:
            skip_key = False
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        model = _unwrap(field.annotation)
        if typing.get_origin(model) is dict:
            model = _unwrap(typing.get_args(model)[1])
            skip_key = True
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [name for name in model.model_fields if name != "name" or model is not BlockType]
    return []


def _unwrap(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else annotation
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation
