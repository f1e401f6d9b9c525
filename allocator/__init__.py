"""shardshape: allocator. Resource blocks and pools, calibration, the optimiser, plan building.

Pure code (no Faust, no Kafka). What the planner timer uses:

- :func:`load_pools_config` -> :class:`PoolsConfig` (block types, pools, services, planning);
- :func:`calibrator_for` -> :class:`Calibrator`, fed :class:`ShardWindow` metrics;
- :func:`shard_demands` (forecasts + calibration + config) -> list of :class:`ShardDemand`;
- :meth:`PoolPlanner.plan` -> :class:`PlanStep` with the pool's :class:`Allocation`;
- :func:`build_plan` -> one :class:`~shardshape.streams.contracts.AllocationPlan` per service.
"""

from shardshape.allocator.blocks import BlockType, Resources, total_resources
from shardshape.allocator.calibration import Calibrator, CapacityEstimate, ShardWindow
from shardshape.allocator.optimiser import (
    Allocation,
    OptimiserError,
    ShardAllocation,
    ShardDemand,
    Smoothing,
    solve,
)
from shardshape.allocator.plan import build_plan
from shardshape.allocator.planner import PlanStep, PoolPlanner, calibrator_for, shard_demands
from shardshape.allocator.pools_config import (
    PlanningPolicy,
    PoolsConfig,
    PoolsConfigError,
    ShardSettings,
    load_pools_config,
    parse_pools_config,
)

__all__ = [
    "Allocation",
    "BlockType",
    "Calibrator",
    "CapacityEstimate",
    "OptimiserError",
    "PlanStep",
    "PlanningPolicy",
    "PoolPlanner",
    "PoolsConfig",
    "PoolsConfigError",
    "Resources",
    "ShardAllocation",
    "ShardDemand",
    "ShardSettings",
    "ShardWindow",
    "Smoothing",
    "build_plan",
    "calibrator_for",
    "load_pools_config",
    "parse_pools_config",
    "shard_demands",
    "solve",
    "total_resources",
]
