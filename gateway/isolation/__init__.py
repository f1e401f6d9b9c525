"""Process-mode shard pools: per-shard worker processes under OS limits.

What the host allows (cgroup v2, cgroup v1, rlimits or nothing) is detected at start
(:func:`detect_capabilities`, shown by ``shardshape doctor``); :class:`ProcessShardPool` runs
each shard's requests in its own workers and applies live plans. See docs/isolation.md.

The names below are imported on first use, so a worker process (``python -m
shardshape.gateway.isolation.worker``) starts without pydantic and the settings: small and quick.

>>> from shardshape.gateway.isolation import ProcessShardPool
>>> ProcessShardPool.__module__
'shardshape.gateway.isolation.process_pool'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shardshape.gateway.isolation.detect import (
        IsolationCapabilities,
        IsolationError,
        detect_capabilities,
    )
    from shardshape.gateway.isolation.errors import (
        HandlerFailed,
        ShardPoolError,
        ShardUnavailable,
        WorkerLost,
    )
    from shardshape.gateway.isolation.process_pool import ProcessShardPool

_EXPORTS = {
    "IsolationCapabilities": "detect",
    "IsolationError": "detect",
    "detect_capabilities": "detect",
    "HandlerFailed": "errors",
    "ShardPoolError": "errors",
    "ShardUnavailable": "errors",
    "WorkerLost": "errors",
    "ProcessShardPool": "process_pool",
}
__all__ = [
    "HandlerFailed",
    "IsolationCapabilities",
    "IsolationError",
    "ProcessShardPool",
    "ShardPoolError",
    "ShardUnavailable",
    "WorkerLost",
    "detect_capabilities",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shardshape.gateway.isolation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"shardshape.gateway.isolation.{module}"), name)
