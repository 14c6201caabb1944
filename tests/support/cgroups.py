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

from fitflix.memory.cgroup import find_cgroup
from tests.support.wait import poll_until

MIB = 1024 * 1024


class CgroupUnavailable(RuntimeError):
    pass


class MemoryCgroup:
    def __init__(self, directory: Path, version: int) -> None:
        self.directory = directory
        self.version = version

    @classmethod
    def create(cls, limit_mb: int, prefix: str = "fitflix-test") -> MemoryCgroup:
        """A child of this process's memory cgroup with a `limit_mb` limit."""
        if os.geteuid() != 0:
            raise CgroupUnavailable("creating a cgroup needs root")
        parent = find_cgroup()
        if parent is None or parent.memory_dir is None:
            raise CgroupUnavailable("no memory cgroup hierarchy is mounted for this process")
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
        except OSError as error:
            try:
                directory.rmdir()
            except OSError:
                pass
            raise CgroupUnavailable(f"cannot create a memory cgroup under {parent.memory_dir}: {error}") from error
        return cls(directory, parent.version)

    def _keyed(self, name: str) -> dict[str, int]:
        values = {}
        for line in (self.directory / name).read_text().splitlines():
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
        return ["sh", "-c", f'echo $$ > "{self.procs_file}" && exec "$@"', "fitflix-in-cgroup", *command]

    def remove(self, timeout_s: float = 10.0) -> None:
        """Remove the cgroup once its processes are gone (they are ours: the caller ended them)."""

        def removed() -> bool:
            try:
                self.directory.rmdir()
            except FileNotFoundError:
                return True
            except OSError:  # EBUSY: the kernel has not let go of the last process yet
                return False
            return True

        poll_until(removed, timeout_s, f"{self.directory} to be removable")
