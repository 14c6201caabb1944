"""The master's monitor on a fake machine: what it logs and which worker the guard asks to leave."""

from __future__ import annotations

import signal

import pytest

from fitflix.memory import report as report_module
from fitflix.memory.report import MemoryProbe
from fitflix.serving import monitor as monitor_module
from fitflix.serving import state as state_module
from fitflix.serving.monitor import MemoryMonitor
from fitflix.serving.recycle import GUARD_COOLDOWN_S
from fitflix.serving.recycler import CLEANUP_SIGNAL
from fitflix.serving.sizing import make_plan
from fitflix.serving.state import SharedState
from fitflix.serving.surge import Replacement
from fitflix.settings import Settings
from tests.fakes import MIB, container, make_cgroup_v1, make_cgroup_v2, make_proc, smaps_rollup_text, write

MASTER = 5000
NEW_MASTER = 5999
WORKER_USS_MB = {5001: 40, 5002: 90, 5003: 60}


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level):
        return lambda message, *args: self.lines.append((level, message % args))


class FakeServer:
    def __init__(self) -> None:
        self.log = RecordingLog()


@pytest.fixture
def sent(monkeypatch):
    """Signals the monitor would send, recorded instead of sent (the pids are fake)."""
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(monitor_module, "_signal", lambda pid, signum: signals.append((pid, signum)))
    return signals


def fake_machine(tmp_path, usage_mb: int, workers: dict[int, int]) -> None:
    """A 512 MB cgroup charged `usage_mb`, a master, its workers with the given USS, and a non-worker child."""
    make_cgroup_v1(tmp_path, "/app", limit_bytes=512 * MIB, usage=usage_mb * MIB, inactive_file=0)
    make_proc(tmp_path, MASTER, 1, smaps_rollup=smaps_rollup_text(30 * 1024, 15 * 1024, 0, 5 * 1024))
    for pid, uss_mb in workers.items():
        make_proc(
            tmp_path, pid, MASTER, smaps_rollup=smaps_rollup_text((uss_mb + 20) * 1024, uss_mb * 1024, 0, uss_mb * 1024)
        )
    # A master re-executed by SIGUSR2 is a child of this one, and the biggest: it is not a worker.
    make_proc(tmp_path, NEW_MASTER, MASTER, smaps_rollup=smaps_rollup_text(200 * 1024, 150 * 1024, 0, 150 * 1024))


def monitor_on(tmp_path, usage_mb: int, workers: dict[int, int] = WORKER_USS_MB) -> MemoryMonitor:
    fake_machine(tmp_path, usage_mb, workers)
    plan = make_plan(Settings(), container(512, 2))
    live_workers = dict(workers)  # the arbiter's own list, as server.WORKERS
    probe = MemoryProbe((512, "cgroup v1"), root=tmp_path, cache_s=0, worker_pids=lambda: list(live_workers))
    monitor = MemoryMonitor(FakeServer(), plan, probe, SharedState(str(tmp_path)), log_interval_s=60, master_pid=MASTER)
    monitor.live_workers = live_workers
    return monitor


def test_at_ok_it_logs_usage_and_sends_nothing(tmp_path, sent):
    monitor = monitor_on(tmp_path, usage_mb=100)
    monitor.tick()
    assert sent == []
    assert [level for level, _ in monitor.server.log.lines] == ["info"]
    assert "of 512MB (20%" in monitor.server.log.lines[0][1]


def test_at_critical_every_worker_cleans_up_and_the_biggest_leaves(tmp_path, sent):
    monitor = monitor_on(tmp_path, usage_mb=480)
    monitor.tick()
    assert sorted(pid for pid, signum in sent if signum == CLEANUP_SIGNAL) == sorted(WORKER_USS_MB)
    assert [pid for pid, signum in sent if signum == signal.SIGTERM] == [5002]
    assert monitor.shared.guard_target() == 5002
    levels = [level for level, _ in monitor.server.log.lines]
    assert levels.count("critical") == 1 and "warning" in levels  # the alert, then the guard's own line


def test_the_guard_waits_for_its_cooldown_and_for_the_last_worker_it_asked(tmp_path, sent, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(monitor_module.time, "monotonic", lambda: clock[0])
    monitor = monitor_on(tmp_path, usage_mb=480)
    monitor.tick()
    clock[0] += GUARD_COOLDOWN_S / 2
    monitor.tick()
    assert [pid for pid, signum in sent if signum == signal.SIGTERM] == [5002]  # within the cooldown
    clock[0] += GUARD_COOLDOWN_S
    monitor.tick()
    # 5002 is still draining (still in the tree): nobody else is asked to leave meanwhile
    assert [pid for pid, signum in sent if signum == signal.SIGTERM] == [5002]
    assert monitor.server.log.lines.count(next(line for line in monitor.server.log.lines if line[0] == "critical")) == 1


def sigterms(sent) -> list[int]:
    return [pid for pid, signum in sent if signum == signal.SIGTERM]


def test_a_re_executed_master_is_never_a_worker_nor_signalled(tmp_path, sent):
    monitor = monitor_on(tmp_path, usage_mb=480)
    monitor.tick()
    assert NEW_MASTER not in {pid for pid, _signum in sent}
    report = monitor.probe.report("master", MASTER)
    assert [process.memory.pid for process in report.processes if process.role == "worker"] == sorted(WORKER_USS_MB)


def test_no_recycle_when_the_memory_is_held_outside_the_workers(tmp_path, sent, monkeypatch):
    """480 MB used of 512 with workers holding 15 MB: recycling them all could not reach the critical 460 MB."""
    clock = [1000.0]
    monkeypatch.setattr(monitor_module.time, "monotonic", lambda: clock[0])
    monitor = monitor_on(tmp_path, usage_mb=480, workers={5001: 5, 5002: 10})
    for _ in range(30):
        monitor.tick()
        clock[0] += 1
    assert sigterms(sent) == []
    outside = [message for level, message in monitor.server.log.lines if "held outside the workers" in message]
    assert len(outside) == 1 and "recycling cannot help" in outside[0]
    # the cleanup signal backs off too: 5, 10, 20 s apart, not every 5 s
    cleanups = [pid for pid, signum in sent if signum == CLEANUP_SIGNAL]
    assert 2 <= len(cleanups) <= 2 * 3


def test_a_recycle_that_frees_nothing_backs_off_and_is_logged_once(tmp_path, sent, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(monitor_module.time, "monotonic", lambda: clock[0])
    monitor = monitor_on(tmp_path, usage_mb=480, workers={5001: 5, 5002: 90})
    monitor.tick()  # recycles 5002: its 90 MB could bring 480 under 460
    assert sigterms(sent) == [5002]
    # 5002 leaves, a fresh worker replaces it, and usage stays where it was
    del monitor.live_workers[5002]
    monitor.live_workers[5003] = 5
    fake_machine(tmp_path, 480, {5001: 5, 5003: 5})
    for _ in range(120):
        clock[0] += 1
        monitor.tick()
    assert sigterms(sent) == [5002]
    lines = [message for level, message in monitor.server.log.lines if "held outside the workers" in message]
    assert len(lines) == 1 and "did not lower usage" in lines[0]
    assert monitor.guard_policy.pause_s > GUARD_COOLDOWN_S


def test_a_recycle_that_gives_memory_back_keeps_the_guard_at_its_cooldown(tmp_path, sent, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(monitor_module.time, "monotonic", lambda: clock[0])
    monitor = monitor_on(tmp_path, usage_mb=480, workers={5001: 60, 5002: 90, 5003: 5})
    monitor.tick()
    assert sigterms(sent) == [5002]
    del monitor.live_workers[5002]
    monitor.live_workers[5004] = 5
    fake_machine(tmp_path, 475, {5001: 60, 5003: 5, 5004: 5})  # 5 MB back: still critical, and 5001 can help
    clock[0] += GUARD_COOLDOWN_S
    monitor.tick()
    assert sigterms(sent) == [5002, 5001]
    assert monitor.guard_policy.pause_s == GUARD_COOLDOWN_S
    assert not [message for level, message in monitor.server.log.lines if "held outside" in message]


def charge(tmp_path, usage_mb: float) -> None:
    """The fake cgroup's usage now (what the kernel would charge it)."""
    make_cgroup_v1(tmp_path, "/app", limit_bytes=512 * MIB, usage=int(usage_mb * MIB), inactive_file=0)


class FakeSurge:
    """The surge as the monitor sees it: the replacement under way, and retire_early."""

    def __init__(self, old_pid: int) -> None:
        self.current = Replacement(old_pid, 0.0, 0)
        self.retired_early: list[int] = []

    def retire_early(self, pid: int) -> bool:
        self.retired_early.append(pid)
        self.current.retiring = True
        return True


def test_the_admission_reads_usage_now_not_the_ticks_cached_report(tmp_path):
    monitor = monitor_on(tmp_path, usage_mb=100)
    monitor.probe.cache_s = 60.0
    monitor.tick()  # the 1 s tick caches its report...
    charge(tmp_path, 380)  # ...and under a fast leak a second later usage is 280 MB higher
    _fits, why = monitor.room_for_one_more(5002, boot_s=0.05, handover_s=0.15)
    assert why.startswith("380.0MB used")


def test_the_admission_counts_the_containers_growth_when_it_is_faster_than_the_old_workers(tmp_path, monkeypatch):
    monitor = monitor_on(tmp_path, usage_mb=380)
    monitor.shared.request_surge(5002, rate_bytes_per_s=1 * MIB, per_request_bytes=0)
    monkeypatch.setattr(monitor_module.time, "monotonic", lambda: 1000.0)
    monitor._last_used = (999.0, 100 * MIB)  # the last tick, a second ago: 280 MB a second since
    fits, why = monitor.room_for_one_more(5002, boot_s=0.05, handover_s=0.3)
    assert not fits and "of growth at 280.0MB/s" in why
    assert monitor.overlap is None


def test_a_forecast_that_fits_starts_the_watch_and_one_that_does_not_never_does(tmp_path):
    monitor = monitor_on(tmp_path, usage_mb=300)
    monitor.shared.request_surge(5002, rate_bytes_per_s=50 * MIB, per_request_bytes=MIB)
    fits, why = monitor.room_for_one_more(5002, boot_s=0.05, handover_s=0.15)
    assert fits and "of growth at 50.0MB/s" in why and "within the critical level" in why
    assert monitor.overlap is not None and monitor.overlap.old_pid == 5002
    monitor.overlap = None
    monitor.shared.request_surge(5002, rate_bytes_per_s=2000 * MIB, per_request_bytes=MIB)
    fits, why = monitor.room_for_one_more(5002, boot_s=0.05, handover_s=0.15)
    assert not fits and "past the critical level" in why and monitor.overlap is None


def test_the_admission_judges_on_the_usage_alone_when_the_overlap_fits_on_it_and_on_the_working_set_else(
    tmp_path, monkeypatch
):
    """The usage (a kept fd) is never below the working set; the whole cgroup read is for a close call."""
    cgroup_reads: list[int] = []
    read = monitor_module.MemoryProbe.container_memory
    monkeypatch.setattr(
        monitor_module.MemoryProbe, "container_memory", lambda probe: cgroup_reads.append(1) or read(probe)
    )
    monitor = monitor_on(tmp_path, usage_mb=100)
    monitor.tick()  # a whole report: the cgroup's limit is the service's
    monitor.tick()  # under the warning level: its figure is the usage
    monitor.shared.request_surge(5002, rate_bytes_per_s=10 * MIB, per_request_bytes=MIB)
    cgroup_reads.clear()
    fits, why = monitor.room_for_one_more(5002, boot_s=0.05, handover_s=0.15)
    assert fits and why.startswith("100.0MB used") and cgroup_reads == []
    assert monitor.overlap is not None
    monitor.overlap = None
    # 450 MB charged, 200 of it inactive page cache: on the usage it would not fit, on the working set it does.
    make_cgroup_v1(tmp_path, "/app", limit_bytes=512 * MIB, usage=450 * MIB, inactive_file=200 * MIB)
    fits, why = monitor.room_for_one_more(5002, boot_s=0.05, handover_s=0.15)
    assert fits and why.startswith("250.0MB used") and cgroup_reads == [1]
    assert monitor.overlap is not None


def test_the_watch_retires_a_still_serving_old_worker_and_holds_the_others_once_it_drains(tmp_path):
    monitor = monitor_on(tmp_path, usage_mb=300)
    monitor.shared.request_surge(5002, rate_bytes_per_s=10 * MIB, per_request_bytes=MIB)
    assert monitor.room_for_one_more(5002, boot_s=0.05, handover_s=0.15)[0]
    surge = monitor.surge = FakeSurge(5002)
    level_mb = monitor.overlap.level_bytes() / MIB
    monitor.watch_overlap(0.0)
    assert surge.retired_early == [] and monitor.shared.hold_for() == 0
    charge(tmp_path, level_mb)  # near the critical level while the replacement still boots
    monitor.watch_overlap(0.02)
    assert surge.retired_early == [5002]
    surge.current.replacement_pid = 5009  # it serves; the old worker drains
    charge(tmp_path, level_mb + 1)
    monitor.watch_overlap(0.04)
    assert monitor.shared.hold_for() == 5002
    room, rate = monitor.shared.overlap()
    assert room == monitor.overlap.critical_bytes - int((level_mb + 1) * MIB) and rate >= 10 * MIB
    surge.current = None  # the old worker is reaped
    monitor.watch_overlap(0.06)
    assert monitor.shared.hold_for() == 0 and monitor.overlap is None
    lines = [line for _level, line in monitor.server.log.lines]
    assert any("retiring worker 5002 now" in line for line in lines)
    assert any("hold new requests until it is gone" in line for line in lines)
    assert any("worker 5002 is gone; the workers take requests again" in line for line in lines)


def test_the_watch_reads_the_working_set_only_near_the_level_and_judges_page_cache_by_it(tmp_path, monkeypatch):
    """A look every 20 ms: memory.stat (0.5 ms at 0.1 CPU) only where the usage cannot settle it."""
    stat_reads: list[int] = []
    read = monitor_module.read_working_set
    monkeypatch.setattr(monitor_module, "read_working_set", lambda cgroup: stat_reads.append(1) or read(cgroup))
    monitor = monitor_on(tmp_path, usage_mb=300)
    monitor.shared.request_surge(5002, rate_bytes_per_s=10 * MIB, per_request_bytes=MIB)
    assert monitor.room_for_one_more(5002, boot_s=0.05, handover_s=0.15)[0]
    surge = monitor.surge = FakeSurge(5002)
    level_mb = monitor.overlap.level_bytes() / MIB
    fresh_mb = monitor.overlap.fresh_bytes / MIB
    stat_reads.clear()
    for look in range(5):
        monitor.watch_overlap(look * 0.02)
    assert stat_reads == [] and surge.retired_early == []
    # Past the level with what is to come, but page cache: the working set is read, and it is far below.
    make_cgroup_v1(tmp_path, "/app", limit_bytes=512 * MIB, usage=int(level_mb * MIB), inactive_file=100 * MIB)
    monitor.watch_overlap(0.2)
    assert stat_reads == [1] and surge.retired_early == []
    charge(tmp_path, level_mb - fresh_mb)  # the working set itself, with the replacement's boot to come
    monitor.watch_overlap(0.22)
    assert stat_reads == [1, 1] and surge.retired_early == [5002]


# --- a quiet monitor: the whole report only when it is needed ----------------------------------


def test_under_the_warning_level_a_look_reads_the_cgroups_usage_and_no_smaps(tmp_path, sent):
    monitor = monitor_on(tmp_path, usage_mb=100)
    monitor.tick()  # the first: the usage line is due
    assert monitor.reports == 1
    for _ in range(5):
        monitor.tick()
    assert monitor.reports == 1 and sent == []

    charge(tmp_path, 420)  # past the warning level (409.6 MB): the alert line, with the whole summary
    monitor.tick()
    assert monitor.reports == 2 and "Memory WARNING" in monitor.server.log.lines[-1][1]
    monitor.tick()  # still WARNING, already said: the working set alone
    assert monitor.reports == 2

    charge(tmp_path, 480)  # critical: the guard needs every worker's USS, each look
    monitor.tick()
    monitor.tick()
    assert monitor.reports == 4 and sigterms(sent) == [5002]


def test_page_cache_past_the_warning_level_costs_the_working_set_not_the_whole_report(tmp_path, sent):
    monitor = monitor_on(tmp_path, usage_mb=100)
    monitor.tick()
    make_cgroup_v1(tmp_path, "/app", limit_bytes=512 * MIB, usage=450 * MIB, inactive_file=300 * MIB)
    monitor.tick()
    assert monitor.reports == 1 and not monitor._below_warn  # usage is past it: the next look is a second away
    assert [level for level, _ in monitor.server.log.lines] == ["info"]


def test_a_worker_that_booted_is_read_alone_once_for_what_a_fresh_worker_holds(tmp_path, sent, monkeypatch):
    monitor = monitor_on(tmp_path, usage_mb=100)
    monitor.tick()
    make_proc(tmp_path, 5004, MASTER, smaps_rollup=smaps_rollup_text(25 * 1024, 12 * 1024, 0, 12 * 1024))
    monitor.live_workers[5004] = 12
    monkeypatch.setattr(state_module, "pid_alive", lambda pid: True)  # a fake pid: its slot stays its own
    monitor.shared.claim_worker_slot(5004)  # booted, and said nothing (no recycler)
    read = []
    real = report_module.read_process_memory
    monkeypatch.setattr(report_module, "read_process_memory", lambda pid, *args: read.append(pid) or real(pid, *args))
    monitor.tick()
    monitor.tick()
    # Its own smaps, once: not a whole report (the master's and every worker's), which cost 2-3 ms a recycle.
    assert read == [5004] and monitor.reports == 1
    assert monitor.guard_policy.fresh_worker_uss_bytes == 12 * MIB


def test_a_worker_that_said_what_it_held_at_boot_is_not_read_and_its_word_is_the_yardstick(tmp_path, sent, monkeypatch):
    monitor = monitor_on(tmp_path, usage_mb=100)
    monitor.tick()
    make_proc(tmp_path, 5004, MASTER, smaps_rollup=smaps_rollup_text(25 * 1024, 12 * 1024, 0, 12 * 1024))
    make_proc(tmp_path, 5005, MASTER, smaps_rollup=smaps_rollup_text(25 * 1024, 14 * 1024, 0, 14 * 1024))
    monitor.live_workers.update({5004: 12, 5005: 14})
    monkeypatch.setattr(state_module, "pid_alive", lambda pid: True)  # fake pids: a claimed slot stays theirs
    monitor.shared.claim_worker_slot(5004, boot_bytes=11 * MIB)  # its recycler's bound, as post_worker_init says it
    monitor.shared.claim_worker_slot(5005)  # no recycler: it says nothing
    read = []
    real = report_module.read_process_memory
    monkeypatch.setattr(report_module, "read_process_memory", lambda pid, *args: read.append(pid) or real(pid, *args))
    monitor.tick()
    # The one that said nothing is read from its smaps; the one that said is taken at its word.
    assert read == [5005] and monitor.reports == 1
    assert monitor.guard_policy.fresh_worker_uss_bytes == 11 * MIB


def test_a_worker_forked_but_not_booted_is_left_for_a_look_after_it_claims_its_slot(tmp_path, sent, monkeypatch):
    """At 0.1 CPU a look often falls between a fork and the claim: the USS then is not what a fresh worker holds."""
    monitor = monitor_on(tmp_path, usage_mb=100)
    monitor.tick()
    make_proc(tmp_path, 5004, MASTER, smaps_rollup=smaps_rollup_text(3 * 1024, 2 * 1024, 0, 2 * 1024))
    monitor.live_workers[5004] = 2  # in the arbiter's list from its fork on
    read = []
    real = report_module.read_process_memory
    monkeypatch.setattr(report_module, "read_process_memory", lambda pid, *args: read.append(pid) or real(pid, *args))
    monitor.tick()
    assert read == [] and monitor.guard_policy.fresh_worker_uss_bytes != 2 * MIB
    monkeypatch.setattr(state_module, "pid_alive", lambda pid: True)
    monitor.shared.claim_worker_slot(5004, boot_bytes=9 * MIB)  # booted
    monitor.tick()
    assert read == [] and monitor.guard_policy.fresh_worker_uss_bytes == 9 * MIB


class ArmedAlarm:
    fd = 99  # never polled: next_look_s only asks whether the kernel will say
    signals_levels = True


def test_looks_are_ten_seconds_apart_while_the_kernel_listens_and_a_tenth_after_its_word(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(monitor_module.time, "monotonic", lambda: clock[0])
    monitor = monitor_on(tmp_path, usage_mb=100)
    monitor.tick()  # the first look learns whether the cgroup's figure is the judged one
    monitor.tick()
    assert monitor.next_look_s(clock[0]) == 1.0  # nobody will say when usage crosses a level

    monitor._alarm = ArmedAlarm()
    monitor._alarm.signals_levels = False  # cgroup v2's words: the kernel acts, but says no level of usage
    assert monitor.next_look_s(clock[0]) == 1.0
    monitor._alarm.signals_levels = True
    assert monitor.next_look_s(clock[0]) == monitor_module.QUIET_LOOK_S
    clock[0] += 55  # the usage line is due in 5 s: the look comes then
    assert monitor.next_look_s(clock[0]) == 5.0

    charge(tmp_path, 420)
    monitor._crossed_at = clock[0]  # the kernel's word
    monitor.tick()
    assert monitor.next_look_s(clock[0]) == monitor_module.CROSSING_LOOK_S
    assert monitor.next_look_s(clock[0] + monitor_module.CROSSING_BURST_S) == 1.0


class RecordingPoller:
    def __init__(self) -> None:
        self.fds: set[int] = set()

    def register(self, fd: int, _events: int) -> None:
        self.fds.add(fd)

    def unregister(self, fd: int) -> None:
        self.fds.remove(fd)


def test_only_an_armed_alarms_fd_is_polled_and_a_refused_re_arm_leaves_none(tmp_path, monkeypatch):
    monitor = monitor_on(tmp_path, usage_mb=100)
    monitor.tick()  # the cgroup's figure is the judged one: an alarm may be armed
    poller = RecordingPoller()

    class Alarm:
        def __init__(self, fd: int | None, levels) -> None:
            self.fd, self.levels = fd, levels
            self.problem = None if fd else "cgroup.event_control: Read-only file system"

        def polled(self) -> dict[int, int]:
            return {} if self.fd is None else {self.fd: 1}

        def close(self) -> None:
            pass

    fds = iter([41, None])
    monkeypatch.setattr(monitor_module, "UsageAlarm", lambda cgroup, levels: Alarm(next(fds), levels))
    listened = monitor._listen(poller, frozenset())
    assert listened == {41} and poller.fds == {41}
    assert monitor._listen(poller, listened) == {41}  # armed at the same levels: left alone, not re-made

    monitor._alarm.levels = "moved"  # a SIGHUP moved the levels, and the kernel now refuses
    listened = monitor._listen(poller, listened)
    assert listened == set() and poller.fds == set()  # the closed fd is not polled (POLLNVAL: a busy loop)
    said = [line for _level, line in monitor.server.log.lines if "Memory monitor: the kernel" in line]
    assert len(said) == 1 and "signals when usage crosses" in said[0]  # the way of waiting is said once


def test_on_v2_the_monitor_says_its_way_once_wakes_on_the_kernels_word_and_logs_it_at_most_once_a_minute(
    tmp_path, monkeypatch
):
    clock = [1000.0]
    monkeypatch.setattr(monitor_module.time, "monotonic", lambda: clock[0])
    make_cgroup_v2(tmp_path, "/app", memory_max=512 * MIB, usage=100 * MIB)
    make_proc(tmp_path, MASTER, 1, smaps_rollup=smaps_rollup_text(30 * 1024, 15 * 1024, 0, 5 * 1024))
    plan = make_plan(Settings(), container(512, 2))
    probe = MemoryProbe((512, "cgroup v2"), root=tmp_path, cache_s=0, worker_pids=lambda: [])
    monitor = MemoryMonitor(FakeServer(), plan, probe, SharedState(str(tmp_path)), log_interval_s=60, master_pid=MASTER)
    monitor.tick()  # the first look learns that the cgroup's figure is the judged one
    poller = RecordingPoller()
    listened = monitor._listen(poller, frozenset())
    alarm = monitor._alarm
    try:
        assert listened == {alarm.events_fd, alarm.pressure_fd} == poller.fds
        assert monitor.next_look_s(clock[0]) == 1.0  # no word for a level of usage: a look a second
        said = [line for _level, line in monitor.server.log.lines if "Memory monitor: cgroup v2" in line]
        assert len(said) == 1 and "memory.events and PSI" in said[0]

        events = alarm.events_fd
        write(alarm_dir(monitor) / "memory.events", "low 0\nhigh 7\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n")
        assert alarm.clear(frozenset({events})) is True
        monitor._say_kernel_word(clock[0])
        clock[0] += 30
        monitor._say_kernel_word(clock[0])  # within the minute: not again
        alarm.said = {"PSI": "memory stalled"}  # another source's first word is said, within the minute too
        monitor._say_kernel_word(clock[0])
        words = [line for _level, line in monitor.server.log.lines if "the kernel acts on" in line]
        assert len(words) == 2 and "memory.events high +7" in words[0] and "memory stalled" in words[1]
        assert monitor._listen(poller, listened) == listened  # armed once, not re-made each turn
    finally:
        alarm.close()


def alarm_dir(monitor):
    return monitor.probe.cgroup.memory_dir
