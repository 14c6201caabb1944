"""The master's monitor on a fake machine: what it logs and which worker the guard asks to leave."""

from __future__ import annotations

import signal

import pytest

from fitflix.memory.service import MemoryProbe
from fitflix.serving import watchdog
from fitflix.serving.sizing import make_plan
from fitflix.serving.state import SharedState
from fitflix.serving.watchdog import CLEANUP_SIGNAL, GUARD_COOLDOWN_S, MemoryMonitor
from fitflix.settings import Settings
from tests.fakes import MIB, container, make_cgroup_v1, make_proc, smaps_rollup_text

MASTER = 5000
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
    monkeypatch.setattr(watchdog, "_signal", lambda pid, signum: signals.append((pid, signum)))
    return signals


def monitor_on(tmp_path, usage_mb: int, workers: dict[int, int] = WORKER_USS_MB) -> MemoryMonitor:
    make_cgroup_v1(tmp_path, "/app", limit_bytes=512 * MIB, usage=usage_mb * MIB, inactive_file=0)
    make_proc(tmp_path, MASTER, 1, smaps_rollup=smaps_rollup_text(30 * 1024, 15 * 1024, 0, 5 * 1024))
    for pid, uss_mb in workers.items():
        make_proc(
            tmp_path, pid, MASTER, smaps_rollup=smaps_rollup_text((uss_mb + 20) * 1024, uss_mb * 1024, 0, uss_mb * 1024)
        )
    plan = make_plan(Settings(), container(512, 2))
    probe = MemoryProbe((512, "cgroup v1"), root=tmp_path, cache_s=0)
    return MemoryMonitor(FakeServer(), plan, probe, SharedState(str(tmp_path)), log_interval_s=60, master_pid=MASTER)


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
    monkeypatch.setattr(watchdog.time, "monotonic", lambda: clock[0])
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
