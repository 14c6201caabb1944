"""The master's memory monitor: a thread that samples the container every second, logs, and guards.

While a replacement overlaps the worker it replaces (`surge.py`), it also watches the
container's usage every `overlap.WATCH_INTERVAL_S` and acts before the critical level
(`overlap.OverlapWatch`).

The decisions are in `recycle.py`; this module measures, logs and signals. A worker's side,
the recycler, is `recycler.py`.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from fitflix.memory.cgroup import read_working_set
from fitflix.memory.container import MIB, format_mb
from fitflix.memory.report import MemoryProbe, cgroup_limit_in_force
from fitflix.serving.overlap import HOLD, RELEASE, RETIRE_NOW, WATCH_INTERVAL_S, OverlapWatch, forecast, rate_between
from fitflix.serving.recycle import (
    EFFECTIVE,
    FUTILE,
    GuardPolicy,
    MonitorLogPolicy,
    memory_status,
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
        self.surge = None  # fitflix.serving.surge.Surge, set by when_ready: the overlap's phases
        self.overlap: OverlapWatch | None = None
        self._wake = threading.Event()
        self._last_used: tuple[float, int] | None = None  # (monotonic, judged usage) of the last look

    def run(self) -> None:
        next_tick = time.monotonic() + 1.0
        while not self.stopping.is_set():
            wait_s = WATCH_INTERVAL_S if self.overlap is not None else next_tick - time.monotonic()
            if wait_s > 0 and self._wake.wait(wait_s):
                self._wake.clear()
            if self.stopping.is_set():
                return
            now = time.monotonic()
            try:
                if self.overlap is not None:
                    self.watch_overlap(now)
                if now >= next_tick:
                    next_tick = now + 1.0
                    self.tick()
            except Exception:  # the monitor must outlive any one bad sample
                self.server.log.exception("Memory monitor sample failed")

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    def tick(self) -> None:
        now = time.monotonic()
        if self.own_reader is not None and self.shared is not None:
            rss, _data = self.own_reader.read()
            self.shared.publish_master_memory(rss, self.own_reader.is_peak)
        report = self.probe.report("master", self.master_pid)
        self._last_used = (now, report.used_bytes)
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

    def used_now(self) -> tuple[int, bool]:
        """(the judged usage read now, whether the overlap can be watched on the cgroup's cheap figure).

        Never the report's cached figure: under a fast leak a second-old figure is 180 MB low. Where the
        cgroup's own limit is the service's, its working set (a few small reads); elsewhere the service's
        PSS, read in full (the limit there is the service's own, not where the kernel's OOM killer acts).
        """
        limit_bytes = self.plan.limit_mb * MIB
        memory = self.probe.container_memory()
        if memory.working_set_bytes is not None and cgroup_limit_in_force(limit_bytes, memory):
            return memory.working_set_bytes, True
        self.probe.forget()
        return self.probe.report("master", self.master_pid).used_bytes, False

    def room_for_one_more(self, old_pid: int, boot_s: float, handover_s: float) -> tuple[bool, str]:
        """Master's loop, when worker `old_pid` asks to be replaced first: does the whole overlap fit now?"""
        now = time.monotonic()
        used_bytes, watchable = self.used_now()
        _warn, critical_bytes = threshold_bytes(self.plan.limit_mb * MIB, self.plan)
        rate_bytes_per_s, per_request_bytes = self.shared.surge_growth() if self.shared is not None else (0, 0)
        container_rate = rate_between(self._last_used, (now, used_bytes))
        rate = max(rate_bytes_per_s, container_rate or 0.0)
        # Not the smallest worker seen: the first sample may come after a leak began (92 MB seen so).
        fresh_bytes = FRESH_WORKER_ALLOWANCE_MB * MIB
        outlook = forecast(
            used_bytes, rate, per_request_bytes, self.plan.threads, fresh_bytes, boot_s, handover_s, critical_bytes
        )
        if outlook.fits and watchable:
            self.overlap = OverlapWatch(
                old_pid, critical_bytes, fresh_bytes, rate, per_request_bytes, self.plan.threads
            )
            self._wake.set()
        return outlook.fits, outlook.text()

    def watch_overlap(self, now: float) -> None:
        """Every WATCH_INTERVAL_S while a replacement overlaps the old worker: act before the critical level."""
        watch = self.overlap
        current = self.surge.current if self.surge is not None else None
        if current is None or current.old_pid != watch.old_pid:
            self.end_overlap(watch)
            return
        used_bytes = read_working_set(self.probe.cgroup)
        if used_bytes is None:
            return
        action = watch.step(now, used_bytes, booting=current.replacement_pid is None, retiring=current.retiring)
        if self.shared is not None:
            self.shared.set_overlap(watch.room_bytes(used_bytes), watch.rate_bytes_per_s)
        if action == RETIRE_NOW and self.surge.retire_early(watch.old_pid):
            self.server.log.warning(
                "Overlap: %sMB used, near the critical level of %sMB, while worker %s's replacement boots: "
                "retiring worker %s now (it finishes what it has; new requests wait for the replacement)",
                format_mb(used_bytes),
                format_mb(watch.critical_bytes),
                watch.old_pid,
                watch.old_pid,
            )
        elif action == HOLD and self.shared is not None:
            self.shared.set_hold_for(watch.old_pid)
            self.server.log.warning(
                "Overlap: %sMB used, near the critical level of %sMB, while worker %s drains: the other workers "
                "hold new requests until it is gone",
                format_mb(used_bytes),
                format_mb(watch.critical_bytes),
                watch.old_pid,
            )
        elif action == RELEASE and self.shared is not None:
            self.shared.set_hold_for(0)
            self.server.log.info("Overlap: %sMB used; the workers take requests again", format_mb(used_bytes))

    def end_overlap(self, watch: OverlapWatch) -> None:
        """The old worker is gone (or the replacement was abandoned): nothing holds any more."""
        if self.overlap is watch:  # the arbiter's thread may have started the next one meanwhile
            self.overlap = None
        if watch.holding and self.shared is not None:
            self.shared.set_hold_for(0)
            self.server.log.info("Overlap: worker %s is gone; the workers take requests again", watch.old_pid)
        self.server.log.debug(
            "Overlap of worker %s over: peak %sMB, critical level %sMB",
            watch.old_pid,
            format_mb(watch.peak_bytes),
            format_mb(watch.critical_bytes),
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
