"""shardshape: core. The vocabulary every other package speaks, and nothing else of ours.

Wire contracts and their columns, the latency sketch, profile keys and partitioning, request
batching, signing, the topic follower, per-shard window metrics, trace reading, settings and
logs. It imports no other shardshape package (``make lint`` checks it): ``models``,
``allocator``, ``gateway``, ``streams`` and ``infra`` stand on it, in that order.
"""
