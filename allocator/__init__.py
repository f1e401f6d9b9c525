"""shardshape: allocator."""
