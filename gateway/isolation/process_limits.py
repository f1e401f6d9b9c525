"""Per-process limits, the fallback where no cgroup controller is writable: nice, RLIMIT_AS, ionice.

None of them is a rate cap: ``nice`` lowers a worker's CPU priority under contention (an idle
machine still gives it a whole core; ``RLIMIT_CPU`` is a total of CPU-seconds, not a rate, so
it is not used), ``RLIMIT_AS`` bounds each worker's address space (allocations past it raise
``MemoryError`` in the handler), and ``ionice`` sets a best-effort I/O priority that only the
BFQ scheduler honours. The gateway sets them on its workers from outside (``prlimit``,
``setpriority``, ``ioprio_set``), so they change live with each plan.

>>> nice_for(500, workers=1), nice_for(4000, workers=4), nice_for(0, workers=2)
(3, 0, 0)
>>> ioprio_level_for(100), ioprio_level_for(1000), ioprio_level_for(10)
(4, 0, 7)
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import sys

try:
    import resource
except ImportError:  # not a POSIX platform
    resource = None  # type: ignore[assignment]

MAX_NICE = 19
_IOPRIO_CLASS_BE = 2
_IOPRIO_CLASS_SHIFT = 13
_IOPRIO_WHO_PROCESS = 1
# ioprio_set / ioprio_get syscall numbers; the generic table (aarch64, riscv64) shares them.
_IOPRIO_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31), "riscv64": (30, 31)}


def available() -> tuple[bool, str]:
    """Whether this platform lets the gateway limit its workers from outside, and why not."""
    if not sys.platform.startswith("linux"):
        return False, f"per-process limits need Linux (prlimit); this is {sys.platform}"
    if resource is None or not hasattr(resource, "prlimit") or not hasattr(os, "setpriority"):
        return False, "this Python has no resource.prlimit or os.setpriority"
    return True, ""


def ionice_available() -> bool:
    """Whether ``ioprio_set`` can be called on this machine's architecture."""
    numbers = _IOPRIO_SYSCALLS.get(platform.machine())
    if numbers is None or not sys.platform.startswith("linux"):
        return False
    return _syscall(numbers[1], _IOPRIO_WHO_PROCESS, 0) >= 0


def nice_for(cpu_millicores: int, workers: int) -> int:
    """The nice value that gives a worker of a shard its CPU share, relative to one whole core.

    Each nice step is about 1.25x less CPU weight, so a worker with half a core gets nice 3.
    No CPU limit (0 millicores) or a core or more per worker is nice 0.
    """
    share = cpu_millicores / max(workers, 1)
    if share <= 0 or share >= 1000:
        return 0
    return min(MAX_NICE, round(math.log(1000 / share) / math.log(1.25)))


def ioprio_level_for(io_weight: int) -> int:
    """Best-effort I/O level (0 highest, 7 lowest) for a cgroup-style ``io_weight`` (100 = 4)."""
    level = round(4 - 4 * math.log10(max(io_weight, 1) / 100))
    return min(7, max(0, level))


def address_space_limit(baseline_bytes: int, memory_mib: int, workers: int) -> int | None:
    """RLIMIT_AS for one worker: its address space when idle plus its part of the shard's memory.

    >>> address_space_limit(100 << 20, memory_mib=256, workers=2) >> 20
    228
    >>> address_space_limit(100 << 20, memory_mib=0, workers=2) is None
    True
    """
    if memory_mib <= 0:
        return None
    return baseline_bytes + (memory_mib << 20) // max(workers, 1)


def virtual_size(pid: int) -> int:
    """A process's address-space size in bytes (``/proc/<pid>/statm``)."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def set_address_space(pid: int, limit_bytes: int | None) -> None:
    value = resource.RLIM_INFINITY if limit_bytes is None else limit_bytes
    resource.prlimit(pid, resource.RLIMIT_AS, (value, value))


def set_nice(pid: int, value: int) -> None:
    """Set ``pid``'s nice value (raising priority back needs CAP_SYS_NICE; then it stays)."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, value)
    except PermissionError:
        if value >= os.getpriority(os.PRIO_PROCESS, pid):
            raise


def set_ionice(pid: int, level: int) -> None:
    numbers = _IOPRIO_SYSCALLS.get(platform.machine())
    if numbers is None:
        return
    value = (_IOPRIO_CLASS_BE << _IOPRIO_CLASS_SHIFT) | level
    if _syscall(numbers[0], _IOPRIO_WHO_PROCESS, pid, value) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ioprio_set on {pid}: {os.strerror(err)}")


def _syscall(number: int, *args: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(number, *(ctypes.c_long(a) for a in args))
