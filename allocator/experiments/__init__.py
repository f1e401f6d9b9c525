"""Experiments on live traffic: propose, measure per arm, decide, adopt what wins.

The planning loop hands :class:`ExperimentManager` every complete metric window (the same
per (service, shard, arm) :class:`~shardshape.core.metrics.ShardStats` the planner learns from)
and asks it to amend every plan it builds:

1. :meth:`ExperimentManager.observe` feeds each running experiment's arms to its
   :class:`~shardshape.allocator.sequential.ExperimentTest` and records every decision with its
   evidence; it then proposes experiments for shards that miss their SLO (p99) or whose cache hit
   rate is low, at most one running per shard and within each service's traffic budget;
2. :meth:`ExperimentManager.shape_demands` restricts a shard to the block type a promoted
   experiment chose, before the optimiser runs;
3. :meth:`ExperimentManager.attach` applies the shards' definitions (cache, slots per block)
   to a plan and lists its experiments: running ones with their arms and evidence so far,
   finished ones with their decision.

A change is what an experiment tries on a shard, in whole-shard terms: a cache policy and
size, slots per block (``slots``: one more block's worth of request slots), or a block type.
Each plan turns a running change into the variant arm's concrete overrides for the arm's
share of the shard; a promoted change becomes the shard's definition in every later plan.

The modules: :mod:`~shardshape.allocator.experiments.policy` (:class:`ExperimentPolicy`),
:mod:`~shardshape.allocator.experiments.changes` (what is tried and what it makes of a plan),
:mod:`~shardshape.allocator.experiments.evidence` (what the arms showed) and
:mod:`~shardshape.allocator.experiments.manager` (:class:`ExperimentManager`, the state).

>>> from shardshape.allocator.pools_config import parse_pools_config
>>> config = parse_pools_config('''
... [block_types.small]
... cpu_millicores = 500
... memory_mib = 256
... concurrency = 4
... cost = 1.0
... [pools.main]
... blocks = { small = 10 }
... [services.shop]
... pool = "main"
... ''')
>>> import numpy as np
>>> from shardshape.core.metrics import ShardStats
>>> manager = ExperimentManager(config, ExperimentPolicy(trigger_windows=1))
>>> low_hits = ShardStats()
>>> low_hits.count, low_hits.cache_hits, low_hits.cache_reported = 1000, 100, 1000
>>> low_hits.latency.add_many(np.full(1000, 20.0))
>>> _ = manager.observe((0.0, 10.0), {"shop|1|": low_hits})
>>> [(e.shard_id, [a.name for a in e.arms], e.primary_metric) for e in manager.running("shop")]
[(1, ['control', 'lru-1024'], 'mean_latency')]
"""

from __future__ import annotations

from shardshape.allocator.experiments.changes import Change, ChangeKind, ShardDefinition, ShardKey
from shardshape.allocator.experiments.manager import ExperimentManager
from shardshape.allocator.experiments.policy import CONTROL, ExperimentPolicy

__all__ = [
    "CONTROL",
    "Change",
    "ChangeKind",
    "ExperimentManager",
    "ExperimentPolicy",
    "ShardDefinition",
    "ShardKey",
]
