"""shardshape: simulate. Does shaping beat scaling? A discrete-event simulation on the real code.

One service with a pool of resource blocks, driven by request arrivals with service demands
(:mod:`~shardshape.allocator.simulate.workload`; the ``mixed`` scenario in
:mod:`~shardshape.allocator.simulate.mixed`, a replayed trace in
:mod:`~shardshape.allocator.simulate.from_trace`), served by per-queue FIFO slots
(:mod:`~shardshape.allocator.simulate.engine`) under the strategies of
:mod:`~shardshape.allocator.simulate.names`: ``shared-reactive`` and ``static-by-type``
(:mod:`~shardshape.allocator.simulate.baselines`), ``shardshape``
(:mod:`~shardshape.allocator.simulate.shaped`: the project's profiler, metrics, forecasts,
calibration, planner and optimiser, in-process), ``oracle``
(:mod:`~shardshape.allocator.simulate.oracle`) and the two ablations between them
(:mod:`~shardshape.allocator.simulate.ablations`). :mod:`~shardshape.allocator.simulate.compare`
runs the equal-budget and equal-target comparisons, :mod:`~shardshape.allocator.simulate.grid`
the rolling-origin grid, :mod:`~shardshape.allocator.simulate.results` scores a run and
:mod:`~shardshape.allocator.simulate.report` writes the report. ``shardshape simulate`` is the
command. Nothing is imported here: the names module must load without scipy.
"""
