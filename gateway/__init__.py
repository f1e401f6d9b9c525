"""shardshape: gateway."""
