"""The master's memory monitor: a thread that samples the container every second, logs, and guards.

The decisions are in `recycle.py`; this module measures, logs and signals. A worker's side,
the recycler, is `recycler.py`.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from fitflix.memory.container import MIB, format_mb
from fitflix.memory.report import MemoryProbe
from fitflix.serving.recycle import (
    EFFECTIVE,
    FUTILE,
    GuardPolicy,
    MonitorLogPolicy,
    memory_status,
    surge_fits,
    threshold_bytes,
)
from fitflix.serving.recycler import CLEANUP_SIGNAL
from fitflix.serving.sizing import FRESH_WORKER_ALLOWANCE_MB, Plan
from fitflix.serving.state import SharedState


class MemoryMonitor(threading.Thread):
    """The master's thread: samples the container every second, logs, and guards."""

    def __init__(
        self,
        server,
        plan: Plan,
        probe: MemoryProbe,
        shared: SharedState | None,
        log_interval_s: float,
        master_pid: int | None = None,
        own_reader=None,
    ):
        """`own_reader`: where the master's own memory cannot be read from outside (no /proc), the
        reader it publishes its figure from each second, for the workers that answer /health/memory."""
        super().__init__(name="fitflix-memory-monitor", daemon=True)
        self.own_reader = own_reader
        self.master_pid = master_pid or os.getpid()
        self.server = server
        self.plan = plan
        self.probe = probe
        self.shared = shared
        self.policy = MonitorLogPolicy(log_interval_s)
        self.stopping = threading.Event()
        self.guard_policy = GuardPolicy()
        self.guard_pid = 0

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                self.tick()
            except Exception:  # the monitor must outlive any one bad sample
                self.server.log.exception("Memory monitor sample failed")

    def stop(self) -> None:
        self.stopping.set()

    def tick(self) -> None:
        now = time.monotonic()
        if self.own_reader is not None and self.shared is not None:
            rss, _data = self.own_reader.read()
            self.shared.publish_master_memory(rss, self.own_reader.is_peak)
        report = self.probe.report("master", self.master_pid)
        status = memory_status(report.used_percent, self.plan.warn_percent, self.plan.critical_percent)
        log_usage, log_alert = self.policy.step(now, status)
        worker_uss = {
            process.memory.pid: process.memory.private_bytes()
            for process in report.processes
            if process.role == "worker" and process.memory.private_bytes() is not None
        }
        self.guard_policy.observe(worker_uss)
        neighbours = "" if report.neighbours_bytes is None else f"; neighbours {format_mb(report.neighbours_bytes)}MB"
        pss = report.service_pss_bytes
        service = "no PSS here" if pss is None else f"service PSS {format_mb(pss)}MB"
        summary = (
            f"{format_mb(report.used_bytes)}MB of {report.limit_bytes // MIB}MB ({report.used_percent:.0f}%, "
            f"{report.used_source}); {service} over {len(worker_uss)} worker(s)"
            f"{neighbours}"
        )
        if log_usage:
            self.server.log.info("Memory usage: %s", summary)
        if log_alert:
            if status == "CRITICAL":
                self.server.log.critical("Memory CRITICAL (>= %s%%): %s", self.plan.critical_percent, summary)
            elif status == "WARNING":
                self.server.log.warning("Memory WARNING (>= %s%%): %s", self.plan.warn_percent, summary)
            else:
                self.server.log.info("Memory back to OK: %s", summary)
        if status == "CRITICAL":
            _warn, critical_bytes = threshold_bytes(report.limit_bytes, self.plan)
            self.guard(report.used_bytes, critical_bytes, worker_uss, now, summary)
        else:
            self.guard_policy.calm()

    def room_for_one_more(self) -> tuple[bool, str]:
        """Master's loop, when a worker asks to be replaced first: does one more fresh worker fit now?"""
        report = self.probe.report("master", self.master_pid)
        _warn, critical_bytes = threshold_bytes(report.limit_bytes, self.plan)
        # Not the smallest worker seen: the first sample may come after a leak began (92 MB seen so).
        fresh_bytes = FRESH_WORKER_ALLOWANCE_MB * MIB
        fits = surge_fits(report.used_bytes, fresh_bytes, critical_bytes)
        return fits, (
            f"{format_mb(report.used_bytes)}MB used + {format_mb(fresh_bytes)}MB for a fresh worker "
            f"{'within' if fits else 'past'} the critical level of {format_mb(critical_bytes)}MB"
        )

    def guard(self, used_bytes: int, critical_bytes: int, worker_uss: dict[int, int], now: float, summary: str) -> None:
        """Ask every worker to clean up, and recycle the one holding the most private memory when that can help."""
        # A worker recycling for memory, or one being replaced, is leaving: never judge or pick it.
        busy = (self.shared.memory_recycle_holder() or self.shared.surge_old()) if self.shared else 0
        if not busy and self.guard_pid and self.guard_pid in worker_uss:
            busy = self.guard_pid  # the last one the guard asked to leave is still draining
        action = self.guard_policy.step(now, used_bytes, critical_bytes, worker_uss, busy)
        if action.clean_up:
            for pid in worker_uss:
                _signal(pid, CLEANUP_SIGNAL)
        if action.change == EFFECTIVE:
            self.server.log.info("Memory guard: the last recycle gave memory back; the guard acts again: %s", summary)
        elif action.change is not None:
            what = "the last recycle did not lower usage" if action.change == FUTILE else "recycling cannot help"
            self.server.log.warning(
                "Memory guard: %s; the memory is held outside the workers (their private memory is %sMB, "
                "critical level %sMB): no worker is recycled for it, next look in %.0fs: %s",
                what,
                format_mb(sum(worker_uss.values())),
                format_mb(critical_bytes),
                self.guard_policy.pause_s,
                summary,
            )
        if action.target is None:
            return
        self.guard_pid = action.target
        if self.shared is not None:
            self.shared.mark_guard_target(action.target)
        self.server.log.warning(
            "Memory guard: recycling worker %s (uss=%sMB, the most private memory)",
            action.target,
            format_mb(worker_uss[action.target]),
        )
        _signal(action.target, signal.SIGTERM)  # gunicorn's graceful stop for one worker


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
