"""The rolling evaluation of profiles: nothing is learned before it is predicted and done."""

from __future__ import annotations

import math

import pytest

from shardshape.models import evaluate
from shardshape.models.profiler import Profiler, ProfilerConfig
from shardshape.models.synthetic import SyntheticStream

DAY = 86_400.0
START = 1_700_006_400.0  # a midnight, UTC


class _Spy(Profiler):
    """A profiler that logs what it predicts (with the arrival time) and learns, in order."""

    def __init__(self, service: str = "shop", config: ProfilerConfig | None = None) -> None:
        super().__init__(service, config)
        self.log: list[tuple[str, str, float]] = []

    def predict_many(self, events):  # type: ignore[no-untyped-def]
        self.log += [("predict", e.request_id, e.ts) for e in events]
        return super().predict_many(events)

    def process_batch(self, events):  # type: ignore[no-untyped-def]
        self.log += [("learn", e.request_id, e.ts + e.latency_ms / 1000.0) for e in events]
        return super().process_batch(events)


def _three_days(n: int = 3_000):
    # Spread over three days, with latencies up to a minute so completions lag arrivals.
    events = list(SyntheticStream(seed=3).events(n))
    return [
        e.model_copy(update={"ts": START + i * 3 * DAY / n, "latency_ms": e.latency_ms * 4})
        for i, e in enumerate(events)
    ]


def test_the_rolling_evaluation_never_learns_an_event_before_predicting_it_or_before_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spies: list[_Spy] = []

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        spies.append(_Spy(*args, **kwargs))
        return spies[-1]

    monkeypatch.setattr(evaluate, "Profiler", spy)
    events = _three_days()
    out = evaluate.evaluate_profiles(events, START + DAY, rolling=True)
    (profiler,) = spies
    predicted_at: dict[str, int] = {}
    learned_at: dict[str, int] = {}
    for step, (what, request, _) in enumerate(profiler.log):
        (predicted_at if what == "predict" else learned_at).setdefault(request, step)
    assert len(predicted_at) == len(learned_at) == len(events)
    # The latest arrival predicted before each step, and the earliest after it.
    latest, earliest = [-math.inf], [math.inf]
    for what, _, ts in profiler.log:
        latest.append(max(latest[-1], ts) if what == "predict" else latest[-1])
    for what, _, ts in reversed(profiler.log):
        earliest.append(min(earliest[-1], ts) if what == "predict" else earliest[-1])
    earliest.reverse()
    for step, (what, request, done) in enumerate(profiler.log):
        if what != "learn":
            continue
        assert predicted_at[request] < step  # predicted at arrival, learned after
        # Every arrival predicted before the lesson came before the event was done, every
        # arrival after it came after: nothing of a later arrival's day leaks into it.
        assert latest[step] < done <= earliest[step + 1]
    days = out["rolling"]["days"]
    assert list(days) == ["2023-11-16", "2023-11-17"]  # the whole days from START + DAY on
    assert sum(d["events"] for d in days.values()) == out["evaluated_events"]
    values = [d["eta2_predicted_shard"] for d in days.values()]
    assert out["rolling"]["worst_eta2_predicted_shard"] == min(values)
    assert min(values) <= out["rolling"]["median_eta2_predicted_shard"] <= max(values)
    assert min(values) > 0.5  # the planted profiles are separated every day
    assert out["shard_churn"]["births"] >= 0 and "retirements_per_hour" in out["shard_churn"]
