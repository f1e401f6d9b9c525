"""One worker's view of the system, for the dashboard, the demo's terminal view and /metrics.

:class:`DashboardState` holds the shard snapshots, quarantined keys and plans read from the
routing and plans topics (fed by followers' threads), the worker's closed metric windows and
pipeline counters (fed by timers), and a feed of what changed: shards that appeared or went,
plans that moved blocks, keys quarantined or released, experiments started or decided. Each
change is also logged (``shardshape.dashboard``) with its service, shard and versions.

Plain Python, no Faust: views read :meth:`DashboardState.document` (JSON-able).

>>> from shardshape.core.contracts import ShardProfile, ShardSnapshot, encode, snapshot_key
>>> state = DashboardState()
>>> snapshot = ShardSnapshot(service="shop", version=1, shards=[
...     ShardProfile(shard_id=0, summary="GET /items 97%, ~20 ms")])
>>> state.on_routing(snapshot_key("shop"), encode(snapshot))
>>> [event["text"] for event in state.document(now=0)["events"]]
['shop: new shard 0 (GET /items 97%, ~20 ms), snapshot v1']
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from shardshape.allocator.pools_config import PoolsConfig
from shardshape.core.contracts import (
    SNAPSHOT_KEY_PREFIX,
    AllocationPlan,
    ContractError,
    Experiment,
    RoutingEntry,
    ShardSnapshot,
    decode,
)
from shardshape.core.logs import note_versions
from shardshape.core.metrics import ShardStats, merged_series, split_metric_key

log = logging.getLogger("shardshape.dashboard")

_SNAPSHOT_PREFIX = SNAPSHOT_KEY_PREFIX.encode()
_ANOMALOUS = b'"anomalous":true'  # how encode() writes a quarantined key's entry
Span = tuple[float, float]


def block_moves(before: AllocationPlan | None, after: AllocationPlan) -> list[str]:
    """What a plan changed, shard by shard and block type by block type.

    >>> from shardshape.core.contracts import ShardSpec
    >>> def plan(version, **blocks):
    ...     shards = [ShardSpec(shard_id=int(s[1:]), blocks=b) for s, b in blocks.items()]
    ...     return AllocationPlan(plan_id="p", version=version, service="shop", pool_id="main",
    ...                           shards=shards)
    >>> block_moves(plan(1, s0={"small": 2}), plan(2, s0={"small": 4}, s1={"large": 1}))
    ['shard 0 small 2→4', 'shard 1 large 0→1']
    """
    old = {spec.shard_id: spec.blocks for spec in before.shards} if before else {}
    new = {spec.shard_id: spec.blocks for spec in after.shards}
    moves = []
    for shard in sorted(old.keys() | new.keys()):
        was, now = old.get(shard, {}), new.get(shard, {})
        for kind in sorted(was.keys() | now.keys()):
            if was.get(kind, 0) != now.get(kind, 0):
                moves.append(f"shard {shard} {kind} {was.get(kind, 0)}→{now.get(kind, 0)}")
    return moves


class _Window:
    """A closed metrics window: stats per series, and summaries per (service, shard)."""

    __slots__ = ("by_shard", "series")

    def __init__(self, series: dict[str, ShardStats], seconds: float) -> None:
        self.series = series
        shards: dict[tuple[str, int], ShardStats] = {}
        for key, stats in series.items():
            service, shard, _arm = split_metric_key(key)
            shards.setdefault((service, shard), ShardStats()).merge(stats)
        self.by_shard = {key: stats.summary(seconds) for key, stats in shards.items()}


class DashboardState:
    """Shards, plans, windows, pipeline counters and the feed of changes; thread-safe.

    Parameters
    ----------
    pools_config
        Pool capacities and SLOs (``SHARDSHAPE_POOLS_CONFIG``); without it, capacities are
        unknown and SLOs come from plans only.
    grace_s
        How long after its end a metrics window counts as closed (late events still land).
    windows_kept, events_kept
        How many closed windows (the charts' history) and feed entries are kept.
    """

    def __init__(
        self,
        pools_config: PoolsConfig | None = None,
        *,
        grace_s: float = 2.0,
        windows_kept: int = 30,
        events_kept: int = 200,
    ) -> None:
        self.pools_config = pools_config
        self.grace_s = grace_s
        self.windows_kept = windows_kept
        self._lock = threading.Lock()
        self._snapshots: dict[str, ShardSnapshot] = {}
        self._quarantined: dict[str, RoutingEntry] = {}
        self._plans: dict[str, AllocationPlan] = {}
        self._plans_seen: dict[str, int] = {}
        self._closed: dict[Span, _Window] = {}
        self._open: dict[str, ShardStats] = {}  # series of the windows not closed yet
        self._totals: dict[str, ShardStats] = {}  # series over all closed windows
        self._pipeline: dict[str, float] = {}
        self._lag: dict[tuple[str, int], int] = {}
        self._rate = (0.0, 0.0, 0.0)  # (time, events, events/s) at the last pipeline note
        self._events: deque[dict[str, Any]] = deque(maxlen=events_kept)
        self._event_ids = 0

    # Topic callbacks: called on followers' threads.

    def on_routing(self, key: bytes | None, value: bytes | None) -> None:
        """A routing-topic message: a snapshot, or a key's entry (only quarantine matters)."""
        if not key:
            return
        if key.startswith(_SNAPSHOT_PREFIX):
            if value is not None:
                self._take_snapshot(value)
            return
        name = key.decode(errors="replace")
        if value is None or _ANOMALOUS not in value:
            if name in self._quarantined:
                with self._lock:
                    entry = self._quarantined.pop(name, None)
                if entry is not None:
                    self._event("quarantine", entry.service, f"released {name}", key=name)
            return
        try:
            entry = decode(RoutingEntry, value)
        except ContractError:
            return  # the profile agent wrote it; a gateway logs malformed entries
        with self._lock:
            new = name not in self._quarantined
            self._quarantined[name] = entry
        if new:
            self._event(
                "quarantine",
                entry.service,
                f"quarantined {name} (shard {entry.shard_id})",
                key=name,
                shard=entry.shard_id,
                snapshot_version=entry.snapshot_version,
            )

    def on_plan(self, key: bytes | None, value: bytes | None) -> None:
        """A plans-topic message: the plan in force of its service when newer."""
        try:
            plan = decode(AllocationPlan, value)
        except ContractError:
            return
        with self._lock:
            before = self._plans.get(plan.service)
            if before is not None and plan.version <= before.version:
                return
            self._plans[plan.service] = plan
            self._plans_seen[plan.service] = self._plans_seen.get(plan.service, 0) + 1
        note_versions(plan.service, plan=plan.version)
        moves = block_moves(before, plan)
        what = ", ".join(moves) if moves else "blocks unchanged"
        # The rationale's first line starts "<service> on pool <pool>: N shards, M blocks; ...".
        head = plan.rationale.split("\n", 1)[0].split(";", 1)[0].partition(": ")[2]
        self._event(
            "plan",
            plan.service,
            f"{plan.service} plan v{plan.version}" + (f" ({head})" if head else "") + f": {what}",
            plan_version=plan.version,
            moves=len(moves),
        )
        self._experiment_events(before.experiments if before else [], plan)

    # Worker timers: called on the worker's event loop.

    def update_windows(self, windows: Iterable[Mapping[str, Any]], now: float) -> None:
        """Take a worker's windows of one size (``shardshape.streams.windows.window_slots``):
        each window that closed is summarised and added to the totals once; open ones are kept
        as they stand."""
        fresh: dict[Span, dict[str, ShardStats]] = {}
        for window in windows:
            span = (float(window["start"]), float(window["end"]))
            if span in self._closed:
                continue
            fresh[span] = merged_series(
                (slot, data.encode()) for slot, data in window["slots"].items()
            )
        open_series: dict[str, ShardStats] = {}
        with self._lock:
            for span, series in sorted(fresh.items()):
                if span[1] + self.grace_s > now:
                    for key, stats in series.items():
                        open_series.setdefault(key, ShardStats()).merge(stats)
                    continue
                self._closed[span] = _Window(series, span[1] - span[0])
                for key, stats in series.items():
                    self._totals.setdefault(key, ShardStats()).merge(stats)
            for span in sorted(self._closed)[: -self.windows_kept]:
                del self._closed[span]
            self._open = open_series

    def note_pipeline(
        self, counters: Mapping[str, float], lag: Mapping[tuple[str, int], int], now: float
    ) -> None:
        """The worker's totals (``PipelineCounters.as_dict``) and consumer lag per partition."""
        with self._lock:
            then, events, rate = self._rate
            if now - then >= 1.0:
                rate = (counters["events"] - events) / (now - then) if then else 0.0
                self._rate = (now, counters["events"], rate)
            self._pipeline = dict(counters)
            self._lag = dict(lag)

    # Reads.

    def cumulative(self) -> dict[str, ShardStats]:
        """Stats per (service, shard, arm) series since this worker started (its partitions)."""
        with self._lock:
            out = {key: ShardStats().merge(stats) for key, stats in self._totals.items()}
            for key, stats in self._open.items():
                out.setdefault(key, ShardStats()).merge(stats)
        return out

    def latest(self) -> tuple[Span, dict[str, ShardStats]] | None:
        """The newest closed window and its stats per series."""
        with self._lock:
            if not self._closed:
                return None
            span = max(self._closed)
            return span, dict(self._closed[span].series)

    def plans(self) -> dict[str, AllocationPlan]:
        with self._lock:
            return dict(self._plans)

    def snapshots(self) -> dict[str, ShardSnapshot]:
        with self._lock:
            return dict(self._snapshots)

    def quarantined(self) -> dict[str, RoutingEntry]:
        with self._lock:
            return dict(self._quarantined)

    def pipeline(self) -> tuple[dict[str, float], dict[tuple[str, int], int], float]:
        """(counters, lag per (topic, partition), events/s)."""
        with self._lock:
            return dict(self._pipeline), dict(self._lag), self._rate[2]

    def pool_usage(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per pool and block type: ``capacity`` (None when unknown), ``allocated`` per service."""
        pools: dict[str, dict[str, dict[str, Any]]] = {}
        config = self.pools_config
        if config is not None:
            for pool, held in config.pools.items():
                pools[pool] = {
                    kind: {"capacity": n, "allocated": {}} for kind, n in held.blocks.items()
                }
        for plan in self.plans().values():
            kinds = pools.setdefault(plan.pool_id, {})
            for spec in plan.shards:
                for kind, n in spec.blocks.items():
                    usage = kinds.setdefault(kind, {"capacity": None, "allocated": {}})
                    allocated = usage["allocated"]
                    allocated[plan.service] = allocated.get(plan.service, 0) + n
        return pools

    def document(self, now: float | None = None) -> dict[str, Any]:
        """Everything the dashboard shows, JSON-able."""
        now = time.time() if now is None else now
        with self._lock:
            closed = sorted(self._closed.items())
            snapshots = dict(self._snapshots)
            plans = dict(self._plans)
            plans_seen = dict(self._plans_seen)
            quarantined = dict(self._quarantined)
            events = list(self._events)
        counters, lag, rate = self.pipeline()
        latest = closed[-1][1].by_shard if closed else {}
        services = sorted(
            {*snapshots, *plans, *(service for _, w in closed for service, _ in w.by_shard)}
        )
        return {
            "now": now,
            "window": {"start": closed[-1][0][0], "end": closed[-1][0][1]} if closed else None,
            "services": [
                self._service(
                    name,
                    snapshots.get(name),
                    plans.get(name),
                    plans_seen.get(name, 0),
                    latest,
                    quarantined,
                )
                for name in services
            ],
            "series": _series(closed),
            "pools": self.pool_usage(),
            "pipeline": {
                **counters,
                "events_per_s": rate,
                "lag": sum(lag.values()),
                "lag_by_partition": {f"{t}[{p}]": n for (t, p), n in sorted(lag.items())},
            },
            "events": events[-50:],
        }

    # Internals.

    def _service(
        self,
        service: str,
        snapshot: ShardSnapshot | None,
        plan: AllocationPlan | None,
        plans_seen: int,
        latest: Mapping[tuple[str, int], Mapping[str, Any]],
        quarantined: Mapping[str, RoutingEntry],
    ) -> dict[str, Any]:
        profiles = {p.shard_id: p for p in snapshot.shards} if snapshot else {}
        specs = {s.shard_id: s for s in plan.shards} if plan else {}
        keys = sorted(k for k, e in quarantined.items() if e.service == service)
        ids = sorted({*profiles, *specs, *(shard for svc, shard in latest if svc == service)})
        shards = []
        for shard in ids:
            profile, spec = profiles.get(shard), specs.get(shard)
            window = latest.get((service, shard))
            quarantine = bool(profile and profile.quarantine) or (
                snapshot is not None and snapshot.quarantine_shard == shard
            )
            shards.append(
                {
                    "shard": shard,
                    "summary": profile.summary if profile else "",
                    "weight": profile.weight if profile else None,
                    "quarantine": quarantine,
                    "keys_quarantined": len(keys) if quarantine else 0,
                    "slo_p99_ms": self._slo(service, shard, spec),
                    "blocks": dict(spec.blocks) if spec else {},
                    "concurrency": spec.resources.concurrency if spec else None,
                    "forecast_rps": spec.forecast_rps if spec else None,
                    "latest": dict(window) if window else None,
                }
            )
        return {
            "service": service,
            "snapshot_version": snapshot.version if snapshot else None,
            "shards": shards,
            "quarantined_keys": keys,
            "plans_seen": plans_seen,
            "plan": None
            if plan is None
            else {
                "version": plan.version,
                "pool": plan.pool_id,
                "created_ts": plan.created_ts,
                "replicas": plan.replicas,
                "rationale": plan.rationale,
            },
            "experiments": [_experiment(e) for e in plan.experiments] if plan else [],
        }

    def _slo(self, service: str, shard: int, spec: Any) -> float | None:
        if spec is not None and spec.slo_p99_ms is not None:
            return spec.slo_p99_ms
        config = self.pools_config
        if config is not None and service in config.services:
            return config.shard_settings(service, shard).slo_p99_ms
        return None

    def _take_snapshot(self, value: bytes) -> None:
        try:
            snapshot = decode(ShardSnapshot, value)
        except ContractError:
            return
        with self._lock:
            before = self._snapshots.get(snapshot.service)
            if before is not None and snapshot.version <= before.version:
                return
            self._snapshots[snapshot.service] = snapshot
        note_versions(snapshot.service, snapshot=snapshot.version)
        old = {p.shard_id for p in before.shards} if before else set()
        for profile in snapshot.shards:
            if profile.shard_id not in old and not profile.quarantine:
                self._event(
                    "shard",
                    snapshot.service,
                    f"{snapshot.service}: new shard {profile.shard_id} ({profile.summary}), "
                    f"snapshot v{snapshot.version}",
                    shard=profile.shard_id,
                    snapshot_version=snapshot.version,
                )
        for shard in sorted(old - {p.shard_id for p in snapshot.shards}):
            self._event(
                "shard",
                snapshot.service,
                f"{snapshot.service}: shard {shard} retired, snapshot v{snapshot.version}",
                shard=shard,
                snapshot_version=snapshot.version,
            )

    def _experiment_events(self, before: list[Experiment], plan: AllocationPlan) -> None:
        known = {e.experiment_id: e.status for e in before}
        for e in plan.experiments:
            if known.get(e.experiment_id) == e.status:
                continue
            why = e.decision.reason if e.decision else e.reason
            self._event(
                "experiment",
                plan.service,
                f"experiment {e.experiment_id} on {plan.service} shard {e.shard_id}: {e.status}"
                + (f" ({why})" if why else ""),
                shard=e.shard_id,
                plan_version=plan.version,
            )

    def _event(self, kind: str, service: str, text: str, **fields: Any) -> None:
        with self._lock:
            self._event_ids += 1
            self._events.append(
                {"id": self._event_ids, "ts": time.time(), "kind": kind, "service": service,
                 "text": text, **fields}
            )  # fmt: skip
        log.info("%s", text, extra={"event": kind, "service": service, **fields})


def _experiment(e: Experiment) -> dict[str, Any]:
    return {
        "id": e.experiment_id,
        "shard": e.shard_id,
        "status": e.status,
        "arms": [{"name": a.name, "weight": a.weight} for a in e.arms],
        "requests": {x.arm: x.requests for x in e.evidence},
        "primary_metric": e.primary_metric,
        "reason": e.reason,
        "decision": e.decision.reason if e.decision else None,
    }


def _series(closed: list[tuple[Span, _Window]]) -> dict[str, list[dict[str, Any]]]:
    """Per ``service|shard``: one point per closed window, oldest first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for (_start, end), window in closed:
        for (service, shard), summary in sorted(window.by_shard.items()):
            out.setdefault(f"{service}|{shard}", []).append(
                {
                    "t": end,
                    "rps": summary["rps"],
                    "p50_ms": summary["p50_ms"],
                    "p95_ms": summary["p95_ms"],
                    "p99_ms": summary["p99_ms"],
                    "error_rate": summary["error_rate"],
                }
            )
    return out
