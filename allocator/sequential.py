"""Always-valid sequential tests for experiments: look after every window, stop any time.

A fixed-sample test read after every window of traffic rejects a true null far more often than
its level says (looking 50 times at a 5% t-test rejects an A/A comparison about a third of the
time). The tests here are the mixture sequential probability ratio test (mSPRT, Robbins 1970;
Johari, Pekelis and Walsh 2017, "Always valid inference"): for the difference ``delta`` of two
arms' means, with estimate ``d`` and plug-in variance ``V`` of ``d``, the likelihood ratio of
``delta`` against ``theta`` mixed over a normal prior ``N(theta, tau^2)`` on ``delta`` is

    Lambda(theta) = sqrt(V / (V + tau^2)) * exp(tau^2 (d - theta)^2 / (2 V (V + tau^2)))

and is a nonnegative martingale under ``delta = theta`` (in information time ``1 / V`` with a
fixed split of traffic). Ville's inequality then bounds the chance that it *ever* reaches
``1 / alpha`` by ``alpha``. So ``{theta : Lambda(theta) < 1 / alpha}``, the interval
``d +- sqrt(V (V + tau^2) / tau^2 * (2 log(1 / alpha) + log((V + tau^2) / V)))``, holds the
true difference at every window at once with probability ``1 - alpha``: a confidence
sequence. Decisions read it: below zero, above a margin, or inside an equivalence band.

:class:`MixtureSPRT` is one such test on means (log latency) or proportions (error rate, share
of requests above a latency threshold). :class:`ExperimentTest` runs an experiment's primary
metric and its guardrails for each variant against control and says promote, reject, abort,
expire or continue.

>>> rng = np.random.default_rng(1)
>>> test = MixtureSPRT(alpha=0.05, tau=0.2, min_count=100)
>>> for _ in range(20):  # the variant is 30% faster: its log latency is 0.36 lower
...     control = Moments.of(rng.normal(3.0, 0.5, 200))
...     variant = Moments.of(rng.normal(3.0 - 0.36, 0.5, 200))
...     test.update(control, variant)
>>> test.decision(), test.bounds().high < 0
('lower', True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Direction = Literal["continue", "lower", "higher", "equivalent"]
Outcome = Literal["continue", "promote", "reject", "abort", "expire"]
PrimaryMetric = Literal["p95_latency", "mean_latency", "cost_per_request"]

_MIN_VARIANCE = 1e-12


@dataclass(frozen=True, slots=True)
class Moments:
    """Sufficient statistics of one arm's observations: count, sum and sum of squares.

    A proportion (``k`` of ``n`` requests were errors) is ``Moments.of_count(n, k)``: its
    observations are 0 or 1, so the sum of squares is the sum.

    >>> (Moments.of([1.0, 2.0, 3.0]) + Moments.of([4.0])).mean
    2.5
    >>> Moments.of_count(100, 5).mean
    0.05
    """

    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float] | np.ndarray) -> Moments:
        array = np.asarray(values, dtype=float)
        return cls(int(array.size), float(array.sum()), float(array @ array))

    @classmethod
    def of_count(cls, n: int, k: int) -> Moments:
        if not 0 <= k <= n:
            raise ValueError(f"a proportion needs 0 <= k <= n, got k={k}, n={n}")
        return cls(n, float(k), float(k))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.total + other.total, self.squares + other.squares)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        """Unbiased sample variance (``nan`` below two observations)."""
        if self.n < 2:
            return math.nan
        return max((self.squares - self.total**2 / self.n) / (self.n - 1), 0.0)


@dataclass(frozen=True, slots=True)
class Bounds:
    """The confidence sequence at the last update, for ``variant - control (+ shift)``."""

    estimate: float
    low: float
    high: float
    p_value: float
    n_control: int
    n_variant: int


class MixtureSPRT:
    """Always-valid test and confidence sequence for ``mean(variant) - mean(control) + shift``.

    Parameters
    ----------
    alpha
        Chance that the sequence ever misses the true difference (over all looks).
    tau
        Scale of the normal mixture over differences, in the metric's units: the test is most
        powerful for differences of about this size, and valid for any.
    proportion
        Observations are 0/1 (use :meth:`Moments.of_count`): the variance of each arm is
        ``p (1 - p)`` with ``p`` shrunk towards 1/2 (``(k + 1/2) / (n + 1)``), so an arm with
        no errors yet still has a variance.
    min_count
        Observations each arm needs before the test says anything (the plug-in variance
        must be roughly right before it is trusted).
    margin
        :meth:`decision` says ``higher`` only when the whole interval is above ``margin``
        (``lower``: below ``-margin``).
    equivalence
        :meth:`decision` says ``equivalent`` when the whole interval lies within
        ``(-equivalence, equivalence)``: no difference of a size that matters (0: never).
    shift
        A known constant added to the difference (a log price ratio, for cost per request).
    """

    def __init__(
        self,
        alpha: float = 0.05,
        tau: float = 0.2,
        *,
        proportion: bool = False,
        min_count: int = 100,
        margin: float = 0.0,
        equivalence: float = 0.0,
        shift: float = 0.0,
    ) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if not tau > 0:
            raise ValueError(f"tau (the mixture scale) must be > 0, got {tau}")
        self.alpha = alpha
        self.tau = tau
        self.proportion = proportion
        self.min_count = max(2, min_count)
        self.margin = margin
        self.equivalence = equivalence
        self.shift = shift
        self.control = Moments()
        self.variant = Moments()
        self._p_value = 1.0
        self._bounds: Bounds | None = None

    def update(self, control: Moments, variant: Moments) -> None:
        """Add one window of each arm's observations."""
        self.control = self.control + control
        self.variant = self.variant + variant
        self._bounds = self._compute()

    def bounds(self) -> Bounds | None:
        """The current confidence sequence, or ``None`` before ``min_count`` per arm."""
        return self._bounds

    def decision(self) -> Direction:
        """Where the difference is, with the test's confidence, as of the last update."""
        b = self._bounds
        if b is None:
            return "continue"
        if b.low > self.margin:
            return "higher"
        if b.high < -self.margin:
            return "lower"
        if self.equivalence > 0 and -self.equivalence < b.low and b.high < self.equivalence:
            return "equivalent"
        return "continue"

    def _compute(self) -> Bounds | None:
        a, b = self.control, self.variant
        if min(a.n, b.n) < self.min_count:
            return None
        variance = self._arm_variance(a) / a.n + self._arm_variance(b) / b.n
        v, t2 = max(variance, _MIN_VARIANCE), self.tau**2
        estimate = b.mean - a.mean + self.shift
        log_lr = 0.5 * math.log(v / (v + t2)) + t2 * estimate**2 / (2 * v * (v + t2))
        self._p_value = min(self._p_value, math.exp(-log_lr) if log_lr > 0 else 1.0)
        radius = math.sqrt(
            v * (v + t2) / t2 * (2 * math.log(1 / self.alpha) + math.log((v + t2) / v))
        )
        return Bounds(estimate, estimate - radius, estimate + radius, self._p_value, a.n, b.n)

    def _arm_variance(self, m: Moments) -> float:
        if self.proportion:
            p = (m.total + 0.5) / (m.n + 1)
            return p * (1 - p)
        return m.variance


@dataclass(frozen=True, slots=True)
class ArmWindow:
    """One arm's figures over one window, as :class:`ExperimentTest` reads them.

    ``log_latency`` holds the natural log of every latency (ms); ``above_p95`` and
    ``above_p99`` count the requests above the control's baseline p95 and p99 (fixed when
    the experiment starts; see :class:`ExperimentTest`), ``None`` while unknown.
    """

    requests: int
    errors: int
    log_latency: Moments
    above_p95: int | None = None
    above_p99: int | None = None


@dataclass(frozen=True, slots=True)
class TestDesign:
    """Levels, mixture scales and margins of an experiment's tests.

    Parameters
    ----------
    alpha
        Error level of the primary metric, split over the variants (Bonferroni).
    guardrail_alpha
        Error level of each guardrail, split over the variants.
    tau_log, tau_rate
        Mixture scales for differences of mean log latency (0.2: about 20%) and of
        proportions (0.02: two percentage points).
    min_requests
        Requests each arm needs before any decision.
    equivalence_log, equivalence_rate
        Differences too small to act on: a primary metric whose interval lies within them is
        rejected as no better (0.05: 5% of latency or cost; half a percentage point of the
        share above p95).
    error_margin, p99_margin
        Harm a guardrail tolerates before aborting: the variant's error rate (resp. share of
        requests above the control's p99) may exceed control's by at most this much.
    """

    __test__ = False  # not a pytest test class, despite the name

    alpha: float = 0.05
    guardrail_alpha: float = 0.05
    tau_log: float = 0.2
    tau_rate: float = 0.02
    min_requests: int = 200
    equivalence_log: float = 0.05
    equivalence_rate: float = 0.005
    error_margin: float = 0.005
    p99_margin: float = 0.01


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`ExperimentTest.decision` says: the outcome, the arm concerned, and why."""

    outcome: Outcome
    arm: str = ""
    reason: str = ""


@dataclass
class _VariantTests:
    primary: MixtureSPRT
    errors: MixtureSPRT
    p99: MixtureSPRT
    figures: dict[str, float] = field(default_factory=dict)


class ExperimentTest:
    """The primary metric and guardrails of every variant against control, over time.

    ``update(control, variants, now)`` adds one window; :meth:`decision` then says:

    - ``abort`` (that variant) when a guardrail shows it harmful: its error rate, or its share
      of requests above the control's p99, higher than control's by more than the margin;
    - ``promote`` the variant whose primary metric is lower than control's (the best
      estimate when several are), unless a guardrail's estimate is past its margin (then
      the test goes on until the guardrail is decided one way or the other);
    - ``reject`` once every variant is either worse or equivalent to control;
    - ``expire`` at ``max_duration_s`` after ``started_ts`` with nothing decided;
    - ``continue`` otherwise.

    The primary metrics: ``mean_latency`` tests the mean log latency (the geometric mean,
    robust to a heavy tail where the plain mean's variance is not); ``cost_per_request`` the
    same plus the log of the arm's price per request-slot relative to control (``shifts``);
    ``p95_latency`` the share of requests above the control's baseline p95.

    >>> rng = np.random.default_rng(7)
    >>> test = ExperimentTest("mean_latency", ["slow"], started_ts=0, max_duration_s=600)
    >>> def window(ms, n=300):
    ...     lat = rng.lognormal(np.log(ms), 0.4, n)
    ...     return ArmWindow(n, 0, Moments.of(np.log(lat)), int((lat > 38.6).sum()),
    ...                      int((lat > 50.7).sum()))
    >>> for t in range(10):
    ...     test.update(window(20), {"slow": window(200)}, now=10.0 * t)
    ...     if test.decision().outcome != "continue":
    ...         break
    >>> test.decision().outcome, test.decision().arm
    ('abort', 'slow')
    """

    def __init__(
        self,
        primary: PrimaryMetric,
        variants: Iterable[str],
        *,
        started_ts: float,
        max_duration_s: float,
        design: TestDesign | None = None,
        shifts: Mapping[str, float] | None = None,
    ) -> None:
        self.primary = primary
        self.design = d = design or TestDesign()
        self.started_ts = started_ts
        self.max_duration_s = max_duration_s
        self.last_ts = started_ts
        names = list(variants)
        if not names:
            raise ValueError("an experiment needs at least one variant besides control")
        k = len(names)
        proportion = primary == "p95_latency"

        def guardrail(margin: float) -> MixtureSPRT:
            return MixtureSPRT(
                d.guardrail_alpha / k,
                d.tau_rate,
                proportion=True,
                min_count=d.min_requests,
                margin=margin,
            )

        self.tests = {
            name: _VariantTests(
                primary=MixtureSPRT(
                    d.alpha / k,
                    d.tau_rate if proportion else d.tau_log,
                    proportion=proportion,
                    min_count=d.min_requests,
                    equivalence=d.equivalence_rate if proportion else d.equivalence_log,
                    shift=(shifts or {}).get(name, 0.0) if primary == "cost_per_request" else 0.0,
                ),
                errors=guardrail(d.error_margin),
                p99=guardrail(d.p99_margin),
            )
            for name in names
        }
        self.requests = {"control": 0, **dict.fromkeys(names, 0)}

    def update(self, control: ArmWindow, variants: Mapping[str, ArmWindow], now: float) -> None:
        """Add one window: control's figures and each variant's (a missing variant: none)."""
        self.last_ts = max(self.last_ts, now)
        self.requests["control"] += control.requests
        empty = ArmWindow(0, 0, Moments())
        for name, tests in self.tests.items():
            variant = variants.get(name, empty)
            self.requests[name] += variant.requests
            tests.errors.update(
                Moments.of_count(control.requests, control.errors),
                Moments.of_count(variant.requests, variant.errors),
            )
            n_c, n_v = control.log_latency.n, variant.log_latency.n
            if control.above_p99 is not None and variant.above_p99 is not None:
                tests.p99.update(
                    Moments.of_count(n_c, control.above_p99),
                    Moments.of_count(n_v, variant.above_p99),
                )
            if self.primary == "p95_latency":
                if control.above_p95 is not None and variant.above_p95 is not None:
                    tests.primary.update(
                        Moments.of_count(n_c, control.above_p95),
                        Moments.of_count(n_v, variant.above_p95),
                    )
            else:
                tests.primary.update(control.log_latency, variant.log_latency)
            tests.figures = _figures(tests)

    def figures(self, arm: str) -> dict[str, float]:
        """The evidence about ``arm`` against control: estimates, intervals, p-values."""
        return dict(self.tests[arm].figures)

    def decision(self) -> Verdict:
        """The outcome as of the last update (see the class docstring)."""
        for name, tests in self.tests.items():
            for label, test in (("error rate", tests.errors), ("share above p99", tests.p99)):
                if test.decision() == "higher":
                    b = test.bounds()
                    assert b is not None
                    return Verdict(
                        "abort",
                        name,
                        f"guardrail {label}: {name} - control = {b.estimate:+.4f} "
                        f"(always-valid interval [{b.low:+.4f}, {b.high:+.4f}], "
                        f"above the margin {test.margin:+.4f})",
                    )
        better = {
            n: t.primary
            for n, t in self.tests.items()
            if t.primary.decision() == "lower" and not _harm_seen(t)
        }
        if better:
            estimates = {n: t.bounds() for n, t in better.items()}
            name = min(estimates, key=lambda n: estimates[n].estimate)  # type: ignore[union-attr]
            b = estimates[name]
            assert b is not None
            return Verdict(
                "promote",
                name,
                f"{self.primary}: {name} - control = {b.estimate:+.4f} "
                f"(always-valid interval [{b.low:+.4f}, {b.high:+.4f}], below 0; "
                f"p = {b.p_value:.2g})",
            )
        verdicts = {n: t.primary.decision() for n, t in self.tests.items()}
        if all(v in ("higher", "equivalent") for v in verdicts.values()):
            parts = []
            for name, verdict in verdicts.items():
                b = self.tests[name].primary.bounds()
                assert b is not None
                what = "worse" if verdict == "higher" else "no better by a size that matters"
                parts.append(f"{name} {what} ([{b.low:+.4f}, {b.high:+.4f}])")
            return Verdict("reject", "", f"{self.primary}: " + "; ".join(parts))
        if self.last_ts - self.started_ts >= self.max_duration_s:
            return Verdict(
                "expire",
                "",
                f"no decision within {self.max_duration_s:.0f} s "
                f"({sum(self.requests.values()):,} requests)",
            )
        return Verdict("continue")


def _harm_seen(tests: _VariantTests) -> bool:
    """A guardrail's estimate is past its margin: not proven harmful yet, not promotable."""
    for test in (tests.errors, tests.p99):
        b = test.bounds()
        if b is not None and b.estimate > test.margin:
            return True
    return False


def _figures(tests: _VariantTests) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, test in (("primary", tests.primary), ("errors", tests.errors), ("p99", tests.p99)):
        b = test.bounds()
        if b is not None:
            out |= {
                f"{label}.estimate": b.estimate,
                f"{label}.low": b.low,
                f"{label}.high": b.high,
                f"{label}.p_value": b.p_value,
            }
    return out
