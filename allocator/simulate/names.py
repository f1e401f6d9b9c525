"""The simulator's strategy names and defaults, importable without the simulator (the command
line's ``--strategies`` choices in a base install, where scipy is absent)."""

STRATEGIES = (
    "shared-reactive",
    "static-by-type",
    "shardshape",
    "oracle",
    "true-profiles",
    "perfect-forecast",
)
# Strategies run by the project's planner: their knob is its utilisation target, and a pool
# cap holds them to a budget their knob cannot reach.
PLANNED = ("shardshape", "oracle", "true-profiles", "perfect-forecast")
# Seconds before a block any strategy adds serves: a replica starting. The same for all, so
# planning ahead buys only what it can foresee, not a faster start.
BLOCK_START_S = 30.0
