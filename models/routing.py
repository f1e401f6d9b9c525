"""Key-level routing: a key's shard with hysteresis, its confidence and its quarantine.

A key's candidate shard is the shard whose centroid is nearest to the key's mean behaviour.
The key moves only when the candidate is nearer than its current shard by ``margin`` (scaled
units) on ``patience`` consecutive decisions, or at once when its shard no longer exists.
Quarantine works the same way: ``quarantine_after`` anomalous checks in a row put a key in
quarantine, ``release_after`` normal checks in a row take it out. A key's confidence is an
EWMA of "the event's behaviour fell in the key's shard"; gateways weigh the key by it, so a
route is published again when its confidence has moved ``republish_confidence`` since it was
last published, or crossed ``lookup_confidence``.

:meth:`KeyRouter.route_events` runs these rules over a batch's events in order (the
profiler's path), :meth:`KeyRouter.settle_all` routes the keys of retired shards when a model
is adopted; :meth:`KeyRouter.decide` and :meth:`KeyRouter.check_anomaly` apply them to one
record.

>>> import numpy as np
>>> from shardshape.models.keystats import QUARANTINED, SHARD, KeyTable
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
>>> [router.check_anomaly(rec, True) for _ in range(3)], rec[QUARANTINED]
([False, False, True], True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from shardshape.models.keystats import (
    ANOMALY_STREAK,
    BEHAVIOUR_SLICE,
    CALM_STREAK,
    CONFIDENCE,
    INT_FIELDS,
    NO_SHARD,
    PENDING,
    PUBLISHED_CONFIDENCE,
    QUARANTINED,
    RECORD_LENGTH,
    SHARD,
    STREAK,
)
from shardshape.models.shards import Shards

# The routing part of a key's record (the keystats layout): shard .. confidence last published.
ROUTING_FIELDS = range(SHARD, RECORD_LENGTH)
# The routing fields of a batch's keys as columns: ``cols[field][g]`` is key ``g``'s (other
# fields empty). The rules read and write these, for a batch's keys or for one record.
Columns = list[list]
# A key's nearest shard: its id, its distance, and the distance to every shard (``ids`` order).
Nearest = tuple[int, float, list[float]]
# A route to publish: the event it changed at, the key's shard, confidence and quarantine.
Change = tuple[int, int, float, bool]


def routing_columns(records: np.ndarray) -> Columns:
    """The routing fields of ``records`` (rows in the keystats layout) as :data:`Columns` of
    the numbers a record holds (:func:`~shardshape.models.keystats.row_to_record`)."""
    cols: Columns = [[] for _ in range(RECORD_LENGTH)]
    for field in ROUTING_FIELDS:
        col = records[:, field]
        if field in INT_FIELDS:
            col = col.astype(np.int64)
        elif field == QUARANTINED:
            col = col > 0
        cols[field] = col.tolist()
    return cols


def store_columns(records: np.ndarray, cols: Columns) -> None:
    """Write :data:`Columns` back into the rows they came from."""
    for field in ROUTING_FIELDS:
        records[:, field] = cols[field]


def nearest_shards(shards: Shards, means: np.ndarray, scale: np.ndarray) -> list[Nearest]:
    """The :data:`Nearest` shard of each row of ``means`` (there must be shards)."""
    d = shards.distances(means, scale)
    best = d.argmin(axis=1)
    best_id = np.asarray(shards.ids)[best].tolist()
    best_d = d[np.arange(len(means)), best].tolist()
    return list(zip(best_id, best_d, d.tolist(), strict=True))


def shard_rows(shards: Shards) -> dict[int, int]:
    """Shard id -> its index in ``shards.ids`` (and in a :data:`Nearest`'s distances)."""
    return {shard: row for row, shard in enumerate(shards.ids)}


class KeyRouter:
    """Decides keys' shards, confidence and quarantine state from their routing fields.

    The rules work on :data:`Columns` (key ``g`` of a batch); :meth:`decide` and
    :meth:`check_anomaly` apply them to one record (a list, mutated in place).

    Parameters
    ----------
    margin
        How much nearer (scaled distance) a candidate shard must be than the current one.
    patience
        Consecutive decisions a candidate must win before the key moves.
    quarantine_after, release_after
        Consecutive anomalous / normal checks to enter / leave quarantine.
    confidence_alpha
        Step of the confidence EWMA.
    lookup_confidence, republish_confidence
        A route is published again when its confidence crosses ``lookup_confidence`` or moves
        ``republish_confidence`` from the confidence last published.
    """

    def __init__(
        self,
        margin: float = 0.25,
        patience: int = 3,
        quarantine_after: int = 3,
        release_after: int = 5,
        confidence_alpha: float = 0.05,
        lookup_confidence: float = 0.9,
        republish_confidence: float = 0.1,
    ) -> None:
        self.margin = margin
        self.patience = patience
        self.quarantine_after = quarantine_after
        self.release_after = release_after
        self.confidence_alpha = confidence_alpha
        self.lookup_confidence = lookup_confidence
        self.republish_confidence = republish_confidence

    # -- a batch --------------------------------------------------------------------------
    def route_events(
        self,
        cols: Columns,
        group: Sequence[int],
        observed: Sequence[int],
        decisions: Mapping[int, Nearest | None],
        checks: Mapping[int, bool],
        rows: Mapping[int, int],
    ) -> list[Change]:
        """Run the rules over a batch's completed events, in order; the routes to publish.

        Event ``j`` is of key ``group[j]`` (of ``cols``) and fell in shard ``observed[j]``.
        Every event moves its key's confidence. Where the key's shard is due to be decided,
        ``decisions[j]`` is its nearest shard (None while there are no shards; ``rows`` from
        :func:`shard_rows`): the key may move (:meth:`settle`), else its route is published
        again if its confidence has moved enough. Where an anomaly check is due, ``checks[j]``
        is its result (:meth:`flag`): a key entering or leaving quarantine is published (a
        released key only if it has a shard).
        """
        alpha = self.confidence_alpha
        shard, conf, quarantined = cols[SHARD], cols[CONFIDENCE], cols[QUARANTINED]
        settle, stale, flag = self.settle, self._stale, self.flag
        changes: list[Change] = []
        for j, g in enumerate(group):
            conf[g] += alpha * ((observed[j] == shard[g]) - conf[g])
            if j in decisions:
                nearest = decisions[j]
                moved = nearest is not None and settle(cols, g, nearest, rows)
                if moved or (shard[g] != NO_SHARD and stale(cols, g)):
                    changes.append(_published(cols, g, j))
            # A key entering quarantine is published; one leaving it, if it has a shard.
            flipped = j in checks and flag(cols, g, checks[j])
            if flipped and (quarantined[g] or shard[g] != NO_SHARD):
                changes.append(_published(cols, g, j))
        return changes

    def settle_all(
        self, cols: Columns, nearest: Sequence[Nearest], rows: Mapping[int, int]
    ) -> list[Change]:
        """:meth:`settle` every key ``g`` of ``cols`` towards ``nearest[g]`` at once (outside any
        event: a change's event is the key's index); the routes to publish."""
        moved = [g for g, near in enumerate(nearest) if self.settle(cols, g, near, rows)]
        return [_published(cols, g, g) for g in moved]

    def settle(self, cols: Columns, g: int, nearest: Nearest, rows: Mapping[int, int]) -> bool:
        """Move key ``g`` towards its ``nearest`` shard, with the hysteresis; True if it moved."""
        shard, pending, streak = cols[SHARD], cols[PENDING], cols[STREAK]
        best_id, best_d, distances = nearest
        current = shard[g]
        if current == best_id:
            pending[g], streak[g] = best_id, 0
            return False
        if current not in rows:
            self._move(cols, g, best_id)
            return True
        if best_d + self.margin >= distances[rows[current]]:
            pending[g], streak[g] = current, 0
            return False
        streak[g] = streak[g] + 1 if pending[g] == best_id else 1
        pending[g] = best_id
        if streak[g] >= self.patience:
            self._move(cols, g, best_id)
            return True
        return False

    def flag(self, cols: Columns, g: int, anomalous: bool) -> bool:
        """Fold one anomaly check into key ``g``; True when its quarantine state flipped."""
        calm, streak, quarantined = cols[CALM_STREAK], cols[ANOMALY_STREAK], cols[QUARANTINED]
        if anomalous:
            streak[g] += 1
            calm[g] = 0
        else:
            calm[g] += 1
            streak[g] = 0
        if not quarantined[g] and streak[g] >= self.quarantine_after:
            quarantined[g] = True
            return True
        if quarantined[g] and calm[g] >= self.release_after:
            quarantined[g] = False
            return True
        return False

    # -- one record -----------------------------------------------------------------------
    def decide(self, rec: list, shards: Shards, scale: np.ndarray) -> bool:
        """Update ``rec``'s shard from its mean behaviour (:meth:`settle`); True if it changed."""
        if not shards.ids:
            return False
        nearest = nearest_shards(shards, np.asarray([rec[BEHAVIOUR_SLICE]]), scale)[0]
        return _on_record(rec, lambda cols: self.settle(cols, 0, nearest, shard_rows(shards)))

    def check_anomaly(self, rec: list, anomalous: bool) -> bool:
        """Fold one anomaly check into ``rec`` (:meth:`flag`); True when quarantine flipped."""
        return _on_record(rec, lambda cols: self.flag(cols, 0, anomalous))

    # -- internals ------------------------------------------------------------------------
    def _stale(self, cols: Columns, g: int) -> bool:
        """Whether key ``g``'s confidence moved far enough from the one last published."""
        now, then = cols[CONFIDENCE][g], cols[PUBLISHED_CONFIDENCE][g]
        threshold = self.lookup_confidence
        crossed = (now >= threshold) != (then >= threshold)
        return crossed or abs(now - then) >= self.republish_confidence

    @staticmethod
    def _move(cols: Columns, g: int, shard: int) -> None:
        cols[SHARD][g] = cols[PENDING][g] = shard
        cols[STREAK][g] = 0
        # Unknown how well the key fits its new shard: start neutral.
        cols[CONFIDENCE][g] = 0.5


def _published(cols: Columns, g: int, j: int) -> Change:
    """Key ``g``'s route as published at event ``j``, noted as published."""
    conf = cols[PUBLISHED_CONFIDENCE][g] = cols[CONFIDENCE][g]
    return j, cols[SHARD][g], conf, cols[QUARANTINED][g]


def _on_record(rec: list, rule: Callable[[Columns], bool]) -> bool:
    """Apply a rule to one record, as key 0 of one-row :data:`Columns`."""
    cols: Columns = [[value] for value in rec]
    result = rule(cols)
    rec[:] = [col[0] for col in cols]
    return result
