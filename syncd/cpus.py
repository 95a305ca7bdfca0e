"""How many CPUs this process may use: its CPU affinity, capped by its cgroup's quota.

A container's CPU limit (Docker ``--cpus``, a Kubernetes ``limits.cpu``) and a systemd
unit's ``CPUQuota=`` are cgroup CPU quotas: the process sees every CPU of the machine
but is throttled to the quota. The quota that counts is the smallest on the way from
the process's own cgroup (``/proc/self/cgroup``) up to the root of the hierarchy, in
cgroup v2 (``cpu.max``: ``max 100000`` or ``150000 100000``) and v1
(``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, ``-1`` for none).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cgroup_cpu_quota", "usable_cpus"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
_V1_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def usable_cpus(*, root: Path = CGROUP_ROOT, membership: Path = SELF_CGROUP) -> float:
    """The CPUs this process may run on at once, a fraction under a quota of 1.5."""
    if hasattr(os, "sched_getaffinity"):
        cpus = float(len(os.sched_getaffinity(0)))
    else:
        cpus = float(os.cpu_count() or 1)
    quota = cgroup_cpu_quota(root=root, membership=membership)
    return cpus if quota is None else min(cpus, quota)


def cgroup_cpu_quota(*, root: Path = CGROUP_ROOT, membership: Path = SELF_CGROUP) -> float | None:
    """The smallest CPU quota, in CPUs, on this process's cgroups and their ancestors;
    None when there is none (or no cgroup file can be read)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    quotas: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        relative = path.strip().lstrip("/")
        if hierarchy == "0" and not controllers:  # v2, the unified hierarchy
            quotas += _found(_v2_quota(folder / "cpu.max") for folder in _upwards(root, relative))
        elif "cpu" in controllers.split(","):  # v1, the cpu controller's hierarchy
            for name in (controllers, *_V1_MOUNTS):
                mount = root / name
                if mount.is_dir():
                    quotas += _found(_v1_quota(folder) for folder in _upwards(mount, relative))
                    break
    return min(quotas) if quotas else None


def _upwards(top: Path, relative: str) -> Iterator[Path]:
    """``top/relative``, then each parent folder up to ``top`` itself. In a container
    the hierarchy's root is often the container's own cgroup, and the path that
    ``/proc/self/cgroup`` names from the host's root does not exist below it: the walk
    then finds the quota at the root."""
    parts = [part for part in relative.split("/") if part and part != ".."]
    for depth in range(len(parts), -1, -1):
        yield top.joinpath(*parts[:depth])


def _found(quotas: Iterator[float | None]) -> list[float]:
    return [quota for quota in quotas if quota is not None]


def _v2_quota(file: Path) -> float | None:
    try:
        fields = file.read_text().split()
        if fields[0] == "max":
            return None
        return _ratio(float(fields[0]), float(fields[1]))
    except (OSError, ValueError, IndexError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = float((folder / "cpu.cfs_quota_us").read_text().strip())
        period = float((folder / "cpu.cfs_period_us").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if quota < 0 else _ratio(quota, period)


def _ratio(quota: float, period: float) -> float | None:
    return quota / period if quota > 0 and period > 0 else None
