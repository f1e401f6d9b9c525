"""What a simulation replays: requests with arrival times, true profiles and service demands.

A :class:`Workload` is columns of requests sorted by arrival. Each request carries what a
gateway sees at arrival (request type, user, payload, attributes), what the service would
report on completion (response bytes, error), its true profile (for scoring and the oracle
only: no other strategy reads it) and its service time on one slot of every block type.

Service time on a block type comes from the request's demand vector and the block's vector,
with every slot getting an equal share of its block (see :func:`service_times`)::

    service_s = base_s + cpu_s / (cores / slots) + 8 * response_bytes / (net_mbit * 1e6 / slots)

>>> from shardshape.allocator.blocks import BlockType
>>> block = BlockType(name="b", cpu_millicores=1000, memory_mib=1024, net_mbit=100,
...                   concurrency=4, cost=1)
>>> service_times(np.array([0.0]), np.array([0.004]), np.array([16_000.0]), [block]).round(4)
array([[0.0211]])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shardshape.allocator.blocks import BlockType


@dataclass(frozen=True)
class Profile:
    """A request profile as the scenario defines it (the truth the strategies must find).

    ``slo_ms`` is the latency a request of this profile must meet (None: best effort, not
    counted in the overall attainment); ``anomalous`` marks a misbehaving client, which the
    oracle sends to the quarantine shard.
    """

    name: str
    slo_ms: float | None
    anomalous: bool = False


@dataclass
class Workload:
    """Requests of one run, sorted by ``arrival`` (seconds on the simulation clock).

    Requests arriving before ``score_from`` warm the strategies up and are not scored;
    the run ends at ``end``. ``epoch`` is added to the clock for event timestamps.
    """

    service: str
    profiles: tuple[Profile, ...]
    block_types: tuple[BlockType, ...]
    arrival: np.ndarray
    profile: np.ndarray
    request_type: np.ndarray
    type_names: tuple[str, ...]
    user: list[str]
    payload: np.ndarray
    response: np.ndarray
    error: np.ndarray
    service_s: np.ndarray  # (requests, block types)
    attributes: list[dict[str, float | bool | str]]
    start: float
    score_from: float
    end: float
    epoch: float = 1_700_000_000.0
    # Classes the oracle plans by when they are not the profiles (a trace's hindsight classes).
    oracle_class: np.ndarray | None = None
    oracle_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.arrival)
        columns = ("profile", "request_type", "payload", "response", "error")
        for name in columns:
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"workload column {name} has {len(getattr(self, name))} rows, arrival has {n}"
                )
        if self.service_s.shape != (n, len(self.block_types)):
            raise ValueError(
                f"service_s has shape {self.service_s.shape}, expected "
                f"({n}, {len(self.block_types)}): one column per block type"
            )
        if n and np.any(np.diff(self.arrival) < 0):
            raise ValueError("workload arrivals must be sorted by time")

    def __len__(self) -> int:
        return len(self.arrival)

    @property
    def scored(self) -> np.ndarray:
        """Mask of the requests that count in the results."""
        return (self.arrival >= self.score_from) & (self.arrival < self.end)

    @property
    def hours(self) -> float:
        """Length of the scored period in hours."""
        return (self.end - self.score_from) / 3600.0

    def subset(self, rows: np.ndarray) -> Workload:
        """The requests at ``rows`` (sorted indices) as a workload of their own."""
        rows = np.asarray(rows)
        take = rows.tolist()
        oracle = self.oracle_class[rows] if self.oracle_class is not None else None
        return dataclasses.replace(
            self,
            arrival=self.arrival[rows],
            profile=self.profile[rows],
            request_type=self.request_type[rows],
            user=[self.user[i] for i in take],
            payload=self.payload[rows],
            response=self.response[rows],
            error=self.error[rows],
            service_s=self.service_s[rows],
            attributes=[self.attributes[i] for i in take],
            oracle_class=oracle,
        )

    def truth(self) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
        """The oracle's classes: per request, their names, and which are anomalous."""
        if self.oracle_class is not None:
            return self.oracle_class, self.oracle_names, np.zeros(len(self.oracle_names), bool)
        names = tuple(p.name for p in self.profiles)
        return self.profile, names, np.array([p.anomalous for p in self.profiles])

    def type_index(self, name: str) -> int:
        """Column of ``service_s`` for the block type ``name``."""
        for i, block in enumerate(self.block_types):
            if block.name == name:
                return i
        known = ", ".join(b.name for b in self.block_types)
        raise KeyError(f"block type {name!r} is not in this workload; known: {known}")


def service_times(
    base_s: np.ndarray,
    cpu_s: np.ndarray,
    response_bytes: np.ndarray,
    block_types: Sequence[BlockType],
) -> np.ndarray:
    """Service time of each request on one slot of each block type, ``(requests, types)``.

    ``cpu_s`` is CPU time on one full core; a slot gets ``cores / concurrency`` of it and
    ``net_mbit / concurrency`` of the block's bandwidth for the response. A block type
    without bandwidth serves responses at no transfer cost.
    """
    out = np.empty((len(cpu_s), len(block_types)))
    for t, block in enumerate(block_types):
        cores = max(block.cores, 1e-3) / block.concurrency
        transfer = 0.0
        if block.net_mbit > 0:
            transfer = 8.0 * response_bytes / (block.net_mbit * 1e6 / block.concurrency)
        out[:, t] = base_s + cpu_s / cores + transfer
    return out
