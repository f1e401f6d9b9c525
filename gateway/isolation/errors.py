"""Why a request did not complete in a process-mode shard pool."""

from __future__ import annotations


class ShardPoolError(RuntimeError):
    """Base of the pool's errors; ``shard_id`` says which shard (None: the pool as a whole)."""

    def __init__(self, message: str, shard_id: int | None = None) -> None:
        super().__init__(message)
        self.shard_id = shard_id


class ShardUnavailable(ShardPoolError):
    """The request was not run: unknown or retired shard, full queue, waited too long, closed.

    Nothing of the request ran, so it is safe to retry (an HTTP gateway answers 503).
    """


class WorkerLost(ShardPoolError):
    """The worker process died while running the request (e.g. OOM-killed); it was restarted."""

    def __init__(self, message: str, shard_id: int, *, oom_killed: bool, signal: str | None):
        super().__init__(message, shard_id)
        self.oom_killed = oom_killed
        self.signal = signal


class HandlerFailed(ShardPoolError):
    """The handler raised; ``error_type`` and ``remote_traceback`` come from the worker."""

    def __init__(self, message: str, shard_id: int, *, error_type: str, remote_traceback: str):
        super().__init__(message, shard_id)
        self.error_type = error_type
        self.remote_traceback = remote_traceback
