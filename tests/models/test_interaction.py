"""Shards must separate what an interaction of two arrival features decides."""

from __future__ import annotations

import math
import random

from shardshape.core.contracts import RequestEvent
from shardshape.models.evaluate import eta2, evaluate_profiles

START = 1_700_000_000.0


def _interaction_stream(n: int, seed: int = 0) -> tuple[list[RequestEvent], list[int]]:
    """Latency slow (2 s) exactly when ``tier`` is "gold" xor ``steps`` is 50, else fast
    (50 ms): each feature alone says nothing about it, so no linear model of the two does.
    Every request comes from a user drawn from 5,000, so key history says little."""
    rng = random.Random(seed)
    events, truth = [], []
    for i in range(n):
        tier = rng.choice(("gold", "basic"))
        steps = rng.choice((10, 50))
        slow = (tier == "gold") != (steps == 50)
        latency = (2_000.0 if slow else 50.0) * math.exp(rng.gauss(0.0, 0.2))
        events.append(
            RequestEvent(
                request_id=str(i),
                ts=START + i * 0.5,
                service="svc",
                request_type="POST /render",
                user_id=f"u{rng.randrange(5_000)}",
                payload_bytes=1_000.0,
                latency_ms=latency,
                attributes={"tier": tier, "steps": steps},
            )
        )
        truth.append(int(slow))
    return events, truth


def test_shards_separate_an_interaction_of_two_arrival_features() -> None:
    events, truth = _interaction_stream(12_000)
    after = events[6_000].ts
    out = evaluate_profiles(events, after)
    scored = [e for e in events if e.ts >= after]
    y = [math.log(e.latency_ms) for e in scored]
    true_eta2 = eta2(y, truth[6_000:])
    assert true_eta2 > 0.9
    assert out["eta2_predicted_shard"] >= true_eta2 - 0.05, (out, true_eta2)
