"""In-process shard pools: queues that reject fast, memory admission, isolation, live resizing,
I/O-weighted sharing, experiments, and plans applied from another thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest

from shardshape.allocator.arms import ArmAssigner
from shardshape.allocator.lending import LendingPolicy
from shardshape.core.contracts import Arm, ArmOverrides, CachePolicy, Experiment
from shardshape.gateway.limits import PoolDefaults
from shardshape.gateway.pools import PoolKey, ShardPools, ShardRejected
from shardshape.gateway.prometheus import GatewayMetrics
from shardshape.gateway.status import in_process_status
from tests.gateway.holding import Held, settle
from tests.support.exposition import labelled, samples
from tests.support.plans import plan, shard


async def test_a_full_queue_rejects_at_once_with_a_retry_hint() -> None:
    pools = ShardPools()
    pools.apply(plan(1, shard(1, concurrency=1, queue=1)))
    holder, queued = Held(pools, 1), Held(pools, 1)
    await settle()
    assert holder.admitted and not queued.admitted
    with pytest.raises(ShardRejected) as caught:
        await asyncio.wait_for(pools.slot(1).__aenter__(), 0.5)
    assert caught.value.reason == "queue_full"
    assert caught.value.pool == "shard 1"
    assert 0 < caught.value.retry_after_s <= 60
    assert "queue size 1" in str(caught.value)
    assert pools.state(1).rejected == {"queue_full": 1}
    await holder.release()
    await queued.release()
    assert pools.state(1).completed == 2


async def test_a_queue_timeout_rejects_and_leaves_the_queue_empty() -> None:
    pools = ShardPools()
    pools.apply(plan(1, shard(1, concurrency=1, queue=4, timeout_ms=100)))
    holder = Held(pools, 1)
    await settle()
    started = time.monotonic()
    with pytest.raises(ShardRejected) as caught:
        async with pools.slot(1):
            pass
    waited = time.monotonic() - started
    assert caught.value.reason == "queue_timeout"
    assert 0.09 <= waited < 1.0
    state = pools.state(1)
    assert (state.queued, state.in_use, state.rejected) == (0, 1, {"queue_timeout": 1})
    await holder.release()


async def test_memory_admission_waits_for_room_and_rejects_what_can_never_fit() -> None:
    pools = ShardPools()
    pools.apply(plan(1, shard(1, concurrency=8, memory_mib=100, timeout_ms=5_000)))
    with pytest.raises(ShardRejected) as caught:
        async with pools.slot(1, expected_memory_mib=150):
            pass
    assert caught.value.reason == "memory"
    assert "150 MiB" in str(caught.value) and "100 MiB" in str(caught.value)
    big = Held(pools, 1, memory=60)
    await settle()
    second, small = Held(pools, 1, memory=60), Held(pools, 1, memory=10)
    await settle()
    # Slots are free, memory is not: the second waits, and the small one waits behind it (FIFO).
    assert big.admitted and not second.admitted and not small.admitted
    assert pools.state(1).memory_in_use_mib == 60
    await big.release()
    await settle()
    assert second.admitted and small.admitted
    assert pools.state(1).memory_in_use_mib == 70
    await second.release()
    await small.release()
    assert pools.state(1).memory_in_use_mib == 0


async def test_an_overloaded_shard_cannot_take_another_shards_slots() -> None:
    pools = ShardPools(PoolDefaults(concurrency=2))
    pools.apply(plan(1, shard(0, concurrency=2), shard(1, concurrency=2, queue=2)))
    heavy = [Held(pools, 1) for _ in range(4)]
    await settle()
    with pytest.raises(ShardRejected):
        async with pools.slot(1):
            pass
    light = [Held(pools, 0) for _ in range(2)]
    unknown = Held(pools, 9)  # a shard the plan does not know: the default pool
    await settle()
    assert all(h.admitted for h in light) and unknown.admitted
    assert unknown.slot.pool.name == "default"
    assert [pools.state(0).in_use, pools.state(1).in_use, pools.state(1).queued] == [2, 2, 2]
    for held in [*light, unknown, *heavy]:
        await held.release()


async def test_a_busy_shard_borrows_idle_slots_and_the_lender_keeps_its_reserve() -> None:
    pools = ShardPools(PoolDefaults(concurrency=1), lending=LendingPolicy(reserve_fraction=0.25))
    pools.apply(
        plan(
            1,
            shard(1, concurrency=1, queue=4, priority=100),
            shard(2, concurrency=4, priority=100),  # reserve: floor(0.25 * 4) = 1 slot
        )
    )
    busy = [Held(pools, 1) for _ in range(5)]  # its own slot, 3 of shard 2's, the default's
    queued = Held(pools, 1)
    await settle()
    assert all(h.admitted for h in busy) and not queued.admitted
    lenders = Counter(h.slot.lender.name for h in busy if h.slot.lender is not None)
    assert lenders == {"shard 2": 3, "default": 1}
    assert all(h.slot.pool.name == "shard 1" for h in busy)  # its own cache and counts
    two = pools.state(2)
    assert (two.in_use, two.lent) == (3, 3)
    assert (pools.state(1).in_use, pools.state(1).borrowed, pools.state(1).queued) == (1, 4, 1)
    # Operators see it on the status page and in /metrics.
    assert (in_process_status(two).lent, in_process_status(pools.state(1)).borrowed) == (3, 4)
    exposed = samples(GatewayMetrics("shop", pools).exposition().decode())
    assert (
        exposed[("shardshape_gateway_pool_lent_total", labelled(pool="shard 2", service="shop"))]
        == 3
    )
    assert (
        exposed[
            ("shardshape_gateway_pool_borrowed_total", labelled(pool="shard 1", service="shop"))
        ]
        == 4
    )
    own = Held(pools, 2)  # the lender's own arrival takes the slot it kept
    await settle()
    assert own.admitted and own.slot.lender is None and pools.state(2).in_use == 4
    lent_by_two = [h for h in busy if h.slot.lender is not None and h.slot.lender.name == "shard 2"]
    await lent_by_two[0].release()  # shard 2 has one idle slot again: its reserve, not lent
    await settle()
    assert not queued.admitted and pools.state(2).in_use == 3
    await own.release()  # two idle: one beyond the reserve goes to the waiting request
    await settle()
    assert queued.admitted and queued.slot.lender.name == "shard 2"
    assert pools.state(2).in_use == 3
    for held in [*busy, queued]:
        if not held.task.done():
            await held.release()
    assert [pools.state(s).in_use for s in (1, 2, None)] == [0, 0, 0]
    assert pools.state(1).completed == 6


async def test_a_higher_priority_shard_lends_nothing_to_a_lower_one() -> None:
    policy = LendingPolicy(reserve_fraction=0, to_lower=False)
    pools = ShardPools(PoolDefaults(concurrency=1), lending=policy)
    pools.apply(
        plan(
            1,
            shard(1, concurrency=1, queue=2, priority=100),
            shard(3, concurrency=4, queue=2, priority=200),
        )
    )
    unknown = Held(pools, 9)  # takes the default pool's one slot
    low = [Held(pools, 1) for _ in range(2)]
    await settle()
    assert unknown.admitted and low[0].admitted and not low[1].admitted
    assert pools.state(3).in_use == 0  # idle, but of a higher priority
    high = [Held(pools, 3) for _ in range(5)]  # four of its own; the fifth finds none to borrow
    await settle()
    assert sum(h.admitted for h in high) == 4  # shard 1 has no idle slot to lend
    await low[0].release()  # shard 1's slot goes to its own waiter first
    await settle()
    assert low[1].admitted and low[1].slot.lender is None
    for held in [unknown, low[1], *high]:
        await held.release()


async def test_lending_to_lower_priority_still_keeps_the_lenders_reserve() -> None:
    policy = LendingPolicy(reserve_fraction=0.25, to_lower=True)
    pools = ShardPools(PoolDefaults(concurrency=1), lending=policy)
    pools.apply(plan(1, shard(3, concurrency=4, priority=200)))
    unknown = [Held(pools, 9) for _ in range(5)]  # the default pool's one slot, then borrow
    await settle()
    assert [h.admitted for h in unknown] == [True] * 4 + [False]
    assert (pools.state(3).in_use, pools.state(3).lent) == (3, 3)  # one kept for its own
    own = Held(pools, 3)
    await settle()
    assert own.admitted and own.slot.lender is None
    for held in [*unknown, own]:
        await held.release()


async def test_without_lending_a_busy_shard_waits_beside_idle_slots() -> None:
    pools = ShardPools(PoolDefaults(concurrency=4))
    pools.apply(plan(1, shard(1, concurrency=1, queue=2), shard(2, concurrency=4)))
    held, waiting = Held(pools, 1), Held(pools, 1)
    await settle()
    assert held.admitted and not waiting.admitted
    assert (pools.state(2).in_use, pools.state(2).lent, pools.state(1).borrowed) == (0, 0, 0)
    await held.release()
    await waiting.release()


async def test_shrinking_lets_in_flight_requests_finish_then_admits_below_the_new_limit() -> None:
    pools = ShardPools()
    pools.apply(plan(1, shard(1, concurrency=8, timeout_ms=5_000)))
    running = [Held(pools, 1) for _ in range(8)]
    await settle()
    pools.apply(plan(2, shard(1, concurrency=2, timeout_ms=5_000)))
    late = Held(pools, 1)
    await settle()
    assert pools.state(1).in_use == 8 and not late.admitted
    for held in running[:6]:
        await held.release()
    await settle()
    assert pools.state(1).in_use == 2 and not late.admitted
    await running[6].release()
    await settle()
    assert late.admitted
    for held in (running[7], late):
        await held.release()
    assert all(not h.task.exception() for h in [*running, late])


async def test_a_grown_pool_admits_its_queue_at_once() -> None:
    pools = ShardPools()
    pools.apply(plan(1, shard(1, concurrency=1, timeout_ms=5_000)))
    held = [Held(pools, 1) for _ in range(4)]
    await settle()
    assert sum(h.admitted for h in held) == 1
    pools.apply(plan(2, shard(1, concurrency=4, timeout_ms=5_000)))
    await settle()
    assert all(h.admitted for h in held)
    for h in held:
        await h.release()


async def test_a_retired_shard_drains_while_new_requests_go_to_the_default_pool() -> None:
    pools = ShardPools()
    pools.apply(plan(1, shard(1, concurrency=1, timeout_ms=5_000)))
    running, queued = Held(pools, 1), Held(pools, 1)
    await settle()
    pools.apply(plan(2, shard(0, concurrency=1)))
    newcomer = Held(pools, 1)
    await settle()
    assert newcomer.admitted and newcomer.slot.pool.name == "default"
    draining = [s for s in pools.states() if s.draining]
    assert [(s.name, s.in_use, s.queued) for s in draining] == [("shard 1", 1, 1)]
    await running.release()
    await settle()
    assert queued.admitted and queued.slot.pool.key == PoolKey(1)
    await queued.release()
    await newcomer.release()
    assert not any(s.draining for s in pools.states())
    assert pools.state(1) is None


async def test_a_cancelled_waiter_leaves_neither_a_queue_entry_nor_a_slot() -> None:
    pools = ShardPools()
    pools.apply(plan(1, shard(1, concurrency=1, timeout_ms=5_000)))
    holder, waiter = Held(pools, 1), Held(pools, 1)
    await settle()
    waiter.task.cancel()
    await settle()
    assert pools.state(1).queued == 0
    await holder.release()
    after = Held(pools, 1)
    await settle()
    assert after.admitted and pools.state(1).in_use == 1
    await after.release()
    assert pools.state(1).in_use == 0


async def test_io_weight_shares_a_bound_budget_in_proportion_without_starving_anyone() -> None:
    pools = ShardPools(total_slots=1)
    pools.apply(
        plan(
            1,
            shard(1, concurrency=8, queue=50, timeout_ms=10_000, io_weight=300),
            shard(2, concurrency=8, queue=50, timeout_ms=10_000, io_weight=100),
        )
    )
    order: list[int] = []

    async def one(shard_id: int) -> None:
        async with pools.slot(shard_id):
            order.append(shard_id)
            await asyncio.sleep(0)

    blocker = Held(pools, 2)
    await settle()
    tasks = [asyncio.create_task(one(s)) for s in [1] * 16 + [2] * 16]
    await settle()
    assert pools.state(1).queued == 16 and pools.state(2).queued == 16  # all wait for the budget
    await blocker.release()
    await asyncio.gather(*tasks)
    assert 11 <= Counter(order[:16])[1] <= 13, order  # weight 300 against 100: 3 grants in 4
    longest_wait = max(len(run) for run in "".join(map(str, order)).split("2"))
    assert longest_wait <= 4, order  # and the lighter shard is served all along
    assert sorted(Counter(order).values()) == [16, 16]


async def test_shaping_off_runs_every_shard_in_one_pool_with_the_plans_total() -> None:
    pools = ShardPools(shaping=False)
    pools.apply(plan(1, shard(0, concurrency=2, queue=3), shard(1, concurrency=3, queue=4)))
    held = [Held(pools, 1) for _ in range(5)]
    await settle()
    assert all(h.admitted for h in held)
    assert {h.slot.pool.name for h in held} == {"shared"}
    light = Held(pools, 0)  # shard 0 has no slots of its own any more: it waits
    await settle()
    assert not light.admitted
    (state,) = pools.states()
    assert (state.limits.concurrency, state.limits.queue_size, state.queued) == (5, 7, 1)
    for h in [*held, light]:
        await h.release()


async def test_experiment_arms_get_their_own_pools_and_keep_a_key_on_one_arm() -> None:
    experiment = Experiment(
        experiment_id="cache-b",
        shard_id=2,
        arms=[
            Arm(name="a", weight=0.5),
            Arm(
                name="b",
                weight=0.5,
                overrides=ArmOverrides(concurrency=1, cache=CachePolicy(policy="lfu", size=10)),
            ),
        ],
    )
    pools = ShardPools()
    pools.apply(
        plan(
            1,
            shard(2, concurrency=8, cache=CachePolicy(policy="lru", size=100)),
            experiments=(experiment,),
        )
    )
    arms = Counter()
    assigner = ArmAssigner(experiment)  # what every other gateway and the planner compute
    for user in range(200):
        async with pools.slot(2, key=f"u{user}") as slot:
            arms[slot.arm] += 1
            first = slot.arm
        async with pools.slot(2, key=f"u{user}") as slot:
            assert slot.arm == first == assigner.pick(f"u{user}")
    assert 60 <= arms["a"] <= 140 and arms["a"] + arms["b"] == 200
    async with pools.slot(2) as slot:  # no key: an arm all the same
        assert slot.arm in {"a", "b"}
    a, b = pools.state(2, "a"), pools.state(2, "b")
    assert (a.limits.concurrency, a.limits.cache.policy, a.limits.cache.size) == (4, "lru", 50)
    assert (b.limits.concurrency, b.limits.cache.policy) == (1, "lfu")


async def test_a_plan_applied_from_another_thread_changes_pools_on_the_event_loop() -> None:
    pools = ShardPools()
    pools.apply(plan(1, shard(1, concurrency=1, timeout_ms=5_000)))
    holder, waiter = Held(pools, 1), Held(pools, 1)
    await settle()
    caller = threading.Thread(target=pools.apply, args=(plan(2, shard(1, concurrency=2)),))
    caller.start()
    caller.join()
    # The other thread returned, yet nothing changed under the loop's feet...
    assert pools.plan_version == 1 and not waiter.admitted
    await settle()
    # ...until the loop ran the change, which also admitted the waiter.
    assert pools.plan_version == 2 and waiter.admitted
    await holder.release()
    await waiter.release()


def test_pools_serve_one_event_loop_after_another() -> None:
    pools = ShardPools()

    async def once() -> str:
        async with pools.slot(0) as slot:
            return slot.pool.name

    assert asyncio.run(once()) == asyncio.run(once()) == "default"


# -- waiting requests by predicted shard (what queue reports send the planner) -------------


async def test_waiting_requests_count_under_their_predicted_shard_until_they_leave() -> None:
    pools = ShardPools(PoolDefaults(concurrency=1, queue_size=8, queue_timeout_s=30))
    pools.apply(
        plan(
            1,
            shard(1, concurrency=1, queue=8, timeout_ms=30_000),
            shard(2, concurrency=1, queue=8, timeout_ms=50),
        )
    )
    running = [Held(pools, 1), Held(pools, 2), Held(pools, 5)]  # shard 5: unknown, default pool
    await settle()
    waiting = {
        "granted": Held(pools, 1),
        "cancelled": Held(pools, 1),
        "expires": Held(pools, 2),
        "default 5": Held(pools, 5),
        "default 6": Held(pools, 6),
    }
    await settle()
    assert all(h.admitted for h in running) and not any(h.admitted for h in waiting.values())
    assert pools.state(None).queued == 2  # shards 5 and 6 wait in the default pool ...
    counts = await asyncio.to_thread(pools.queued_by_shard)  # (read from another thread)
    assert counts == {1: 2, 2: 1, 5: 1, 6: 1}  # ... and count as their own shards
    counts[1] = 99
    assert pools.queued_by_shard()[1] == 2, "a copy"

    with pytest.raises(ShardRejected, match="queue_timeout"):
        await waiting["expires"].task
    waiting["cancelled"].task.cancel()
    await settle()
    assert pools.queued_by_shard() == {1: 1, 5: 1, 6: 1}
    await running[0].release()
    await settle()
    assert waiting["granted"].admitted and pools.queued_by_shard() == {5: 1, 6: 1}
    await running[2].release()
    await settle()
    assert pools.queued_by_shard() == {6: 1}
    await waiting["default 5"].release()
    await settle()
    assert pools.queued_by_shard() == {}
    for held in (running[1], waiting["granted"], waiting["default 6"]):
        await held.release()
    assert pools.queued_by_shard() == {}


async def test_arm_and_shared_pool_waiters_count_under_their_predicted_shard() -> None:
    experiment = Experiment(
        experiment_id="halves",
        shard_id=2,
        arms=[Arm(name="a", weight=0.5), Arm(name="b", weight=0.5)],
    )
    arms = ShardPools()
    arms.apply(plan(1, shard(2, concurrency=2, queue=8), experiments=(experiment,)))
    held = [Held(arms, 2, key=f"u{user}") for user in range(6)]  # one slot per arm
    await settle()
    admitted = sum(h.admitted for h in held)
    assert admitted == 2 and arms.queued_by_shard() == {2: 6 - admitted}

    shared = ShardPools(shaping=False)
    shared.apply(plan(1, shard(0, concurrency=1, queue=8)))
    others = [Held(shared, 0), Held(shared, 0), Held(shared, 3), Held(shared, 3)]
    await settle()
    assert others[0].admitted and shared.queued_by_shard() == {0: 1, 3: 2}
    for h in [*held, *others]:
        await h.release()
    assert arms.queued_by_shard() == shared.queued_by_shard() == {}
