"""Key-level shard decisions with hysteresis, so a key's routing does not flap.

A key's candidate shard is the shard whose centroid is nearest to the key's mean behaviour.
The key moves only when the candidate is nearer than its current shard by ``margin`` (scaled
units) on ``patience`` consecutive decisions, or at once when its shard no longer exists.
Quarantine works the same way: ``quarantine_after`` anomalous checks in a row put a key in
quarantine, ``release_after`` normal checks in a row take it out.

>>> import numpy as np
>>> from shardshape.models.keystats import KeyTable, SHARD
>>> from shardshape.models.shards import Shards
>>> shards = Shards([4, 9], np.array([[2.0, 0, 0, 0], [6.0, 0, 0, 0]]), np.ones(2), np.ones(2))
>>> router = KeyRouter(margin=0.5, patience=2)
>>> rec = KeyTable().update("k", 0.0, [2.2, 0.0, 0.0, 0.0])
>>> router.decide(rec, shards, np.ones(4)), rec[SHARD]
(True, 4)
>>> rec[3] = 4.2  # past the midpoint, but not by the margin
>>> router.decide(rec, shards, np.ones(4)), rec[SHARD]
(False, 4)
>>> rec[3] = 5.0
>>> [router.decide(rec, shards, np.ones(4)) for _ in range(2)], rec[SHARD]
([False, True], 9)
"""

from __future__ import annotations

import numpy as np

from shardshape.models.keystats import (
    ANOMALY_STREAK,
    BEHAVIOUR_SLICE,
    CALM_STREAK,
    CONFIDENCE,
    PENDING,
    QUARANTINED,
    SHARD,
    STREAK,
)
from shardshape.models.shards import Shards


class KeyRouter:
    """Decides a key's shard and quarantine state from its record (mutated in place).

    Parameters
    ----------
    margin
        How much nearer (scaled distance) a candidate shard must be than the current one.
    patience
        Consecutive decisions a candidate must win before the key moves.
    quarantine_after, release_after
        Consecutive anomalous / normal checks to enter / leave quarantine.
    """

    def __init__(
        self,
        margin: float = 0.25,
        patience: int = 3,
        quarantine_after: int = 3,
        release_after: int = 5,
    ) -> None:
        self.margin = margin
        self.patience = patience
        self.quarantine_after = quarantine_after
        self.release_after = release_after

    def decide(self, rec: list, shards: Shards, scale: np.ndarray) -> bool:
        """Update ``rec``'s shard; True when it changed."""
        if not shards.ids:
            return False
        mean = np.asarray(rec[BEHAVIOUR_SLICE])
        d = np.sqrt((((shards.centroids - mean) ** 2) * scale).sum(axis=1))
        best = int(d.argmin())
        best_id = shards.ids[best]
        current = rec[SHARD]
        if current == best_id:
            rec[PENDING], rec[STREAK] = best_id, 0
            return False
        if current not in shards.ids:
            self._move(rec, best_id)
            return True
        if d[best] + self.margin >= d[shards.ids.index(current)]:
            rec[PENDING], rec[STREAK] = current, 0
            return False
        rec[STREAK] = rec[STREAK] + 1 if rec[PENDING] == best_id else 1
        rec[PENDING] = best_id
        if rec[STREAK] >= self.patience:
            self._move(rec, best_id)
            return True
        return False

    def check_anomaly(self, rec: list, anomalous: bool) -> bool:
        """Fold one anomaly check into ``rec``; True when its quarantine state flipped."""
        if anomalous:
            rec[ANOMALY_STREAK] += 1
            rec[CALM_STREAK] = 0
        else:
            rec[CALM_STREAK] += 1
            rec[ANOMALY_STREAK] = 0
        if not rec[QUARANTINED] and rec[ANOMALY_STREAK] >= self.quarantine_after:
            rec[QUARANTINED] = True
            return True
        if rec[QUARANTINED] and rec[CALM_STREAK] >= self.release_after:
            rec[QUARANTINED] = False
            return True
        return False

    @staticmethod
    def _move(rec: list, shard: int) -> None:
        rec[SHARD], rec[PENDING], rec[STREAK] = shard, shard, 0
        rec[CONFIDENCE] = 0.5  # unknown how well the key fits its new shard: start neutral
