"""The CPUs a process may use (syncd.cpus): affinity and cgroup quotas, on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from syncd.cpus import cgroup_cpu_quota, usable_cpus

V2 = "0::/system.slice/syncd.service\n"
V1 = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n2:cpuset:/docker/abc\n"


def tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.mark.parametrize(
    ("membership", "files", "expected"),
    [
        (V2, {}, None),  # no cgroup files: no cap
        (V2, {"system.slice/syncd.service/cpu.max": "150000 100000\n"}, 1.5),  # CPUQuota=150%
        (V2, {"system.slice/syncd.service/cpu.max": "max 100000\n"}, None),  # no limit
        # The smallest on the way up counts: a limit on the parent slice.
        (
            V2,
            {
                "system.slice/syncd.service/cpu.max": "max 100000\n",
                "system.slice/cpu.max": "50000 100000\n",
            },
            0.5,
        ),
        # A container's own cgroup as the root (cgroup namespace): found at the root.
        ("0::/\n", {"cpu.max": "200000 100000\n"}, 2.0),
        (V2, {"cpu.max": "garbage\n"}, None),  # unreadable: no cap
        # v1: the cpu controller's hierarchy, under the host's path or at the root.
        (
            V1,
            {
                "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
                "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "200000\n",
            },
            0.5,
        ),
        (
            V1,
            {"cpu,cpuacct/cpu.cfs_quota_us": "300000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            3.0,
        ),
        (
            V1,
            {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
            None,
        ),
        ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000"}, 1.0),
    ],
)
def test_the_quota_is_the_smallest_on_the_way_up_from_this_process_cgroup(
    tmp_path: Path, membership: str, files: dict[str, str], expected: float | None
) -> None:
    (tmp_path / "cgroup").write_text(membership)
    root = tmp_path / "fs"
    root.mkdir()
    tree(root, files)
    assert cgroup_cpu_quota(root=root, membership=tmp_path / "cgroup") == expected


def test_usable_cpus_is_the_affinity_capped_by_the_quota(tmp_path: Path) -> None:
    affinity = float(len(os.sched_getaffinity(0)))
    (tmp_path / "cgroup").write_text("0::/\n")
    assert usable_cpus(root=tmp_path, membership=tmp_path / "cgroup") == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cpus(root=tmp_path, membership=tmp_path / "cgroup") == min(0.5, affinity)
    (tmp_path / "cpu.max").write_text(f"{int(affinity * 4)}00000 100000\n")
    assert usable_cpus(root=tmp_path, membership=tmp_path / "cgroup") == affinity
    # No membership file at all (not Linux, or /proc not mounted): the affinity.
    assert usable_cpus(root=tmp_path, membership=tmp_path / "missing") == affinity
