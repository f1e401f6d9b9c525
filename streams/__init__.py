"""shardshape: streams."""
