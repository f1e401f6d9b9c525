"""Births and retirements of shards: how often the set of live shard ids changes.

A plan learns a shard (its forecaster, calibration and blocks) only while the shard lives, so
a shard born and retired within minutes can never be planned for. :class:`ShardChurn` counts,
from the successive sets of live ids it is shown, the ids that appeared (births) and the ids
that disappeared (retirements) from ``from_ts`` on, and gives them per hour.

>>> churn = ShardChurn(from_ts=0.0)
>>> churn.note(-10.0, [0, 1])   # before from_ts: the starting set, not counted
>>> churn.note(0.0, [0, 1, 2])
>>> churn.note(1800.0, [0, 2])
>>> churn.note(3600.0, [0, 2])
>>> churn.as_json(3600.0)
{'births': 1, 'retirements': 1, 'births_per_hour': 1.0, 'retirements_per_hour': 1.0}
"""

from __future__ import annotations

from collections.abc import Iterable


class ShardChurn:
    """Counts shard births and retirements at or after ``from_ts`` (seconds, any clock)."""

    def __init__(self, from_ts: float = float("-inf")) -> None:
        self.from_ts = from_ts
        self.births = 0
        self.retirements = 0
        self._live: frozenset[int] | None = None

    def note(self, ts: float, live: Iterable[int]) -> None:
        """The live shard ids at ``ts``; changes since the previous call count after
        ``from_ts`` (the first set noted is the starting point)."""
        now = frozenset(int(s) for s in live)
        if self._live is not None and now != self._live and ts >= self.from_ts:
            self.births += len(now - self._live)
            self.retirements += len(self._live - now)
        self._live = now

    def as_json(self, seconds: float) -> dict[str, float | int]:
        """Counts and rates per hour over ``seconds`` of the counted period."""
        hours = max(seconds, 1e-9) / 3600.0
        return {
            "births": self.births,
            "retirements": self.retirements,
            "births_per_hour": round(self.births / hours, 3),
            "retirements_per_hour": round(self.retirements / hours, 3),
        }
