"""Experiments on live traffic: propose, measure per arm, decide, adopt what wins.

The planning loop hands :class:`ExperimentManager` every complete metric window (the same
per (service, shard, arm) :class:`~shardshape.core.metrics.ShardStats` the planner learns from)
and
asks it to amend every plan it builds:

1. :meth:`ExperimentManager.observe` feeds each running experiment's arms to its
   :class:`~shardshape.allocator.sequential.ExperimentTest` and records every decision with its
   evidence; it then proposes experiments for shards that miss their SLO (p99) or whose cache hit
   rate is low, at most one running per shard and within each service's traffic budget;
2. :meth:`ExperimentManager.shape_demands` restricts a shard to the block type a promoted
   experiment chose, before the optimiser runs;
3. :meth:`ExperimentManager.attach` applies the shards' definitions (cache, slots per block)
   to a plan and lists its experiments: running ones with their arms and evidence so far,
   finished ones with their decision.

A change is what an experiment tries on a shard, in whole-shard terms: a cache policy and
size, slots per block (``slots``: one more block's worth of request slots), or a block type.
Each plan turns a running change into the variant arm's concrete overrides for the arm's
share of the shard; a promoted change becomes the shard's definition in every later plan.

>>> from shardshape.allocator.pools_config import parse_pools_config
>>> config = parse_pools_config('''
... [block_types.small]
... cpu_millicores = 500
... memory_mib = 256
... concurrency = 4
... cost = 1.0
... [pools.main]
... blocks = { small = 10 }
... [services.shop]
... pool = "main"
... ''')
>>> import numpy as np
>>> manager = ExperimentManager(config, ExperimentPolicy(trigger_windows=1))
>>> low_hits = ShardStats()
>>> low_hits.count, low_hits.cache_hits, low_hits.cache_reported = 1000, 100, 1000
>>> low_hits.latency.add_many(np.full(1000, 20.0))
>>> _ = manager.observe((0.0, 10.0), {"shop|1|": low_hits})
>>> [(e.shard_id, [a.name for a in e.arms], e.primary_metric) for e in manager.running("shop")]
[(1, ['control', 'lru-1024'], 'mean_latency')]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from shardshape.allocator.blocks import BlockType
from shardshape.allocator.optimiser import ShardDemand
from shardshape.allocator.plan import amend_plan
from shardshape.allocator.pools_config import PoolsConfig
from shardshape.allocator.sequential import (
    ArmWindow,
    ExperimentTest,
    Moments,
    PrimaryMetric,
    TestDesign,
    Verdict,
)
from shardshape.core.contracts import (
    MAX_ID_CHARS,
    AllocationPlan,
    Arm,
    ArmEvidence,
    ArmOverrides,
    CachePolicy,
    Experiment,
    ExperimentDecision,
    ResourceSpec,
    ShardSpec,
)
from shardshape.core.metrics import ShardStats, split_metric_key

log = logging.getLogger("shardshape.experiments")

ShardKey = tuple[str, int]
ChangeKind = Literal["cache", "slots", "block_type"]
CONTROL = "control"
_STATUS = {"promote": "promoted", "reject": "rejected", "abort": "aborted", "expire": "expired"}


@dataclass(frozen=True, slots=True)
class ExperimentPolicy:
    """When experiments are proposed, how much traffic they may take, how they are tested.

    Parameters
    ----------
    enabled
        ``False``: no proposals (experiments already running still finish).
    budget
        Share of a service's traffic that may run in variant arms at once, over all its
        shards' experiments (a shard's share of the service times its variants' weight).
    variant_weight
        A proposed variant's weight within its shard, when the budget leaves room.
    min_variant_weight
        Below this weight (the budget nearly spent) nothing is proposed: too slow to decide.
    max_duration_s
        An experiment still undecided this long after it started expires.
    min_window_requests
        Requests a shard needs in a window for that window to count towards a proposal.
    trigger_windows
        Consecutive such windows missing the SLO (or with a low hit rate) before a proposal.
    low_hit_rate
        A cache hit rate below this (where the shard reports ``cache_hit``) is low.
    cache_size
        Entries of the cache proposed for a shard that has none.
    max_cache_size
        Largest cache size a proposal doubles up to.
    cooldown_s
        After an experiment on a shard ends, how long before the next one is proposed there.
    retry_after_s
        A change that was rejected, aborted or expired is not proposed again for this long.
    keep_finished
        Finished experiments listed in a service's plans (besides each shard's promotions).
    design
        The tests' levels, mixture scales and margins.
    """

    enabled: bool = True
    budget: float = 0.2
    variant_weight: float = 0.5
    min_variant_weight: float = 0.05
    max_duration_s: float = 3_600.0
    min_window_requests: int = 100
    trigger_windows: int = 2
    low_hit_rate: float = 0.5
    cache_size: int = 1_024
    max_cache_size: int = 1_000_000
    cooldown_s: float = 300.0
    retry_after_s: float = 86_400.0
    keep_finished: int = 16
    design: TestDesign = field(default_factory=TestDesign)

    def __post_init__(self) -> None:
        checks = {
            "budget": 0 <= self.budget <= 1,
            "variant_weight": 0 < self.variant_weight < 1,
            "min_variant_weight": 0 < self.min_variant_weight <= self.variant_weight,
            "max_duration_s": self.max_duration_s > 0,
            "trigger_windows": self.trigger_windows >= 1,
            "low_hit_rate": 0 < self.low_hit_rate <= 1,
            "cache_size": 1 <= self.cache_size <= self.max_cache_size,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"ExperimentPolicy: invalid {', '.join(bad)} ({self!r}); budget, weights and "
                "rates are fractions, min_variant_weight <= variant_weight < 1, "
                "1 <= cache_size <= max_cache_size"
            )


@dataclass(frozen=True, slots=True)
class Change:
    """What a variant tries on a shard, in whole-shard terms (see the module docstring).

    ``slots_factor`` multiplies the request slots of the shard's blocks (1.25: a shard of four
    blocks gets one more block's slots). The ``label`` names the variant arm.
    """

    kind: ChangeKind
    label: str
    cache: CachePolicy | None = None
    slots_factor: float = 1.0
    block_type: str | None = None


@dataclass(frozen=True, slots=True)
class ShardDefinition:
    """What promoted experiments made of a shard: its cache, slots per block, block type."""

    cache: CachePolicy | None = None
    slots_factor: float = 1.0
    block_type: str | None = None

    def adopt(self, change: Change) -> ShardDefinition:
        if change.kind == "cache":
            return replace(self, cache=change.cache)
        if change.kind == "slots":
            return replace(self, slots_factor=self.slots_factor * change.slots_factor)
        return replace(self, block_type=change.block_type)


@dataclass
class _Running:
    service: str
    experiment: Experiment  # as proposed: arms' weights, metric, start; overrides per plan
    changes: dict[str, Change]  # variant arm name -> its change
    test: ExperimentTest
    share: float  # the shard's share of the service's traffic when it started
    thresholds: tuple[float, float] | None  # control's baseline (p95, p99) in ms
    arms: dict[str, ShardStats] = field(default_factory=dict)  # observed so far, per arm

    @property
    def key(self) -> ShardKey:
        return (self.service, self.experiment.shard_id)

    @property
    def variant_weight(self) -> float:
        total = sum(a.weight for a in self.experiment.arms) or 1.0
        return 1.0 - self.experiment.arms[0].weight / total


@dataclass
class _Streak:
    slo: int = 0
    hits: int = 0


class ExperimentManager:
    """Runs the experiments of every service a planning loop plans; pure, no broker.

    Parameters
    ----------
    config
        SLOs, allowed block types and block prices come from it.
    policy
        Proposals, budget and test design.
    """

    def __init__(self, config: PoolsConfig, policy: ExperimentPolicy | None = None) -> None:
        self.config = config
        self.policy = policy or ExperimentPolicy()
        self.definitions: dict[ShardKey, ShardDefinition] = {}
        self.decisions: list[tuple[str, Experiment]] = []  # every finished one, in order
        self._running: dict[ShardKey, _Running] = {}
        self._finished: dict[str, list[Experiment]] = {}
        self._ended: dict[ShardKey, float] = {}  # when the shard's last experiment ended
        self._tried: dict[tuple[str, int, str], float] = {}  # (service, shard, label) -> end
        self._streaks: dict[ShardKey, _Streak] = {}
        self._shares: dict[ShardKey, float] = {}
        self._specs: dict[ShardKey, ShardSpec] = {}  # each shard as last planned
        self._replicas: dict[str, int] = {}  # live replicas per service, as last planned
        self._changed: set[str] = set()  # services whose experiments changed since a plan
        self._planned: set[str] = set()  # services this manager made or restored plans for

    # -- reading ----------------------------------------------------------------------------
    def running(self, service: str) -> list[Experiment]:
        """The running experiments of ``service`` as the next plan will list them."""
        return [self._listed(r) for r in self._running.values() if r.service == service]

    def changed(self, services: Iterable[str]) -> set[str]:
        """Those of ``services`` whose experiments changed since their last plan."""
        return self._changed.intersection(services)

    def traffic_in_experiments(self, service: str) -> float:
        """Share of ``service``'s traffic in variant arms now (what the budget bounds)."""
        return sum(
            r.share * r.variant_weight for r in self._running.values() if r.service == service
        )

    # -- the loop ---------------------------------------------------------------------------
    def observe(
        self, span: tuple[float, float], series: Mapping[str, ShardStats]
    ) -> list[Experiment]:
        """Take one complete window of stats per (service, shard, arm) key (merged over
        workers); update, decide and propose. Returns the experiments decided in it."""
        now = span[1]
        by_shard: dict[ShardKey, dict[str, ShardStats]] = {}
        for key, stats in series.items():
            service, shard, arm = split_metric_key(key)
            by_shard.setdefault((service, shard), {})[arm] = stats
        totals = {key: _merged(arms.values()) for key, arms in by_shard.items()}
        self._note_shares(totals)
        decided = []
        for key, running in list(self._running.items()):
            finished = self._update(running, by_shard.get(key, {}), now)
            if finished is not None:
                decided.append(finished)
        if self.policy.enabled:
            for key in sorted(totals):
                if key not in self._running:
                    self._consider(key, totals[key], now)
        return decided

    def shape_demands(self, demands: Sequence[ShardDemand]) -> list[ShardDemand]:
        """Demands with each shard limited to the block type its definition names."""
        out = []
        for demand in demands:
            chosen = self.definitions.get(demand.key, ShardDefinition()).block_type
            if chosen is not None and chosen in demand.capacity_rps:
                demand = replace(demand, capacity_rps={chosen: demand.capacity_rps[chosen]})
            out.append(demand)
        return out

    def attach(self, plan: AllocationPlan) -> AllocationPlan:
        """``plan`` with the shards' definitions applied and the service's experiments."""
        service = plan.service
        shards = [self._defined(service, spec) for spec in plan.shards]
        for spec in shards:
            self._specs[service, spec.shard_id] = spec
        self._replicas[service] = max(1, len(plan.replicas))
        running = [self._listed(r) for r in self._running.values() if r.service == service]
        finished = self._kept(self._finished.get(service, []))
        notes = [_note(e) for e in running + finished]
        self._changed.discard(service)
        self._planned.add(service)
        return amend_plan(plan, shards=shards, experiments=running + finished, notes=notes)

    def restore(self, plan: AllocationPlan) -> None:
        """Continue from a plan another planner published (after a failover): its shards'
        definitions come back from the promoted experiments it lists; an experiment it shows
        running ends as expired (its evidence went with the other planner)."""
        service = plan.service
        if service in self._planned:
            return
        self._finished[service] = []  # each newer plan replaces what an older one restored
        for key in [k for k in self.definitions if k[0] == service]:
            del self.definitions[key]
        for experiment in sorted(plan.experiments, key=lambda e: e.started_ts):
            if experiment.status == "running":
                experiment = experiment.model_copy(
                    update={
                        "status": "expired",
                        "decision": ExperimentDecision(
                            outcome="expired",
                            reason="the planner that ran it stopped; its evidence is lost",
                        ),
                    }
                )
                self._changed.add(service)
            self._finished[service].append(experiment)
            decision = experiment.decision
            key = (service, experiment.shard_id)
            if decision is not None:  # cooldown and retries continue too
                self._ended[key] = max(self._ended.get(key, 0.0), decision.ts)
                for arm in experiment.arms[1:]:
                    if experiment.status != "promoted" or arm.name != decision.arm:
                        self._tried[service, key[1], arm.name] = decision.ts
            if experiment.status == "promoted" and decision and decision.adopted is not None:
                self.definitions[key] = _restored(
                    self.definitions.get(key, ShardDefinition()), experiment, decision
                )

    def start(
        self,
        service: str,
        experiment: Experiment,
        *,
        thresholds: tuple[float, float] | None = None,
        changes: Mapping[str, Change] | None = None,
    ) -> None:
        """Run ``experiment`` (its first arm is control) on a shard that runs none.

        ``thresholds`` are the control's baseline p95 and p99 (ms); when absent, the first
        window with enough control requests fixes them and the latency-threshold tests
        start from the window after. ``changes`` give each variant's whole-shard change (to
        adopt if promoted); without them a variant's overrides are kept as they are and its
        cache and block type are adopted.
        """
        key = (service, experiment.shard_id)
        if key in self._running:
            raise ValueError(
                f"shard {experiment.shard_id} of {service} already runs experiment "
                f"{self._running[key].experiment.experiment_id}: one at a time per shard"
            )
        variants = [arm.name for arm in experiment.arms[1:]]
        test = ExperimentTest(
            experiment.primary_metric,
            variants,
            started_ts=experiment.started_ts,
            max_duration_s=experiment.max_duration_s,
            design=self.policy.design,
            shifts=self._price_shifts(key, experiment),
        )
        self._running[key] = _Running(
            service,
            experiment,
            dict(changes or {}),
            test,
            self._shares.get(key, 1.0),
            thresholds,
        )
        self._changed.add(service)
        log.info("experiment %s started on %s shard %d: %s", experiment.experiment_id,
                 service, experiment.shard_id, experiment.reason or "by request")  # fmt: skip

    # -- deciding ---------------------------------------------------------------------------
    def _update(
        self, running: _Running, arms: dict[str, ShardStats], now: float
    ) -> Experiment | None:
        names = [arm.name for arm in running.experiment.arms]
        for name in names:
            if name in arms:
                held = running.arms.get(name)
                running.arms[name] = _merged([held, arms[name]] if held else [arms[name]])
        control = arms.get(names[0])
        if running.thresholds is None:
            if control is not None and control.latency.count >= self.policy.design.min_requests:
                running.thresholds = _thresholds(control)  # fixed on this window, used after it
            thresholds = None
        else:
            thresholds = running.thresholds
        empty = ShardStats()
        running.test.update(
            _arm_window(control or empty, thresholds),
            {name: _arm_window(arms[name], thresholds) for name in names[1:] if name in arms},
            now,
        )
        verdict = running.test.decision()
        if verdict.outcome == "continue":
            return None
        return self._finish(running, verdict, now)

    def _finish(self, running: _Running, verdict: Verdict, now: float) -> Experiment:
        service, key = running.service, running.key
        adopted = None
        if verdict.outcome == "promote":
            change = running.changes.get(verdict.arm) or self._change_of(running, verdict.arm)
            if change is not None:
                self.definitions[key] = self.definitions.get(key, ShardDefinition()).adopt(change)
                adopted = self._adopted(key, change)
        listed = self._listed(running)
        experiment = listed.model_copy(
            update={
                "status": _STATUS[verdict.outcome],
                "decision": ExperimentDecision(
                    outcome=_STATUS[verdict.outcome],  # type: ignore[arg-type]
                    arm=verdict.arm,
                    ts=now,
                    reason=verdict.reason[:256],
                    adopted=adopted,
                ),
            }
        )
        del self._running[key]
        self._finished.setdefault(service, []).append(experiment)
        self.decisions.append((service, experiment))
        self._ended[key] = now
        for arm in experiment.arms[1:]:
            if verdict.outcome != "promote" or arm.name != verdict.arm:
                self._tried[service, key[1], arm.name] = now
        self._changed.add(service)
        log.info("experiment %s on %s shard %d %s: %s", experiment.experiment_id, service,
                 key[1], experiment.status, verdict.reason)  # fmt: skip
        return experiment

    # -- proposing --------------------------------------------------------------------------
    def _consider(self, key: ShardKey, stats: ShardStats, now: float) -> None:
        service, shard = key
        if service not in self.config.services:
            return
        policy = self.policy
        streak = self._streaks.setdefault(key, _Streak())
        enough = stats.count >= policy.min_window_requests
        slo = self.config.shard_settings(service, shard).slo_p99_ms
        p99 = stats.latency.quantile(0.99)
        missed = enough and slo is not None and p99 is not None and p99 > slo
        streak.slo = streak.slo + 1 if missed else 0
        hit_rate = stats.cache_hits / stats.cache_reported if stats.cache_reported else None
        low = (
            stats.cache_reported >= policy.min_window_requests
            and hit_rate is not None
            and hit_rate < policy.low_hit_rate
        )
        streak.hits = streak.hits + 1 if low else 0
        if max(streak.slo, streak.hits) < policy.trigger_windows:
            return
        if now - self._ended.get(key, -math.inf) < policy.cooldown_s:
            return
        share = self._shares.get(key, 1.0)
        room = policy.budget - self.traffic_in_experiments(service)
        weight = min(policy.variant_weight, room / share if share > 0 else 0.0)
        if weight < policy.min_variant_weight:
            log.debug("no experiment on %s shard %d: the budget has %.3f of the traffic left",
                      service, shard, max(room, 0.0))  # fmt: skip
            return
        if streak.hits >= policy.trigger_windows:
            changes = self._cache_changes(key)
            metric: PrimaryMetric = "mean_latency"
            reason = f"cache hit rate {hit_rate:.2f} below {policy.low_hit_rate:.2f}"
        else:
            changes = self._capacity_changes(key)
            metric = "p95_latency"
            reason = f"p99 {p99:.0f} ms above the SLO of {slo:.0f} ms"
        fresh = [
            c
            for c in changes
            if now - self._tried.get((service, shard, c.label), -math.inf) >= policy.retry_after_s
        ]
        if not fresh:
            return
        change = fresh[0]
        experiment = Experiment(
            experiment_id=f"{service}:{shard}:{change.label}:{int(now)}"[-MAX_ID_CHARS:],
            shard_id=shard,
            arms=[Arm(name=CONTROL, weight=1 - weight), Arm(name=change.label, weight=weight)],
            primary_metric=metric,
            started_ts=now,
            max_duration_s=policy.max_duration_s,
            reason=f"{reason}; trying {change.label}"[:256],
        )
        streak.slo = streak.hits = 0
        self.start(
            service, experiment, thresholds=_thresholds(stats), changes={change.label: change}
        )

    def _cache_changes(self, key: ShardKey) -> list[Change]:
        current = self._current_cache(key)
        size = current.size if current.size else self.policy.cache_size
        bigger = min(2 * size, self.policy.max_cache_size)
        out = []
        if current.policy == "none" or current.size == 0:
            out.append(_cache_change("lru", size))
        elif current.policy == "lru":
            out.append(_cache_change("lfu", size))
        elif current.policy == "ttl":
            out.append(_cache_change("lru", size))
        if current.policy in ("lru", "lfu") and bigger > size:
            out.append(_cache_change(current.policy, bigger))
        return out

    def _capacity_changes(self, key: ShardKey) -> list[Change]:
        spec = self._specs.get(key)
        held = sum(spec.blocks.values()) if spec else 0
        out = []
        if held:
            out.append(
                Change("slots", f"slots-x{(held + 1) / held:.2f}", slots_factor=(held + 1) / held)
            )
        allowed = self.config.shard_settings(*key).block_types
        in_use = set(spec.blocks) if spec else set()
        chosen = self.definitions.get(key, ShardDefinition()).block_type
        for name in allowed:
            if name != chosen and {name} != in_use and name in self.config.block_types:
                out.append(Change("block_type", f"type-{name}", block_type=name))
        return out

    # -- plans ------------------------------------------------------------------------------
    def _defined(self, service: str, spec: ShardSpec) -> ShardSpec:
        definition = self.definitions.get((service, spec.shard_id))
        if definition is None:
            return spec
        update: dict = {}
        if definition.cache is not None:
            update["cache"] = definition.cache
        if definition.slots_factor != 1.0:
            factor = definition.slots_factor
            update["resources"] = _scaled_slots(spec.resources, factor)
            update["per_replica"] = _scaled_slots(spec.per_replica, factor)
        return spec.model_copy(update=update) if update else spec

    def _listed(self, running: _Running) -> Experiment:
        """The experiment as a plan lists it: arms' overrides for the shard as now planned."""
        base = running.experiment
        spec = self._specs.get(running.key)
        total = sum(a.weight for a in base.arms) or 1.0
        arms = [base.arms[0]]
        for arm in base.arms[1:]:
            change = running.changes.get(arm.name)
            if change is not None and spec is not None:
                arm = arm.model_copy(
                    update={
                        "overrides": self._overrides(
                            running.service, change, spec, arm.weight / total
                        )
                    }
                )
            arms.append(arm)
        evidence = []
        for arm in base.arms:
            stats = running.arms.get(arm.name, ShardStats())
            figures = _observed(stats)
            if arm.name in running.test.tests:
                figures |= running.test.figures(arm.name)
            change = running.changes.get(arm.name)
            if change is not None and change.kind == "slots":
                figures["slots_factor"] = change.slots_factor
            evidence.append(ArmEvidence(arm=arm.name, requests=stats.count, figures=figures))
        return base.model_copy(update={"arms": arms, "evidence": evidence})

    def _overrides(
        self, service: str, change: Change, spec: ShardSpec, share: float
    ) -> ArmOverrides:
        """A variant arm's concrete overrides for ``share`` of ``spec`` (per replica)."""
        if change.kind == "cache" and change.cache is not None:
            size = max(1, math.floor(change.cache.size * share)) if change.cache.size else 0
            return ArmOverrides(cache=change.cache.model_copy(update={"size": size}))
        slots = spec.per_replica.concurrency * share
        if change.kind == "slots":
            return ArmOverrides(
                concurrency=max(math.floor(slots) + 1, math.ceil(slots * change.slots_factor))
            )
        kind = self.config.block_types.get(change.block_type or "")
        if kind is None:
            return ArmOverrides(block_type=change.block_type)
        # The same money in the other type: the arm's share of the shard's cost, re-bought.
        cost = sum(self._price(t) * n for t, n in spec.blocks.items())
        replicas = self._replicas.get(service, 1)
        bought = cost / kind.cost * kind.concurrency / replicas * share
        return ArmOverrides(block_type=change.block_type, concurrency=max(1, math.floor(bought)))

    def _adopted(self, key: ShardKey, change: Change) -> ArmOverrides:
        if change.kind == "cache":
            return ArmOverrides(cache=change.cache)
        if change.kind == "block_type":
            return ArmOverrides(block_type=change.block_type)
        spec = self._specs.get(key)
        base = spec.per_replica.concurrency if spec else 1
        return ArmOverrides(concurrency=max(1, math.ceil(base * change.slots_factor)))

    def _change_of(self, running: _Running, arm_name: str) -> Change | None:
        """The change a variant without a recorded one stands for: its cache or block type
        (``None``: nothing a shard's definition holds, so nothing is adopted)."""
        arm = next(a for a in running.experiment.arms if a.name == arm_name)
        over = arm.overrides
        if over.block_type is not None:
            return Change("block_type", arm_name, block_type=over.block_type)
        if over.cache is not None:
            return Change("cache", arm_name, cache=over.cache)
        return None

    def _kept(self, finished: list[Experiment]) -> list[Experiment]:
        """The latest promotion of each (shard, kind of change), plus the last few others."""
        latest: dict[tuple[int, str], Experiment] = {}
        for e in finished:
            if e.status == "promoted" and e.decision is not None and e.decision.adopted:
                latest[e.shard_id, _kind_of(e.decision.adopted)] = e
        promoted = {id(e) for e in latest.values()}
        others = [e for e in finished if id(e) not in promoted][-self.policy.keep_finished :]
        kept = {id(e) for e in others} | promoted
        return [e for e in finished if id(e) in kept]

    def _current_cache(self, key: ShardKey) -> CachePolicy:
        defined = self.definitions.get(key, ShardDefinition()).cache
        if defined is not None:
            return defined
        spec = self._specs.get(key)
        return spec.cache if spec is not None else CachePolicy()

    def _note_shares(self, totals: Mapping[ShardKey, ShardStats]) -> None:
        per_service: dict[str, int] = {}
        for (service, _), stats in totals.items():
            per_service[service] = per_service.get(service, 0) + stats.count
        for key, stats in totals.items():
            if per_service[key[0]]:
                self._shares[key] = stats.count / per_service[key[0]]

    def _price(self, block_type: str) -> float:
        kind: BlockType | None = self.config.block_types.get(block_type)
        return kind.cost if kind is not None else 0.0

    def _price_shifts(self, key: ShardKey, experiment: Experiment) -> dict[str, float]:
        """Log of each variant's price per request slot over control's (cost per request)."""
        spec = self._specs.get(key)
        if spec is None or not spec.blocks:
            return {}
        slots = sum(self.config.block_types[t].concurrency * n for t, n in spec.blocks.items()
                    if t in self.config.block_types)  # fmt: skip
        cost = sum(self._price(t) * n for t, n in spec.blocks.items())
        if not slots or not cost:
            return {}
        shifts = {}
        for arm in experiment.arms[1:]:
            kind = self.config.block_types.get(arm.overrides.block_type or "")
            if kind is not None:
                shifts[arm.name] = math.log((kind.cost / kind.concurrency) / (cost / slots))
        return shifts


def _merged(parts: Iterable[ShardStats]) -> ShardStats:
    total = ShardStats()
    for part in parts:
        total.merge(part)
    return total


def _thresholds(stats: ShardStats) -> tuple[float, float] | None:
    p95, p99 = stats.latency.quantile(0.95), stats.latency.quantile(0.99)
    return (p95, p99) if p95 is not None and p99 is not None else None


def _arm_window(stats: ShardStats, thresholds: tuple[float, float] | None) -> ArmWindow:
    n, total, squares = stats.latency.log_moments()
    above = (
        (stats.latency.count_above(thresholds[0]), stats.latency.count_above(thresholds[1]))
        if thresholds is not None
        else (None, None)
    )
    return ArmWindow(stats.count, sum(stats.errors.values()), Moments(n, total, squares), *above)


def _observed(stats: ShardStats) -> dict[str, float]:
    """What an arm showed, for people: latency quantiles, error and hit rates."""
    out: dict[str, float] = {}
    n, total, _ = stats.latency.log_moments()
    if n:
        out["geomean_ms"] = math.exp(total / n)
        for name, q in (("p95_ms", 0.95), ("p99_ms", 0.99)):
            value = stats.latency.quantile(q)
            if value is not None:
                out[name] = value
    if stats.count:
        out["error_rate"] = sum(stats.errors.values()) / stats.count
    if stats.cache_reported:
        out["cache_hit_rate"] = stats.cache_hits / stats.cache_reported
    return out


def _cache_change(policy: Literal["lru", "lfu"], size: int) -> Change:
    return Change("cache", f"{policy}-{size}", cache=CachePolicy(policy=policy, size=size))


def _scaled_slots(resources: ResourceSpec, factor: float) -> ResourceSpec:
    return resources.model_copy(
        update={"concurrency": min(max(1, math.ceil(resources.concurrency * factor)), 100_000)}
    )


def _kind_of(adopted: ArmOverrides) -> str:
    if adopted.cache is not None:
        return "cache"
    return "block_type" if adopted.block_type is not None else "slots"


def _restored(
    definition: ShardDefinition, experiment: Experiment, decision: ExperimentDecision
) -> ShardDefinition:
    adopted = decision.adopted
    assert adopted is not None
    if adopted.cache is not None:
        return replace(definition, cache=adopted.cache)
    if adopted.block_type is not None:
        return replace(definition, block_type=adopted.block_type)
    figures = next((e.figures for e in experiment.evidence if e.arm == decision.arm), {})
    return replace(
        definition, slots_factor=definition.slots_factor * figures.get("slots_factor", 1.0)
    )


def _note(experiment: Experiment) -> str:
    """One rationale line about an experiment."""
    arms = ", ".join(f"{a.name} {a.weight:.0%}" for a in experiment.arms)
    line = f"experiment {experiment.experiment_id} (shard {experiment.shard_id}; {arms}): "
    if experiment.decision is None:
        requests = sum(e.requests for e in experiment.evidence)
        return line + f"running, {requests:,} requests so far; {experiment.reason}"
    return line + f"{experiment.status}: {experiment.decision.reason}"
