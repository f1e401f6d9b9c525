"""An experiment end to end on the real broker: a real worker plans, the real gateway serves.

The example service (its own process: ShapingMiddleware, RoutingTable, AllocatorClient and
Reporter) serves ``GET /items/{id}`` to many users reading items of Zipf popularity; a miss
costs a 20 ms store read, a hit in the shard's cache nothing. The worker's pools config gives
the shard no cache, so every request reports a miss. The planner, with the worker's
``experiments_*`` settings, sees the low hit rate and proposes an LRU cache for a share of the
shard's users; the gateway splits users between the arms by hash and reports each request's arm
and whether the cache answered; the planner's sequential test promotes LRU in a later plan, and
the gateway then runs the whole shard with the promoted cache.

Nothing is injected: every plan comes from the worker, every request from the gateway.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
import pytest

from shardshape.allocator.arms import ArmAssigner
from shardshape.core.contracts import (
    AllocationPlan,
    Experiment,
    RequestEvent,
    decode,
    decode_requests,
)
from shardshape.core.follower import TopicFollower
from shardshape.core.metrics import CACHE_HIT_ATTRIBUTE
from shardshape.core.settings import Settings
from shardshape.gateway.status import STATUS_PATH, GatewayStatus
from shardshape.infra.topics import create_topics
from tests.support.polling import until
from tests.support.processes import settings_env
from tests.support.serving import example_server
from tests.support.workers import following, requests_on_topic, worker

pytestmark = [pytest.mark.slow, pytest.mark.broker]

POOLS = """
[block_types.small]
cpu_millicores = 500
memory_mib = 256
concurrency = 16
cost = 1.0

[pools.main]
blocks = { small = 8 }

[services.shop]
pool = "main"
min_blocks = 2
prior_rps_per_core = 100
"""
# What the worker's planner is told (SHARDSHAPE_EXPERIMENTS_*): propose after one window with a
# low hit rate; a variant gets 30% of the shard (the budget leaves room for it).
EXPERIMENTS = {"experiments_trigger_windows": "1", "experiments_budget": "0.5",
               "experiments_variant_weight": "0.3"}  # fmt: skip
VARIANT_WEIGHT = 0.3
USERS = 5_000  # each hashed to an arm: the split is over users
ITEMS = 5_000
ZIPF_S = 1.0
READ_MS = 20
RATE = 80.0  # requests/s the clients send together
CLIENTS = 8
AFTER_PROMOTION = 300  # requests of the shard reported under the promoted plan


class _Plans:
    """The plans topic as the worker publishes it, read by a follower thread."""

    def __init__(self, settings: Settings) -> None:
        self.plans: list[AllocationPlan] = []
        self._follower = TopicFollower(settings.confluent_config(), settings.topic_plans, self._on)

    def _on(self, key: bytes | None, value: bytes | None) -> None:
        if value is not None:
            self.plans.append(decode(AllocationPlan, value))

    def experiments(self) -> list[tuple[AllocationPlan, Experiment]]:
        return [(plan, e) for plan in list(self.plans) for e in plan.experiments]

    def __enter__(self) -> _Plans:
        self._follower.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._follower.stop()


class _Load:
    """Paced clients: each request from a random user, for an item of Zipf popularity."""

    def __init__(self, http: httpx.AsyncClient, seed: int = 5) -> None:
        rng = np.random.default_rng(seed)
        weights = 1.0 / np.arange(1, ITEMS + 1) ** ZIPF_S
        n = 100_000
        self._users = rng.integers(0, USERS, n).tolist()
        self._items = rng.choice(ITEMS, n, p=weights / weights.sum()).tolist()
        self._next = itertools.count()
        self.http = http
        self.answers: Counter[int | str] = Counter()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client()) for _ in range(CLIENTS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _client(self) -> None:
        interval = CLIENTS / RATE
        while not self._stop.is_set():
            started = time.monotonic()
            i = next(self._next) % len(self._users)
            try:
                response = await self.http.get(
                    f"/items/{self._items[i]}?read_ms={READ_MS}",
                    headers={"x-user-id": f"user-{self._users[i]}"},
                )
                self.answers[response.status_code] += 1
            except httpx.HTTPError as error:
                self.answers[type(error).__name__] += 1
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


def _of_shard_since(events: list[RequestEvent], shard_id: int, since_ts: float) -> int:
    """How many of ``events`` are of ``shard_id``, at or after ``since_ts``."""
    return sum(1 for e in list(events) if e.shard_id == shard_id and e.ts >= since_ts)


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-3_000:]}" for p in logs)


def _hit_rate(events: list[RequestEvent]) -> float:
    reported = [e.attributes[CACHE_HIT_ATTRIBUTE] for e in events
                if CACHE_HIT_ATTRIBUTE in e.attributes]  # fmt: skip
    assert reported, "no request reported whether the cache answered it"
    return sum(reported) / len(reported)


async def test_a_proposed_cache_is_split_by_weight_promoted_and_applied(
    settings: Settings, tmp_path: Path
) -> None:
    pools = tmp_path / "pools.toml"
    pools.write_text(POOLS)
    settings = settings.model_copy(
        update={
            "pools_config": pools,
            "plan_window": "10s",
            "plan_horizon_s": 30.0,
            "max_shards": 1,
            "snapshot_interval_s": 2.0,
        }
    )
    create_topics(settings)
    worker_log, service_log = tmp_path / "worker.log", tmp_path / "service.log"
    logs = [worker_log, service_log]
    began = time.monotonic()
    reported: list[RequestEvent] = []  # the requests topic's events, as they are read
    with (
        _Plans(settings) as topic,
        following(
            settings,
            settings.topic_requests,
            lambda _, value: reported.extend(decode_requests(value) if value is not None else ()),
        ),
        worker(settings, tmp_path, "worker", **EXPERIMENTS),
        example_server(settings_env(settings), service_log) as url,
    ):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            load = _Load(http)
            load.start()
            load_began = time.monotonic()

            # (a) The planner proposes a cache experiment on its own, on the one behaviour
            # shard there is (0; keys the worker quarantines go to shard 1).
            def proposed() -> list[tuple[AllocationPlan, Experiment]]:
                return [
                    (p, e)
                    for p, e in topic.experiments()
                    if e.status == "running" and e.shard_id == 0
                ]

            await until(proposed, 150, "a plan carrying a proposed experiment", every_s=0.5,
                        explain=lambda: _tails(logs))  # fmt: skip
            first_plan, experiment = proposed()[0]
            proposed_after = time.monotonic() - load_began

            # (c) A later plan carries the decision.
            def decided() -> list[tuple[AllocationPlan, Experiment]]:
                return [
                    (p, e)
                    for p, e in topic.experiments()
                    if e.experiment_id == experiment.experiment_id and e.decision is not None
                ]

            await until(decided, 150, "the experiment decided", every_s=0.5,
                        explain=lambda: _tails(logs))  # fmt: skip
            decision_plan, finished = decided()[0]
            decided_after = time.monotonic() - load_began

            # (d) The gateway applies the promoted cache to the whole shard.
            async def gateway_status() -> GatewayStatus:
                return GatewayStatus.model_validate_json((await http.get(STATUS_PATH)).content)

            async def promoted() -> bool:
                return (await gateway_status()).plan_version >= decision_plan.version

            await until(promoted, 60, f"the gateway on plan v{decision_plan.version}", every_s=0.2)
            applied_ts, shard_id = time.time(), experiment.shard_id
            await until(
                lambda: _of_shard_since(reported, shard_id, applied_ts) >= AFTER_PROMOTION,
                60,
                f"{AFTER_PROMOTION} requests of shard {shard_id} reported under the promoted "
                "plan", every_s=0.5, explain=lambda: _tails(logs),
            )  # fmt: skip
            gateway = await gateway_status()
            await load.stop()
        total_s = time.monotonic() - began
    events = [e for m in requests_on_topic(settings) for e in decode_requests(m.value())]

    # (a) A plan the worker published carries a running experiment it proposed: LRU for a
    # shard without a cache, with the weight the settings give.
    shard = experiment.shard_id
    assert experiment.reason.startswith("cache hit rate 0.00 below 0.50"), experiment.reason
    control, variant = experiment.arms
    assert control.name == "control" and variant.name.startswith("lru-")
    assert variant.weight == pytest.approx(VARIANT_WEIGHT)
    assert variant.overrides.cache is not None and variant.overrides.cache.policy == "lru"
    spec = next(s for s in first_plan.shards if s.shard_id == shard)
    assert spec.cache.policy == "none"

    # (b) The gateway split the shard's requests by the weights, sticky per user.
    arms = {control.name, variant.name}
    in_experiment = [e for e in events if e.shard_id == shard and e.arm in arms]
    per_arm = Counter(e.arm for e in in_experiment)
    share = per_arm[variant.name] / len(in_experiment)
    users_per_arm: dict[str, set[str]] = defaultdict(set)
    for e in in_experiment:
        users_per_arm[e.arm].add(e.user_id)
    assert not users_per_arm[control.name] & users_per_arm[variant.name], "a user changed arms"
    assigner = ArmAssigner(experiment)  # the hash every gateway uses: the split is over users
    assert all(assigner.pick(e.user_id) == e.arm for e in in_experiment)
    user_share = len(users_per_arm[variant.name]) / sum(len(u) for u in users_per_arm.values())

    # (c) The decision, with its evidence, is in a later plan.
    assert decision_plan.version > first_plan.version
    decision = finished.decision
    assert decision is not None and finished.status == "promoted", decision
    assert decision.arm == variant.name and decision.adopted is not None
    adopted = decision.adopted.cache
    assert adopted is not None and adopted.policy == "lru" and adopted.size >= 1
    evidence = {arm.arm: arm for arm in finished.evidence}
    assert evidence[control.name].requests >= 200 and evidence[variant.name].requests >= 200
    figures = evidence[variant.name].figures
    assert figures["primary.high"] < 0  # the whole always-valid interval below control
    assert figures["cache_hit_rate"] > evidence[control.name].figures["cache_hit_rate"]

    # (d) Afterwards the shard runs in one pool with the promoted cache, and it answers.
    promoted_spec = next(s for s in decision_plan.shards if s.shard_id == shard)
    assert promoted_spec.cache == adopted
    pools_now = [p for p in gateway.pools if p.shard_id == shard]
    assert [(p.arm, p.cache) for p in pools_now] == [(None, adopted)], pools_now
    after = [e for e in events if e.shard_id == shard and e.ts >= applied_ts]
    assert len(after) >= AFTER_PROMOTION and all(e.arm is None for e in after)
    before = [e for e in events if e.shard_id == shard and e.arm is None
              and e.ts < experiment.started_ts]  # fmt: skip
    assert _hit_rate(before) == 0.0  # no cache before the experiment
    assert _hit_rate(after) > 0.3
    assert set(load.answers) == {200}, load.answers

    print(
        f"\nexperiment {experiment.experiment_id} proposed in plan v{first_plan.version} "
        f"{proposed_after:.0f} s into the load; decided ({finished.status}) in plan "
        f"v{decision_plan.version} {decided_after:.0f} s in, "
        f"{decision.ts - experiment.started_ts:.0f} s after it started; "
        f"{sum(e.requests for e in finished.evidence):,} requests in the test: "
        f"{dict(per_arm)} -> variant share {share:.3f} of requests, {user_share:.3f} of "
        f"{sum(len(u) for u in users_per_arm.values()):,} users (weight {variant.weight}); "
        f"hit rate before {_hit_rate(before):.2f}, after {_hit_rate(after):.2f}; "
        f"reason: {decision.reason}; requests per shard "
        f"{dict(Counter(e.shard_id for e in events))}; run {total_s:.0f} s"
    )
    assert abs(share - VARIANT_WEIGHT) <= 0.05, per_arm
    assert abs(user_share - VARIANT_WEIGHT) <= 0.05
