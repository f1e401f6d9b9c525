"""The experiment manager: the state of every service's experiments, fed by the planning loop.

:class:`ExperimentManager` keeps what runs, what finished and each shard's definition; the
changes it proposes and what they make of a plan are in
:mod:`~shardshape.allocator.experiments.changes`, what it observes in
:mod:`~shardshape.allocator.experiments.evidence`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from shardshape.allocator.experiments.changes import (
    Change,
    ShardDefinition,
    ShardKey,
    adopted_overrides,
    arm_overrides,
    cache_changes,
    capacity_changes,
    change_of,
    defined_spec,
    price_shifts,
    restored,
)
from shardshape.allocator.experiments.evidence import (
    Running,
    arm_window,
    baseline,
    kept_finished,
    merged,
    note,
    observed,
)
from shardshape.allocator.experiments.policy import CONTROL, ExperimentPolicy
from shardshape.allocator.optimiser import ShardDemand
from shardshape.allocator.plan import amend_plan
from shardshape.allocator.pools_config import PoolsConfig
from shardshape.allocator.sequential import ExperimentTest, PrimaryMetric, Verdict
from shardshape.core.contracts import (
    MAX_ID_CHARS,
    AllocationPlan,
    Arm,
    ArmEvidence,
    CachePolicy,
    Experiment,
    ExperimentDecision,
    ShardSpec,
)
from shardshape.core.metrics import ShardStats, split_metric_key

log = logging.getLogger("shardshape.experiments")

_STATUS = {"promote": "promoted", "reject": "rejected", "abort": "aborted", "expire": "expired"}


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
        self._running: dict[ShardKey, Running] = {}
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
        totals = {key: merged(arms.values()) for key, arms in by_shard.items()}
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
        shards = [
            defined_spec(spec, self.definitions.get((service, spec.shard_id)))
            for spec in plan.shards
        ]
        for spec in shards:
            self._specs[service, spec.shard_id] = spec
        self._replicas[service] = max(1, len(plan.replicas))
        running = [self._listed(r) for r in self._running.values() if r.service == service]
        finished = kept_finished(self._finished.get(service, []), self.policy.keep_finished)
        notes = [note(e) for e in running + finished]
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
                self.definitions[key] = restored(
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
            shifts=price_shifts(self._specs.get(key), experiment, self.config.block_types),
        )
        self._running[key] = Running(
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
        self, running: Running, arms: dict[str, ShardStats], now: float
    ) -> Experiment | None:
        names = [arm.name for arm in running.experiment.arms]
        for name in names:
            if name in arms:
                held = running.arms.get(name)
                running.arms[name] = merged([held, arms[name]] if held else [arms[name]])
        control = arms.get(names[0])
        if running.thresholds is None:
            if control is not None and control.latency.count >= self.policy.design.min_requests:
                running.thresholds = baseline(control)  # fixed on this window, used after it
            thresholds = None
        else:
            thresholds = running.thresholds
        empty = ShardStats()
        running.test.update(
            arm_window(control or empty, thresholds),
            {name: arm_window(arms[name], thresholds) for name in names[1:] if name in arms},
            now,
        )
        verdict = running.test.decision()
        if verdict.outcome == "continue":
            return None
        return self._finish(running, verdict, now)

    def _finish(self, running: Running, verdict: Verdict, now: float) -> Experiment:
        service, key = running.service, running.key
        adopted = None
        if verdict.outcome == "promote":
            change = running.changes.get(verdict.arm) or change_of(running.arm(verdict.arm))
            if change is not None:
                self.definitions[key] = self.definitions.get(key, ShardDefinition()).adopt(change)
                adopted = adopted_overrides(change, self._specs.get(key))
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
        """Propose an experiment for a shard that runs none, from its window's ``stats``."""
        service, shard = key
        if service not in self.config.services:
            return
        trigger = self._trigger(key, stats)
        if trigger is None or now - self._ended.get(key, -math.inf) < self.policy.cooldown_s:
            return
        weight = self._variant_weight(key)
        if weight is None:
            return
        low_hits, reason = trigger
        if low_hits:
            changes = cache_changes(self._current_cache(key), self.policy)
            metric: PrimaryMetric = "mean_latency"
        else:
            chosen = self.definitions.get(key, ShardDefinition()).block_type
            allowed = self.config.shard_settings(*key).block_types
            changes = capacity_changes(
                self._specs.get(key), allowed, self.config.block_types, chosen
            )
            metric = "p95_latency"
        retry = self.policy.retry_after_s
        fresh = [
            c
            for c in changes
            if now - self._tried.get((service, shard, c.label), -math.inf) >= retry
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
            max_duration_s=self.policy.max_duration_s,
            reason=f"{reason}; trying {change.label}"[:256],
        )
        self._streaks[key] = _Streak()
        self.start(service, experiment, thresholds=baseline(stats), changes={change.label: change})

    def _trigger(self, key: ShardKey, stats: ShardStats) -> tuple[bool, str] | None:
        """Count this window in the shard's streaks (SLO missed, cache hit rate low); when one
        is long enough, whether it is the hit rate's, and why."""
        policy = self.policy
        streak = self._streaks.setdefault(key, _Streak())
        enough = stats.count >= policy.min_window_requests
        slo = self.config.shard_settings(*key).slo_p99_ms
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
            return None
        if streak.hits >= policy.trigger_windows:
            return True, f"cache hit rate {hit_rate:.2f} below {policy.low_hit_rate:.2f}"
        return False, f"p99 {p99:.0f} ms above the SLO of {slo:.0f} ms"

    def _variant_weight(self, key: ShardKey) -> float | None:
        """The weight a new variant on the shard may have within its service's budget;
        ``None`` when it would be too small to decide."""
        policy = self.policy
        share = self._shares.get(key, 1.0)
        room = policy.budget - self.traffic_in_experiments(key[0])
        weight = min(policy.variant_weight, room / share if share > 0 else 0.0)
        if weight < policy.min_variant_weight:
            log.debug("no experiment on %s shard %d: the budget has %.3f of the traffic left",
                      key[0], key[1], max(room, 0.0))  # fmt: skip
            return None
        return weight

    # -- plans ------------------------------------------------------------------------------
    def _listed(self, running: Running) -> Experiment:
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
                        "overrides": arm_overrides(
                            change,
                            spec,
                            arm.weight / total,
                            self.config.block_types,
                            self._replicas.get(running.service, 1),
                        )
                    }
                )
            arms.append(arm)
        evidence = []
        for arm in base.arms:
            stats = running.arms.get(arm.name, ShardStats())
            figures = observed(stats)
            if arm.name in running.test.tests:
                figures |= running.test.figures(arm.name)
            change = running.changes.get(arm.name)
            if change is not None and change.kind == "slots":
                figures["slots_factor"] = change.slots_factor
            evidence.append(ArmEvidence(arm=arm.name, requests=stats.count, figures=figures))
        return base.model_copy(update={"arms": arms, "evidence": evidence})

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
