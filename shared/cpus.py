"""How many CPUs this process may use, a container's CPU limit included.

``os.cpu_count()`` counts the machine's CPUs. A container's CPU limit (a Kubernetes
pod's ``resources.limits.cpu``, ``docker run --cpus``) is a CFS quota on its cgroup,
which ``os.cpu_count()`` does not see: a pod limited to 2 CPUs on a 32-CPU node would
size a pool of CPU-bound threads for 32, each thread would get a sixteenth of a CPU,
and every call on them would take 16 times as long while holding its memory.

So the count here is the smaller of the CPUs the process may be scheduled on (its
affinity, which cpusets and ``taskset`` set) and the tightest quota on its cgroup and
the cgroup's ancestors (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` over
``cpu.cfs_period_us``), rounded up: a limit of 1.5 CPUs is worth 2 threads.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may keep busy at once (at least 1)."""
    cpus = scheduled_cpus()
    quota = cpu_quota(cgroup_root, proc_cgroup)
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def scheduled_cpus() -> int:
    """The CPUs the process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota, in CPUs, on this process's cgroup or an ancestor of it;
    None when there is none or it cannot be read (no cgroups: not Linux, or hidden)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float | None] = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2: one hierarchy, every controller
            quotas += [_v2_quota(cgroup_root / d / "cpu.max") for d in _self_and_ancestors(path)]
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's hierarchy
            mount = cgroup_root / controllers
            if not mount.is_dir():
                mount = cgroup_root / "cpu"
            quotas += [_v1_quota(mount / d) for d in _self_and_ancestors(path)]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _self_and_ancestors(path: str) -> list[str]:
    # Inside a container the hierarchy is often mounted at the container's own cgroup,
    # so the path /proc names may not exist below the mount: its ancestors, up to the
    # mount itself (""), are read too, and a missing file counts as no limit.
    parts = [p for p in path.split("/") if p]
    return ["/".join(parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_quota(cpu_max: Path) -> float | None:
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None  # -1: no quota
