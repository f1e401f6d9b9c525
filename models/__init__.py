"""shardshape: models."""
