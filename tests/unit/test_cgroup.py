"""fitflix.memory.cgroup (and container.py's host figures) on fake v1 and v2 trees, and once on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from fitflix.memory.cgroup import (
    PSI_TRIGGER,
    Pressure,
    PressureAlarm,
    UsageAlarm,
    UsageFile,
    cpu_quota,
    find_cgroup,
    memory_limit_bytes,
    read_memory,
)
from fitflix.memory.container import host_memory_bytes, usable_cpus
from tests.fakes import (
    MIB,
    V1_CPU_MOUNT,
    V1_MEMORY_MOUNT,
    V1_NO_LIMIT_BYTES,
    V2_MOUNT,
    make_cgroup_v1,
    make_cgroup_v2,
    make_meminfo,
    v2_dir,
    write,
)

NESTED_V1_PATH = "/process_api/cd252a14b316d3961e10edb5815eaacb"


def test_v1_nested_path_joins_the_memory_mount(tmp_path):
    fake = make_cgroup_v1(tmp_path, NESTED_V1_PATH, limit_bytes=512 * MIB, usage=300 * MIB)

    cgroup = find_cgroup(tmp_path)

    assert cgroup is not None
    assert cgroup.version == 1
    assert cgroup.path == NESTED_V1_PATH
    assert cgroup.memory_dir == tmp_path / V1_MEMORY_MOUNT.lstrip("/") / NESTED_V1_PATH.lstrip("/")
    assert cgroup.memory_dir == fake.memory_dir
    assert cgroup.mount_dir == tmp_path / V1_MEMORY_MOUNT.lstrip("/")
    assert cgroup.cpu_dir == fake.cpu_dir
    assert read_memory(cgroup).limit_bytes == 512 * MIB
    assert read_memory(cgroup).usage_bytes == 300 * MIB


def test_v1_namespaced_root_path_reads_the_mount_itself(tmp_path):
    make_cgroup_v1(tmp_path, "/", limit_bytes=256 * MIB, usage=64 * MIB)

    cgroup = find_cgroup(tmp_path)

    assert cgroup is not None and cgroup.version == 1
    assert cgroup.path == "/"
    assert cgroup.memory_dir == tmp_path / V1_MEMORY_MOUNT.lstrip("/")
    memory = read_memory(cgroup)
    assert (memory.limit_bytes, memory.usage_bytes) == (256 * MIB, 64 * MIB)


def test_v1_bind_mounted_container_strips_the_mount_root(tmp_path):
    path = "/docker/4f2a9c0e1b7d"
    make_cgroup_v1(tmp_path, path, limit_bytes=768 * MIB, usage=200 * MIB, mount_root=path, cpu_quota_us=50000)

    cgroup = find_cgroup(tmp_path)

    assert cgroup is not None and cgroup.version == 1
    assert cgroup.path == path
    assert cgroup.memory_dir == tmp_path / V1_MEMORY_MOUNT.lstrip("/")
    assert cgroup.cpu_dir == tmp_path / V1_CPU_MOUNT.lstrip("/")
    assert read_memory(cgroup).limit_bytes == 768 * MIB
    assert cpu_quota(cgroup) == 0.5


def test_v1_no_limit_value_is_no_limit(tmp_path):
    make_cgroup_v1(tmp_path, NESTED_V1_PATH, limit_bytes=None)

    cgroup = find_cgroup(tmp_path)

    assert (cgroup.memory_dir / "memory.limit_in_bytes").read_text().strip() == str(V1_NO_LIMIT_BYTES)
    assert memory_limit_bytes(cgroup) is None
    assert read_memory(cgroup).limit_bytes is None


def test_v1_limit_is_the_hierarchical_one(tmp_path):
    # No limit of its own, but a parent limits the whole subtree to 384 MB.
    make_cgroup_v1(tmp_path, NESTED_V1_PATH, limit_bytes=None, hierarchical_limit_bytes=384 * MIB)

    assert memory_limit_bytes(find_cgroup(tmp_path)) == 384 * MIB


def test_v1_working_set_and_oom_kills(tmp_path):
    make_cgroup_v1(tmp_path, NESTED_V1_PATH, usage=400 * MIB, inactive_file=150 * MIB, oom_kill=3)

    memory = read_memory(find_cgroup(tmp_path))

    assert memory.usage_bytes == 400 * MIB
    # total_inactive_file, not the local inactive_file the fake sets to 12345
    assert memory.working_set_bytes == 250 * MIB
    assert memory.oom_kills == 3


def test_v2_nested_path_tightest_memory_max_on_the_way_up_wins(tmp_path):
    path = "/kubepods.slice/pod1234/container42"
    make_cgroup_v2(tmp_path, path, memory_max=1024 * MIB)
    write(v2_dir(tmp_path, "/kubepods.slice/pod1234") / "memory.max", f"{512 * MIB}\n")
    write(v2_dir(tmp_path, "/kubepods.slice") / "memory.max", "max\n")

    cgroup = find_cgroup(tmp_path)

    assert cgroup is not None and cgroup.version == 2
    assert cgroup.path == path
    assert cgroup.memory_dir == tmp_path / V2_MOUNT.lstrip("/") / path.lstrip("/")
    assert cgroup.mount_dir == tmp_path / V2_MOUNT.lstrip("/")
    assert memory_limit_bytes(cgroup) == 512 * MIB


def test_v2_own_limit_wins_when_it_is_the_tightest(tmp_path):
    path = "/system.slice/fitflix.service"
    make_cgroup_v2(tmp_path, path, memory_max=300 * MIB)
    write(v2_dir(tmp_path, "/system.slice") / "memory.max", f"{2048 * MIB}\n")

    assert memory_limit_bytes(find_cgroup(tmp_path)) == 300 * MIB


def test_v2_max_everywhere_is_no_limit(tmp_path):
    path = "/user.slice/session-1.scope"
    make_cgroup_v2(tmp_path, path, memory_max="max")
    write(v2_dir(tmp_path, "/user.slice") / "memory.max", "max\n")

    cgroup = find_cgroup(tmp_path)

    assert cgroup.memory_dir is not None
    assert memory_limit_bytes(cgroup) is None
    assert read_memory(cgroup).limit_bytes is None


def test_v2_namespaced_root_path(tmp_path):
    make_cgroup_v2(tmp_path, "/", memory_max=512 * MIB, usage=128 * MIB)

    cgroup = find_cgroup(tmp_path)

    assert cgroup is not None and cgroup.version == 2
    assert cgroup.path == "/"
    assert cgroup.memory_dir == tmp_path / V2_MOUNT.lstrip("/")
    memory = read_memory(cgroup)
    assert (memory.limit_bytes, memory.usage_bytes) == (512 * MIB, 128 * MIB)


def test_v2_bind_mounted_container_strips_the_mount_root(tmp_path):
    path = "/system.slice/docker-4f2a9c0e1b7d.scope"
    make_cgroup_v2(tmp_path, path, memory_max=640 * MIB, cpu_max="50000 100000", mount_root=path)

    cgroup = find_cgroup(tmp_path)

    assert cgroup is not None and cgroup.version == 2
    assert cgroup.path == path
    assert cgroup.memory_dir == tmp_path / V2_MOUNT.lstrip("/")
    assert memory_limit_bytes(cgroup) == 640 * MIB
    assert cpu_quota(cgroup) == 0.5


def test_v2_working_set_and_oom_kills(tmp_path):
    make_cgroup_v2(tmp_path, "/app", memory_max=512 * MIB, usage=480 * MIB, inactive_file=80 * MIB, oom_kill=2)

    memory = read_memory(find_cgroup(tmp_path))

    assert memory.usage_bytes == 480 * MIB
    assert memory.working_set_bytes == 400 * MIB
    assert memory.oom_kills == 2


def test_v2_memory_high_below_memory_max_is_the_limit_and_says_so(tmp_path):
    make_cgroup_v2(tmp_path, "/app", memory_max=512 * MIB, memory_high=384 * MIB)

    memory = read_memory(find_cgroup(tmp_path))

    assert (memory.limit_bytes, memory.limit_file) == (384 * MIB, "memory.high")
    assert (memory.max_bytes, memory.high_bytes) == (512 * MIB, 384 * MIB)


def test_v2_memory_high_above_memory_max_leaves_memory_max_the_limit(tmp_path):
    make_cgroup_v2(tmp_path, "/app", memory_max=512 * MIB, memory_high=600 * MIB)

    memory = read_memory(find_cgroup(tmp_path))

    assert (memory.limit_bytes, memory.limit_file, memory.high_bytes) == (512 * MIB, "memory.max", 600 * MIB)


def test_v2_a_parents_memory_high_is_the_tightest_on_the_way_up(tmp_path):
    make_cgroup_v2(tmp_path, "/pod/app", memory_max=1024 * MIB)
    write(v2_dir(tmp_path, "/pod") / "memory.high", f"{256 * MIB}\n")
    write(v2_dir(tmp_path, "/pod") / "memory.max", f"{512 * MIB}\n")

    memory = read_memory(find_cgroup(tmp_path))

    assert (memory.limit_bytes, memory.limit_file, memory.max_bytes) == (256 * MIB, "memory.high", 512 * MIB)


def test_v2_memory_high_alone_is_a_limit(tmp_path):
    make_cgroup_v2(tmp_path, "/app", memory_max="max", memory_high=300 * MIB)

    memory = read_memory(find_cgroup(tmp_path))

    assert (memory.limit_bytes, memory.limit_file, memory.max_bytes) == (300 * MIB, "memory.high", None)


def test_v1_names_its_limit_file_and_has_no_events_or_pressure(tmp_path):
    make_cgroup_v1(tmp_path, "/docker/abc", limit_bytes=512 * MIB)

    memory = read_memory(find_cgroup(tmp_path))

    assert (memory.limit_file, memory.max_bytes, memory.high_bytes) == ("memory.limit_in_bytes", 512 * MIB, None)
    assert (memory.events, memory.pressure) == (None, None)


def test_v2_memory_events_and_pressure_are_read(tmp_path):
    pressure = (
        "some avg10=12.50 avg60=3.10 avg300=0.70 total=4500000\nfull avg10=2.25 avg60=0.50 avg300=0.10 total=900000\n"
    )
    make_cgroup_v2(tmp_path, "/app", memory_max=512 * MIB, oom_kill=1, pressure=pressure)

    memory = read_memory(find_cgroup(tmp_path))

    assert memory.events == {"low": 0, "high": 0, "max": 3, "oom": 1, "oom_kill": 1, "oom_group_kill": 0}
    assert memory.pressure == {"some": Pressure(12.5, 4_500_000), "full": Pressure(2.25, 900_000)}


@pytest.mark.parametrize(
    "text",
    ["", "some avg10=zero total=1\n", "garbage\n", "full avg10=1.0\n"],
    ids=["empty", "not-a-number", "no-fields", "no-total"],
)
def test_v2_unreadable_pressure_is_none_not_an_error(tmp_path, text):
    make_cgroup_v2(tmp_path, "/app", pressure=text)

    assert read_memory(find_cgroup(tmp_path)).pressure is None


def test_v2_without_a_pressure_file_has_none(tmp_path):
    make_cgroup_v2(tmp_path, "/app", pressure=None)

    assert read_memory(find_cgroup(tmp_path)).pressure is None


def test_working_set_never_goes_below_zero(tmp_path):
    make_cgroup_v2(tmp_path, "/app", usage=10 * MIB, inactive_file=20 * MIB)

    assert read_memory(find_cgroup(tmp_path)).working_set_bytes == 0


def test_v2_without_the_memory_controller_has_no_memory_dir(tmp_path):
    make_cgroup_v2(tmp_path, "/app", controllers="cpu pids")
    (v2_dir(tmp_path, "/app") / "memory.current").unlink()

    cgroup = find_cgroup(tmp_path)

    assert cgroup is not None and cgroup.memory_dir is None
    assert read_memory(cgroup).usage_bytes is None
    assert memory_limit_bytes(cgroup) is None


def test_no_cgroup_at_all(tmp_path):
    write(tmp_path / "proc/self/mountinfo", "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n")

    assert find_cgroup(tmp_path) is None
    assert cpu_quota(None) is None


def test_v1_line_without_a_mounted_memory_hierarchy_is_not_a_cgroup(tmp_path):
    write(tmp_path / "proc/self/cgroup", "4:memory:/app\n")
    write(tmp_path / "proc/self/mountinfo", "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n")

    assert find_cgroup(tmp_path) is None


@pytest.mark.parametrize(
    ("quota_us", "period_us", "expected_cpus"),
    [
        (None, 100000, None),  # -1: no quota
        (100000, 100000, 1.0),
        (150000, 100000, 1.5),
        (50000, 100000, 0.5),
        (200000, 50000, 4.0),
    ],
)
def test_v1_cpu_quota(tmp_path, quota_us, period_us, expected_cpus):
    make_cgroup_v1(tmp_path, NESTED_V1_PATH, cpu_quota_us=quota_us, cpu_period_us=period_us)

    assert cpu_quota(find_cgroup(tmp_path)) == expected_cpus


@pytest.mark.parametrize(
    ("cpu_max", "expected_cpus"),
    [
        ("max 100000", None),
        ("150000 100000", 1.5),
        ("100000 100000", 1.0),
        ("25000 100000", 0.25),
    ],
)
def test_v2_cpu_quota(tmp_path, cpu_max, expected_cpus):
    make_cgroup_v2(tmp_path, "/app", cpu_max=cpu_max)

    assert cpu_quota(find_cgroup(tmp_path)) == expected_cpus


def test_v2_cpu_quota_tightest_on_the_way_up(tmp_path):
    make_cgroup_v2(tmp_path, "/parent/app", cpu_max="max 100000")
    write(v2_dir(tmp_path, "/parent") / "cpu.max", "200000 100000\n")

    assert cpu_quota(find_cgroup(tmp_path)) == 2.0


@pytest.mark.parametrize(
    ("cpu_max", "affinity", "expected"),
    [
        ("max 100000", 4, (4.0, "CPU affinity")),
        ("150000 100000", 4, (1.5, "cgroup v2 CPU quota")),
        ("800000 100000", 2, (2.0, "CPU affinity")),  # a quota above the CPUs it may run on
        ("200000 100000", 2, (2.0, "CPU affinity")),
    ],
)
def test_usable_cpus_with_an_explicit_affinity(tmp_path, cpu_max, affinity, expected):
    make_cgroup_v2(tmp_path, "/app", cpu_max=cpu_max)

    assert usable_cpus(find_cgroup(tmp_path), affinity_count=affinity) == expected


def test_usable_cpus_v1_quota_and_no_cgroup(tmp_path):
    make_cgroup_v1(tmp_path, NESTED_V1_PATH, cpu_quota_us=50000)

    assert usable_cpus(find_cgroup(tmp_path), affinity_count=8) == (0.5, "cgroup v1 CPU quota")
    assert usable_cpus(None, affinity_count=3) == (3.0, "CPU affinity")


def test_host_memory_bytes(tmp_path):
    make_meminfo(tmp_path, total_kb=16384256)

    assert host_memory_bytes(tmp_path) == 16384256 * 1024


def test_host_memory_bytes_without_meminfo(tmp_path):
    assert host_memory_bytes(tmp_path) is None


def _independent_memory_dir() -> tuple[int, str, Path] | None:
    """(version, path, folder) of this process's memory cgroup, read without fitflix."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for line in lines:
        _hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            for fields in mounts:
                after_dash = fields[fields.index("-") + 1 :]
                if after_dash[0] == "cgroup" and "memory" in after_dash[2].split(","):
                    relative = path[len(fields[3]) :] if fields[3] != "/" and path.startswith(fields[3]) else path
                    return 1, path, Path(fields[4]) / relative.lstrip("/")
    for line in lines:
        if line.startswith("0::"):
            path = line[3:]
            for fields in mounts:
                if fields[fields.index("-") + 1] == "cgroup2":
                    directory = Path(fields[4]) / path.lstrip("/")
                    if (directory / "memory.current").exists():
                        return 2, path, directory
    return None


def test_this_machine_agrees_with_proc_self_cgroup():
    found = _independent_memory_dir()
    if found is None or not found[2].is_dir():
        pytest.skip("this machine has no memory cgroup for this process")
    version, path, directory = found

    cgroup = find_cgroup(Path("/"))

    assert cgroup is not None
    assert (cgroup.version, cgroup.path, cgroup.memory_dir) == (version, path, directory)
    usage_file = directory / ("memory.usage_in_bytes" if version == 1 else "memory.current")
    before = int(usage_file.read_text())
    usage = read_memory(cgroup).usage_bytes
    after = int(usage_file.read_text())
    # The same file read a moment apart: other processes in the cgroup move it a little.
    assert min(before, after) - 8 * MIB <= usage <= max(before, after) + 8 * MIB


def test_usage_is_read_anew_from_its_kept_file_each_look(tmp_path):
    make_cgroup_v1(tmp_path, "/app", limit_bytes=512 * MIB, usage=100 * MIB)
    usage = UsageFile(find_cgroup(tmp_path))
    assert usage.read() == 100 * MIB
    make_cgroup_v1(tmp_path, "/app", limit_bytes=512 * MIB, usage=300 * MIB)  # the kernel charged more since
    assert usage.read() == 300 * MIB
    usage.close()
    assert usage.read() is None
    assert UsageFile(None).read() is None  # no cgroup: nothing to read, and no error


def test_the_usage_alarm_says_why_it_cannot_listen_on_v2_or_where_event_control_is_refused(tmp_path):
    make_cgroup_v2(tmp_path, "/app", memory_max=512 * MIB)
    v2 = UsageAlarm(find_cgroup(tmp_path), (400 * MIB,))
    assert v2.fd is None and "cgroup v2" in v2.problem and v2.clear() is False

    v1_root = tmp_path / "v1"
    make_cgroup_v1(v1_root, "/app", limit_bytes=512 * MIB)
    cgroup = find_cgroup(v1_root)
    (cgroup.memory_dir / "cgroup.event_control").mkdir()  # cannot be written, as a read-only mount's cannot
    refused = UsageAlarm(cgroup, (400 * MIB, 460 * MIB))
    assert refused.fd is None and refused.problem.startswith("cgroup.event_control: ")
    assert UsageAlarm(None, (1,)).problem == "no memory cgroup"


def test_the_v2_alarm_says_which_memory_events_moved_and_that_memory_stalled_and_only_for_a_ready_fd(tmp_path):
    make_cgroup_v2(tmp_path, "/app", memory_max=512 * MIB)
    cgroup = find_cgroup(tmp_path)
    alarm = PressureAlarm(cgroup)
    try:
        assert alarm.problem is None and alarm.signals_levels is False
        assert set(alarm.polled()) == {alarm.events_fd, alarm.pressure_fd}
        # The trigger was written where the kernel takes it (a regular file here keeps what was written).
        assert (cgroup.memory_dir / "memory.pressure").read_bytes().startswith(PSI_TRIGGER.encode() + b"\0")
        write(cgroup.memory_dir / "memory.events", "low 4\nhigh 3\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n")
        assert alarm.clear(frozenset()) is False  # no fd was ready: nothing is read
        assert alarm.clear(frozenset({alarm.events_fd})) is True
        assert alarm.said == {"memory.events": "memory.events high +3"}  # low is not the kernel acting on a limit
        assert alarm.clear(frozenset({alarm.events_fd})) is False  # nothing moved since
        write(cgroup.memory_dir / "memory.events", "low 9\nhigh 3\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n")
        assert alarm.clear(frozenset({alarm.events_fd})) is False
        assert alarm.clear(frozenset({alarm.pressure_fd})) is True
        assert alarm.said == {"PSI": f"memory stalled past the PSI trigger ({PSI_TRIGGER})"}
    finally:
        alarm.close()
    assert alarm.polled() == {} and alarm.fd is None


def test_the_v2_alarm_keeps_memory_events_where_the_psi_trigger_is_refused_and_says_why(tmp_path):
    make_cgroup_v2(tmp_path, "/app", memory_max=512 * MIB, pressure=None)
    cgroup = find_cgroup(tmp_path)
    (cgroup.memory_dir / "memory.pressure").mkdir()  # cannot be opened for writing, as a read-only mount's
    alarm = PressureAlarm(cgroup)
    try:
        assert alarm.pressure_fd is None and alarm.events_fd is not None and alarm.fd == alarm.events_fd
        assert alarm.problem.startswith("memory.pressure: ")
    finally:
        alarm.close()
    make_cgroup_v1(tmp_path / "v1", "/app", limit_bytes=512 * MIB)
    v1 = PressureAlarm(find_cgroup(tmp_path / "v1"))
    assert v1.fd is None and "cgroup v1" in v1.problem and v1.clear(frozenset({3})) is False
    assert PressureAlarm(None).problem == "no memory cgroup"


def test_a_bad_memory_events_file_neither_stops_the_v2_alarm_nor_leaks_its_fd(tmp_path):
    make_cgroup_v2(tmp_path, "/app", memory_max=512 * MIB)
    cgroup = find_cgroup(tmp_path)
    alarm = PressureAlarm(cgroup)
    try:
        write(cgroup.memory_dir / "memory.events", "garbage\nhigh x\n\xff\nhigh 2 3\nmax 4\n")
        assert alarm.clear(frozenset({alarm.events_fd})) is True  # the lines that parse still count
        assert alarm.said == {"memory.events": "memory.events max +4"}
    finally:
        alarm.close()

    events = cgroup.memory_dir / "memory.events"
    events.unlink()
    events.mkdir()  # opens, but cannot be read
    unreadable = PressureAlarm(cgroup)
    try:
        assert unreadable.events_fd is None and unreadable.problem.startswith("memory.events: ")
        assert unreadable.fd == unreadable.pressure_fd is not None  # the PSI trigger still serves
    finally:
        unreadable.close()
