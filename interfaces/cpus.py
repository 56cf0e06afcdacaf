"""How many CPUs this process may use: the scheduler affinity and the cgroup CPU quota, not the host's count.

`docker run --cpus 2` on a 64-core host leaves 64 CPUs in the affinity mask but sets a cgroup quota of 2 CPUs
(cgroup v2 `cpu.max` "200000 100000", v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`); `--cpuset-cpus` narrows
the affinity instead. torch (OpenMP) sizes its pool from the affinity only, so under a quota it runs more
threads than it gets CPU time for and is throttled. The model sets torch's threads to `allowed_cpus()` when
its config's `threads` is null. Standard library only (no torch): the model, process.py and tests import it.
"""
from __future__ import annotations

import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"
V1_CONTROLLER_DIRS = ("cpu,cpuacct", "cpu", "cpuacct,cpu")


def affinity_cpus() -> int:
    """CPUs in this process's scheduler affinity mask (os.cpu_count() where the platform has none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _own_cgroup_paths(proc_self_cgroup: str) -> tuple[str | None, str | None]:
    """This process's cgroup path in the v2 hierarchy and in the v1 cpu controller's (None when absent)."""
    v2 = v1 = None
    for line in (_read(proc_self_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _candidates(base: str, path: str | None) -> list[str]:
    """Folders whose limits apply to the process, innermost first: its own cgroup and every ancestor under
    `base` (on a host, or in a container without a cgroup namespace), then `base` itself (a container's
    namespaced view, where /proc/self/cgroup may still name the host-side path)."""
    folders = []
    if path and path.strip("/"):
        parts = path.strip("/").split("/")
        for depth in range(len(parts), 0, -1):
            folder = os.path.join(base, *parts[:depth])
            if os.path.isdir(folder):
                folders.append(folder)
    folders.append(base)
    return folders


def _v2_quota(folder: str) -> float | None:
    text = _read(os.path.join(folder, "cpu.max"))
    if not text:
        return None
    fields = text.split()
    if fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1]) if len(fields) > 1 else 100000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(folder: str) -> float | None:
    quota, period = _read(os.path.join(folder, "cpu.cfs_quota_us")), _read(os.path.join(folder, "cpu.cfs_period_us"))
    try:
        quota_us, period_us = int(quota), int(period)
    except (TypeError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None  # -1: no limit


def cgroup_cpu_quota(root: str = CGROUP_ROOT, proc_self_cgroup: str = PROC_SELF_CGROUP) -> float | None:
    """The CPU quota in CPUs (e.g. 2.0 for `--cpus 2`, 1.5 for `--cpus 1.5`), the smallest along the process's
    cgroup and its ancestors; None when there is none (or no cgroup filesystem). cgroup v2 when `root` holds
    cgroup.controllers, else v1's cpu controller."""
    v2_path, v1_path = _own_cgroup_paths(proc_self_cgroup)
    quotas = []
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        quotas = [_v2_quota(folder) for folder in _candidates(root, v2_path)]
    else:
        for name in V1_CONTROLLER_DIRS:
            base = os.path.join(root, name)
            if os.path.isdir(base):
                quotas = [_v1_quota(folder) for folder in _candidates(base, v1_path)]
                break
    quotas = [q for q in quotas if q is not None]
    return min(quotas) if quotas else None


def allowed_cpus(root: str = CGROUP_ROOT, proc_self_cgroup: str = PROC_SELF_CGROUP,
                 affinity: int | None = None) -> int:
    """CPUs this process may keep busy: the affinity count, capped by the cgroup quota rounded up (a quota of
    1.5 CPUs gets 2 threads), at least 1."""
    count = affinity_cpus() if affinity is None else int(affinity)
    quota = cgroup_cpu_quota(root, proc_self_cgroup)
    if quota is not None:
        count = min(count, math.ceil(quota - 1e-9))
    return max(1, count)


def describe(root: str = CGROUP_ROOT, proc_self_cgroup: str = PROC_SELF_CGROUP) -> str:
    """For the log: e.g. '2 (affinity 16, cgroup quota 2.00 CPUs)' or '2 (affinity 2, no cgroup quota)'."""
    quota = cgroup_cpu_quota(root, proc_self_cgroup)
    limit = "no cgroup quota" if quota is None else f"cgroup quota {quota:.2f} CPUs"
    return f"{allowed_cpus(root, proc_self_cgroup)} (affinity {affinity_cpus()}, {limit})"


if __name__ == "__main__":
    print(describe())
