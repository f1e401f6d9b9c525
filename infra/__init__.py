"""shardshape: infra."""
