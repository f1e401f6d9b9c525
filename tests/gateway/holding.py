"""Requests that hold a pool slot until the test lets go, for in-process pool tests."""

from __future__ import annotations

import asyncio

from shardshape.gateway.pools import ShardPools


class Held:
    """A request of ``shard_id`` that holds its slot until :meth:`release`."""

    def __init__(self, pools: ShardPools, shard_id: int, memory: float = 0.0, key: str = ""):
        self._release = asyncio.Event()
        self.slot = None
        self.task = asyncio.create_task(self._run(pools, shard_id, memory, key))

    async def _run(self, pools: ShardPools, shard_id: int, memory: float, key: str) -> None:
        async with pools.slot(shard_id, expected_memory_mib=memory, key=key) as slot:
            self.slot = slot
            await self._release.wait()

    @property
    def admitted(self) -> bool:
        return self.slot is not None

    async def release(self) -> None:
        self._release.set()
        await self.task


async def settle() -> None:
    """Let every ready task run (admissions happen in callbacks).

    No wall-clock wait, so no guess: each round yields to the event loop once and runs every
    callback and task ready then. A request made, or a slot freed, settles (its task starts,
    the slot's future is granted, the waiter resumes) within two rounds in the pool tests (one
    is too few: they fail); five leave room. Only the test's next step, or a queue timeout
    it set, changes the pools after that."""
    for _ in range(5):
        await asyncio.sleep(0)
