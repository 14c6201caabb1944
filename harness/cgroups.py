"""Child memory cgroups for tests and benchmarks: a real limit, a real OOM counter.

The machines here run as root inside a memory cgroup of their own (v1, or v2
with the memory controller delegated); a child of it gets its own limit and
its own `oom_kill` count. `MemoryCgroup.create` raises `CgroupUnavailable`
with the reason when that is not possible.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from fitflix.memory.cgroup import find_cgroup, read_pressure
from harness.wait import poll_until

MIB = 1024 * 1024


class CgroupUnavailable(RuntimeError):
    pass


def v2_problem() -> str | None:
    """None where this process's memory cgroup is v2 (the v2 guest), else why not."""
    cgroup = find_cgroup()
    if cgroup is None or cgroup.memory_dir is None:
        return "no memory cgroup here"
    if cgroup.version != 2:
        return f"this host's memory cgroup is v{cgroup.version}"
    return None


CPU_PERIOD_US = 100_000  # the kernel's default CFS period: 0.1 CPU is 10 ms of every 100 ms


# What a process started by `wrap` runs first under `namespace_root`: a cgroup namespace whose root is this
# cgroup, and a cgroup2 mount of it at /sys/fs/cgroup, as a pod's container sees (`0::/`). The old mount must
# go first: mounting over it fails with "already mounted". The mount namespace is private (unshare's default).
_NAMESPACE_ROOT = 'umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@"'


class MemoryCgroup:
    def __init__(
        self, directory: Path, version: int, cpu_dirs: tuple[Path, ...] = (), namespace_root: bool = False
    ) -> None:
        self.directory = directory
        self.version = version
        # v1 only: the sibling cgroups in the cpu and cpuacct hierarchies (v2 has one directory for all).
        self.cpu_dirs = cpu_dirs
        self.namespace_root = namespace_root  # v2: what runs inside sees this cgroup as its namespace's root

    @classmethod
    def create(
        cls,
        limit_mb: int,
        prefix: str = "fitflix-test",
        cpus: float | None = None,
        cpu_accounting: bool = False,
        *,
        high_mb: int | None = None,
        oom_group: bool = False,
        namespace_root: bool = False,
    ) -> MemoryCgroup:
        """A child of this process's memory cgroup with a `limit_mb` limit.

        `cpus`: a CPU quota as well (0.1 is Render's free instance: 10 ms of every
        100 ms); `cpu_accounting`: the CPU time of everything inside is counted
        (`cpu_usage_ns`), with or without a quota. v2 only: `high_mb` sets
        memory.high (where the kernel throttles), `oom_group` memory.oom.group=1 (an
        OOM kill takes every process inside, as Kubernetes 1.28+ sets it), and
        `namespace_root` runs what `wrap` starts in a cgroup namespace rooted here.
        """
        if os.geteuid() != 0:
            raise CgroupUnavailable("creating a cgroup needs root")
        parent = find_cgroup()
        if parent is None or parent.memory_dir is None:
            raise CgroupUnavailable("no memory cgroup hierarchy is mounted for this process")
        if (high_mb is not None or oom_group or namespace_root) and parent.version != 2:
            raise CgroupUnavailable("memory.high, memory.oom.group and a cgroup namespace root need cgroup v2")
        directory = parent.memory_dir / f"{prefix}-{uuid.uuid4().hex[:10]}"
        try:
            if parent.version == 2:
                controllers = (parent.memory_dir / "cgroup.subtree_control").read_text().split()
                if "memory" not in controllers:
                    (parent.memory_dir / "cgroup.subtree_control").write_text("+memory")
            directory.mkdir()
            limit_file = "memory.limit_in_bytes" if parent.version == 1 else "memory.max"
            (directory / limit_file).write_text(str(limit_mb * MIB))
            if parent.version == 2 and (directory / "memory.swap.max").exists():
                (directory / "memory.swap.max").write_text("0")
            if high_mb is not None:
                (directory / "memory.high").write_text(str(high_mb * MIB))
            if oom_group:
                (directory / "memory.oom.group").write_text("1")
        except OSError as error:
            try:
                directory.rmdir()
            except OSError:
                pass
            raise CgroupUnavailable(f"cannot create a memory cgroup under {parent.memory_dir}: {error}") from error
        cgroup = cls(directory, parent.version, namespace_root=namespace_root)
        if cpus is not None or cpu_accounting:
            try:
                cgroup._add_cpu(parent, directory.name, cpus)
            except (OSError, CgroupUnavailable) as error:
                cgroup.remove()
                raise CgroupUnavailable(f"cannot give {directory} a CPU quota or CPU accounting: {error}") from error
        return cgroup

    def _add_cpu(self, parent, name: str, cpus: float | None) -> None:
        quota_us = None if cpus is None else max(int(cpus * CPU_PERIOD_US), 1000)
        if self.version == 2:
            control = parent.memory_dir / "cgroup.subtree_control"
            if "cpu" not in control.read_text().split():
                control.write_text("+cpu")
            if quota_us is not None:
                (self.directory / "cpu.max").write_text(f"{quota_us} {CPU_PERIOD_US}")
            return
        dirs = []
        for controller in ("cpu", "cpuacct"):
            base = _v1_own_dir(controller)
            if base is None:
                raise CgroupUnavailable(f"no v1 {controller} hierarchy is mounted for this process")
            directory = base / name
            directory.mkdir(exist_ok=True)
            dirs.append(directory)
            self.cpu_dirs = tuple(dirs)
        if quota_us is not None:
            (dirs[0] / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (dirs[0] / "cpu.cfs_quota_us").write_text(str(quota_us))

    def cpu_usage_ns(self) -> int:
        """CPU time used by everything that ran inside, exited processes included (needs cpu_accounting or cpus)."""
        if self.version == 2:
            return self._keyed("cpu.stat")["usage_usec"] * 1000
        return int((self.cpu_dirs[1] / "cpuacct.usage").read_text())  # (cpu, cpuacct), maybe one folder

    def cpu_throttled_ns(self) -> int:
        """How long the quota held the processes inside back (0 without a quota)."""
        if self.version == 2:
            return self._keyed("cpu.stat").get("throttled_usec", 0) * 1000
        return self._keyed_at(self.cpu_dirs[0] / "cpu.stat").get("throttled_time", 0)

    def _keyed(self, name: str) -> dict[str, int]:
        return self._keyed_at(self.directory / name)

    @staticmethod
    def _keyed_at(path: Path) -> dict[str, int]:
        values = {}
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                values[key] = int(value)
        return values

    @property
    def procs_file(self) -> Path:
        return self.directory / "cgroup.procs"

    def oom_kills(self) -> int:
        if self.version == 1:
            return self._keyed("memory.oom_control").get("oom_kill", 0)
        return self._keyed("memory.events").get("oom_kill", 0)

    def events(self) -> dict[str, int]:
        """v2's memory.events: high, max, oom, oom_kill, oom_group_kill (where the kernel counts it)."""
        return self._keyed("memory.events")

    def pressure(self):
        """v2's memory.pressure: {"some": Pressure, "full": Pressure}, or None where the kernel has no PSI."""
        return read_pressure(self.directory / "memory.pressure")

    def usage_bytes(self) -> int:
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return int((self.directory / name).read_text())

    def working_set_bytes(self) -> int:
        key = "total_inactive_file" if self.version == 1 else "inactive_file"
        return max(self.usage_bytes() - self._keyed("memory.stat").get(key, 0), 0)

    def peak_bytes(self) -> int | None:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        path = self.directory / name
        return int(path.read_text()) if path.exists() else None

    def pids(self) -> list[int]:
        return [int(line) for line in self.procs_file.read_text().split()]

    def wrap(self, command: list[str]) -> list[str]:
        """`command`, started inside this cgroup before it runs any Python (so every fork is inside too)."""
        joins = " && ".join(f'echo $$ > "{path}"' for path in [self.procs_file, *self._cpu_procs_files()])
        if self.namespace_root:
            command = ["unshare", "--cgroup", "--mount", "sh", "-c", _NAMESPACE_ROOT, "fitflix-namespace", *command]
        return ["sh", "-c", f'{joins} && exec "$@"', "fitflix-in-cgroup", *command]

    def _cpu_procs_files(self) -> list[Path]:
        return [directory / "cgroup.procs" for directory in self.cpu_dirs]

    def remove(self, timeout_s: float = 10.0) -> None:
        """Remove the cgroup once its processes are gone (they are ours: the caller ended them)."""
        for directory in (self.directory, *self.cpu_dirs):
            poll_until(lambda directory=directory: _rmdir(directory), timeout_s, f"{directory} to be removable")
        self.cpu_dirs = ()


def _rmdir(directory: Path) -> bool:
    try:
        directory.rmdir()
    except FileNotFoundError:
        return True
    except OSError:  # EBUSY: the kernel has not let go of the last process yet
        return False
    return True


def _v1_own_dir(controller: str) -> Path | None:
    """This process's own cgroup folder in the v1 hierarchy that has `controller` (cpu, cpuacct)."""
    own = None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _number, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            own = path
    if own is None:
        return None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        fstype, options = fields[separator + 1], fields[separator + 3].split(",")
        if fstype == "cgroup" and controller in options:
            root, mount_point = fields[3], fields[4]
            relative = own[len(root) :] if own.startswith(root) and root != "/" else own
            return Path(mount_point) / relative.lstrip("/")
    return None
