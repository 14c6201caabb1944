"""Read the container's memory and CPU limits from cgroup v1 or v2 (the host's size is `container.py`).

Every function takes `root`, the folder that stands for `/`, so tests run the
same code against fake trees in a temporary folder. Nothing here caches: the
caller decides how often to read.
"""

from __future__ import annotations

import os
import select
from dataclasses import dataclass
from pathlib import Path

# cgroup v1 reports "no limit" as the largest page-aligned signed 64-bit value
# (9223372036854771712 on 4 KiB pages); anything this large is no limit.
V1_NO_LIMIT_BYTES = 1 << 62


@dataclass(frozen=True)
class Cgroup:
    """Where this process's memory and CPU controllers live."""

    version: int  # 1 or 2
    memory_dir: Path | None
    cpu_dir: Path | None
    mount_dir: Path  # the hierarchy's mount point: limits are looked up to here
    cpu_mount_dir: Path | None
    path: str  # the cgroup path as /proc/self/cgroup names it


@dataclass(frozen=True)
class Pressure:
    """One line of a PSI file (memory.pressure): the share of the last 10 s that tasks stalled, and all the time."""

    avg10: float  # percent of the last 10 s
    total_us: int  # microseconds stalled since the cgroup was made


@dataclass(frozen=True)
class CgroupMemory:
    limit_bytes: int | None
    usage_bytes: int | None
    working_set_bytes: int | None
    oom_kills: int | None
    # The file the limit came from: memory.max or memory.high (v2, the tighter on the way up),
    # memory.limit_in_bytes (v1); None without a limit.
    limit_file: str | None = None
    max_bytes: int | None = None  # where the OOM killer acts: memory.max (v2), the v1 limit
    high_bytes: int | None = None  # v2's memory.high, where the kernel throttles and reclaims; None: unset
    # v2's memory.events (high, max, oom, oom_kill, oom_group_kill where the kernel has it); None on v1.
    events: dict[str, int] | None = None
    pressure: dict[str, Pressure] | None = None  # v2's memory.pressure: "some" and "full"; None where absent


@dataclass(frozen=True)
class _Mount:
    mount_root: str
    mount_point: str
    fstype: str
    super_options: frozenset[str]


def read_text(path: Path) -> str | None:
    """The whole of a /proc or cgroup file; None when it cannot be read (missing, no permission, gone)."""
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = read_text(path)
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def _read_keyed(path: Path) -> dict[str, int]:
    """Parse `key value` lines (memory.stat, memory.events, memory.oom_control)."""
    return _parse_keyed(read_text(path) or "")


def _parse_keyed(text: str) -> dict[str, int]:
    """`key value` lines; a line that is not one is left out."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def _mounts(root: Path) -> list[_Mount]:
    mounts = []
    for line in (read_text(root / "proc/self/mountinfo") or "").splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 4 or dash < 5:
            continue
        mounts.append(
            _Mount(
                mount_root=fields[3],
                mount_point=fields[4],
                fstype=fields[dash + 1],
                super_options=frozenset(fields[dash + 3].split(",")),
            )
        )
    return mounts


def _join(root: Path, mount: _Mount, cgroup_path: str) -> Path:
    """The folder of `cgroup_path` under `mount`.

    Without a cgroup namespace the path names the cgroup from the hierarchy's
    root, and a container may see only a bind mount of its own part
    (mount root = that part); with a namespace the path is relative to what
    the container sees, often just "/".
    """
    relative = cgroup_path
    if mount.mount_root != "/" and (cgroup_path + "/").startswith(mount.mount_root.rstrip("/") + "/"):
        relative = cgroup_path[len(mount.mount_root.rstrip("/")) :]
    mount_dir = root / mount.mount_point.lstrip("/")
    candidate = mount_dir / relative.lstrip("/")
    return candidate if candidate.is_dir() else mount_dir


def find_cgroup(root: Path = Path("/")) -> Cgroup | None:
    """Locate this process's memory cgroup, v1 first, else v2; None without one."""
    v1_paths: dict[str, str] = {}
    v2_path = None
    for line in (read_text(root / "proc/self/cgroup") or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2_path = path
        for controller in controllers.split(","):
            if controller:
                v1_paths[controller] = path
    mounts = _mounts(root)

    def v1_mount(controller: str) -> _Mount | None:
        for mount in mounts:
            if mount.fstype == "cgroup" and controller in mount.super_options:
                return mount
        return None

    memory_mount = v1_mount("memory")
    if "memory" in v1_paths and memory_mount is not None:
        cpu_mount = v1_mount("cpu")
        cpu_dir = _join(root, cpu_mount, v1_paths["cpu"]) if cpu_mount and "cpu" in v1_paths else None
        return Cgroup(
            version=1,
            memory_dir=_join(root, memory_mount, v1_paths["memory"]),
            cpu_dir=cpu_dir,
            mount_dir=root / memory_mount.mount_point.lstrip("/"),
            cpu_mount_dir=root / cpu_mount.mount_point.lstrip("/") if cpu_mount else None,
            path=v1_paths["memory"],
        )
    if v2_path is not None:
        for mount in mounts:
            if mount.fstype == "cgroup2":
                directory = _join(root, mount, v2_path)
                mount_dir = root / mount.mount_point.lstrip("/")
                has_memory = "memory" in (read_text(directory / "cgroup.controllers") or "").split()
                return Cgroup(
                    version=2,
                    memory_dir=directory if has_memory or (directory / "memory.current").exists() else None,
                    cpu_dir=directory,
                    mount_dir=mount_dir,
                    cpu_mount_dir=mount_dir,
                    path=v2_path,
                )
    return None


def _ancestors(directory: Path, stop: Path) -> list[Path]:
    """`directory` and its parents up to and including `stop`."""
    chain = [directory]
    while directory != stop and stop in directory.parents:
        directory = directory.parent
        chain.append(directory)
    return chain


def _tightest(cgroup: Cgroup, name: str) -> int | None:
    """The lowest `name` (memory.max, memory.high) from this cgroup up to the mount's root; None: "max" all the way."""
    limits = [
        value
        for directory in _ancestors(cgroup.memory_dir, cgroup.mount_dir)
        if (value := _read_int(directory / name)) is not None
    ]
    return min(limits) if limits else None


def memory_limits(cgroup: Cgroup) -> tuple[int | None, str | None, int | None, int | None]:
    """(the limit to plan for, the file it came from, memory.max, memory.high), each the tightest on the way up.

    On v2 the limit is memory.high where that is set below memory.max: the kernel throttles and
    reclaims there, so a service sized to memory.max would spend its life stalled. On v1 it is
    the hierarchical limit. Nones for no limit.
    """
    if cgroup.memory_dir is None:
        return None, None, None, None
    if cgroup.version == 1:
        limit = _read_keyed(cgroup.memory_dir / "memory.stat").get("hierarchical_memory_limit")
        if limit is None:
            limit = _read_int(cgroup.memory_dir / "memory.limit_in_bytes")
        if limit is None or limit >= V1_NO_LIMIT_BYTES:
            return None, None, None, None
        return limit, "memory.limit_in_bytes", limit, None
    maximum, high = _tightest(cgroup, "memory.max"), _tightest(cgroup, "memory.high")
    if high is not None and (maximum is None or high < maximum):
        return high, "memory.high", maximum, high
    return maximum, "memory.max" if maximum is not None else None, maximum, high


def memory_limit_bytes(cgroup: Cgroup) -> int | None:
    """The effective limit (see `memory_limits`); None for no limit."""
    return memory_limits(cgroup)[0]


def read_pressure(path: Path) -> dict[str, Pressure] | None:
    """A PSI file: {"some": Pressure, "full": Pressure}; None where it cannot be read (v1, PSI off)."""
    pressure = {}
    for line in (read_text(path) or "").splitlines():
        kind, *fields = line.split()
        values = dict(field.partition("=")[::2] for field in fields)
        try:
            pressure[kind] = Pressure(avg10=float(values["avg10"]), total_us=int(values["total"]))
        except (KeyError, ValueError):
            continue
    return pressure or None


def read_working_set(cgroup: Cgroup | None) -> int | None:
    """Usage less inactive page cache, and nothing else: two small reads, for a look every few milliseconds."""
    if cgroup is None or cgroup.memory_dir is None:
        return None
    directory = cgroup.memory_dir
    if cgroup.version == 1:
        usage, inactive_key = _read_int(directory / "memory.usage_in_bytes"), "total_inactive_file"
    else:
        usage, inactive_key = _read_int(directory / "memory.current"), "inactive_file"
    if usage is None:
        return None
    return max(usage - (_read_keyed(directory / "memory.stat").get(inactive_key) or 0), 0)


class UsageFile:
    """The cgroup's usage (v1 `memory.usage_in_bytes`, v2 `memory.current`) from a kept fd: one pread a look.

    Usage counts page cache that the working set does not, so it is never below the working set: a
    usage under a level says the working set is under it too, without reading memory.stat.
    """

    def __init__(self, cgroup: Cgroup | None) -> None:
        self._fd: int | None = None
        if cgroup is not None and cgroup.memory_dir is not None:
            name = "memory.usage_in_bytes" if cgroup.version == 1 else "memory.current"
            try:
                self._fd = os.open(cgroup.memory_dir / name, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._fd = None

    def read(self) -> int | None:
        if self._fd is None:
            return None
        try:
            text = os.pread(self._fd, 64, 0).strip()
        except OSError:  # the cgroup was removed
            return None
        return int(text) if text.isdigit() else None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class UsageAlarm:
    """cgroup v1's threshold notification: an eventfd the kernel signals when the cgroup's usage crosses
    one of `levels`, up or down (`cgroup.event_control`, Documentation/admin-guide/cgroup-v1/memory.rst).

    Registering writes to cgroup.event_control, which a container's read-only /sys/fs/cgroup refuses;
    then `fd` is None and `problem` says why. cgroup v2 has no such notification for a level of usage
    (its memory.events move only at memory.high and memory.max, where the kernel already acts: `PressureAlarm`).
    """

    signals_levels = True

    def __init__(self, cgroup: Cgroup | None, levels: tuple[int, ...]) -> None:
        self.levels = levels
        self.fd: int | None = None
        self.problem: str | None = None
        self._usage_fd: int | None = None
        if cgroup is None or cgroup.memory_dir is None:
            self.problem = "no memory cgroup"
            return
        if cgroup.version != 1:
            self.problem = "cgroup v2 has no usage threshold notification"
            return
        try:
            event_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        except (AttributeError, OSError) as error:  # no eventfd (not Linux, or an old Python build)
            self.problem = f"eventfd: {getattr(error, 'strerror', None) or error}"
            return
        try:
            usage_fd = os.open(cgroup.memory_dir / "memory.usage_in_bytes", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            os.close(event_fd)
            self.problem = f"memory.usage_in_bytes: {error.strerror}"
            return
        try:
            for level in levels:  # one registration each, on the same eventfd
                with open(cgroup.memory_dir / "cgroup.event_control", "w") as control:
                    control.write(f"{event_fd} {usage_fd} {level}")
        except OSError as error:
            os.close(event_fd)
            os.close(usage_fd)
            self.problem = f"cgroup.event_control: {error.strerror}"
            return
        self.fd, self._usage_fd = event_fd, usage_fd

    def polled(self) -> dict[int, int]:
        """{fd: poll events} to wait on."""
        return {} if self.fd is None else {self.fd: select.POLLIN}

    def clear(self, _ready: frozenset[int] = frozenset()) -> bool:
        """Whether the kernel signalled a crossing since the last clear (and reset the count)."""
        if self.fd is None:
            return False
        try:
            return os.eventfd_read(self.fd) > 0
        except BlockingIOError:
            return False

    def close(self) -> None:
        """Unregister (the kernel drops the threshold when its eventfd is closed)."""
        for fd in (self.fd, self._usage_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self._usage_fd = None


# cgroup v2's PSI trigger (Documentation/accounting/psi.rst): the kernel's word when the cgroup's tasks
# stalled on memory (reclaim, memory.high's throttling) this many microseconds within a window of so many.
PSI_TRIGGER = "some 150000 1000000"
# The memory.events counters that say the kernel acted on the cgroup's memory.
EVENTS_WATCHED = ("high", "max", "oom", "oom_kill")


class PressureAlarm:
    """cgroup v2's words on memory: `memory.events` changed (the kernel throttled at memory.high, reclaimed
    at memory.max, or killed), and a PSI trigger on `memory.pressure` (tasks stalled on memory).

    v2 has no word for a level of usage, so these do not replace the monitor's looks under the warning
    level (`signals_levels` is False); they wake it at once when the kernel has begun to act. A change of
    memory.events is said to a poller of the open file (POLLPRI) and needs no write access; the PSI
    trigger is registered by writing memory.pressure, which a read-only /sys/fs/cgroup refuses. Whatever
    cannot be had is in `problem`.
    """

    signals_levels = False

    def __init__(self, cgroup: Cgroup | None, levels: tuple[int, ...] = ()) -> None:
        self.levels = levels  # kept for the monitor's re-arm check: no level is registered on v2
        self.events_fd: int | None = None
        self.pressure_fd: int | None = None
        self.events: dict[str, int] = {}
        self.said: dict[str, str] = {}  # what the kernel said at the last clear that had news, by source
        self.problem: str | None = None
        if cgroup is None or cgroup.memory_dir is None:
            self.problem = "no memory cgroup"
            return
        if cgroup.version != 2:
            self.problem = "cgroup v1 has no memory.events or memory.pressure"
            return
        problems = []
        try:
            self.events_fd = os.open(cgroup.memory_dir / "memory.events", os.O_RDONLY | os.O_CLOEXEC)
            self.events = self._read_events()
        except OSError as error:  # missing, or opened but not readable: nothing to wait on
            if self.events_fd is not None:
                os.close(self.events_fd)
                self.events_fd = None
            problems.append(f"memory.events: {error.strerror}")
        try:
            fd = os.open(cgroup.memory_dir / "memory.pressure", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            problems.append(f"memory.pressure: {error.strerror}")
        else:
            try:
                os.write(fd, PSI_TRIGGER.encode() + b"\0")
            except OSError as error:  # PSI off (psi=0), or an old kernel without cgroup triggers
                os.close(fd)
                problems.append(f"memory.pressure trigger: {error.strerror}")
            else:
                self.pressure_fd = fd
        self.problem = "; ".join(problems) or None

    @property
    def fd(self) -> int | None:
        """An fd to wait on, or None: nothing the kernel can say here."""
        return self.events_fd if self.events_fd is not None else self.pressure_fd

    def polled(self) -> dict[int, int]:
        """{fd: poll events}: both say their news as POLLPRI (memory.events also as POLLERR)."""
        return {fd: select.POLLPRI for fd in (self.events_fd, self.pressure_fd) if fd is not None}

    def _read_events(self) -> dict[str, int]:
        # Each read of the file from its start also re-arms its POLLPRI (kernfs notes the event it saw).
        return _parse_keyed(os.pread(self.events_fd, 4096, 0).decode(errors="replace"))

    def clear(self, ready: frozenset[int] = frozenset()) -> bool:
        """Whether the kernel said something of the watched counters or the stalls, among the `ready` fds."""
        said = {}
        if self.events_fd is not None and self.events_fd in ready:
            try:
                events = self._read_events()
            except OSError:  # the cgroup was removed
                events = self.events
            moved = [
                f"{key} +{events[key] - self.events.get(key, 0)}"
                for key in EVENTS_WATCHED
                if events.get(key, 0) > self.events.get(key, 0)
            ]
            self.events = events
            if moved:
                said["memory.events"] = "memory.events " + ", ".join(moved)
        if self.pressure_fd is not None and self.pressure_fd in ready:
            said["PSI"] = f"memory stalled past the PSI trigger ({PSI_TRIGGER})"
        if said:
            self.said = said
        return bool(said)

    def close(self) -> None:
        """Unregister (the kernel drops a PSI trigger when its fd is closed)."""
        for fd in (self.events_fd, self.pressure_fd):
            if fd is not None:
                os.close(fd)
        self.events_fd = self.pressure_fd = None


def read_memory(cgroup: Cgroup) -> CgroupMemory:
    """Limit, usage, working set and OOM kills as the kernel counts them."""
    directory = cgroup.memory_dir
    if directory is None:
        return CgroupMemory(None, None, None, None)
    events = pressure = None
    if cgroup.version == 1:
        usage = _read_int(directory / "memory.usage_in_bytes")
        inactive_file = _read_keyed(directory / "memory.stat").get("total_inactive_file")
        oom_kills = _read_keyed(directory / "memory.oom_control").get("oom_kill")
    else:
        usage = _read_int(directory / "memory.current")
        inactive_file = _read_keyed(directory / "memory.stat").get("inactive_file")
        events = _read_keyed(directory / "memory.events") or None
        oom_kills = events.get("oom_kill") if events else None
        pressure = read_pressure(directory / "memory.pressure")
    working_set = None
    if usage is not None:
        working_set = max(usage - (inactive_file or 0), 0)
    limit, limit_file, maximum, high = memory_limits(cgroup)
    return CgroupMemory(limit, usage, working_set, oom_kills, limit_file, maximum, high, events, pressure)


def cpu_quota(cgroup: Cgroup | None) -> float | None:
    """CPUs the cgroup's CFS quota allows (the tightest on the way up); None for no quota."""
    if cgroup is None or cgroup.cpu_dir is None:
        return None
    quotas = []
    stop = cgroup.cpu_mount_dir or cgroup.cpu_dir
    for directory in _ancestors(cgroup.cpu_dir, stop):
        if cgroup.version == 1:
            quota = (read_text(directory / "cpu.cfs_quota_us") or "").strip()
            period = _read_int(directory / "cpu.cfs_period_us")
            if quota.isdigit() and period:
                quotas.append(int(quota) / period)
        else:
            fields = (read_text(directory / "cpu.max") or "").split()
            if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit() and int(fields[1]):
                quotas.append(int(fields[0]) / int(fields[1]))
    return min(quotas) if quotas else None
