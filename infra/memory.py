"""Memory of a running process, from ``/proc`` (Linux): resident set size now and at peak.

Only tests and ``benchmarks/bench_memory.py`` read it. It lives here, not in the tests'
support package, because the benchmark runs as a script (``python benchmarks/bench_memory.py``)
and imports only the installed ``shardshape``, never the tests.

>>> import os
>>> usage = process_memory(os.getpid())
>>> 0 < usage.rss_bytes <= usage.peak_rss_bytes
True
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class MemoryUsage(NamedTuple):
    rss_bytes: int  # resident now (VmRSS)
    peak_rss_bytes: int  # the most resident since the process started (VmHWM)


def process_memory(pid: int) -> MemoryUsage:
    """Resident memory of process ``pid``; raises ``FileNotFoundError`` when it is gone."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024  # reported in kB
    return MemoryUsage(fields["VmRSS"], fields["VmHWM"])
