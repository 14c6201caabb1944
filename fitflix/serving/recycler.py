"""A worker's recycler: it measures the worker after each request and replaces it when it must.

The decisions are in `recycle.py`; this module measures, logs and signals. The master's side,
the memory monitor, is `monitor.py`.
"""

from __future__ import annotations

import _thread
import dataclasses
import gc
import json
import logging
import os
import random
import resource
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from fitflix.memory.container import MIB, format_mb
from fitflix.memory.growth import ARM_FRACTION, DEFAULT_REPORT_TIME_LIMIT_S, FORK_CENSUS, GrowthWatch
from fitflix.memory.heap import malloc_trim
from fitflix.memory.process import faulted_bytes, huge_pages_always, pid_alive
from fitflix.memory.reader import read_process_memory, self_memory_reader
from fitflix.serving import backstop
from fitflix.serving.logs import PROBE_PATHS
from fitflix.serving.overlap import rate_between
from fitflix.serving.recycle import (
    MEMORY_RULES,
    RECYCLE,
    URGENT,
    MemoryRule,
    WorkerLimits,
    backstop_data_limit,
    draw_threshold,
    exact_check_levels,
    headroom_bytes,
    hung_requests,
    memory_verdict,
    requests_within,
    should_trim,
)
from fitflix.serving.sizing import Plan, resize_plan
from fitflix.serving.state import SharedState
from fitflix.serving.surge import BOOT_TIMEOUT_S, wake_master

# The signal the master sends a worker to run gc.collect() and malloc_trim(0).
# gunicorn's workers leave SIGURG alone, and its default action is to ignore it.
CLEANUP_SIGNAL = signal.SIGURG

# smaps_rollup costs about 0.4 ms: a worker reads its own at most this often.
USS_READ_INTERVAL_S = 1.0
# Read once in the master (it imports this module before the fork): whether a page fault can bring a huge page,
# which would make the faults since the fork undercount a worker's boot USS (`WorkerRecycler._boot_uss`).
HUGE_PAGES_ALWAYS = huge_pages_always()

# A report of what grew copies tracemalloc's table into Python objects, and its peak is about 3.6 x
# what tracemalloc holds (400,000 live blocks: tracemalloc 20.2 MB, the report +72.9 MB and 1.8 s;
# BENCHMARKS.md, part 17). So the table is copied only while it holds at most an eighth of the room
# left below the worker's hard cap (the report's peak then under half of it) and at most 8 MB
# (about 160,000 blocks, 0.7 s); else the sites are skipped, with a note, and the other figures stay.
REPORT_ROOM_SHARE = 1 / 8
REPORT_MAX_TRACE_BYTES = 8 * MIB

# A worker that asked to be replaced first and heard nothing in this long leaves on its own
# (the master gives a replacement BOOT_TIMEOUT_S to boot, then retires the old worker anyway).
SURGE_WAIT_S = BOOT_TIMEOUT_S + 10.0

# The timeout watch looks this often while a request is in flight or a replacement is awaited
# (capped at a quarter of the timeout); idle, it sleeps half the timeout.
WATCH_BUSY_S = 1.0

# A worker's growth rate, as it tells the master when it asks to be replaced: the faster of its whole
# life's and the last window's (a leak that began late, or sped up, shows there first).
RATE_WINDOW_S = 1.0

# The report of what grew runs after the worker's last answer, while its memory is still held.
# - Replaced first, the replacement grows meanwhile: the report takes at most this share of the time
#   the room below the critical level lasts at the rate the master sees, and none below the least.
# - Retired first in a one-worker service, nothing serves until it exits: this long at most.
# The snapshot's cost grows with tracemalloc's tables: about 20 MB of them a second (8 MiB, 0.39 s).
REPORT_TIME_SHARE = 0.5
MIN_REPORT_S = 0.05
RETIRED_FIRST_REPORT_S = 0.25
SNAPSHOT_TRACE_BYTES_PER_S = 20 * MIB

# While the master's overlap watch holds the workers, a new request waits in pre_request, looking
# this often, and at most half the request timeout (then it is served, and the watch says so).
HOLD_POLL_S = 0.005


def clean_up(_signum=None, _frame=None) -> None:
    """Collect garbage and give free heap pages back to the kernel."""
    gc.collect()
    malloc_trim()


class WorkerRecycler:
    """One per worker: watches its memory after each request and leaves when it must."""

    def __init__(
        self,
        worker,
        plan: Plan,
        shared: SharedState | None,
        root: Path = Path("/"),
        unstarted_threads: int = 0,
        slot: int | None = None,
        fallbacks=None,
        app_root: str | None = None,
        rules: Sequence[MemoryRule] = MEMORY_RULES,
    ) -> None:
        """`unstarted_threads`: request threads not started yet, whose stacks the data limit must leave room for.

        `slot`: this worker's slot in the shared state. Where the master cannot
        read a worker's memory (no /proc), each read is published there.
        `rules`: what makes it leave for memory (`recycle.MEMORY_RULES`).
        """
        self.worker = worker
        self.rules = tuple(rules)
        self.plan = plan
        self.shared = shared
        self.root = root
        self.fallbacks = fallbacks
        self.pid = os.getpid()
        self.started = time.monotonic()
        # /proc/self/statm on Linux; psutil or getrusage's peak elsewhere (fitflix.memory.reader).
        self.statm = self_memory_reader(root, fallbacks)
        self.publish_to(slot)
        rss, _data = self.read()
        uss = self._boot_uss(rss)
        self.last_uss = (self.started, uss, rss)
        self.boot_uss_bytes = uss
        stack_bytes = resource.getrlimit(resource.RLIMIT_STACK)[0]
        if stack_bytes == resource.RLIM_INFINITY:
            stack_bytes = 8 * MIB
        self.stack_bytes = stack_bytes  # a new thread's stack, as glibc sizes it (the stack rlimit)
        self.stack_allowance_bytes = unstarted_threads * stack_bytes
        self.threshold_seed = random.random()  # this worker's draw, kept when the budgets change
        self.reason: str | None = None  # why this worker stopped accepting
        self.figures: tuple[int, int] | None = None  # (rss, uss) when the decision was made
        # Replace, then retire (fitflix.serving.surge): the reason this worker asked to be replaced
        # for, and when; it serves until the master sends SIGTERM once the replacement is up.
        self.replace_first = plan.replace_first and shared is not None
        self.waiting: str | None = None
        self.asked_at: float | None = None
        # gunicorn's own max_requests (drawn with its jitter) becomes the recycler's: gunicorn would
        # stop accepting at once, the recycler asks for a replacement first.
        self.max_requests = worker.max_requests
        if self.replace_first:
            worker.max_requests = sys.maxsize
        self._unread = 0  # requests that may still pass before the next statm read
        self._rss_at_last_read = rss
        self._rate_anchor = (self.started, rss)  # (monotonic, RSS) where the current rate window began
        self._window_rate = 0.0  # bytes a second over the last whole window
        self.held_s = 0.0  # time this worker's requests waited for the overlap watch
        self._in_flight: dict[int, float] = {}  # thread ident -> when its request started
        self._exit_lock = threading.Lock()
        self._ask_lock = threading.Lock()
        self._exited = False
        self._stopping = threading.Event()
        self._look = threading.Event()  # wakes the timeout watch: a replacement is awaited, or the worker ends
        # Started before the data limit is measured, so its stack is already counted in it. _thread's own
        # start: threading.Thread's waits for the thread to run and costs 0.64 ms of CPU in a fork's child,
        # against 0.14 (a replacement's boot at 0.1 CPU shares the quota with the worker it replaces).
        self._watch_running = _thread.allocate_lock()  # held while the watch runs
        self._watch_running.acquire()
        _thread.start_new_thread(self._run_watch, ())
        self.apply_plan(plan)
        # What grew (fitflix.memory.growth): counted from the heap at fork (no census walk at boot: BENCHMARKS
        # part 15's worker init), tracing past ARM_FRACTION of the threshold.
        self.growth = GrowthWatch(uss, app_root or os.getcwd(), boot_census=FORK_CENSUS)

    def apply_plan(self, plan: Plan) -> None:
        """Set this worker's threshold, hard cap and data-segment limit for `plan`.

        At boot, and again when TTIN/TTOU change the worker count: the
        limit is measured from what the worker holds now, so a lower hard cap
        lowers the room left and a higher one raises it.
        """
        rss, data = self.read()
        uss = self._uss_now(time.monotonic(), rss)  # at boot, the USS just read in __init__
        hard_cap = plan.worker_hard_cap_mb * MIB
        data_limit = None  # no data-segment figure (no /proc, or psutil without one): no backstop
        if data is not None:
            data_limit = backstop_data_limit(data, uss, hard_cap, self.stack_allowance_bytes)
            backstop.set_data_limit(data_limit)
        self.plan = plan
        self.limits = WorkerLimits(
            threshold_bytes=draw_threshold(plan.worker_budget_mb, self.threshold_seed),
            hard_cap_bytes=hard_cap,
            data_limit_bytes=data_limit,
            boot_uss_bytes=self.boot_uss_bytes,
        )
        self._unread = 0

    @property
    def limits(self) -> WorkerLimits:
        return self._limits

    @limits.setter
    def limits(self, limits: WorkerLimits) -> None:
        """New limits bring the levels the rules watch with them, worked out here once, not per request."""
        self._limits = limits
        self._levels = exact_check_levels(limits, self.rules)

    def follow_planned_workers(self) -> None:
        """Adopt the budgets of the worker count the master now plans for (it follows TTIN/TTOU)."""
        planned = self.shared.planned_workers() if self.shared is not None else 0
        if planned and planned != self.plan.workers:
            self.apply_plan(resize_plan(self.plan, planned))
            self.worker.log.info(
                "Worker %s: budgets for %s workers: budget %sMB, hard cap %sMB",
                self.pid,
                planned,
                self.plan.worker_budget_mb,
                self.plan.worker_hard_cap_mb,
            )

    def publish_to(self, slot: int | None) -> None:
        """Publish each read in `slot` of the shared state, where the master cannot read a worker's memory."""
        self.publish_slot = slot if self.shared is not None and self.statm.source != "statm" else None

    def read(self) -> tuple[int, int | None]:
        """(RSS, data-segment size or None) from the per-request reader; published where the master needs it."""
        rss, data = self.statm.read()
        if self.publish_slot is not None:
            self.shared.publish_memory(self.publish_slot, rss, self.statm.is_peak)
        return rss, data

    def _boot_uss(self, rss: int) -> int:
        """This worker's USS at boot, bounded from above by its page faults since the fork, not read from smaps.

        The smaps read walks every page the worker shares with its master: about 1 ms of CPU at a whole
        CPU, out of the boot of a replacement that at 0.1 CPU shares its quota with the worker it replaces
        (BENCHMARKS part 15). The bound is a little high (its data limit a little lower, its growth a
        little less), never low, except where one fault can bring a huge page: where THP is 'always', or
        where the app was imported in the worker (no preload_app), whose imports may ask for huge pages
        of their own (numpy does for large arrays). There smaps is read.
        """
        if self.statm.is_peak:
            return rss
        preloaded = getattr(getattr(self.worker, "cfg", None), "preload_app", True)
        if HUGE_PAGES_ALWAYS or not preloaded:
            return self._read_uss() or rss
        return min(rss, faulted_bytes())

    def _read_uss(self) -> int | None:
        if self.statm.is_peak:
            return None  # nothing better than the peak the reader gives
        memory = read_process_memory("self", self.root, self.fallbacks)
        return memory.uss_bytes if memory else None

    def _uss_now(self, now: float, rss: int) -> int:
        """USS from smaps at most once a second; between reads, the last USS plus RSS growth since."""
        read_at, uss, rss_then = self.last_uss
        if now - read_at < USS_READ_INTERVAL_S:
            return uss + max(rss - rss_then, 0)
        uss = self._read_uss() or rss
        self.last_uss = (now, uss, rss)
        return uss

    def request_started(self, path: str = "") -> None:
        """pre_request, in the thread that will handle the request: it waits while the overlap watch holds."""
        shared = self.shared
        if shared is not None and shared.hold_for() not in (0, self.pid) and path not in PROBE_PATHS:
            self.hold()
        self._in_flight[threading.get_ident()] = time.monotonic()

    def hold(self) -> None:
        """Wait, before the app sees this request, until the worker the master holds for is gone (bounded).

        The request is not refused and its connection stays open; the probes never wait (the service is
        alive and ready, only busy for a moment). The wait is at most half the request timeout.
        """
        started = time.monotonic()
        deadline = started + self.plan.timeout_s / 2
        while True:
            holder = self.shared.hold_for()
            if holder in (0, self.pid) or not pid_alive(holder):
                break
            if time.monotonic() >= deadline:
                self.worker.log.warning(
                    "Worker %s: held a request %.1fs for worker %s's exit; serving it now",
                    self.pid,
                    time.monotonic() - started,
                    holder,
                )
                break
            if self._stopping.wait(HOLD_POLL_S):  # this worker is ending: nothing to wait for
                break
        self.held_s += time.monotonic() - started

    def growth_rate(self, now: float, rss: int, uss: int) -> tuple[float, float]:
        """(bytes a second, bytes a request) this worker grew by: what the master forecasts a replacement by."""
        grown = max(uss - self.boot_uss_bytes, 0)
        lifetime_rate = grown / max(now - self.started, 1e-3)
        window_rate = rate_between(self._rate_anchor, (now, rss)) or 0.0
        return max(lifetime_rate, self._window_rate, window_rate), grown / max(self.worker.nr, 1)

    def _note_growth(self, now: float, rss: int) -> None:
        anchor_s, anchor_rss = self._rate_anchor
        if now - anchor_s >= RATE_WINDOW_S:
            self._window_rate = max(rss - anchor_rss, 0) / (now - anchor_s)
            self._rate_anchor = (now, rss)

    def after_request(self) -> None:
        """post_request: the response is sent; decide whether this worker should leave."""
        self._in_flight.pop(threading.get_ident(), None)
        if self.reason is not None:
            return
        self.follow_planned_workers()
        if backstop.tripped():
            rss, _data = self.read()
            self.leave("backstop", rss, self._read_uss() or rss)
            return
        if self.waiting is not None and self.asked_at is None:
            self.ask_for_replacement(self.waiting)  # another worker's request held the slot: again
        elif self.replace_first and self.waiting is None and self.worker.nr >= self.max_requests:
            rss, _data = self.read()
            self.figures = (rss, self._uss_now(time.monotonic(), rss))
            self.ask_for_replacement("max_requests")
        if self._unread > 0:
            self._unread -= 1  # racy across threads by design: off by one either way is harmless
            return
        rss, data = self.read()
        self._note_growth(time.monotonic(), rss)
        data = data or 0  # without a data-segment figure there is no data limit to compare it with
        if should_trim(rss, self._rss_at_last_read, self.plan.heap_trim_mb * MIB):
            malloc_trim()  # HEAP_TRIM_MB (memory-optimized): hand back what the heavy request freed
            rss, _data = self.read()
        self._rss_at_last_read = rss
        if self.growth.arming is None and rss >= self._limits.threshold_bytes * ARM_FRACTION:  # RSS >= USS
            if self.growth.maybe_arm(self._uss_now(time.monotonic(), rss), self._limits.threshold_bytes):
                self.worker.log.info(
                    "Worker %s: past %.0f%% of its threshold; tracing allocations to say what grew",
                    self.pid,
                    ARM_FRACTION * 100,
                )
        room = headroom_bytes(rss, data, self._levels)
        if room > 0:  # no rule can fire yet: no exact check, and no read while the room lasts
            self._unread = requests_within(room)
            return
        now = time.monotonic()
        uss = self._uss_now(now, rss)
        verdict = memory_verdict(uss, data, now - self.started, self._limits, self.rules)
        if verdict == URGENT:  # past the hard cap (or near the data limit): stop accepting now
            self.leave("memory", rss, uss)
        elif verdict == RECYCLE and self.waiting != "memory":
            if self.shared is not None and not self.shared.claim_memory_recycle(self.pid):
                self.worker.log.debug("Worker %s over its memory threshold; another worker is leaving first", self.pid)
            elif self.replace_first:
                self.figures = (rss, uss)
                self.ask_for_replacement("memory")
            else:
                self.leave("memory", rss, uss)

    def ask_for_replacement(self, reason: str) -> None:
        """Keep serving; the master boots a replacement first and then sends SIGTERM (fitflix.serving.surge)."""
        with self._ask_lock:  # two request threads may decide at once: ask once
            if self.asked_at is not None:
                return
            self.waiting = reason
            self._look.set()  # the watch now looks every second: asks again, or gives up waiting
            now = time.monotonic()
            rss = self.figures[0] if self.figures is not None else self.read()[0]
            rate, per_request = self.growth_rate(now, rss, self._uss_now(now, rss))
            if self.shared.request_surge(self.pid, rate, per_request):
                self.asked_at = time.monotonic()
                wake_master(self.worker.ppid)
                self.worker.log.debug("Worker %s (%s): asked for its replacement", self.pid, reason)

    def _waited_too_long(self, now: float) -> bool:
        return self.waiting is not None and self.asked_at is not None and now - self.asked_at > SURGE_WAIT_S

    def leave(self, reason: str, rss: int, uss: int) -> None:
        """Recycle gracefully: stop accepting, let in-flight requests finish, exit."""
        self.reason = reason
        self.figures = (rss, uss)
        self.worker.alive = False
        method_queue = getattr(self.worker, "method_queue", None)
        if method_queue is not None:
            method_queue.defer(lambda: None)  # wake gthread's poller now, not at its 1 s timeout

    def _run_watch(self) -> None:
        try:
            self._watch_timeouts()
        finally:
            self._watch_running.release()

    def join_watch(self, timeout_s: float) -> bool:
        """Wait for the timeout watch to end (after `stop_watch`); False if it did not within `timeout_s`."""
        if self._watch_running.acquire(timeout=timeout_s):
            self._watch_running.release()
            return True
        return False

    def _watch_timeouts(self) -> None:
        """A request thread stuck past `timeout` cannot be stopped, so the worker is replaced.

        The same watch makes again an ask for a replacement that was refused (another worker's was
        under way) and gives up waiting for one after SURGE_WAIT_S.

        gunicorn's own timeout never fires for gthread (the main loop keeps
        the heartbeat going while a request thread hangs). Here the worker
        stops accepting, lets its other requests finish, and exits without
        waiting for the stuck one.
        """
        timeout_s = self.plan.timeout_s
        while True:
            if self._look.wait(self._next_look_s(timeout_s)):
                self._look.clear()
            if self._stopping.is_set():
                return
            if self.reason is None and self.waiting is not None and self.asked_at is None:
                # Its ask was refused while another worker's replacement was under way, and a
                # request's end may not come to ask again: an idle worker past its count asks here.
                self.ask_for_replacement(self.waiting)
            if self.reason is None and self._waited_too_long(time.monotonic()):
                self.worker.log.warning(
                    "Worker %s: no replacement came in %.0f s; leaving (%s)", self.pid, SURGE_WAIT_S, self.waiting
                )
                rss, _data = self.read()
                self.leave(self.waiting, rss, self._read_uss() or rss)
                continue
            hung = hung_requests(dict(self._in_flight), time.monotonic(), timeout_s)
            if not hung or self.reason not in (None, "timeout"):
                continue
            self.worker.log.warning(
                "Worker %s: %s request(s) in flight longer than the %ss timeout; replacing the worker",
                self.pid,
                len(hung),
                timeout_s,
            )
            rss, _data = self.read()
            self.leave("timeout", rss, self._read_uss() or rss)
            deadline = time.monotonic() + self.plan.graceful_timeout_s
            # FitFlix's worker may still accept in the loop's turn under way: count its connections only once
            # it has closed its listeners, or one accepted after the count is cut unanswered by the exit.
            closed = getattr(self.worker, "listeners_closed", None)
            if closed is not None:
                closed.wait(max(deadline - time.monotonic(), 0))
            self._serve_past_stuck_threads(len(hung))
            # gthread counts every open connection, including one accepted a
            # moment ago whose request has not started: wait for all but the stuck.
            while self._open_connections() > len(hung) and time.monotonic() < deadline:
                self._stopping.wait(0.02)
            self.finish()
            return

    def _serve_past_stuck_threads(self, stuck: int) -> None:
        """When every request thread is stuck (THREADS=1 and one hung request), what was accepted before the
        listeners closed would wait for a thread that never comes, until the exit cut it: one more thread
        serves it, its stack given room in the data limit as the boot's threads have. FitFlix's worker only
        (gthread's pool cannot grow)."""
        threads = getattr(self.worker, "request_threads", None)
        if threads is None or stuck < threads:
            return
        limit = self.limits.data_limit_bytes
        if limit is not None:
            backstop.set_data_limit(limit + self.stack_bytes)
            self.limits = dataclasses.replace(self.limits, data_limit_bytes=limit + self.stack_bytes)
        try:
            self.worker.start_request_thread()
        except RuntimeError as error:  # the system's thread limit
            self.worker.log.warning("Worker %s: no thread for what waits behind the stuck: %s", self.pid, error)

    def stop_watch(self) -> None:
        """End the timeout watch (and any hold): this worker is ending."""
        self._stopping.set()
        self._look.set()

    def _next_look_s(self, timeout_s: float) -> float:
        """Every second while a request is in flight or a replacement is awaited; idle, every half timeout.

        An idle worker's watch sleeps (BENCHMARKS part 21): a request that starts while it does is seen
        within half the timeout, so it is still found hung within a second of its deadline.
        """
        if self._in_flight or self.waiting is not None or self.reason is not None:
            return min(WATCH_BUSY_S, timeout_s / 4)
        return max(WATCH_BUSY_S, timeout_s / 2)

    def _open_connections(self) -> int:
        open_connections = getattr(self.worker, "nr_conns", None)
        return len(self._in_flight) if open_connections is None else open_connections

    def finish(self) -> None:
        """End a recycled worker at once (from worker_exit, or the timeout watch); no-op otherwise."""
        if self.on_exit() is not None:
            # A recycled worker has drained its requests and has nothing left
            # to save: skipping interpreter teardown (freeing a big heap object
            # by object) gets the replacement serving ~100 ms sooner.
            logging.shutdown()
            os._exit(0)

    def exit_reason(self) -> str | None:
        if self.reason is not None:
            return self.reason
        if self.waiting is not None:  # the master retired it once its replacement served
            return self.waiting
        if self.max_requests and self.worker.nr >= self.max_requests:
            return "max_requests"
        if self.shared is not None and self.shared.guard_target() == self.pid:
            return "guard"
        return None

    def on_exit(self) -> str | None:
        """Log the one recycle line and count it (once); None when the worker is not being recycled."""
        with self._exit_lock:
            if self._exited:
                return None
            self._exited = True
        self.stop_watch()
        reason = self.exit_reason()
        if reason is None:
            return None
        if self.figures is None:
            rss, _data = self.read()
            self.figures = (rss, self._read_uss() or rss)
        rss, uss = self.figures
        if self.shared is not None:
            self.shared.count_recycle(reason)
        self.worker.log.info(
            "Recycling worker pid=%s reason=%s rss=%sMB uss=%sMB budget=%sMB threshold=%sMB "
            "hard_cap=%sMB requests=%s age=%.1fs%s",
            self.pid,
            reason,
            format_mb(rss),
            format_mb(uss),
            self.plan.worker_budget_mb,
            format_mb(self.limits.threshold_bytes),
            self.plan.worker_hard_cap_mb,
            self.worker.nr,
            time.monotonic() - self.started,
            "" if self.statm.source == "statm" else f" figures={self.statm.source.replace(' ', '-')}",
        )
        if reason == "memory":
            self.report_growth(uss)
        return reason

    def report_budget(self, uss: int) -> tuple[float, int] | str:
        """(seconds, bytes) the report of what grew may take now, or why it is skipped.

        Its memory and time come out of the overlap when this worker was replaced first: the
        master's watch publishes the room left below the critical level and the rate it is used at.
        """
        shared = self.shared
        if shared is not None and shared.surge_old() == self.pid:
            if shared.hold_for() == self.pid:
                return "the other workers hold their requests until this worker is gone"
            room, rate = shared.overlap()
            if room <= 0 and rate <= 0:  # no watch ran (a limit of the service's own): as if retired first
                return RETIRED_FIRST_REPORT_S, max(self.limits.hard_cap_bytes - uss, 0)
            seconds = DEFAULT_REPORT_TIME_LIMIT_S
            if rate > 0:
                seconds = min(seconds, REPORT_TIME_SHARE * max(room, 0) / rate)
            if seconds < MIN_REPORT_S or room <= 0:
                return (
                    f"its replacement serves and {format_mb(max(room, 0))}MB are left below the critical level "
                    f"at {format_mb(rate)}MB/s"
                )
            return seconds, room
        alone = self.plan.workers == 1
        seconds = RETIRED_FIRST_REPORT_S if alone else DEFAULT_REPORT_TIME_LIMIT_S
        return seconds, max(self.limits.hard_cap_bytes - uss, 0)

    def report_growth(self, uss: int) -> None:
        """After the last request of a worker recycled for memory: what grew, in the log and the shared state."""
        started = time.monotonic()
        try:
            self._report_growth(uss)
        finally:
            if self.shared is not None:
                self.shared.set_report_time(self.pid, time.monotonic() - started)

    def _report_growth(self, uss: int) -> None:
        budget = self.report_budget(uss)
        if isinstance(budget, str):
            self.worker.log.info("Worker %s: no report of what grew: %s", self.pid, budget)
            return
        seconds, room = budget
        share = int(room * REPORT_ROOM_SHARE)
        try:
            report = self.growth.report(
                self._read_uss() or uss,
                "memory",
                time_limit_s=seconds,
                max_tracemalloc_bytes=min(share, REPORT_MAX_TRACE_BYTES, int(seconds * SNAPSHOT_TRACE_BYTES_PER_S)),
                max_census_list_bytes=share,
            )
        except Exception:  # a report is a courtesy: the worker still leaves
            self.worker.log.exception("Worker %s: the report of what grew failed", self.pid)
            return
        document = report.as_dict()
        self.worker.log.info("%s", report.line(), extra={"growth": document})
        if self.shared is not None:
            self.shared.add_growth_report(json.dumps(document, separators=(",", ":")).encode())
