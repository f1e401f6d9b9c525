"""Probing a hierarchy: can this process create shard groups there and write their limits?

Also the small cgroup file operations the shard groups share (create, remove, enable
controllers) and the one-line explanation of a failure, with what would fix it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shardshape.gateway.isolation.layout import (
    CONTROLLERS,
    LIMIT_FILES,
    RESOURCES,
    Hierarchy,
    Resource,
)


class ControllerProbe(BaseModel):
    """Whether one controller could hold shard groups here, and why (not)."""

    model_config = ConfigDict(frozen=True)

    version: Literal[1, 2]
    resource: Resource
    controller: str
    groups_root: Path | None = None  # where shard groups go: <base>/<parent>
    limit_file: str = ""
    writable: bool = False
    reason: str = ""


def groups_base(hierarchy: Hierarchy, base: str) -> Path:
    """The directory shard groups go under (before the parent): ``base`` or this process's group.

    When this process's group is not visible in the mount (a container that mounts its own
    group as the root, without a cgroup namespace), the mount root is that group.
    """
    path = hierarchy.mount / (base or hierarchy.own_path).lstrip("/")
    if not base and not path.is_dir():
        return hierarchy.mount
    return path


def probe_controllers(
    version: Literal[1, 2], hierarchies: list[Hierarchy], base: str, parent: str
) -> list[ControllerProbe]:
    """Try each resource's controller of one cgroup version: create a probe group, write a limit."""
    found = [h for h in hierarchies if h.version == version]
    probes = []
    for resource in RESOURCES:
        controller = CONTROLLERS[version][resource]
        holder = next((h for h in found if version == 2 or controller in h.controllers), None)
        if holder is None:
            what = "no cgroup2 filesystem" if version == 2 else f"no {controller} hierarchy"
            probes.append(
                ControllerProbe(
                    version=version,
                    resource=resource,
                    controller=controller,
                    reason=f"{what} is mounted for this process",
                )
            )
            continue
        probes.append(_probe(version, resource, controller, holder, base, parent))
    return probes


def _probe(
    version: Literal[1, 2],
    resource: Resource,
    controller: str,
    hierarchy: Hierarchy,
    base: str,
    parent: str,
) -> ControllerProbe:
    base_dir = groups_base(hierarchy, base)
    root = base_dir / parent
    result = ControllerProbe(
        version=version, resource=resource, controller=controller, groups_root=root
    )
    if not base_dir.is_dir():
        return result.model_copy(
            update={
                "reason": f"SHARDSHAPE_ISOLATION_CGROUP_BASE={base} is not a cgroup in "
                f"{hierarchy.mount}: create it or leave the setting empty"
            }
        )
    if version == 2:
        offered = _read(base_dir / "cgroup.controllers").split()
        if controller not in offered:
            return result.model_copy(
                update={
                    "reason": f"the cgroup2 group {base_dir} does not offer the {controller} "
                    "controller (bound to a cgroup1 hierarchy, or not delegated to this group)"
                }
            )
    try:
        with _probe_group(version, root, controller) as probe_dir:
            limit_file = next(
                (f for f in LIMIT_FILES[version][resource] if (probe_dir / f).exists()), None
            )
            if limit_file is None:
                names = " or ".join(LIMIT_FILES[version][resource])
                why = " (the disk scheduler has no weights: use BFQ)" if resource == "io" else ""
                return result.model_copy(
                    update={"reason": f"a {controller} group has no {names}{why}"}
                )
            target = probe_dir / limit_file
            current = target.read_text().strip()
            target.write_text("-1" if limit_file == "memory.limit_in_bytes" else current)
    except OSError as exc:
        return result.model_copy(update={"reason": explain_os_error(exc, root, version)})
    return result.model_copy(
        update={"writable": True, "limit_file": limit_file, "reason": "a probe group worked"}
    )


@contextlib.contextmanager
def _probe_group(version: int, root: Path, controller: str) -> Iterator[Path]:
    created = make_group(root)
    probe = root / f"probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    enabled = []
    try:
        if version == 2:
            enabled = enable_controllers(root.parent, [controller])
            enable_controllers(root, [controller])
        make_group(probe)
        try:
            yield probe
        finally:
            remove_group(probe)
    finally:
        if created:
            remove_group(root)
        for name in enabled:  # give back what the probe switched on, when nothing uses it
            with contextlib.suppress(OSError):
                (root.parent / "cgroup.subtree_control").write_text(f"-{name}")


def make_group(path: Path) -> bool:
    """Create the group ``path`` (its parent must exist); True when this call created it."""
    try:
        path.mkdir()
    except FileExistsError:
        return False
    return True


def remove_group(path: Path) -> bool:
    """Remove an empty group; False when it still holds processes or children (or is gone)."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True


def enable_controllers(group: Path, controllers: list[str]) -> list[str]:
    """Switch cgroup2 ``controllers`` on for the children of ``group``; returns those it enabled."""
    active = set(_read(group / "cgroup.subtree_control").split())
    missing = [c for c in controllers if c not in active]
    if missing:
        (group / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))
    return missing


def explain_os_error(exc: OSError, where: Path, version: int) -> str:
    """One line saying why a cgroup operation failed and what would make it work."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"{where} is not writable ({exc.strerror}): run the gateway as root or in a "
            "cgroup delegated to its user (e.g. systemd Delegate=yes)"
        )
    if exc.errno == errno.EBUSY and version == 2:
        return (
            f"{where.parent} holds processes, and cgroup2 lets only groups without processes "
            "hand controllers to children: run the gateway in a delegated cgroup and set "
            "SHARDSHAPE_ISOLATION_CGROUP_BASE to an empty group below it"
        )
    return f"{where}: {exc.strerror or exc}"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
