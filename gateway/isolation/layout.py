"""Where the cgroup hierarchies are: parsed from ``/proc/self/mounts`` and ``/proc/self/cgroup``.

Plain functions of text, so they are tested on fabricated host layouts:

>>> mounts = parse_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\\n")
>>> mounts[0].version, str(mounts[0].path)
(2, '/sys/fs/cgroup')
>>> parse_proc_cgroup("0::/user.slice/app.scope\\n")
{'': '/user.slice/app.scope'}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Resource = Literal["cpu", "memory", "io"]

RESOURCES: tuple[Resource, ...] = ("cpu", "memory", "io")
V1_CONTROLLERS = frozenset(
    {"cpu", "cpuacct", "cpuset", "memory", "blkio", "devices", "freezer", "net_cls", "net_prio",
     "perf_event", "hugetlb", "pids", "rdma", "misc"}
)  # fmt: skip
# The controller of each resource, and the interface files that carry its limit (in v1 the
# block I/O weight lives in blkio.weight with CFQ, in blkio.bfq.weight with BFQ).
CONTROLLERS: dict[int, dict[Resource, str]] = {
    2: {"cpu": "cpu", "memory": "memory", "io": "io"},
    1: {"cpu": "cpu", "memory": "memory", "io": "blkio"},
}
LIMIT_FILES: dict[int, dict[Resource, tuple[str, ...]]] = {
    2: {"cpu": ("cpu.max",), "memory": ("memory.max",), "io": ("io.weight",)},
    1: {
        "cpu": ("cpu.cfs_quota_us",),
        "memory": ("memory.limit_in_bytes",),
        "io": ("blkio.weight", "blkio.bfq.weight"),
    },
}


@dataclass(frozen=True)
class CgroupMount:
    """One cgroup filesystem from the mount table."""

    path: Path
    version: Literal[1, 2]
    controllers: frozenset[str]  # v1: from the mount options; v2: read from the group later


@dataclass(frozen=True)
class Hierarchy:
    """A mounted cgroup hierarchy and this process's group in it (relative to the mount)."""

    version: Literal[1, 2]
    mount: Path
    controllers: frozenset[str]
    own_path: str


def unescape_mount_field(text: str) -> str:
    r"""Undo the octal escapes of the mount table (``\040`` is a space).

    >>> unescape_mount_field(r"/mnt/my\040cgroups")
    '/mnt/my cgroups'
    """
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), text)


def parse_mounts(text: str) -> list[CgroupMount]:
    """The cgroup filesystems in mount-table text (``/proc/self/mounts`` format).

    >>> table = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\\n"
    >>> [(m.version, sorted(m.controllers)) for m in parse_mounts(table)]
    [(1, ['cpu', 'cpuacct'])]
    """
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] not in ("cgroup", "cgroup2"):
            continue
        path = Path(unescape_mount_field(fields[1]))
        if fields[2] == "cgroup2":
            found.append(CgroupMount(path, 2, frozenset()))
        else:
            options = set(fields[3].split(","))
            found.append(CgroupMount(path, 1, frozenset(options & V1_CONTROLLERS)))
    return found


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Controller -> this process's group path, from ``/proc/self/cgroup`` text.

    The cgroup2 hierarchy is under the key ``""``; named v1 hierarchies keep their name.

    >>> parse_proc_cgroup("4:memory:/app\\n1:cpu,cpuacct:/\\n0::/\\n")
    {'memory': '/app', 'cpu': '/', 'cpuacct': '/', '': '/'}
    """
    groups: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            groups.setdefault(controller, path)
    return groups


def find_hierarchies(mounts_text: str, proc_cgroup_text: str) -> list[Hierarchy]:
    """The usable cgroup hierarchies: the first mount of each, with this process's group in it.

    A v1 hierarchy whose controllers this process is not in (no line in ``/proc/self/cgroup``)
    is left out, and so is a v2 mount when this process has no v2 group.

    >>> mounts = "cgroup /c/memory cgroup rw,memory 0 0\\ncgroup2 /c/unified cgroup2 rw 0 0\\n"
    >>> [(h.version, str(h.mount), h.own_path)
    ...  for h in find_hierarchies(mounts, "4:memory:/job/7\\n0::/\\n")]
    [(1, '/c/memory', '/job/7'), (2, '/c/unified', '/')]
    """
    own = parse_proc_cgroup(proc_cgroup_text)
    found: list[Hierarchy] = []
    seen_v1: set[str] = set()
    seen_v2 = False
    for mount in parse_mounts(mounts_text):
        if mount.version == 2:
            if seen_v2 or "" not in own:
                continue
            seen_v2 = True
            found.append(Hierarchy(2, mount.path, frozenset(), own[""]))
            continue
        if not mount.controllers or mount.controllers & seen_v1:
            continue
        member = next((own[c] for c in sorted(mount.controllers) if c in own), None)
        if member is None:
            continue
        seen_v1 |= mount.controllers
        found.append(Hierarchy(1, mount.path, mount.controllers, member))
    return found
