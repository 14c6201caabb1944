"""Fake /proc and cgroup trees under a temporary root, in the kernel's own formats.

Every reader in fitflix takes `root`, the folder that stands for `/`; these
functions write just enough of a machine under that folder for one test.
"""

from __future__ import annotations

import base64
import logging
import os
import sys
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

from fitflix.memory.reader import Fallbacks

MIB = 1024 * 1024

# What cgroup v1 writes for "no limit" on 4 KiB pages (LONG_MAX rounded down to a page).
V1_NO_LIMIT_BYTES = 9223372036854771712

V1_MEMORY_MOUNT = "/sys/fs/cgroup/memory"
V1_CPU_MOUNT = "/sys/fs/cgroup/cpu,cpuacct"
V2_MOUNT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class FakeCgroup:
    memory_dir: Path
    cpu_dir: Path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def mountinfo_line(mount_id: int, mount_root: str, mount_point: str, fstype: str, super_options: str) -> str:
    """One /proc/PID/mountinfo line (proc(5)): the optional `shared:N` field and all."""
    return (
        f"{mount_id} 1 0:{mount_id} {mount_root} {mount_point} rw,nosuid,nodev,noexec,relatime "
        f"shared:{mount_id} - {fstype} {fstype} {super_options}"
    )


def _base_mounts() -> list[str]:
    return [
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro",
        "23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
        "24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
        "25 24 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755",
    ]


def _dir_under(root: Path, mount_point: str, mount_root: str, cgroup_path: str) -> Path:
    """Where the kernel shows `cgroup_path` when the hierarchy's `mount_root` is mounted at `mount_point`."""
    relative = cgroup_path
    if mount_root != "/":
        assert cgroup_path.startswith(mount_root), "a bind mount shows only the cgroup's own part"
        relative = cgroup_path[len(mount_root) :]
    return root / mount_point.lstrip("/") / relative.lstrip("/")


def v1_stat_text(usage: int, inactive_file: int, hierarchical_limit: int) -> str:
    """memory.stat as cgroup v1 writes it: local counters, the hierarchical limit, then total_* counters."""
    active_file = usage // 4
    rss = max(usage - inactive_file - active_file, 0)
    return (
        f"cache {inactive_file + active_file}\nrss {rss}\nrss_huge 0\nshmem 0\nmapped_file 0\n"
        "dirty 0\nwriteback 0\npgpgin 1000\npgpgout 900\npgfault 5000\npgmajfault 3\n"
        # The local counter differs from the total on purpose: the reader must use total_inactive_file.
        f"inactive_anon 0\nactive_anon {rss}\ninactive_file 12345\nactive_file {active_file}\n"
        f"unevictable 0\nhierarchical_memory_limit {hierarchical_limit}\n"
        f"hierarchical_memsw_limit {V1_NO_LIMIT_BYTES}\n"
        f"total_cache {inactive_file + active_file}\ntotal_rss {rss}\ntotal_rss_huge 0\n"
        f"total_inactive_anon 0\ntotal_active_anon {rss}\ntotal_inactive_file {inactive_file}\n"
        f"total_active_file {active_file}\ntotal_unevictable 0\n"
    )


def make_cgroup_v1(
    root: Path,
    path: str = "/",
    *,
    limit_bytes: int | None = None,
    hierarchical_limit_bytes: int | None = None,
    usage: int = 100 * MIB,
    inactive_file: int = 0,
    oom_kill: int = 0,
    cpu_quota_us: int | None = None,
    cpu_period_us: int = 100000,
    mount_root: str = "/",
) -> FakeCgroup:
    """A cgroup v1 machine: /proc/self/cgroup names `path`, the hierarchies mounted as on Ubuntu or Docker.

    `limit_bytes` None is v1's "no limit" value; `hierarchical_limit_bytes`
    (default: the own limit) stands for a tighter limit on an ancestor.
    `mount_root` other than "/" is a container that sees only a bind mount of
    its own cgroup (mountinfo's root field is then the cgroup path).
    """
    own_limit = V1_NO_LIMIT_BYTES if limit_bytes is None else limit_bytes
    hierarchical = own_limit if hierarchical_limit_bytes is None else hierarchical_limit_bytes
    write(
        root / "proc/self/cgroup",
        f"12:pids:{path}\n11:hugetlb:{path}\n7:cpuset:{path}\n4:memory:{path}\n"
        f"3:cpu,cpuacct:{path}\n1:name=systemd:{path}\n0::/\n",
    )
    write(
        root / "proc/self/mountinfo",
        "\n".join(
            _base_mounts()
            + [
                mountinfo_line(30, mount_root, "/sys/fs/cgroup/systemd", "cgroup", "rw,xattr,name=systemd"),
                mountinfo_line(31, mount_root, "/sys/fs/cgroup/cpuset", "cgroup", "rw,cpuset"),
                mountinfo_line(32, mount_root, V1_CPU_MOUNT, "cgroup", "rw,cpu,cpuacct"),
                mountinfo_line(33, mount_root, V1_MEMORY_MOUNT, "cgroup", "rw,memory"),
                mountinfo_line(34, mount_root, "/sys/fs/cgroup/pids", "cgroup", "rw,pids"),
                mountinfo_line(35, "/", "/sys/fs/cgroup/unified", "cgroup2", "rw,nsdelegate"),
            ]
        )
        + "\n",
    )
    memory_dir = _dir_under(root, V1_MEMORY_MOUNT, mount_root, path)
    write(memory_dir / "memory.limit_in_bytes", f"{own_limit}\n")
    write(memory_dir / "memory.usage_in_bytes", f"{usage}\n")
    write(memory_dir / "memory.stat", v1_stat_text(usage, inactive_file, hierarchical))
    write(memory_dir / "memory.oom_control", f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kill}\n")
    cpu_dir = _dir_under(root, V1_CPU_MOUNT, mount_root, path)
    write(cpu_dir / "cpu.cfs_quota_us", f"{-1 if cpu_quota_us is None else cpu_quota_us}\n")
    write(cpu_dir / "cpu.cfs_period_us", f"{cpu_period_us}\n")
    cpu_mount = root / V1_CPU_MOUNT.lstrip("/")
    if cpu_dir != cpu_mount:  # the hierarchy's root cgroup never has a quota
        write(cpu_mount / "cpu.cfs_quota_us", "-1\n")
        write(cpu_mount / "cpu.cfs_period_us", "100000\n")
    return FakeCgroup(memory_dir, cpu_dir)


# memory.pressure (PSI) of a cgroup whose tasks never waited for memory.
PSI_QUIET = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"


def v2_dir(root: Path, path: str, mount_root: str = "/") -> Path:
    """The folder of cgroup v2 `path` in a fake tree made by `make_cgroup_v2`."""
    return _dir_under(root, V2_MOUNT, mount_root, path)


def make_cgroup_v2(
    root: Path,
    path: str = "/",
    *,
    memory_max: int | str = "max",
    memory_high: int | str = "max",
    usage: int = 100 * MIB,
    inactive_file: int = 0,
    oom_kill: int = 0,
    cpu_max: str = "max 100000",
    controllers: str = "cpuset cpu io memory hugetlb pids rdma misc",
    mount_root: str = "/",
    pressure: str | None = PSI_QUIET,
) -> FakeCgroup:
    """A cgroup v2 machine: /proc/self/cgroup is `0::path`, the unified hierarchy at /sys/fs/cgroup.

    Ancestors get `cgroup.controllers` only; write their `memory.max` with
    `write(v2_dir(root, "/parent") / "memory.max", ...)`.
    """
    write(root / "proc/self/cgroup", f"0::{path}\n")
    mounts = [line for line in _base_mounts() if "tmpfs" not in line]
    mounts.append(mountinfo_line(30, mount_root, V2_MOUNT, "cgroup2", "rw,nsdelegate,memory_recursiveprot"))
    write(root / "proc/self/mountinfo", "\n".join(mounts) + "\n")
    directory = v2_dir(root, path, mount_root)
    mount_dir = root / V2_MOUNT.lstrip("/")
    for ancestor in [directory, *directory.parents]:
        write(ancestor / "cgroup.controllers", controllers + "\n")
        if ancestor == mount_dir:
            break
    write(directory / "memory.max", f"{memory_max}\n")
    write(directory / "memory.high", f"{memory_high}\n")
    if pressure is not None:
        write(directory / "memory.pressure", pressure)
    write(directory / "memory.current", f"{usage}\n")
    active_file = usage // 4
    anon = max(usage - inactive_file - active_file, 0)
    write(
        directory / "memory.stat",
        f"anon {anon}\nfile {inactive_file + active_file}\nkernel 1048576\nsock 0\nshmem 0\n"
        f"file_mapped 0\nfile_dirty 0\ninactive_anon 0\nactive_anon {anon}\n"
        f"inactive_file {inactive_file}\nactive_file {active_file}\nunevictable 0\n",
    )
    write(
        directory / "memory.events",
        f"low 0\nhigh 0\nmax {oom_kill * 3}\noom {oom_kill}\noom_kill {oom_kill}\noom_group_kill 0\n",
    )
    write(directory / "cpu.max", f"{cpu_max}\n")
    return FakeCgroup(directory, directory)


def smaps_rollup_text(
    rss_kb: int,
    pss_kb: int,
    private_clean_kb: int,
    private_dirty_kb: int,
    swap_kb: int = 0,
) -> str:
    """/proc/PID/smaps_rollup as Linux 5.x/6.x writes it."""
    shared_clean_kb = max(rss_kb - private_clean_kb - private_dirty_kb, 0)
    fields = [
        ("Rss", rss_kb),
        ("Pss", pss_kb),
        ("Pss_Dirty", private_dirty_kb),
        ("Pss_Anon", private_dirty_kb),
        ("Pss_File", max(pss_kb - private_dirty_kb, 0)),
        ("Pss_Shmem", 0),
        ("Shared_Clean", shared_clean_kb),
        ("Shared_Dirty", 0),
        ("Private_Clean", private_clean_kb),
        ("Private_Dirty", private_dirty_kb),
        ("Referenced", rss_kb),
        ("Anonymous", private_dirty_kb),
        ("KSM", 0),
        ("LazyFree", 0),
        ("AnonHugePages", 0),
        ("ShmemPmdMapped", 0),
        ("FilePmdMapped", 0),
        ("Shared_Hugetlb", 0),
        ("Private_Hugetlb", 0),
        ("Swap", swap_kb),
        ("SwapPss", swap_kb),
        ("Locked", 0),
    ]
    header = "558c34b20000-7ffda614e000 ---p 00000000 00:00 0                          [rollup]\n"
    return header + "".join(f"{name + ':':<16}{value:>8} kB\n" for name, value in fields)


def stat_text(pid: int, ppid: int, comm: str = "python3") -> str:
    """/proc/PID/stat: `pid (comm) state ppid ...`, comm as the process named itself."""
    return (
        f"{pid} ({comm}) S {ppid} {pid} {ppid} 0 -1 4194560 2950 0 0 0 10 3 0 0 20 0 1 0 "
        "123456 26058752 4096 18446744073709551615 1 1 0 0 0 0 0 16781312 134235650 0 0 0 17 0 0 0 0 0 0\n"
    )


def make_proc(
    root: Path,
    pid: int,
    ppid: int,
    *,
    comm: str = "python3",
    smaps_rollup: str | None = None,
) -> Path:
    """/proc/PID with `stat` and, when given, `smaps_rollup`."""
    directory = root / "proc" / str(pid)
    write(directory / "stat", stat_text(pid, ppid, comm))
    if smaps_rollup is not None:
        write(directory / "smaps_rollup", smaps_rollup)
    return directory


def make_meminfo(root: Path, total_kb: int) -> Path:
    return write(
        root / "proc/meminfo",
        f"MemTotal:       {total_kb} kB\nMemFree:         {total_kb // 2} kB\n"
        f"MemAvailable:   {total_kb * 3 // 4} kB\nBuffers:          102400 kB\nCached:          512000 kB\n",
    )


def container(cgroup_mb: int | None = None, version: int | None = None, host_mb: int = 4096, cpus: float = 2.0):
    """What measure_container would report: a cgroup limit (or none), the host's memory, CPUs."""
    from fitflix.memory.container import Container

    return Container(
        cgroup_limit_bytes=None if cgroup_mb is None else cgroup_mb * MIB,
        cgroup_version=version if cgroup_mb is not None else None,
        host_memory_bytes=host_mb * MIB,
        cpus=cpus,
        cpu_source="CPU affinity",
    )


class FakeWorker:
    """What WorkerRecycler uses of a gunicorn worker: alive, nr, max_requests, ppid and a log."""

    def __init__(self, max_requests: int = sys.maxsize, log=None) -> None:
        self.alive = True
        self.nr = 0
        self.max_requests = max_requests
        self.ppid = -1  # never signalled: the tests record wake_master instead
        self.log = log if log is not None else logging.getLogger("test-worker")


def stop_recyclers(recyclers) -> None:
    """Stop each WorkerRecycler's request-timeout thread and wait for it (a fixture's teardown)."""
    for recycler in recyclers:
        recycler.stop_watch()
    for recycler in recyclers:
        assert recycler.join_watch(5), "a recycler's timeout watch did not end"


# --- psutil as a Mac has it, for the readers of hosts without /proc ----------------------------

MemoryInfo = namedtuple("MemoryInfo", "rss vms")  # what psutil.Process.memory_info gives on macOS: no `data`
FullInfo = namedtuple("FullInfo", "rss vms uss")  # and memory_full_info: USS, no PSS or swap


class FakePsutil:
    """psutil as a Mac has it: every live pid readable, RSS and USS, no PSS."""

    class NoSuchProcess(Exception):
        pass

    def __init__(self, figures: dict[int, tuple[int, int]], total_bytes: int = 16 * 1024 * MIB) -> None:
        self.figures = figures  # pid -> (rss, uss)
        self.total_bytes = total_bytes

    def virtual_memory(self):
        return namedtuple("VirtualMemory", "total available")(self.total_bytes, self.total_bytes // 2)

    def Process(self, pid: int | None = None):  # noqa: N802 (psutil's name)
        figures = self.figures.get(os.getpid() if pid is None else pid)
        if figures is None:
            raise self.NoSuchProcess(pid)
        fake = self

        class Process:
            def memory_info(self):
                return MemoryInfo(figures[0], figures[0] * 4)

            def memory_full_info(self):
                if figures[1] is None:
                    raise fake.NoSuchProcess(pid)  # stands for AccessDenied on another user's process
                return FullInfo(figures[0], figures[0] * 4, figures[1])

        return Process()


def fallbacks(psutil_module=None, phys_bytes: int | None = 8 * 1024 * MIB, peak_bytes: int = 70 * MIB) -> Fallbacks:
    return Fallbacks(psutil_module, lambda: phys_bytes, lambda: peak_bytes)


# --- HEALTH_TOKEN --------------------------------------------------------------------------------

TOKEN = "s3cret-token-for-tests-only"


def basic_auth(password: str, user: str = "ops") -> dict:
    """An Authorization header for Basic auth: the token is the password (curl -u "ops:$HEALTH_TOKEN")."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
