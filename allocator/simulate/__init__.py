"""shardshape: simulate. Does shaping beat scaling? A discrete-event simulation on the real code.

One service with a pool of resource blocks, driven by request arrivals with service demands
(:mod:`~shardshape.allocator.simulate.workload`; the ``mixed`` scenario in
:mod:`~shardshape.allocator.simulate.mixed`, a replayed trace in
:mod:`~shardshape.allocator.simulate.from_trace`),
served by per-queue FIFO slots (:mod:`~shardshape.allocator.simulate.engine`) under four strategies:
``shared-reactive`` and ``static-by-type`` (:mod:`~shardshape.allocator.simulate.baselines`),
``shardshape`` (:mod:`~shardshape.allocator.simulate.shaped`: the project's profiler, metrics,
forecasts, calibration, planner and optimiser, in-process) and ``oracle``
(:mod:`~shardshape.allocator.simulate.oracle`). :mod:`~shardshape.allocator.simulate.compare` runs
the equal-budget and equal-target comparisons, :mod:`~shardshape.allocator.simulate.results` scores
a run,
:mod:`~shardshape.allocator.simulate.report` writes the report. ``shardshape simulate`` is the
command.
"""

from shardshape.allocator.simulate.compare import STRATEGIES, Runner, Setup
from shardshape.allocator.simulate.engine import RunResult, Simulation
from shardshape.allocator.simulate.scenarios import evaluate, mixed_setup, trace_setup

__all__ = [
    "STRATEGIES",
    "RunResult",
    "Runner",
    "Setup",
    "Simulation",
    "evaluate",
    "mixed_setup",
    "trace_setup",
]
