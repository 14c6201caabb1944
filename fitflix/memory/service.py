"""The service's memory as one report: the limit, the container, every process.

`MemoryProbe.report()` is what `/health/memory` serves and what the master's
guard acts on, so both read the same figures. Whole-tree figures read smaps
of every process (about 0.4 ms each), so a report is cached for `cache_s`: a
flood of requests costs at most one pass per second per process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fitflix.memory.cgroup import Cgroup, CgroupMemory, find_cgroup, host_memory_bytes, read_memory, usable_cpus
from fitflix.memory.process import ProcessMemory, children_of, read_smaps_rollup
from fitflix.serving.sizing import MIB, Container


@dataclass(frozen=True)
class ProcessFigures:
    role: str  # master, worker or standalone
    memory: ProcessMemory


@dataclass(frozen=True)
class MemoryReport:
    limit_bytes: int
    limit_source: str
    cgroup: Cgroup | None
    cgroup_memory: CgroupMemory
    processes: tuple[ProcessFigures, ...]
    service_pss_bytes: int
    used_bytes: int  # what the status is judged on (see `used_source`)
    used_source: str
    taken_at: float  # time.time() when measured

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used_bytes / self.limit_bytes if self.limit_bytes else 0.0


def measure_container(root: Path = Path("/")) -> Container:
    """The facts the plan needs, read from cgroups and /proc."""
    cgroup = find_cgroup(root)
    cgroup_memory = read_memory(cgroup) if cgroup else CgroupMemory(None, None, None, None)
    cpus, cpu_source = usable_cpus(cgroup)
    return Container(
        cgroup_limit_bytes=cgroup_memory.limit_bytes,
        cgroup_version=cgroup.version if cgroup else None,
        host_memory_bytes=host_memory_bytes(root) or 0,
        cpus=cpus,
        cpu_source=cpu_source,
    )


def tree_pids(role: str, master_pid: int, root: Path = Path("/")) -> list[tuple[str, int]]:
    """(role, pid) for the master and every worker, found through the master."""
    if role == "standalone":
        return [("standalone", os.getpid())]
    return [("master", master_pid)] + [("worker", pid) for pid in children_of(master_pid, root)]


class MemoryProbe:
    def __init__(
        self,
        limit: tuple[int, str],
        root: Path = Path("/"),
        cache_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`limit` is (MB, where it came from), as the plan resolved it."""
        self.root = root
        self.cgroup = find_cgroup(root)
        self.cache_s = cache_s
        self.clock = clock
        self.limit_mb, self.limit_source = limit
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork)
        self._cached: tuple[float, tuple, MemoryReport] | None = None

    def _after_fork(self) -> None:
        # A lock held by another thread at fork would stay held in the child forever.
        self._lock = threading.Lock()
        self._cached = None

    def container_memory(self) -> CgroupMemory:
        """Cheap (a few small file reads): no smaps."""
        return read_memory(self.cgroup) if self.cgroup else CgroupMemory(None, None, None, None)

    def report(self, role: str, master_pid: int) -> MemoryReport:
        """A report no older than `cache_s` for this role and master."""
        key = (role, master_pid)
        with self._lock:
            now = self.clock()
            if self._cached and self._cached[1] == key and now - self._cached[0] < self.cache_s:
                return self._cached[2]
            report = self._measure(role, master_pid)
            self._cached = (now, key, report)
            return report

    def _measure(self, role: str, master_pid: int) -> MemoryReport:
        processes = []
        for process_role, pid in tree_pids(role, master_pid, self.root):
            memory = read_smaps_rollup(pid, self.root)
            if memory is not None:  # it may have ended between the listing and the read
                processes.append(ProcessFigures(process_role, memory))
        service_pss = sum(process.memory.pss_bytes for process in processes)
        cgroup_memory = self.container_memory()
        # The cgroup's working set is what the kernel cannot reclaim, and so
        # what the OOM killer acts on; without a cgroup the service's own PSS
        # is all that is ours to count (the host's other processes are not).
        if cgroup_memory.working_set_bytes is not None:
            used, used_source = cgroup_memory.working_set_bytes, f"cgroup v{self.cgroup.version} working set"
        else:
            used, used_source = service_pss, "service PSS"
        return MemoryReport(
            limit_bytes=self.limit_mb * MIB,
            limit_source=self.limit_source,
            cgroup=self.cgroup,
            cgroup_memory=cgroup_memory,
            processes=tuple(processes),
            service_pss_bytes=service_pss,
            used_bytes=used,
            used_source=used_source,
            taken_at=time.time(),
        )
