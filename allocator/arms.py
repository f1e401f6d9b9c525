"""Arm assignment: which arm of an experiment a request runs in, the same in every process.

The arm is a pure function of the experiment id, a stable request key (the user, else the
request id) and the arms' weights: a 64-bit BLAKE2b hash of id and key, read as a point in
``[0, 1)``, falls into the band of the arm whose cumulative weight covers it. Nothing is
random and nothing depends on the process (Python's ``hash`` of a string is salted per
process), so every gateway replica and every restart puts a user in the same arm.

Hashing the experiment id with the key gives each experiment its own split: being in the
variant of one experiment says nothing about the next. (A CRC of the concatenation would not:
CRC is affine, so two experiments' points differ by a fixed XOR and their splits correlate.)
Bands run in the order of the arms, so raising a variant's weight only moves users from the
arm before it into the variant, never between other arms.

>>> weights = [0.8, 0.2]
>>> assign_arm("shop:3:cache", "user-42", weights) == assign_arm("shop:3:cache", "user-42", weights)
True
>>> points = [arm_point("shop:3:cache", f"user-{i}") for i in range(10_000)]
>>> round(sum(p >= 0.8 for p in points) / len(points), 2)  # about 20% in the variant
0.2
>>> from shardshape.core.contracts import Arm, Experiment
>>> experiment = Experiment(experiment_id="e1", shard_id=3,
...                         arms=[Arm(name="control", weight=0.5), Arm(name="lfu", weight=0.5)])
>>> ArmAssigner(experiment).pick("user-42") in {"control", "lfu"}
True
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence

from shardshape.core.contracts import Experiment

_SCALE = 2.0**-64


def arm_point(experiment_id: str, key: str) -> float:
    """Where ``key`` falls in ``[0, 1)`` for ``experiment_id``: uniform, and stable everywhere.

    Raises :class:`ValueError` for an empty key: give the request id when there is no user,
    or every keyless request would share one arm.
    """
    if not key:
        raise ValueError(
            "arm assignment needs a non-empty request key: pass the user id, or the request "
            "id when the request has no user"
        )
    digest = hashlib.blake2b(
        key.encode(), digest_size=8, person=b"shardshape.arm", salt=_salt(experiment_id)
    ).digest()
    return int.from_bytes(digest, "big") * _SCALE


def assign_arm(experiment_id: str, key: str, weights: Sequence[float]) -> int:
    """Index of the arm ``key`` runs in, for arms of these ``weights`` (normalised).

    >>> assign_arm("e1", "user-7", [1.0, 0.0])  # a weight of 0 gets nobody
    0
    """
    return _pick(_bands(weights), arm_point(experiment_id, key))


class ArmAssigner:
    """The bands of one experiment computed once, to pick arms for many requests.

    Parameters
    ----------
    experiment
        Its ``experiment_id`` and arms (names and weights) define the split.
    """

    __slots__ = ("_bands", "experiment_id", "names")

    def __init__(self, experiment: Experiment) -> None:
        self.experiment_id = experiment.experiment_id
        self.names = [arm.name for arm in experiment.arms]
        self._bands = _bands([arm.weight for arm in experiment.arms])

    def pick(self, key: str) -> str:
        """The name of the arm ``key`` runs in."""
        return self.names[_pick(self._bands, arm_point(self.experiment_id, key))]

    def index(self, key: str) -> int:
        """The position of that arm in the experiment's list of arms."""
        return _pick(self._bands, arm_point(self.experiment_id, key))


def _salt(experiment_id: str) -> bytes:
    # BLAKE2b's salt takes 16 bytes: a digest of the id fits any id length.
    return hashlib.blake2b(experiment_id.encode(), digest_size=16).digest()


def _bands(weights: Sequence[float]) -> list[float]:
    """Upper ends of the arms' bands in [0, 1]; all-zero weights share equally."""
    if not weights:
        raise ValueError("an experiment needs at least one arm to assign requests to")
    bad = [w for w in weights if not (math.isfinite(w) and w >= 0)]
    if bad:
        raise ValueError(f"arm weights must be finite and >= 0, got {list(weights)}")
    total = float(sum(weights))
    shares = [w / total for w in weights] if total > 0 else [1 / len(weights)] * len(weights)
    bands, running = [], 0.0
    for share in shares:
        running += share
        bands.append(running)
    bands[-1] = 1.0  # rounding must not leave a sliver of points without an arm
    return bands


def _pick(bands: list[float], point: float) -> int:
    return min(bisect.bisect_right(bands, point), len(bands) - 1)
