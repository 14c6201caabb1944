"""The master's memory monitor: a thread that samples the container every second, logs, and guards.

A sample is cheap until memory is high. Where the cgroup's limit is the service's, one pread of
its usage, which counts page cache and so is never below the working set the status is judged on:
under the warning level, nothing more is read; at or past it, the working set (memory.stat) too.
Elsewhere, the RSS of every process from statm, never below the service's PSS. The whole report
(smaps of every process, about 0.4 ms each) is read only when that figure is at or past the
warning level, when a log line is due, or when a worker booted (what a fresh worker holds, for the
guard). An idle service's monitor costs one small read a second (BENCHMARKS part 21).

While a replacement overlaps the worker it replaces (`surge.py`), it also watches the
container's usage every `overlap.WATCH_INTERVAL_S` and acts before the critical level
(`overlap.OverlapWatch`).

The decisions are in `recycle.py`; this module measures, logs and signals. A worker's side,
the recycler, is `recycler.py`.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time

from fitflix.memory.cgroup import PSI_TRIGGER, PressureAlarm, UsageAlarm, UsageFile, read_working_set
from fitflix.memory.container import MIB, format_mb
from fitflix.memory.reader import proc_mounted, statm_memory
from fitflix.memory.report import MemoryProbe, MemoryReport, cgroup_limit_in_force
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

# Under the warning level, where the kernel signals a crossing of it (cgroup v1's threshold), the
# monitor looks this often: for a worker that booted (what a fresh worker holds), and its own readings.
QUIET_LOOK_S = 10.0
# A worker forked this long ago has booted (its app loaded), and is still fresh: the monitor reads it then.
BOOT_LOOK_S = 1.0
# For a second after the kernel's word of a crossing, at or past the warning level, the monitor looks
# this often (the cgroup's usage and working set, about 0.1 ms): the working set lags the usage the
# kernel signals on (it leaves out inactive page cache), and a fast leak passes the critical level
# within that second. The looks follow the crossing, in step with the leak: at 1 GB/s a worker is
# between the critical level and its own threshold for about 70 ms, which looks 0.1 s apart could
# miss at every cycle.
CROSSING_LOOK_S = 0.02
CROSSING_BURST_S = 1.0
# What the kernel says on cgroup v2 (memory.events moved, memory stalls) is logged at most this often.
KERNEL_WORD_LOG_S = 60.0


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
        self._wake_r: int | None = None  # a pipe (made by `run`) that ends a sleep: an overlap to watch, the stop
        self._wake_w: int | None = None
        # The kernel's word: on v1 when usage crosses the warning or critical level; on v2 when it acts
        # on the cgroup's memory (memory.events) or tasks stall on it (PSI).
        self._alarm: UsageAlarm | PressureAlarm | None = None
        self._word_logged_at: dict[str, float] = {}  # by source (memory.events, PSI)
        self._alarm_said = False
        self._below_warn = False  # the last look read the cgroup's usage under the warning level
        self._crossed_at: float | None = None  # when the kernel last said usage crossed a level
        self._boot_look_at: float | None = None  # a look due after a worker's fork (`look_after_boot`)
        # (monotonic, bytes) of the last look, and whether that figure was the cgroup's usage (an idle
        # look: page cache included) or the judged figure: a rate is measured against the same kind.
        self._last_used: tuple[float, int] | None = None
        self._last_was_usage = False
        self._usage = UsageFile(probe.cgroup)
        # Whether the cgroup's working set is the judged figure (its limit is the service's): known
        # from each whole report, None before the first.
        self._cgroup_judged: bool | None = None
        self._statm = proc_mounted(probe.root)
        self._workers_seen: set[int] = set()
        self.reports = 0  # whole reports read (smaps of every process), for the bench's count

    def run(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        os.register_at_fork(after_in_child=self._close_in_child)
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        listened: frozenset[int] = frozenset()
        next_tick = time.monotonic() + 1.0
        while not self.stopping.is_set():
            listened = self._listen(poller, listened)
            if self._boot_look_at is not None:
                next_tick = min(next_tick, self._boot_look_at)
                self._boot_look_at = None
            wait_s = WATCH_INTERVAL_S if self.overlap is not None else next_tick - time.monotonic()
            ready: frozenset[int] = frozenset()
            if wait_s > 0:
                # A PSI trigger's news is taken by the poll that reports it: the ready fds are its only trace.
                ready = frozenset(fd for fd, _events in poller.poll(wait_s * 1000) if fd in listened)
                self._drain_wake()
            if self.stopping.is_set():
                return
            now = time.monotonic()
            crossed = self._alarm is not None and self._alarm.clear(ready)
            if crossed:
                self._crossed_at = now
                self._say_kernel_word(now)
            try:
                if self.overlap is not None:
                    self.watch_overlap(now)
                if now >= next_tick or crossed:
                    self.tick()
                    next_tick = now + self.next_look_s(now)
            except Exception:  # the monitor must outlive any one bad sample
                self.server.log.exception("Memory monitor sample failed")

    def _listen(self, poller, listened: frozenset[int]) -> frozenset[int]:
        """Poll the alarm's fds while it is armed, and no other: a closed fd left registered would make
        every poll return at once (POLLNVAL), a busy loop. Returns the fds now polled."""
        wanted = self._alarm.polled() if self._arm_alarm() else {}
        if frozenset(wanted) != listened:
            for fd in listened:
                poller.unregister(fd)
            for fd, events in wanted.items():
                poller.register(fd, events)
        return frozenset(wanted)

    def _say_kernel_word(self, now: float) -> None:
        if self._alarm.signals_levels:
            self.server.log.debug("Memory monitor: the kernel says usage crossed a level")
            return
        news = [
            text
            for source, text in self._alarm.said.items()
            if now - self._word_logged_at.get(source, -KERNEL_WORD_LOG_S) >= KERNEL_WORD_LOG_S
        ]
        if not news:
            return
        self._word_logged_at.update(dict.fromkeys(self._alarm.said, now))
        self.server.log.info(
            "Memory monitor: the kernel acts on the cgroup's memory: %s; looking every %.0f ms for %.0f s",
            "; ".join(news),
            CROSSING_LOOK_S * 1000,
            CROSSING_BURST_S,
        )

    def look_after_boot(self) -> None:
        """The arbiter's thread, before it forks a worker: look (a whole report) about BOOT_LOOK_S after.

        The guard needs what a fresh worker holds (its smallest USS seen): a quiet monitor would
        first see the new worker at the next crossing, grown by then under a fast leak.
        """
        self._boot_look_at = time.monotonic() + BOOT_LOOK_S
        self.wake()

    def next_look_s(self, now: float) -> float:
        """A second; while the kernel will say when usage crosses the warning level and it is under it,
        QUIET_LOOK_S (a worker booted meanwhile is looked at then), and never past the next usage line."""
        if self._below_warn and self._alarm is not None and self._alarm.signals_levels and self._alarm.fd is not None:
            return max(1.0, min(QUIET_LOOK_S, self.policy.usage_due_in(now)))
        if self._crossed_at is not None and now - self._crossed_at < CROSSING_BURST_S:
            return CROSSING_LOOK_S  # a leak past the warning level may pass the critical one within the second
        return 1.0

    def _arm_alarm(self) -> bool:
        """Keep the kernel's threshold at the warning level (re-armed when the plan moves it), or on v2 its
        words on memory; False where the kernel cannot be asked (said once in the log)."""
        if not self._cgroup_judged or self._alarm_said and self._alarm is None:
            return False
        levels = threshold_bytes(self.plan.limit_mb * MIB, self.plan)
        if self._alarm is not None and self._alarm.levels == levels:
            return True
        if self._alarm is not None:
            self._alarm.close()
        if self.probe.cgroup is not None and self.probe.cgroup.version == 2:
            return self._arm_v2(levels)
        # The critical level too: a leak fast enough to pass it within a second of the warning
        # level's word is judged when it does, not at the next look.
        alarm = UsageAlarm(self.probe.cgroup, levels)
        if alarm.fd is None:
            self._alarm = None
            if not self._alarm_said:
                self.server.log.info(
                    "Memory monitor: the kernel cannot signal a crossing of the warning level here (%s); "
                    "the monitor reads the cgroup's usage every second",
                    alarm.problem,
                )
            self._alarm_said = True
            return False
        self._alarm = alarm
        if not self._alarm_said:
            self.server.log.info(
                "Memory monitor: the kernel signals when usage crosses the warning level (%sMB) or the "
                "critical level (%sMB); below the warning level the monitor looks every %.0f s",
                format_mb(levels[0]),
                format_mb(levels[1]),
                QUIET_LOOK_S,
            )
        self._alarm_said = True
        return True

    def _arm_v2(self, levels: tuple[int, ...]) -> bool:
        """cgroup v2: no word for a level of usage (the looks stay a second apart), but the kernel's
        memory.events and a PSI trigger wake the monitor when the kernel begins to act."""
        alarm = PressureAlarm(self.probe.cgroup, levels)
        self._alarm = alarm if alarm.fd is not None else None
        if not self._alarm_said:
            listened = [
                what
                for what, fd in (("memory.events", alarm.events_fd), (f"PSI ({PSI_TRIGGER})", alarm.pressure_fd))
                if fd is not None
            ]
            self.server.log.info(
                "Memory monitor: cgroup v2 has no word for a level of usage: the monitor reads the cgroup's usage "
                "every second; it wakes at once on %s%s",
                " and ".join(listened) or "nothing the kernel says here",
                f" ({alarm.problem})" if alarm.problem else "",
            )
        self._alarm_said = True
        return self._alarm is not None

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 64):
                pass
        except BlockingIOError:
            pass

    def wake(self) -> None:
        if self._wake_w is None:  # not running
            return
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:  # the pipe is full: a wake is already pending
            pass

    def _close_in_child(self) -> None:
        # A worker inherits the master's fds: its copy of the alarm would keep the threshold registered.
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._wake_r = self._wake_w = None
        self._usage.close()
        if self._alarm is not None:
            self._alarm.close()
            self._alarm = None

    def stop(self) -> None:
        self.stopping.set()
        self.wake()

    def tick(self) -> None:
        now = time.monotonic()
        if self.own_reader is not None and self.shared is not None:
            rss, _data = self.own_reader.read()
            self.shared.publish_master_memory(rss, self.own_reader.is_peak)
        report = None
        workers = set(self.probe.worker_pids())
        booted = workers - self._workers_seen  # read their USS: what a fresh worker holds
        self._workers_seen = workers
        cheap = self.cheap_used()
        limit_bytes = self.plan.limit_mb * MIB
        cheap_status = (
            None
            if cheap is None
            else memory_status(100.0 * cheap[0] / limit_bytes, self.plan.warn_percent, self.plan.critical_percent)
        )
        self._below_warn = cheap is not None and cheap[1] == "usage"
        # The status is known from the cheap figure when it is the judged one (or usage, under the
        # warning level), or when even that upper bound is OK.
        status = cheap_status if cheap is not None and (cheap[1] is not None or cheap_status == "OK") else None
        whole = (
            status is None
            or status == "CRITICAL"  # the guard needs every worker's USS
            or status != self.policy.reported_status  # an alert line, which gives the whole summary
            or self.policy.usage_due_in(now) == 0
        )
        if not whole:
            if cheap[1] is not None:
                self._last_used, self._last_was_usage = (now, cheap[0]), cheap[1] == "usage"
            if booted:  # the guard's yardstick: what the new workers held as they booted
                fresh, not_booted = self.fresh_memory(booted)
                self.guard_policy.observe(fresh)
                self._workers_seen -= not_booted  # forked, not booted yet: looked at again once they are
        else:
            # Read now, never the probe's cached report: looks come 20 ms apart after the kernel's word,
            # and a report a second old would judge a fast leak by what it was then.
            self.probe.forget()
            report = self.whole_report()
            if status is None or cheap[1] is None:  # the cheap figure could not settle it
                status = memory_status(report.used_percent, self.plan.warn_percent, self.plan.critical_percent)
        log_usage, log_alert = self.policy.step(now, status)
        if report is None:
            self.guard_policy.calm()
            return
        self._last_used, self._last_was_usage = (now, report.used_bytes), False
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

    def fresh_memory(self, new: set[int]) -> tuple[dict[int, int], set[int]]:
        """What these new workers hold, fresh, and those not booted yet.

        Each says what it held as it booted (its USS, or a bound of it from its page faults) when it claims its
        slot. One with a slot that said nothing (no recycler) is read from its smaps (1.9 ms of the master's
        CPU at a whole CPU). One without a slot is still booting (a look between its fork and its claim, often
        at 0.1 CPU): its USS now is not yet what a fresh worker holds, so it is left for a later look.
        """
        if self.shared is None:
            return self.probe.private_bytes_of(new, self.master_pid), set()
        said = self.shared.boot_memory(new)
        not_booted = new.difference(said, self.shared.worker_pids())
        unsaid = new.difference(said, not_booted)
        if unsaid:
            said.update(self.probe.private_bytes_of(unsaid, self.master_pid))
        return said, not_booted

    def whole_report(self) -> MemoryReport:
        report = self.probe.report("master", self.master_pid)
        self.reports += 1
        self._cgroup_judged = cgroup_limit_in_force(report.limit_bytes, report.cgroup_memory)
        return report

    def cheap_used(self) -> tuple[int, str | None] | None:
        """(bytes, what they are) from small reads, never below the judged figure; None where none serve.

        What they are: "usage" (the cgroup's, page cache included), "working set" (the judged figure
        itself), or None (every process's RSS summed: never below the service's PSS, which counts a
        shared page once; no rate is measured on it).
        """
        if self._cgroup_judged:
            usage = self._usage.read()
            warn_bytes, _critical = threshold_bytes(self.plan.limit_mb * MIB, self.plan)
            if usage is not None and usage < warn_bytes:
                return usage, "usage"
            working_set = read_working_set(self.probe.cgroup)
            if working_set is not None:
                return working_set, "working set"
        if self._cgroup_judged is None or not self._statm:
            return None
        total = 0
        for pid in (self.master_pid, *self._workers_seen):
            memory = statm_memory(pid, self.probe.root)
            if memory is not None:  # None: it ended, and holds nothing
                total += memory.rss_bytes
        return total, None

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
        _warn, critical_bytes = threshold_bytes(self.plan.limit_mb * MIB, self.plan)
        rate_bytes_per_s, per_request_bytes = self.shared.surge_growth() if self.shared is not None else (0, 0)
        # Not the smallest worker seen: the first sample may come after a leak began (92 MB seen so).
        fresh_bytes = FRESH_WORKER_ALLOWANCE_MB * MIB

        def outlook_on(used_bytes: int, usage: int | None):
            container_rate = rate_between(self._last_used, (now, used_bytes if usage is None else usage))
            rate = max(rate_bytes_per_s, container_rate or 0.0)
            return rate, forecast(
                used_bytes, rate, per_request_bytes, self.plan.threads, fresh_bytes, boot_s, handover_s, critical_bytes
            )

        usage = self._usage.read() if self._last_was_usage else None
        outlook = None
        watchable = True
        if usage is not None and self._cgroup_judged:
            # The cgroup's usage from the kept fd (2 us) is never below the working set: an overlap that fits
            # on it fits. Only one that does not is judged again on the working set (a whole cgroup read,
            # 0.6 ms of the master's CPU a recycle at a whole CPU).
            rate, outlook = outlook_on(usage, usage)
        if outlook is None or not outlook.fits:
            used_bytes, watchable = self.used_now()
            rate, outlook = outlook_on(used_bytes, usage)
        if outlook.fits and watchable:
            self.overlap = OverlapWatch(
                old_pid, critical_bytes, fresh_bytes, rate, per_request_bytes, self.plan.threads
            )
            self.wake()
        return outlook.fits, outlook.text()

    def watch_overlap(self, now: float) -> None:
        """Every WATCH_INTERVAL_S while a replacement overlaps the old worker: act before the critical level."""
        watch = self.overlap
        current = self.surge.current if self.surge is not None else None
        if current is None or current.old_pid != watch.old_pid:
            self.end_overlap(watch)
            return
        booting = current.replacement_pid is None
        # The cgroup's usage from a kept fd (2 us) where it settles the look; the working set (memory.stat,
        # about 100 us, 0.5 ms at 0.1 CPU, and a look every 20 ms) only near the level.
        usage_bytes = used_bytes = self._usage.read()
        if usage_bytes is None or watch.needs_working_set(usage_bytes, booting):
            used_bytes = read_working_set(self.probe.cgroup)
        if used_bytes is None:
            return
        action = watch.step(now, used_bytes, booting=booting, retiring=current.retiring, usage_bytes=usage_bytes)
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
