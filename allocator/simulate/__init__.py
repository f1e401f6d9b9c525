"""shardshape: simulate. Does shaping beat scaling? A discrete-event simulation on the real code.

One service with a pool of resource blocks, driven by request arrivals with service demands
(:mod:`~allocator.simulate.workload`; the ``mixed`` scenario in
:mod:`~allocator.simulate.mixed`, a replayed trace in :mod:`~allocator.simulate.from_trace`),
served by per-queue FIFO slots (:mod:`~allocator.simulate.engine`) under four strategies:
``shared-reactive`` and ``static-by-type`` (:mod:`~allocator.simulate.baselines`),
``shardshape`` (:mod:`~allocator.simulate.shaped`: the project's profiler, metrics, forecasts,
calibration, planner and optimiser, in-process) and ``oracle``
(:mod:`~allocator.simulate.oracle`). :mod:`~allocator.simulate.compare` runs the equal-budget
and equal-target comparisons, :mod:`~allocator.simulate.results` scores a run,
:mod:`~allocator.simulate.report` writes the report. ``shardshape simulate`` is the command.
"""

from allocator.simulate.compare import STRATEGIES, Runner, Setup
from allocator.simulate.engine import RunResult, Simulation
from allocator.simulate.scenarios import evaluate, mixed_setup, trace_setup

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
