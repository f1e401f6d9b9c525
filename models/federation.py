"""Several workers, one model: summaries out of each worker, one global snapshot back in.

Each worker's :class:`~shardshape.models.profiler.Profiler` learns on its own partitions. Its
:func:`worker_summary` holds what merges exactly or nearly so: the clusterer's micro-clusters
(cut again as one set, :func:`~shardshape.models.merge.merge_summaries`), the behaviour regression's
decayed sufficient statistics (which add up), the shard describer's decayed counts, and the
most used request shapes' counts and mean latencies (:mod:`shardshape.models.shapes`: counts
add up, means weigh by count).
:class:`GlobalModel` merges them into a :class:`~shardshape.core.contracts.ShardSnapshot` whose
shard ids stay matched to the previous snapshot's and whose version only grows; every worker adopts
it with :func:`adopt_snapshot`, so workers and gateways predict with the same version.

>>> from shardshape.models.synthetic import SyntheticStream
>>> from shardshape.models.profiler import Profiler, ProfilerConfig
>>> events = list(SyntheticStream(seed=2).events(4_000))
>>> workers = [Profiler("shop", ProfilerConfig(federated=True)) for _ in range(2)]
>>> for i in range(0, 4_000, 500):
...     _ = workers[(i // 500) % 2].process_batch(events[i:i + 500])
>>> merged = GlobalModel("shop", ProfilerConfig()).merge([worker_summary(w) for w in workers])
>>> merged.version, 2 <= len(merged.shards) <= 9
(1, True)
>>> adopt_snapshot(workers[0], merged); workers[0].version
1
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from shardshape.core.contracts import ShardSnapshot
from shardshape.models.describe import ShardDescriber
from shardshape.models.merge import merge_summaries
from shardshape.models.predictor import ShardPredictor
from shardshape.models.profiler import Profiler, ProfilerConfig
from shardshape.models.shapes import ShapeTable
from shardshape.models.shards import MicroSummary, Shards, keep_left_out


def worker_summary(profiler: Profiler) -> dict[str, Any]:
    """What one worker contributes to the global model, as plain JSON-able values."""
    local = profiler.clusterer.shards
    return {
        "micro": profiler.clusterer.summary().to_dict(),
        "local_ids": list(local.ids),
        "local_centroids": local.centroids.tolist(),
        "xtx": profiler.regressor.xtx.tolist(),
        "xty": profiler.regressor.xty.tolist(),
        "describer": profiler.describer.state(),
        "shapes": profiler.shapes.state(profiler.config.snapshot_shapes),
    }


def adopt_snapshot(profiler: Profiler, snapshot: ShardSnapshot) -> None:
    """Make ``profiler`` predict and route with the global ``snapshot``."""
    predictor = ShardPredictor.from_snapshot(snapshot)
    spread = snapshot.model.get("spread")
    shards = Shards(
        list(predictor.ids),
        predictor.centroids,
        np.array([s.weight for s in snapshot.shards if not s.quarantine], dtype=float),
        np.asarray(
            spread if isinstance(spread, list) else np.ones(len(predictor.ids)), dtype=float
        ),
    )
    profiler.adopt_global(shards, predictor, snapshot.version)


class GlobalModel:
    """The merged model of one service, kept by the worker that merges.

    Parameters
    ----------
    service
        The service the snapshots are for.
    config
        The profiler configuration every worker uses.
    """

    def __init__(self, service: str, config: ProfilerConfig) -> None:
        self.service = service
        self.config = config
        self.version = 0
        # A container for the merged parts, never fed events; it routes by the merged shards.
        self._model = Profiler(service, replace(config, federated=True))
        self._missing: dict[int, int] = {}  # shard id -> merges in a row that left it out

    def merge(self, summaries: Sequence[dict[str, Any]], now: float | None = None) -> ShardSnapshot:
        """One global snapshot from the workers' latest summaries; the version goes up by one."""
        if not summaries:
            raise ValueError("no summaries to merge")
        model = self._model
        micro = [MicroSummary.from_dict(s["micro"]) for s in summaries]
        # The shards of the last merge (adopted below): ids match them, and a shard this cut
        # leaves out lives on as a single worker's would (keep_left_out).
        previous = model.shards if model.shards.ids else None
        cut = merge_summaries(
            micro,
            model.scale,
            max_shards=self.config.max_shards,
            previous=previous,
            min_gain=self.config.min_gain,
        )
        shards = keep_left_out(
            previous, cut, self._missing, self.config.retire_after, self.config.max_shards
        )
        regressor = model.regressor
        xtx = sum(np.asarray(s["xtx"], dtype=float) for s in summaries)
        xty = sum(np.asarray(s["xty"], dtype=float) for s in summaries)
        if xtx.shape != regressor.xtx.shape or xty.shape != regressor.xty.shape:
            raise ValueError(
                f"summary regression of shape {xtx.shape}, expected {regressor.xtx.shape}"
            )
        regressor.xtx, regressor.xty = xtx, xty
        regressor.solve()
        model.shapes = ShapeTable.merged(
            [s.get("shapes", []) for s in summaries],
            prior=self.config.shape_prior,
            min_alpha=self.config.shape_min_alpha,
        )
        model.describer = ShardDescriber.from_states(
            [state for s in summaries for state in _relabel(s, shards, model.scale)]
        )
        self.version += 1
        model.adopt_global(shards, None, self.version)
        return model.predictor.to_snapshot(
            self.service, self.version, created_ts=time.time() if now is None else now
        )


def _relabel(summary: dict[str, Any], shards: Shards, scale: np.ndarray) -> list[dict]:
    """A worker's describer state, one state per local shard, under the nearest global id.

    Two local shards may fall to one global shard; :meth:`ShardDescriber.from_states` adds
    them up like the states of two workers.
    """
    local_ids = summary["local_ids"]
    if not local_ids or not shards.ids:
        return []
    nearest, _ = shards.nearest(np.asarray(summary["local_centroids"], dtype=float), scale)
    state = summary["describer"]
    return [
        {
            "types": {str(g): state["types"].get(str(local), {})},
            "attrs": {str(g): state["attrs"].get(str(local), {})},
        }
        for local, g in zip(local_ids, nearest.tolist(), strict=True)
    ]
