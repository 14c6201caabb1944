"""The service's memory as one report: the limit, the container, every process.

`MemoryProbe.report()` is what `/health/memory` serves and what the master's
guard acts on, so both read the same figures. Whole-tree figures read smaps
of every process (about 0.4 ms each), so a report is cached for `cache_s`: a
flood of requests costs at most one pass per second per process.

The tree is the master and the workers gunicorn itself knows (the caller
passes their pids), never every child in /proc: during a SIGUSR2 upgrade the
new master is a child of the old one, and it is not a worker.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from fitflix.memory.cgroup import Cgroup, CgroupMemory, find_cgroup, read_memory
from fitflix.memory.container import MIB, Container, usable_cpus
from fitflix.memory.process import ProcessMemory
from fitflix.memory.reader import Fallbacks, host_memory, read_process_memory


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
    service_pss_bytes: int | None  # None where a process's PSS cannot be had (no /proc)
    used_bytes: int  # what the status is judged on (see `used_source`)
    used_source: str
    neighbours_bytes: int | None  # the cgroup's working set less the service's own memory; None without a cgroup
    taken_at: float  # time.time() when measured
    unavailable: tuple[tuple[str, str], ...] = ()  # (JSON name of a report-wide figure, why it is None)

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used_bytes / self.limit_bytes if self.limit_bytes else 0.0


def measure_container(root: Path = Path("/"), fallbacks: Fallbacks | None = None) -> Container:
    """The facts the plan needs, read from cgroups and /proc (or psutil and sysconf where /proc is missing)."""
    cgroup = find_cgroup(root)
    cgroup_memory = read_memory(cgroup) if cgroup else CgroupMemory(None, None, None, None)
    cpus, cpu_source = usable_cpus(cgroup)
    host_bytes, host_source = host_memory(root, fallbacks)
    return Container(
        cgroup_limit_bytes=cgroup_memory.limit_bytes,
        cgroup_version=cgroup.version if cgroup else None,
        host_memory_bytes=host_bytes,
        cpus=cpus,
        cpu_source=cpu_source,
        host_memory_source=host_source,
        cgroup_limit_file=cgroup_memory.limit_file,
        cgroup_max_bytes=cgroup_memory.max_bytes,
    )


def tree_pids(role: str, master_pid: int, worker_pids: Iterable[int]) -> list[tuple[str, int]]:
    """(role, pid) for the master and the workers gunicorn knows."""
    if role == "standalone":
        return [("standalone", os.getpid())]
    return [("master", master_pid)] + [("worker", pid) for pid in sorted(set(worker_pids)) if pid != master_pid]


def cgroup_limit_in_force(limit_bytes: int, cgroup_memory: CgroupMemory) -> bool:
    """Whether the cgroup's own limit is the service's limit (or tighter): then the cgroup is its container.

    The plan's limit is whole MB, so a cgroup limit within a MB above it is the same limit.
    """
    return cgroup_memory.limit_bytes is not None and cgroup_memory.limit_bytes < limit_bytes + MIB


def service_memory(processes: Iterable[ProcessFigures]) -> tuple[int, str]:
    """The service's own memory and what that figure is.

    PSS summed over the tree where every process has it (Linux): shared pages
    counted once. Elsewhere the nearest figure above it: the master's RSS
    (the shared pages) plus each worker's USS, and where even those cannot be
    had, RSS or the peak RSS a process reported of itself, which count shared
    pages in every process and so err high.
    """
    processes = list(processes)
    if processes and all(process.memory.pss_bytes is not None for process in processes):
        return sum(process.memory.pss_bytes for process in processes), "service PSS"
    total, parts = 0, []
    for process in processes:
        memory = process.memory
        if process.role == "worker" and memory.uss_bytes is not None:
            value, part = memory.uss_bytes, "workers' USS"
        elif memory.rss_bytes is not None:
            value, part = memory.rss_bytes, f"{process.role} RSS"
        elif memory.peak_rss_bytes is not None:
            value, part = memory.peak_rss_bytes, f"{process.role} peak RSS"
        else:
            continue
        total += value
        if part not in parts:
            parts.append(part)
    return total, " + ".join(parts) + " (no PSS here)" if parts else "nothing readable"


def judged_usage(
    limit_bytes: int,
    cgroup_memory: CgroupMemory,
    cgroup_version: int | None,
    service_bytes: int,
    service_source: str = "service PSS",
) -> tuple[int, str, int | None]:
    """(used bytes, which figure that is, the neighbours' share).

    Where the cgroup's own limit is in force, the cgroup is the container: its
    working set is what the kernel's OOM killer acts on, whoever holds it.
    Elsewhere (MAX_MEMORY_MB below the cgroup's limit, a cgroup with no limit
    such as a laptop's systemd scope, no cgroup at all) the cgroup holds other
    processes too, and only the service's own memory (its PSS, where the host
    gives it) is the service's to judge.
    """
    working_set = cgroup_memory.working_set_bytes
    neighbours = max(working_set - service_bytes, 0) if working_set is not None else None
    if working_set is not None and cgroup_limit_in_force(limit_bytes, cgroup_memory):
        return working_set, f"cgroup v{cgroup_version} working set", neighbours
    return service_bytes, service_source, neighbours


class MemoryProbe:
    def __init__(
        self,
        limit: tuple[int, str],
        root: Path = Path("/"),
        cache_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        worker_pids: Callable[[], Iterable[int]] = tuple,
        published: Callable[[int, int], tuple[int, str] | None] | None = None,
        fallbacks: Fallbacks | None = None,
    ) -> None:
        """`limit` is (MB, where it came from), as the plan resolved it; `worker_pids` lists gunicorn's workers.

        `published(pid, master_pid)` gives what a process reported of its own
        memory (`SharedState.published_memory`), for hosts where it cannot be
        read from outside.
        """
        self.root = root
        self.worker_pids = worker_pids
        self.published = published
        self.fallbacks = fallbacks
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

    def forget(self) -> None:
        """The next report is read anew, whatever its age."""
        with self._lock:
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

    def _read(self, pid: int, master_pid: int) -> ProcessMemory | None:
        memory = read_process_memory(pid, self.root, self.fallbacks)
        if memory is None or self.published is None or (memory.rss_bytes, memory.peak_rss_bytes) != (None, None):
            return memory
        return with_published(memory, self.published(pid, master_pid))

    def private_bytes_of(self, pids: Iterable[int], master_pid: int) -> dict[int, int]:
        """These workers' private memory (USS where it can be had), one read each: not a whole report."""
        figures = {}
        for pid in pids:
            memory = self._read(pid, master_pid)
            private = memory.private_bytes() if memory is not None else None
            if private is not None:
                figures[pid] = private
        return figures

    def _measure(self, role: str, master_pid: int) -> MemoryReport:
        processes = []
        for process_role, pid in tree_pids(role, master_pid, self.worker_pids()):
            memory = self._read(pid, master_pid)
            if memory is None:  # it ended between the listing and the read
                continue
            processes.append(ProcessFigures(process_role, memory))
        service_bytes, service_source = service_memory(processes)
        pss_missing = not processes or any(process.memory.pss_bytes is None for process in processes)
        cgroup_memory = self.container_memory()
        limit_bytes = self.limit_mb * MIB
        used, used_source, neighbours = judged_usage(
            limit_bytes, cgroup_memory, self.cgroup.version if self.cgroup else None, service_bytes, service_source
        )
        unavailable = []
        if pss_missing:
            unavailable.append(("servicePssBytes", "no PSS for every process here (it needs /proc); see usedSource"))
        if self.cgroup is None:
            unavailable.append(("container", "no memory cgroup found (no /proc/self/cgroup, or none mounted)"))
        return MemoryReport(
            limit_bytes=limit_bytes,
            limit_source=self.limit_source,
            cgroup=self.cgroup,
            cgroup_memory=cgroup_memory,
            processes=tuple(processes),
            service_pss_bytes=None if pss_missing else service_bytes,
            used_bytes=used,
            used_source=used_source,
            neighbours_bytes=neighbours,
            taken_at=time.time(),
            unavailable=tuple(unavailable),
        )


def with_published(memory: ProcessMemory, published: tuple[int, str] | None) -> ProcessMemory:
    """`memory` with the figure its process reported of itself, where nothing else could be read."""
    if published is None:
        return memory
    memory_bytes, kind = published
    source = "its own report"
    if kind == "peak":
        return replace(memory, peak_rss_bytes=memory_bytes, source=f"{source} (getrusage peak)")
    unavailable = tuple(item for item in memory.unavailable if item[0] != "rssBytes")
    return replace(memory, rss_bytes=memory_bytes, source=f"{source} (RSS)", unavailable=unavailable)
