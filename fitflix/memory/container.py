"""The machine the service runs on, as measured: the host's memory and the CPUs it may use.

`Container` is what the plan (`fitflix.serving.sizing`) is made from; `fitflix.memory.report`
fills it in from the cgroup (`cgroup.py`), /proc/meminfo and the CPU affinity read here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fitflix.memory.cgroup import Cgroup, cpu_quota, read_text

MIB = 1024 * 1024


def format_mb(value_bytes: int | None) -> str:
    """A figure for a log line, in MiB to one decimal ("MB" in the text around it); "?" when it was not read."""
    return "?" if value_bytes is None else f"{value_bytes / MIB:.1f}"


@dataclass(frozen=True)
class Container:
    """What was measured about the machine the service runs on."""

    cgroup_limit_bytes: int | None
    cgroup_version: int | None
    host_memory_bytes: int | None  # None where no source could tell (MAX_MEMORY_MB is needed then)
    cpus: float
    cpu_source: str
    host_memory_source: str = "/proc/meminfo"  # or psutil, or sysconf, where /proc is missing
    # Which file cgroup_limit_bytes is: memory.max or memory.high (v2), memory.limit_in_bytes (v1).
    cgroup_limit_file: str | None = None
    cgroup_max_bytes: int | None = None  # v2's memory.max where memory.high is the (lower) limit


def host_memory_bytes(root: Path = Path("/")) -> int | None:
    """MemTotal from /proc/meminfo."""
    for line in (read_text(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def usable_cpus(cgroup: Cgroup | None, affinity_count: int | None = None) -> tuple[float, str]:
    """CPUs this service may use and where that number came from."""
    if affinity_count is None:
        affinity_count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota(cgroup)
    if quota is not None and quota < affinity_count:
        return quota, f"cgroup v{cgroup.version} CPU quota" if cgroup else "cgroup CPU quota"
    return float(affinity_count), "CPU affinity"
