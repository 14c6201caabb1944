"""A quiet service: the master's monitor waits for the kernel's word below the warning level, and acts on it.

`the_guard_acts_past_critical` is the master guard's live test (a worker budget above the critical
level, so only the guard can act before the OOM killer), here on v1 and in test_cgroup_v2.py on v2.
"""

from __future__ import annotations

import pytest

from fitflix.memory.cgroup import Cgroup, UsageAlarm, UsageFile, find_cgroup
from fitflix.memory.container import MIB
from harness.fitflix_log import parse_recycles
from harness.load import run_load
from harness.wait import poll_until

LEAKY = "harness.apps.leaky:app"
ARMED = "the kernel signals when usage crosses the warning level"
REFUSED = "the kernel cannot signal a crossing of the warning level here"
CROSSED = "the kernel says usage crossed a level"
V2_WAY = "cgroup v2 has no word for a level of usage"
V2_WORD = "the kernel acts on the cgroup's memory"


def as_service_sees_it(cgroup) -> Cgroup:
    return Cgroup(cgroup.version, cgroup.directory, None, cgroup.directory.parent, None, "/test")


@pytest.mark.cgroup
def test_the_kernel_signals_a_crossing_of_a_level_of_a_real_cgroup_up_and_down(memory_cgroup, memory_holder):
    cgroup = memory_cgroup(512)
    seen = as_service_sees_it(cgroup)
    level = UsageFile(seen).read() + 64 * MIB
    alarm = UsageAlarm(seen, (level,))
    try:
        if cgroup.version == 2:
            assert alarm.fd is None and "cgroup v2" in alarm.problem  # no level notification there: said, not faked
            return
        assert alarm.fd is not None, alarm.problem
        assert alarm.clear() is False  # nothing crossed yet

        holder = memory_holder(cgroup, 128)
        poll_until(alarm.clear, 10, "the kernel's word that usage went past the level")
        holder.stop()
        poll_until(alarm.clear, 10, "the kernel's word that usage came back under it")
    finally:
        alarm.close()


@pytest.mark.cgroup
def test_below_warn_the_monitor_waits_for_the_kernel_and_the_guard_acts_on_the_crossing(live_server, memory_cgroup):
    cgroup = memory_cgroup(512)
    armed, _log = the_guard_acts_past_critical(live_server, cgroup)
    assert armed is (cgroup.version == 1)  # v1 listens; v2 reads a second apart, and says so (test_cgroup_v2.py)


@pytest.mark.cgroup
def test_where_the_cgroup_mount_is_read_only_the_monitor_says_so_once_and_the_guard_still_acts(
    live_server, memory_cgroup
):
    cgroup = memory_cgroup(512)
    if cgroup.version != 1:
        pytest.skip("cgroup v2 never asks the kernel for a crossing (test_cgroup_v2.py runs that case)")
    mount = find_cgroup().mount_dir  # the memory hierarchy the test cgroup is in, mounted read-only as in a container
    read_only = (
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'mount -o remount,bind,ro "{mount}" && exec "$@"',
        "sh",
    )

    armed, log = the_guard_acts_past_critical(live_server, cgroup, prefix=read_only)

    assert armed is False
    assert log.count(REFUSED) == 1 and "cgroup.event_control: Read-only file system" in log


def the_guard_acts_past_critical(live_server, cgroup, prefix: tuple[str, ...] = ()) -> tuple[bool, str]:
    """A leak the worker's own budget (400 MB) leaves to the master's guard (critical at 60% of 512 MB):
    the guard recycles a worker, with no OOM kill. (Whether the kernel's crossing event was listened to, the log.)"""
    env = {
        "WORKER_MAX_MEMORY_MB": "400",
        "MEMORY_WARN_PERCENT": "50",
        "MEMORY_CRITICAL_PERCENT": "60",
        "LOG_LEVEL": "debug",
    }
    server = live_server(env, app=LEAKY, cgroup=cgroup, prefix=prefix)
    poll_until(lambda: any(way in server.log() for way in (ARMED, REFUSED, V2_WAY)), 30, "the monitor's way of waiting")
    armed = ARMED in server.log()

    def leak_until_guarded():
        result = run_load(server.port, "/leak?mb=4", requests=10, clients=1, time_limit_s=10)
        assert result.failed == 0, result.statuses
        return parse_recycles(server.log(), "guard")

    poll_until(leak_until_guarded, 60, "a guard recycle")
    log = server.log()
    assert "Memory CRITICAL" in log and "Memory guard: recycling worker" in log
    if armed:  # the kernel's word woke the monitor before it judged the usage critical
        assert log.index(CROSSED) < log.index("Memory CRITICAL")
    else:
        assert CROSSED not in log
    assert cgroup.oom_kills() == 0
    return armed, log
