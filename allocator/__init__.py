"""shardshape: allocator. Resource blocks and pools, calibration, the optimiser, plan building,
the planning loop, the policies the gateway applies (lending, arms) and the simulator.

Pure code without Faust; the one Kafka client is :mod:`~shardshape.allocator.client`, which
follows the plans topic for gateways (confluent-kafka). What the planning loop uses:

- :func:`~shardshape.allocator.pools_config.load_pools_config` ->
  :class:`~shardshape.allocator.pools_config.PoolsConfig` (block types, pools, services,
  planning);
- :func:`~shardshape.allocator.planner.calibrator_for` ->
  :class:`~shardshape.allocator.calibration.Calibrator`, fed
  :class:`~shardshape.allocator.calibration.ShardWindow` metrics;
- :func:`~shardshape.allocator.planner.shard_demands` (forecasts + calibration + config) -> list
  of :class:`~shardshape.allocator.optimiser.ShardDemand`;
- :meth:`~shardshape.allocator.planner.PoolPlanner.plan` -> ``PlanStep`` with the pool's
  :class:`~shardshape.allocator.optimiser.Allocation`;
- :func:`~shardshape.allocator.plan.build_plan` -> one
  :class:`~shardshape.core.contracts.AllocationPlan` per service.

Import each from its module. This package imports nothing itself: the gateway uses its light
modules (``arms``, ``lending``, ``client``) and must not load the optimiser, which needs scipy (the
``worker`` extra).
"""
