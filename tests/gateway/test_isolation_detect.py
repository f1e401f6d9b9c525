"""Detection of the host's isolation from mount-table and /proc/self/cgroup text, and the limit
values written for a plan's resources: plain functions, tested on fabricated host layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardshape.core.contracts import ResourceSpec
from shardshape.core.settings import SettingsError, load_settings
from shardshape.gateway.isolation.cgroups import limit_values
from shardshape.gateway.isolation.detect import choose_mode
from shardshape.gateway.isolation.layout import (
    Hierarchy,
    find_hierarchies,
    parse_mounts,
    parse_proc_cgroup,
)
from shardshape.gateway.isolation.probe import ControllerProbe, groups_base
from shardshape.gateway.isolation.process_limits import (
    address_space_limit,
    ioprio_level_for,
    nice_for,
)

# A systemd host on cgroup2 only.
UNIFIED_MOUNTS = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
"""
UNIFIED_CGROUP = "0::/user.slice/user-1000.slice/session-3.scope\n"

# An older host: cgroup1 controllers (cpu and cpuacct mounted together), a name=systemd
# hierarchy and an empty cgroup2 mount beside them.
HYBRID_MOUNTS = """\
tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,name=systemd 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,nosuid,nodev,noexec,relatime,blkio 0 0
cgroup /mnt/again/memory cgroup rw,relatime,memory 0 0
"""
HYBRID_CGROUP = """\
12:blkio:/system.slice/api.service
5:memory:/system.slice/api.service
3:cpu,cpuacct:/system.slice/api.service
1:name=systemd:/system.slice/api.service
0::/system.slice/api.service
"""


def test_a_cgroup2_host_has_one_hierarchy_with_the_process_in_its_scope() -> None:
    (unified,) = find_hierarchies(UNIFIED_MOUNTS, UNIFIED_CGROUP)
    assert unified == Hierarchy(
        2, Path("/sys/fs/cgroup"), frozenset(), "/user.slice/user-1000.slice/session-3.scope"
    )


def test_a_hybrid_host_lists_each_v1_controller_mount_once_and_skips_named_ones() -> None:
    found = {(h.version, str(h.mount)): h for h in find_hierarchies(HYBRID_MOUNTS, HYBRID_CGROUP)}
    assert set(found) == {
        (2, "/sys/fs/cgroup/unified"),
        (1, "/sys/fs/cgroup/cpu,cpuacct"),
        (1, "/sys/fs/cgroup/memory"),
        (1, "/sys/fs/cgroup/blkio"),
    }
    cpu = found[(1, "/sys/fs/cgroup/cpu,cpuacct")]
    assert cpu.controllers == {"cpu", "cpuacct"}
    assert cpu.own_path == "/system.slice/api.service"


def test_mount_points_with_spaces_are_unescaped() -> None:
    (mount,) = parse_mounts(r"cgroup /mnt/my\040groups cgroup rw,memory 0 0")
    assert mount.path == Path("/mnt/my groups") and mount.controllers == {"memory"}


def test_a_v1_hierarchy_this_process_is_not_in_is_left_out() -> None:
    mounts = "cgroup /c/cpu cgroup rw,cpu 0 0\ncgroup /c/memory cgroup rw,memory 0 0\n"
    found = find_hierarchies(mounts, "4:memory:/\n")
    assert [str(h.mount) for h in found] == ["/c/memory"]


def test_proc_cgroup_without_a_v2_line_has_no_unified_group() -> None:
    assert "" not in parse_proc_cgroup("2:cpu:/a\n1:name=systemd:/a\n")
    assert find_hierarchies("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", "2:cpu:/a\n") == []


def test_groups_go_under_the_own_group_or_the_mount_root_when_it_is_not_visible(
    tmp_path: Path,
) -> None:
    (tmp_path / "job" / "7").mkdir(parents=True)
    visible = Hierarchy(1, tmp_path, frozenset({"memory"}), "/job/7")
    hidden = Hierarchy(1, tmp_path, frozenset({"memory"}), "/docker/abc")  # no cgroup namespace
    assert groups_base(visible, "") == tmp_path / "job" / "7"
    assert groups_base(hidden, "") == tmp_path
    assert groups_base(hidden, "/app.slice") == tmp_path / "app.slice"  # a set base is kept


def _probe(version: int, resource: str, writable: bool = True) -> ControllerProbe:
    controller = {"io": "io" if version == 2 else "blkio"}.get(resource, resource)
    return ControllerProbe(
        version=version,
        resource=resource,
        controller=controller,
        writable=writable,
        reason="a probe group worked" if writable else f"{controller} is not delegated",
    )


def test_auto_prefers_cgroup2_and_falls_back_per_resource() -> None:
    probes = [_probe(2, "cpu"), _probe(2, "memory"), _probe(2, "io", writable=False)]
    probes += [_probe(1, "cpu"), _probe(1, "memory"), _probe(1, "io")]
    mode, how, _, error = choose_mode("auto", probes, True, True)
    assert (mode, error) == ("cgroup2", None)
    assert {r: e.via for r, e in how.items()} == {
        "cpu": "cgroup2",
        "memory": "cgroup2",
        "io": "ionice",
    }


def test_auto_takes_cgroup1_when_cgroup2_has_no_controllers() -> None:
    probes = [_probe(2, r, writable=False) for r in ("cpu", "memory", "io")]
    probes += [_probe(1, "cpu"), _probe(1, "memory"), _probe(1, "io", writable=False)]
    mode, how, _, _ = choose_mode("auto", probes, True, False)
    assert mode == "cgroup1"
    assert [how[r].via for r in ("cpu", "memory", "io")] == ["cgroup1", "cgroup1", "none"]


def test_auto_without_cgroups_uses_rlimits_and_without_those_nothing() -> None:
    closed = [_probe(v, r, writable=False) for v in (1, 2) for r in ("cpu", "memory", "io")]
    mode, how, reasons, _ = choose_mode("auto", closed, True, True)
    assert mode == "rlimit" and how["cpu"].via == "nice" and how["memory"].via == "rlimit"
    assert reasons
    mode, how, _, error = choose_mode("auto", closed, False, False)
    assert mode == "none" and error is None
    assert {e.via for e in how.values()} == {"none"}


def test_a_named_mode_the_host_lacks_is_an_error_naming_the_setting_and_why() -> None:
    probes = [_probe(2, "cpu", writable=False), _probe(1, "cpu")]
    _, _, _, error = choose_mode("cgroup2", probes, True, True)
    assert error is not None
    assert "SHARDSHAPE_ISOLATION_MODE=cgroup2" in error and "cpu is not delegated" in error
    assert "shardshape doctor" in error
    assert choose_mode("none", probes, True, True)[0] == "none"


def test_cgroup_values_for_a_plan_share() -> None:
    spec = ResourceSpec(cpu_millicores=1500, memory_mib=256, io_weight=50)
    v2 = dict(pair for writes in limit_values(2, spec).values() for pair in writes)
    assert v2 == {
        "cpu.max": "150000 100000",
        "memory.max": str(256 << 20),
        "memory.swap.max": "0",
        "io.weight": "default 50",
    }
    v1 = dict(
        pair for writes in limit_values(1, spec, "blkio.bfq.weight").values() for pair in writes
    )
    assert v1["cpu.cfs_quota_us"] == "150000" and v1["cpu.cfs_period_us"] == "100000"
    assert v1["memory.limit_in_bytes"] == v1["memory.memsw.limit_in_bytes"] == str(256 << 20)
    assert v1["blkio.bfq.weight"] == "250"


def test_zero_means_no_limit() -> None:
    v2 = dict(pair for writes in limit_values(2, ResourceSpec()).values() for pair in writes)
    assert v2["cpu.max"] == "max 100000" and v2["memory.max"] == "max"


def test_process_fallbacks_scale_with_the_share_per_worker() -> None:
    assert nice_for(250, workers=1) > nice_for(500, workers=1) > nice_for(1000, workers=1) == 0
    assert nice_for(1000, workers=4) == nice_for(250, workers=1)
    assert nice_for(1, workers=1) == 19
    assert ioprio_level_for(10_000) == 0 and ioprio_level_for(1) == 7
    assert address_space_limit(50 << 20, 300, 3) == (50 << 20) + (100 << 20)


def test_isolation_settings_fail_fast_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDSHAPE_ISOLATION_MODE", "docker")
    with pytest.raises(SettingsError, match="SHARDSHAPE_ISOLATION_MODE=docker"):
        load_settings()
    monkeypatch.delenv("SHARDSHAPE_ISOLATION_MODE")
    monkeypatch.setenv("SHARDSHAPE_ISOLATION_CGROUP_PARENT", "../escape")
    with pytest.raises(SettingsError, match="SHARDSHAPE_ISOLATION_CGROUP_PARENT"):
        load_settings()
    monkeypatch.delenv("SHARDSHAPE_ISOLATION_CGROUP_PARENT")
    monkeypatch.setenv("SHARDSHAPE_ISOLATION_CGROUP_BASE", "/a/../b")
    with pytest.raises(SettingsError, match="SHARDSHAPE_ISOLATION_CGROUP_BASE"):
        load_settings()
