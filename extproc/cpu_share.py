"""How much CPU this process may use, and whether the admission budgets fit it.

The default budgets (`max_in_flight: 64`, `max_fusion_runs: 16`) are sized for a worker with a core of
its own (docs/configuration.md, "Admission"). Under a Kubernetes CPU limit or a `taskset` a worker gets
less, and a full budget is then a proportionally longer queue: on a quarter core the defaults let
admitted requests wait 8x their unloaded p99 (docs/benchmarks.md, "Overload"). `quorum serve` says so
at start instead of leaving it to be found under load.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from extproc.config import Config

CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_IN_FLIGHT_PER_CORE = 64  # AdmissionConfig.max_in_flight's default, sized for one core


def available_cpus(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float:
    """CPUs this process may use: the lowest cgroup CPU quota on its path (v2 `cpu.max`, v1
    `cpu.cfs_quota_us`), and no more than the CPUs it may run on."""
    cpus = float(len(os.sched_getaffinity(0)))
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text(encoding="ascii")
        except OSError:
            return cpus
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path"
            cpus = min(cpus, _lowest_quota(root, path, _v2_quota))
        elif "cpu" in controllers.split(","):  # v1: "N:cpu,cpuacct:/path"
            mount = next((root / name for name in ("cpu,cpuacct", "cpu") if (root / name).is_dir()), root / "cpu")
            cpus = min(cpus, _lowest_quota(mount, path, _v1_quota))
    return cpus


def _lowest_quota(mount: Path, path: str, read: Callable[[Path], float | None]) -> float:
    lowest = float("inf")
    directory = mount / path.strip("/")
    while True:
        quota = read(directory)
        if quota is not None:
            lowest = min(lowest, quota)
        if directory == mount:
            return lowest
        directory = directory.parent


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text(encoding="ascii").split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text(encoding="ascii"))
        period = int((directory / "cpu.cfs_period_us").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else quota / period


def budget_warnings(config: Config, workers: int, cpus: float) -> list[str]:
    """`max_in_flight` well above what each worker's share of `cpus` routes: more than 1.5x the per-core
    default scaled to the share. (`max_fusion_runs` is left alone: a fusion run mostly waits on models.)"""
    share = cpus / max(1, workers)
    value = config.server.admission.max_in_flight
    fitting = max(1, round(DEFAULT_IN_FLIGHT_PER_CORE * share))
    if share >= 1 or value == 0 or value <= 1.5 * fitting:
        return []
    return [
        f"server.admission.max_in_flight is {value}, sized for a core per worker, but each of the {workers} "
        f"worker(s) gets about {share:.2g} of a CPU here (cgroup quota, CPU affinity): a full budget makes "
        f"admitted requests wait about {value / fitting:.0f}x longer than {fitting} would "
        "(docs/configuration.md, Admission)"
    ]
