"""The greedy fill: the blocks of a pool too small for everyone, handed out by priority.

The MILP stages (:mod:`~shardshape.allocator.optimiser.milp`) meet the minima and the
priority levels whose demand fits in full; from there :class:`Fill` hands out the rest, one
block at a time, guided by the prices of the block types (the LP's dual prices for the first
level that is cut). The first cut level's minimax MILP took seconds at 50 shards; water-filling
cuts that level evenly in milliseconds.
"""

from __future__ import annotations

import heapq

import numpy as np

from shardshape.allocator.optimiser.cover import EPS, cheapest_cover
from shardshape.allocator.optimiser.model import TOL
from shardshape.allocator.optimiser.problem import Problem


class Fill:
    """The greedy part of :meth:`~shardshape.allocator.optimiser.milp.Stages.shortfall`: from
    ``x``, which meets every minimum and every level met in full, the rest of the pool by
    priority, block types valued at ``price`` (per pair).

    1. **Reprice.** A shard met in full takes its cheapest cover at those prices (exact, by
       :func:`~shardshape.allocator.optimiser.cover.cheapest_cover`, over what it holds plus
       what is free). The first cut level's shards keep their minimum in the types that cover
       most of their own demand per price, the lower levels' in the cheapest.
    2. **Fill**, level by level from the first cut one: water-filling, one block at a time to
       the shard with the largest relative shortfall, of the type with the most coverage per
       price, free or taken from a lower-priority shard above its minimum. When no such block
       helps the first cut level's worst shard, a shard met in full gives it a block of a type
       it uses and covers itself again with free blocks of other types. Blocks that change no
       shortfall go back, to the levels above first. So a short shard is never passed over
       for a lower-priority one.
    3. **Holds** (smoothing) are restored from what is left, highest priority first: like the
       MILP's soft holds, they yield to any shortfall.
    """

    def __init__(
        self, problem: Problem, x: np.ndarray, price: np.ndarray, notes: list[str]
    ) -> None:
        self.p = problem
        self.x = x
        self.price = price
        self.notes = notes
        self.left = problem.pool_arr - np.bincount(problem.t_of, x, minlength=len(problem.types))

    def run(
        self, met: np.ndarray, levels: list[int], shards_at: dict[int, list[int]]
    ) -> np.ndarray:
        """The allocation: ``met`` says which shards ``x`` meets in full, ``levels`` are the
        priorities (highest first), ``shards_at`` the shards at each."""
        cut = [level for level in levels if not all(met[s] for s in shards_at[level])]
        first_cut = cut[0] if cut else None
        donors = [int(s) for s in np.flatnonzero(met)]
        self._reprice_all(donors, [shards_at[level] for level in cut[1:]])
        for s in shards_at.get(first_cut, []):
            self._reseat_minimum(s)
        for i, level in enumerate(levels):
            swap_to = shards_at[level] if level == first_cut else None
            self._fill_level(
                level, [shards_at[higher] for higher in levels[: i + 1]], swap_to, donors
            )
        self._restore_holds([s for level in levels for s in shards_at[level]])
        return self.x

    def minima(self, levels: list[int], shards_at: dict[int, list[int]]) -> np.ndarray:
        """From no blocks: each shard's minimum, level by level (any type will do, the one
        that covers most of its demand per price); returns which shards are met in full."""
        for level in levels:
            for s in shards_at[level]:
                for _ in range(round(self.p.m[s])):
                    if not self._add_block(s, minimum=True):
                        break
        return np.array([self._coverage(s) >= 1.0 - TOL for s in range(self.p.n_shards)])

    def _reprice_all(self, donors: list[int], below_cut: list[list[int]]) -> None:
        """Step 1 for the shards met in full (``donors``) and those below the first cut level."""
        for s in donors:
            self._reprice(s, keep_coverage=True)
        for shards in below_cut:
            for s in shards:
                self._reprice(s, keep_coverage=False)

    def _fill_level(
        self, level: int, above: list[list[int]], swap_to: list[int] | None, donors: list[int]
    ) -> None:
        """Step 2 for one level: its shards and those ``above`` it take and give back blocks
        until none moves; ``swap_to``, the first cut level's shards, also get swapped blocks."""
        seen: set[bytes] = set()
        while (
            sum(self._water_fill(shards) for shards in above)
            + sum(self._tidy(s) for shards in above for s in shards)
            + (self._swap_in(swap_to, donors) if swap_to is not None else 0)
        ):
            # Blocks can go round (a shard takes one, another gives one back, ...): an
            # allocation seen before ends the level, every one on the way is feasible.
            state = self.x.tobytes()
            if state in seen:
                self.notes.append(f"greedy fill: priority {level} went round, stopped")
                break
            seen.add(state)

    def _restore_holds(self, shards: list[int]) -> None:
        """Step 3: each hold from the blocks left, in the order of ``shards``."""
        p = self.p
        for s in shards:
            for pair in p.pairs_of[s]:
                back = min(p.hold_lo[pair] - self.x[pair], self.left[p.t_of[pair]])
                if back > 0:
                    self.x[pair] += back
                    self.left[p.t_of[pair]] -= back

    def _water_fill(self, shards: list[int]) -> int:
        """Blocks to ``shards``, one at a time to the one with the largest relative shortfall,
        until none of them can use a free block; returns how many were given."""
        p, given = self.p, 0
        heap = [(self._coverage(s), s) for s in shards if p.q[s] > 0 and not p.no_capacity[s]]
        heap = [(c, s) for c, s in heap if c < 1.0 - TOL]
        heapq.heapify(heap)
        while heap:
            _, s = heapq.heappop(heap)
            if self._add_block(s):
                given += 1
                if self._coverage(s) < 1.0 - TOL:
                    heapq.heappush(heap, (self._coverage(s), s))
        return given

    def _swap_in(self, shards: list[int], donors: list[int]) -> int:
        """Blocks for the worst-covered of ``shards`` that no free block can help: a type it
        uses, taken from a shard met in full that covers itself again with free blocks of
        other types (its cheapest cover at the prices). Stops when the worst cannot gain."""
        p, moves = self.p, 0
        while True:
            short = [s for s in shards if p.q[s] > 0 and not p.no_capacity[s]]
            short = [s for s in short if self._coverage(s) < 1.0 - TOL]
            if not short or not self._take_for(min(short, key=self._coverage), donors):
                return moves
            moves += 1

    def _take_for(self, s: int, donors: list[int]) -> bool:
        p = self.p
        for pair in sorted(p.pairs_of[s], key=lambda pair: -p.coef[pair] / self.price[pair]):
            t = p.t_of[pair]
            if p.coef[pair] <= 0 or self.x[pair] >= p.hi[pair] or self.left[t] >= 1:
                continue
            for r in donors:
                mine = p.pairs_of[r]
                top = np.minimum(p.hi[mine], self.x[mine] + self.left[p.t_of[mine]])
                given = p.t_of[mine] == t
                if not np.any(self.x[mine][given] >= 1):
                    continue
                top[given] = self.x[mine][given] - 1
                demand = p.q[r] > 0 and not p.no_capacity[r]
                need = self._coverage(r) if demand else 0.0
                a = p.coef[mine] if demand else np.zeros(len(mine))
                blocks = round(min(p.m[r], self.x[mine].sum()))
                if a @ top < need - EPS or top.sum() < blocks:
                    continue
                new = cheapest_cover(self.price[mine], a, top, need, blocks)
                if new is None:
                    continue
                self._move(mine, new)
                self.x[pair] += 1
                self.left[t] -= 1
                return True
        return False

    def _coverage(self, s: int) -> float:
        """Share of shard ``s``'s demand its blocks cover at the target utilisation (<= 1)."""
        mine = self.p.pairs_of[s]
        return min(1.0, float(self.p.coef[mine] @ self.x[mine])) if self.p.q[s] > 0 else 1.0

    def _move(self, pairs: np.ndarray, new: np.ndarray) -> None:
        delta = new - self.x[pairs]
        self.x[pairs] = new
        self.left -= np.bincount(self.p.t_of[pairs], delta, minlength=len(self.left))

    def _reprice(self, s: int, keep_coverage: bool) -> None:
        """Shard ``s``'s cheapest cover at the prices: at the coverage it has, or (a shard
        below the first cut level) of its minimum alone."""
        p, mine = self.p, self.p.pairs_of[s]
        if not len(mine):
            return
        held = self.x[mine]
        top = np.minimum(p.hi[mine], held + self.left[p.t_of[mine]])
        demand = keep_coverage and p.q[s] > 0 and not p.no_capacity[s]
        need = self._coverage(s) if demand else 0.0
        a = p.coef[mine] if demand else np.zeros(len(mine))
        new = cheapest_cover(self.price[mine], a, top, need, round(min(p.m[s], held.sum())))
        if new is not None:
            self._move(mine, new)

    def _reseat_minimum(self, s: int) -> None:
        """A shard that is cut: as many blocks as it holds for its minimum, chosen again as
        the ones that cover most of its demand per price."""
        mine = self.p.pairs_of[s]
        blocks = round(min(self.p.m[s], self.x[mine].sum()))
        self._move(mine, np.zeros(len(mine)))
        for _ in range(blocks):
            self._add_block(s, minimum=True)

    def _add_block(self, s: int, minimum: bool = False) -> bool:
        """One more block for shard ``s``'s demand (or its minimum: any type will do), of
        the type with the most coverage per price: a free one, else (for demand) one that a
        lower-priority shard holds above its own minimum, taken from the lowest."""
        p = self.p
        need = 1.0 - self._coverage(s)
        best, best_key, best_donor = -1, (0.0, 0.0, 0.0), -1
        for pair in p.pairs_of[s]:
            t = p.t_of[pair]
            if self.x[pair] >= p.hi[pair]:
                continue
            gain = min(float(p.coef[pair]), need)
            if gain <= 0 and not minimum:
                continue
            donor = -1 if self.left[t] >= 1 or minimum else self._donor(s, t)
            if self.left[t] < 1 and donor < 0:
                continue
            key = (gain / self.price[pair], -self.price[pair], float(donor < 0))
            if best < 0 or key > best_key:
                best, best_key, best_donor = int(pair), key, donor
        if best < 0:
            return False
        self.x[best] += 1
        if best_donor >= 0:
            self.x[best_donor] -= 1
        else:
            self.left[p.t_of[best]] -= 1
        return True

    def _donor(self, s: int, t: int) -> int:
        """The pair of type ``t`` of the lowest-priority shard below ``s`` that holds more
        blocks than its minimum, or -1."""
        p = self.p
        below = p.priority < p.priority[s]
        found, found_priority = -1, np.inf
        for pair in np.flatnonzero((p.t_of == t) & below[p.s_of] & (self.x >= 1)):
            r = p.s_of[pair]
            if p.priority[r] < found_priority and self.x[p.pairs_of[r]].sum() > p.m[r]:
                found, found_priority = int(pair), p.priority[r]
        return found

    def _tidy(self, s: int) -> int:
        """Give back blocks of ``s`` that change neither its shortfall nor its minimum,
        dearest first; returns how many."""
        p = self.p
        mine = p.pairs_of[s]
        reached, freed = self._coverage(s), 0
        for pair in sorted(mine, key=lambda pair: -p.cost_vec[pair]):
            while self.x[pair] > 0 and self.x[mine].sum() > p.m[s]:
                self.x[pair] -= 1
                if self._coverage(s) < reached - TOL:
                    self.x[pair] += 1
                    break
                self.left[p.t_of[pair]] += 1
                freed += 1
        return freed
