"""What a running experiment has seen, and what plans show of experiments.

Per arm, the stats of every window merged (:func:`merged`); per window, what the sequential
tests take (:func:`arm_window`, with the control's :func:`baseline` thresholds); for people, each
arm's figures (:func:`observed`) and one rationale line per experiment (:func:`note`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from shardshape.allocator.experiments.changes import Change, ShardKey, kind_of
from shardshape.allocator.sequential import ArmWindow, ExperimentTest, Moments
from shardshape.core.contracts import Arm, Experiment
from shardshape.core.metrics import ShardStats


@dataclass
class Running:
    """An experiment the manager runs, with its test and what each arm has shown."""

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

    def arm(self, name: str) -> Arm:
        """The arm named ``name``."""
        return next(a for a in self.experiment.arms if a.name == name)


def merged(parts: Iterable[ShardStats]) -> ShardStats:
    total = ShardStats()
    for part in parts:
        total.merge(part)
    return total


def baseline(stats: ShardStats) -> tuple[float, float] | None:
    """The baseline (p95, p99) latency in ms the threshold tests count exceedances of."""
    p95, p99 = stats.latency.quantile(0.95), stats.latency.quantile(0.99)
    return (p95, p99) if p95 is not None and p99 is not None else None


def arm_window(stats: ShardStats, thresholds: tuple[float, float] | None) -> ArmWindow:
    """One arm's window as the sequential tests take it."""
    n, total, squares = stats.latency.log_moments()
    above = (
        (stats.latency.count_above(thresholds[0]), stats.latency.count_above(thresholds[1]))
        if thresholds is not None
        else (None, None)
    )
    return ArmWindow(stats.count, sum(stats.errors.values()), Moments(n, total, squares), *above)


def observed(stats: ShardStats) -> dict[str, float]:
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


def kept_finished(finished: list[Experiment], keep_finished: int) -> list[Experiment]:
    """The latest promotion of each (shard, kind of change), plus the last few others."""
    latest: dict[tuple[int, str], Experiment] = {}
    for e in finished:
        if e.status == "promoted" and e.decision is not None and e.decision.adopted:
            latest[e.shard_id, kind_of(e.decision.adopted)] = e
    promoted = {id(e) for e in latest.values()}
    others = [e for e in finished if id(e) not in promoted][-keep_finished:]
    kept = {id(e) for e in others} | promoted
    return [e for e in finished if id(e) in kept]


def note(experiment: Experiment) -> str:
    """One rationale line about an experiment."""
    arms = ", ".join(f"{a.name} {a.weight:.0%}" for a in experiment.arms)
    line = f"experiment {experiment.experiment_id} (shard {experiment.shard_id}; {arms}): "
    if experiment.decision is None:
        requests = sum(e.requests for e in experiment.evidence)
        return line + f"running, {requests:,} requests so far; {experiment.reason}"
    return line + f"{experiment.status}: {experiment.decision.reason}"
