"""Handlers the isolation tests run in shard worker processes (``module:function`` paths).

Workers import this module, so it imports nothing heavy: its size counts against the small
memory limits the tests give their shards.
"""

from __future__ import annotations

import os
import time


def whoami(tag: str = "") -> dict:
    """The worker's pid, and ``tag`` back."""
    return {"pid": os.getpid(), "tag": tag}


def nap(seconds: float) -> int:
    """Sleep, then return the worker's pid."""
    time.sleep(seconds)
    return os.getpid()


def burn(seconds: float) -> int:
    """Busy-loop for ``seconds`` of wall-clock time; returns the loop count."""
    end = time.monotonic() + seconds
    count = 0
    while time.monotonic() < end:
        count += 1
    return count


def hog(mib: int, step_mib: int = 8, pause_s: float = 0.02) -> int:
    """Allocate and touch ``mib`` MiB, ``step_mib`` at a time; returns the bytes held."""
    held = []
    for _ in range(mib // step_mib):
        held.append(b"\x01" * (step_mib << 20))
        time.sleep(pause_s)
    return sum(map(len, held))
