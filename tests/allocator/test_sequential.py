"""Sequential tests: valid at every look, powerful for planted effects, and the experiment
outcomes (promote, reject, abort, expire) they drive."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from shardshape.allocator.sequential import (
    ArmWindow,
    ExperimentTest,
    MixtureSPRT,
    Moments,
    TestDesign,
)

LOOKS = 30
PER_LOOK = 150


def test_moments_match_numpy_and_refuse_impossible_counts() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(2.0, 3.0, 1_000)
    m = Moments.of(values[:400]) + Moments.of(values[400:])
    assert m.n == 1_000
    assert m.mean == pytest.approx(values.mean())
    assert m.variance == pytest.approx(values.var(ddof=1))
    assert math.isnan(Moments().mean) and math.isnan(Moments.of([1.0]).variance)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        Moments.of_count(10, 11)


def test_the_confidence_sequence_holds_at_every_look_where_a_repeated_ci_does_not() -> None:
    """400 runs of 30 looks at a true difference of +0.1: the mixture's interval misses it at
    any look in at most 5% of runs; the fixed-sample 95% interval, looked at as often, far
    more (the reason for an always-valid test)."""
    rng = np.random.default_rng(11)
    runs, true_diff, sd = 400, 0.1, 0.6
    control = rng.normal(0.0, sd, (runs, LOOKS, PER_LOOK))
    variant = rng.normal(true_diff, sd, (runs, LOOKS, PER_LOOK))
    mixture_missed = naive_missed = 0
    for run in range(runs):
        test = MixtureSPRT(alpha=0.05, tau=0.2, min_count=PER_LOOK)
        missed = naive = False
        for look in range(LOOKS):
            test.update(Moments.of(control[run, look]), Moments.of(variant[run, look]))
            b = test.bounds()
            assert b is not None
            missed |= not b.low <= true_diff <= b.high
            se = math.sqrt(2 * sd**2 / ((look + 1) * PER_LOOK))
            naive |= abs(b.estimate - true_diff) > 1.96 * se
        mixture_missed += missed
        naive_missed += naive
    assert mixture_missed / runs <= 0.05
    assert naive_missed / runs >= 0.15, "a 5% interval looked at 30 times misses far more"


def test_a_planted_difference_is_found_and_its_direction_given() -> None:
    rng = np.random.default_rng(3)
    faster = MixtureSPRT(tau=0.2, min_count=100)
    slower = MixtureSPRT(tau=0.2, min_count=100)
    for _ in range(20):
        base = Moments.of(rng.normal(3.0, 0.5, 200))
        faster.update(base, Moments.of(rng.normal(2.8, 0.5, 200)))
        slower.update(base, Moments.of(rng.normal(3.2, 0.5, 200)))
    assert faster.decision() == "lower" and slower.decision() == "higher"
    assert faster.bounds().p_value < 0.05  # type: ignore[union-attr]


def test_proportions_have_a_variance_before_any_error_and_flag_a_harmful_rise() -> None:
    test = MixtureSPRT(tau=0.02, proportion=True, min_count=100, margin=0.005)
    test.update(Moments.of_count(500, 0), Moments.of_count(500, 0))
    b = test.bounds()
    assert b is not None and b.low < 0 < b.high and test.decision() == "continue"
    rng = np.random.default_rng(5)
    for _ in range(20):
        test.update(
            Moments.of_count(500, int(rng.binomial(500, 0.01))),
            Moments.of_count(500, int(rng.binomial(500, 0.06))),
        )
    assert test.decision() == "higher"


def _window(rng: np.random.Generator, ms: float, n: int = 300, errors: float = 0.0) -> ArmWindow:
    latency = rng.lognormal(math.log(ms), 0.5, n)
    return ArmWindow(n, int(rng.binomial(n, errors)), Moments.of(np.log(latency)))


def _run(
    test: ExperimentTest,
    control: Callable[[], ArmWindow],
    variant: Callable[[], ArmWindow],
    windows: int = 100,
) -> str:
    for t in range(windows):
        test.update(control(), {"b": variant()}, now=10.0 * (t + 1))
        if test.decision().outcome != "continue":
            break
    return test.decision().outcome


def test_a_worse_primary_metric_is_rejected_and_harmful_errors_abort() -> None:
    rng = np.random.default_rng(8)
    slower = ExperimentTest("mean_latency", ["b"], started_ts=0, max_duration_s=10_000)
    outcome = _run(slower, lambda: _window(rng, 20), lambda: _window(rng, 24))
    assert outcome == "reject" and "worse" in slower.decision().reason
    failing = ExperimentTest("mean_latency", ["b"], started_ts=0, max_duration_s=10_000)
    outcome = _run(
        failing, lambda: _window(rng, 20, errors=0.01), lambda: _window(rng, 15, errors=0.08)
    )
    assert outcome == "abort" and failing.decision().arm == "b"
    assert "error rate" in failing.decision().reason


def test_an_undecided_experiment_expires_at_its_maximum_duration() -> None:
    rng = np.random.default_rng(9)
    design = TestDesign(min_requests=50)
    test = ExperimentTest("mean_latency", ["b"], started_ts=0, max_duration_s=40, design=design)
    outcome = _run(test, lambda: _window(rng, 20, n=60), lambda: _window(rng, 20, n=60))
    assert outcome == "expire" and test.last_ts == 40.0
    assert "no decision within 40 s" in test.decision().reason


def test_cost_per_request_counts_the_price_of_the_variant_slots() -> None:
    """Same latency on slots 30% cheaper: better on cost per request, not on latency."""
    rng = np.random.default_rng(10)
    shift = {"b": math.log(0.7)}
    cost = ExperimentTest("cost_per_request", ["b"], started_ts=0, max_duration_s=1e6, shifts=shift)
    latency = ExperimentTest("mean_latency", ["b"], started_ts=0, max_duration_s=1e6, shifts=shift)
    assert _run(cost, lambda: _window(rng, 20), lambda: _window(rng, 20)) == "promote"
    assert _run(latency, lambda: _window(rng, 20), lambda: _window(rng, 20)) != "promote"


def test_bad_parameters_fail_naming_them() -> None:
    with pytest.raises(ValueError, match="alpha"):
        MixtureSPRT(alpha=1.5)
    with pytest.raises(ValueError, match="tau"):
        MixtureSPRT(tau=0)
    with pytest.raises(ValueError, match="at least one variant"):
        ExperimentTest("mean_latency", [], started_ts=0, max_duration_s=1)
