"""Plans on the real broker while load moves: a real worker profiles the requests, learns shard
metrics, forecasts and plans one pool that two services share; the test sends the load and
reads the plans topic.

One shop behaviour ramps up while another winds down, and a batch service (``exports``) keeps
asking for more than the pool has left. Requests are paced in real time (the metric windows
are keyed by the message timestamp and closed on the worker's clock), 10 s windows.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shardshape.allocator.pools_config import load_pools_config
from shardshape.core.contracts import (
    SNAPSHOT_KEY_PREFIX,
    AllocationPlan,
    RequestEvent,
    RoutingEntry,
    ShardSpec,
    decode,
)
from shardshape.core.settings import Settings
from shardshape.infra.topics import create_topics
from shardshape.models.features import profile_key
from shardshape.streams.replay import replay
from tests.support.exposition import samples
from tests.support.polling import wait_until
from tests.support.workers import Worker, following, messages_on, worker

WINDOW_S = 10.0
WARMUP, RAMP, PLATEAU = 4, 8, 3  # windows: steady, ramping, at the peak
LOW_RPS, PEAK_RPS = 5.0, 120.0

POOLS = """
[block_types.small]
cpu_millicores = 250
memory_mib = 256
concurrency = 4
cost = 1.0

[block_types.large]
cpu_millicores = 1000
memory_mib = 1024
concurrency = 16
cost = 3.5

[pools.main]
blocks = { small = 24, large = 6 }

[planning]
forecast_quantile = 0.9
target_utilisation = 0.7
min_interval_s = 30

[services.shop]
pool = "main"
priority = 100
min_blocks = 1
prior_rps_per_core = 100

[services.exports]
pool = "main"
priority = 50
min_blocks = 0
target_utilisation = 0.85
prior_rps_per_core = 5
"""


@dataclass(frozen=True)
class Behaviour:
    """Requests of one kind: who sends them, how long they take, how busy they keep a slot."""

    service: str
    request_type: str
    users: int
    latency_ms: float
    busy_ms: float

    def profile_keys(self) -> list[str]:
        return [
            profile_key(self.service, self.request_type, self._user(u)) for u in range(self.users)
        ]

    def _user(self, u: int) -> str:
        return f"{self.request_type.split()[-1].strip('/')}-{u}"

    def event(self, rng: random.Random, n: int, ts: float, active: int) -> RequestEvent:
        """The ``n``-th request of the run, from one of the first ``active`` users."""
        jitter = rng.uniform(0.9, 1.1)
        return RequestEvent(
            request_id=f"{self.request_type}-{n}",
            ts=ts,
            service=self.service,
            request_type=self.request_type,
            user_id=self._user(rng.randrange(active)),
            latency_ms=self.latency_ms * jitter,
            payload_bytes=500.0,
            response_bytes=2_000.0,
            attributes={"busy_ms": self.busy_ms * jitter},
        )


GROWING = Behaviour("shop", "GET /feed", users=200, latency_ms=100, busy_ms=100)
SHRINKING = Behaviour("shop", "POST /report", users=200, latency_ms=800, busy_ms=400)
EXPORTS = Behaviour("exports", "POST /export", users=100, latency_ms=3_000, busy_ms=2_000)


def _rates(window: int) -> dict[Behaviour, float]:
    """Requests/s of each behaviour in the ``window``-th window of the run."""
    progress = min(max(window - WARMUP, 0), RAMP) / RAMP
    return {
        GROWING: LOW_RPS + (PEAK_RPS - LOW_RPS) * progress,
        SHRINKING: PEAK_RPS - (PEAK_RPS - LOW_RPS) * progress,
        EXPORTS: 50.0,
    }


def _schedule(start: float) -> list[RequestEvent]:
    """Every request of the run, evenly spaced within each window, by time."""
    rng = random.Random(11)
    events = []
    for window in range(WARMUP + RAMP + PLATEAU):
        for behaviour, rps in _rates(window).items():
            # Load grows with the users, not with how often each calls: a key suddenly far
            # busier than any seen before is quarantined as anomalous, as it should be.
            active = max(5, round(behaviour.users * rps / PEAK_RPS))
            n = round(rps * WINDOW_S)
            for k in range(n):
                ts = start + (window + (k + 0.5) / n) * WINDOW_S
                events.append(behaviour.event(rng, len(events), ts, active))
    return sorted(events, key=lambda e: e.ts)


def _routes_into(routes: list[RoutingEntry]) -> Callable[[bytes | None, bytes | None], None]:
    """What keeps the routing entries of the routing topic's messages (not the snapshots)."""

    def keep(key: bytes | None, value: bytes | None) -> None:
        snapshot = key is None or key.startswith(SNAPSHOT_KEY_PREFIX.encode())
        if value is not None and not snapshot:
            routes.append(decode(RoutingEntry, value))

    return keep


def _learned_until(w: Worker) -> float:
    """Where the worker's planner is: the end of the newest window it learned."""
    with urllib.request.urlopen(f"http://127.0.0.1:{w.port}/metrics", timeout=20) as response:
        exposed = samples(response.read().decode())
    return exposed["shardshape_planner_learned_until_timestamp_seconds", ()]


def _shard_of(behaviour: Behaviour, routes: list[RoutingEntry], at: float) -> int:
    """The shard the worker routed the behaviour's keys to at time ``at`` (nine in ten)."""
    latest = {e.key: e.shard_id for e in routes if e.updated_ts <= at}
    shards = Counter(latest[k] for k in behaviour.profile_keys() if k in latest)
    assert shards, f"no routing entry for {behaviour.request_type}"
    shard, n = shards.most_common(1)[0]
    assert n >= 0.9 * shards.total(), f"{behaviour.request_type} keys are split: {shards}"
    return shard


def _spec(plan: AllocationPlan, shard_id: int) -> ShardSpec | None:
    return next((s for s in plan.shards if s.shard_id == shard_id), None)


def _blocks(spec: ShardSpec | None) -> int:
    return sum(spec.blocks.values()) if spec is not None else 0


@pytest.mark.slow
def test_plans_lead_a_ramp_release_a_decline_and_fit_the_pool(
    settings: Settings, tmp_path: Path
) -> None:
    pools_file = tmp_path / "pools.toml"
    pools_file.write_text(POOLS)
    config = load_pools_config(pools_file)
    pool = config.pools["main"].blocks
    settings = settings.model_copy(
        update={
            "pools_config": pools_file,
            "plan_window": "10s",
            "plan_horizon_s": 60.0,
            "snapshot_interval_s": 1.0,
            "max_shards": 2,  # two behaviours per service
        }
    )
    create_topics(settings)
    routes: list[RoutingEntry] = []  # as the worker publishes them
    with (
        following(settings, settings.topic_routing, _routes_into(routes)),
        worker(settings, tmp_path, "planner") as planner,
    ):
        start = (time.time() // WINDOW_S + 1) * WINDOW_S  # the next window boundary
        events = _schedule(start)
        time.sleep(max(0.0, start - time.time()))  # to a wall-clock window boundary
        sent: list = []
        sender = threading.Thread(
            target=lambda: sent.append(replay(
                events, settings.confluent_config(), settings.topic_requests,
                settings.requests_partitions, speed=1.0, gateway_id="gw-a",
            ))
        )  # fmt: skip
        sender.start()
        sender.join(WINDOW_S * (WARMUP + RAMP + PLATEAU) + 60)
        assert sent and sent[0].events == len(events), "the requests were not all sent in time"
        end = start + WINDOW_S * (WARMUP + RAMP + PLATEAU)
        # No window closes after the run's last one (windows hold events, and none come), so
        # the planner is done once it learned that one; Faust ends a window 0.1 s before the
        # next begins. Its plans of that tick are sent before the worker stops (SIGINT).
        wait_until(
            lambda: _learned_until(planner) >= end - 1.0,
            60,
            f"the planner learned the run's last window, ending at {end:.0f}",
            explain=planner.tail,
        )
        assert planner.process.poll() is None, planner.tail()
    plans = sorted(
        (decode(AllocationPlan, m.value()) for m in
         messages_on(settings, settings.topic_plans, settings.plans_partitions)),
        key=lambda p: (p.created_ts, p.service),
    )  # fmt: skip
    assert plans, planner.tail()

    # Which shard each shop behaviour is in when the ramp peaks, as the worker routes its keys.
    peak = start + WINDOW_S * (WARMUP + RAMP)
    growing = _shard_of(GROWING, routes, at=peak)
    shrinking = _shard_of(SHRINKING, routes, at=peak)
    assert growing != shrinking
    shop = [p for p in plans if p.service == "shop"]

    # The plan in force when the ramp peaks was published before the peak...
    in_force = [p for p in shop if p.created_ts <= peak][-1]
    spec = _spec(in_force, growing)
    assert spec is not None, in_force.rationale
    # ...and its slots serve the peak at the target utilisation (utilisation law: a slot
    # completes 1000 / busy_ms requests per second).
    capacity = spec.resources.concurrency * 1000.0 / GROWING.busy_ms
    target = config.shard_settings("shop", growing).target_utilisation
    planned = next(line for line in in_force.rationale.splitlines() if f"shard {growing}:" in line)
    print(f"\nplan v{in_force.version}, made {peak - in_force.created_ts:.1f} s before the peak: "
          f"shard {growing} {spec.blocks}, {spec.resources.concurrency} slots = {capacity:.0f} rps "
          f"x {target} = {capacity * target:.0f} rps for a peak of {PEAK_RPS:.0f} rps "
          f"(90%: {0.9 * PEAK_RPS:.0f}); the plan says: {planned}")  # fmt: skip
    slots = [spec.resources.concurrency if (spec := _spec(p, growing)) else 0 for p in shop]
    print(f"shard {growing} slots, plan by plan: {slots}")
    assert capacity * target >= 0.9 * PEAK_RPS, in_force.rationale

    # The shard winding down gave blocks back.
    held = [_blocks(_spec(p, shrinking)) for p in shop]
    print(f"shard {shrinking} blocks, plan by plan: {held}")
    assert held[-1] < max(held)

    # The two services together never hold more than the pool, plan after plan (the plans of
    # one tick share their created_ts).
    latest: dict[str, AllocationPlan] = {}
    most_used: Counter[str] = Counter()
    by_tick: dict[float, list[AllocationPlan]] = {}
    for plan in plans:
        by_tick.setdefault(plan.created_ts, []).append(plan)
    for _, group in sorted(by_tick.items()):
        latest.update({p.service: p for p in group})
        used: Counter[str] = Counter()
        for plan in latest.values():
            for s in plan.shards:
                used.update(s.blocks)
        assert all(used[t] <= pool[t] for t in used), (used, pool)
        most_used |= used
    print(
        f"{len(by_tick)} plans of {sorted(latest)}; most in use at once {dict(most_used)} of {pool}"
    )
    assert set(latest) == {"shop", "exports"}
    assert any(most_used[t] == n for t, n in pool.items()), "the pool never bound: nothing tested"
