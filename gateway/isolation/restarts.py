"""Restarting a shard's workers: when a worker that exited is replaced, and what its exit is called.

A worker that dies while the shard still wants it (a crash, the kernel's OOM killer) is
replaced at once. Workers that exit before they are ready, :data:`MAX_START_FAILURES` times in
a row, break the shard instead: a worker that cannot start (a memory limit below Python's
start-up size does this) would otherwise be restarted for ever. A ready worker clears the count.

>>> restarts = Restarts("shard 1 of api")
>>> [restarts.after_exit(ready=False, returncode=-9) for _ in range(3)]
[True, True, False]
>>> restarts.broken
"workers of shard 1 of api exit as they start (status -9, 3 times in a row): see the ..."
>>> restarts.reset(); restarts.broken is None
True
"""

from __future__ import annotations

import signal

MAX_START_FAILURES = 3  # workers of a shard that die before they are ready, in a row
_BACKOFF_S = 0.2  # per start failure in a row, before the next worker of the shard starts


class Restarts:
    """Whether a shard's exited workers are replaced, counting those that never got ready.

    Parameters
    ----------
    shard
        How messages name the shard (``shard 1 of api``).
    """

    def __init__(self, shard: str) -> None:
        self.shard = shard
        self.start_failures = 0
        self.broken: str | None = None  # why the shard takes no requests, once it is broken

    def reset(self) -> None:
        """A new plan for the shard: its workers get a fresh start."""
        self.start_failures = 0
        self.broken = None

    def ready(self) -> None:
        """A worker of the shard got ready: it can start."""
        self.start_failures = 0

    def after_exit(self, *, ready: bool, returncode: int) -> bool:
        """Whether a worker the shard still wants, which just exited, is replaced."""
        if ready:
            return True
        self.start_failures += 1
        if self.start_failures < MAX_START_FAILURES:
            return True
        self.broken = (
            f"workers of {self.shard} exit as they start (status {returncode}, "
            f"{MAX_START_FAILURES} times in a row): see the gateway's stderr; a memory limit "
            "below Python's start-up size does this"
        )
        return False

    @property
    def backoff_s(self) -> float:
        """How long the next worker waits before it starts (0 after a ready one)."""
        return _BACKOFF_S * self.start_failures


def signal_name(returncode: int) -> str | None:
    """The signal that killed a process, from its return code (None: it exited).

    >>> signal_name(-9), signal_name(1)
    ('SIGKILL', None)
    """
    return signal.Signals(-returncode).name if returncode < 0 else None


def exit_message(
    *,
    pid: int,
    shard_id: int,
    returncode: int,
    oom: bool,
    memory_mib: int,
    ready: bool,
    expected: bool,
    restart: bool,
) -> str:
    """What happened to a worker, for logs and the error of the request it ran.

    >>> exit_message(pid=7, shard_id=2, returncode=-9, oom=True, memory_mib=64, ready=True,
    ...              expected=False, restart=True)
    "worker 7 of shard 2 was killed by SIGKILL from the kernel's OOM killer: shard 2 reached \
its memory limit of 64 MiB; a new worker takes its place"
    """
    killer = signal_name(returncode)
    how = f"was killed by {killer}" if killer else f"exited with status {returncode}"
    cause = (
        f" from the kernel's OOM killer: shard {shard_id} reached its memory limit of "
        f"{memory_mib} MiB"
        if oom
        else ""
    )
    after = "; a new worker takes its place" if restart else ""
    state = "" if ready or expected else " before it was ready"
    return f"worker {pid} of shard {shard_id} {how}{cause}{state}{after}"
