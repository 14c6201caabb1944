"""Replace, then retire: a worker the service recycles leaves only once its replacement serves.

gunicorn replaces a worker after it has gone: with one worker (the default on
512 MB) nothing answers while the new one boots, 35-44 ms at a whole CPU and
about 250 ms at 0.1 CPU (BENCHMARKS.md, part 5). gunicorn has no way to boot
the replacement first, and TTIN then TTOU would retire the oldest worker, not
the one that must go. So, in the master:

1. a worker that must leave (memory past its threshold, or max_requests) asks
   for it in the shared state, saying how fast it grew, and wakes the master's
   loop with a SIGCHLD (the arbiter's loop wakes and reaps on it, and finds
   nothing to reap); it keeps serving meanwhile;
2. the master, when the whole overlap fits under the critical level (the
   forecast of `overlap.py`: the old worker's growth while the replacement
   boots, the replacement's while the old one drains and exits, from the
   boots and handovers measured here), raises `num_workers` by one and
   spawns a worker; otherwise it sends the old worker SIGTERM at once
   (gunicorn's graceful stop for one worker: today's path). The memory
   monitor then watches the overlap and may retire the old worker early
   (`retire_early`) or hold the other workers' new requests;
3. the new worker, once its app is loaded and it claimed its shared slot
   (`post_worker_init`), wakes the master again; the master sends the old
   worker SIGTERM: it stops accepting and finishes what it has, while the new
   one already takes connections from the same listening socket (nothing in
   the listen backlog is lost: the socket is shared, not per worker);
4. when the old worker is reaped (`child_exit`, which the arbiter runs before
   its `manage_workers`), `num_workers` goes back down by one.

The budgets, the planned worker count and the guard never count the extra
worker: `nworkers_changed` leaves the plan alone for the surge's own changes.
A TTIN or TTOU while a surge is under way moves the plan by one, as it would
without the surge; a SIGHUP abandons it (the reload replaces every worker
anyway). Everything here runs on the arbiter's main loop (its `manage_workers`
is wrapped), never in a signal handler, except `retire_early`, which the
memory monitor's thread calls: a lock keeps it and the loop's step apart.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fitflix.serving.overlap import BOOT_CONTENTION, DEFAULT_HANDOVER_S, MIN_BOOT_S, TIMINGS_KEPT, expected_s
from fitflix.serving.sizing import idle_wait_s
from fitflix.serving.state import SharedState

# The signal a worker wakes the master's loop with: the arbiter queues it, reaps (nothing) and goes
# on to manage_workers, where the surge steps. Harmless to gunicorn whatever its state.
WAKE_SIGNAL = signal.SIGCHLD

# A replacement that has not booted in this long is given up on: the old worker leaves anyway
# (the new one, if it ever boots, simply serves).
BOOT_TIMEOUT_S = 30.0


@dataclass
class Replacement:
    old_pid: int
    started: float
    newest_age_before: int  # the arbiter's worker_age before the spawn: a newer worker is the replacement
    retiring: bool = False
    retired_at: float | None = None
    replacement_pid: int | None = None  # once it serves
    early: bool = False  # the memory monitor retired the old worker before its replacement served


class Surge:
    """The master's side: one replacement at a time, stepped from the arbiter's loop."""

    def __init__(
        self,
        server,
        shared: SharedState,
        room: Callable[[int, float, float], tuple[bool, str]],
        planned_workers: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        send: Callable[[int, int], None] | None = None,
    ) -> None:
        """`room(pid, boot_s, handover_s)` says whether replacing `pid` fits now, and why (for the log).

        `send(pid, signal)`.
        """
        self.send = send or _signal
        self.server = server
        self.shared = shared
        self.room = room
        self.planned_workers = planned_workers
        self.clock = clock
        self.current: Replacement | None = None
        self.own_change = False  # set while the surge itself moves num_workers
        self.reloading = False
        self.replaced = 0  # replacements that booted before their old worker left
        self.boots_s: list[tuple[float, float]] = []  # (when, spawn to serving) of each replacement
        self.handovers_s: list[tuple[float, float]] = []  # (when, SIGTERM to reaped less its report) of each old one
        # The memory monitor's thread retires early (`retire_early`) while the arbiter's loop steps.
        self._lock = threading.Lock()

    def install(self) -> None:
        """Master, in when_ready: step before every manage_workers, abandon on SIGHUP, and let the
        arbiter's loop sleep longer while nothing is under way."""
        manage_workers, handle_hup = self.server.manage_workers, self.server.handle_hup
        wait_for_signals = self.server.wait_for_signals

        def waited(timeout: float = 1.0) -> list:
            return wait_for_signals(timeout=timeout if self.current is not None else self.idle_wait_s())

        def managed() -> None:
            self.step()
            manage_workers()

        def hup() -> None:
            self.abandon()
            self.reloading = True  # the reload's own manage_workers must not start a replacement
            try:
                handle_hup()
            finally:
                self.reloading = False

        self.server.manage_workers = managed
        self.server.handle_hup = hup
        self.server.wait_for_signals = waited

    def idle_wait_s(self) -> float:
        """How long the arbiter's loop waits for a signal while no replacement is under way."""
        return idle_wait_s(self.server.timeout)

    def _set_num_workers(self, value: int) -> None:
        self.own_change = True
        try:
            self.server.num_workers = value
        finally:
            self.own_change = False

    def step(self) -> None:
        if self.reloading:
            return
        with self._lock:
            self._step()

    def _step(self) -> None:
        current = self.current
        if current is None:
            self._take_request()
            return
        if current.replacement_pid is not None and current.retiring:
            return  # child_exit ends it
        if current.old_pid not in self.server.WORKERS:  # it left on its own (hard cap, crash, TTOU)
            self._end(current.old_pid)
            return
        booted = set(self.shared.worker_pids())
        replacement = next(
            (
                pid
                for pid, worker in self.server.WORKERS.items()
                if worker.age > current.newest_age_before and pid in booted
            ),
            None,
        )
        if replacement is not None:
            current.replacement_pid = replacement
            self._measured(self.boots_s, self.clock() - current.started)
            if current.retiring:  # retired early by the memory monitor: not replaced first
                self.server.log.info("Worker %s serves; worker %s was retired before it", replacement, current.old_pid)
                return
            self.replaced += 1
            self.server.log.info("Worker %s serves; retiring worker %s", replacement, current.old_pid)
            self._retire(current)
        elif not current.retiring and self.clock() - current.started > BOOT_TIMEOUT_S:
            self.server.log.warning(
                "No replacement booted in %.0f s; retiring worker %s anyway", BOOT_TIMEOUT_S, current.old_pid
            )
            self._retire(current)

    def retire_early(self, old_pid: int) -> bool:
        """The memory monitor's thread: retire `old_pid` now, before its replacement serves; False when too late."""
        with self._lock:
            current = self.current
            if current is None or current.old_pid != old_pid or current.retiring:
                return False
            current.early = True
            self._retire(current)
            return True

    def expected_boot_s(self) -> float:
        """What the next replacement's boot will take: the slowest of the last measured, or the last boot
        a worker published (times BOOT_CONTENTION) before any replacement was measured."""
        published = self.shared.last_boot_s()
        default_s = max(MIN_BOOT_S, (published or MIN_BOOT_S) * BOOT_CONTENTION)
        return expected_s(self.boots_s, self.clock(), default_s)

    def expected_handover_s(self) -> float:
        """What the next old worker's drain and exit will take: the slowest of the last measured.

        Only replacements measure it (a worker retired first drains with nothing beside it, another
        matter); a measurement expires after TIMINGS_TTL_S, so one slow handover (a slow request in
        the old worker) keeps replace-first off for a while, not for good.
        """
        return expected_s(self.handovers_s, self.clock(), DEFAULT_HANDOVER_S)

    def _measured(self, timings: list[tuple[float, float]], seconds: float) -> None:
        timings.append((self.clock(), max(seconds, 0.0)))
        del timings[:-TIMINGS_KEPT]

    def _take_request(self) -> None:
        pid = self.shared.surge_request()
        if not pid:
            return
        if pid not in self.server.WORKERS:
            self.shared.clear_surge_request(pid)
            return
        # Under way before the room is asked: a forecast that fits starts the monitor's watch of the overlap,
        # on the monitor's own thread, which ends a watch that finds no replacement under way. Set after,
        # the watch could look first and end at once, and the overlap went unwatched: an OOM kill at 100%
        # in the leak sweep's fast small-object leak, each time the monitor's thread won that race.
        self.current = Replacement(pid, self.clock(), self.server.worker_age)
        try:
            fits, why = self.room(pid, self.expected_boot_s(), self.expected_handover_s())
        except BaseException:
            self.current = None
            raise
        if not fits:
            self.current = None
            self.shared.clear_surge_request(pid)
            self.server.log.info("Retiring worker %s without a replacement first: %s", pid, why)
            self.send(pid, signal.SIGTERM)
            return
        self.current.started = self.clock()  # the boot is timed from the spawn, not from the forecast
        self.shared.set_surge_old(pid)
        self.server.log.info("Replacing worker %s: its replacement boots first (%s)", pid, why)
        self._set_num_workers(self.server.num_workers + 1)
        # Spawned here, not by manage_workers: its spawn_workers sleeps up to 100 ms after each fork.
        self.server.spawn_worker()

    def _retire(self, current: Replacement) -> None:
        current.retiring = True
        current.retired_at = self.clock()
        self.send(current.old_pid, signal.SIGTERM)  # gunicorn's graceful stop: it finishes what it has

    def on_child_exit(self, pid: int) -> None:
        """Master, from child_exit (before the arbiter's manage_workers): the old worker is gone."""
        with self._lock:
            current = self.current
            if current is not None and current.old_pid == pid:
                if current.retired_at is not None and not current.early:
                    # Without its report of what grew: the report's own budget is the room the handover leaves.
                    report_s = self.shared.report_time_s(pid)
                    self._measured(self.handovers_s, self.clock() - current.retired_at - report_s)
                self._end(pid)

    def _end(self, pid: int) -> None:
        self.current = None
        self.shared.set_surge_old(0)
        self.shared.clear_surge_request(pid)
        if self.server.num_workers > self.planned_workers():
            self._set_num_workers(self.server.num_workers - 1)

    def abandon(self) -> None:
        """SIGHUP: the reload replaces every worker, the old one with them; the count is the new plan's."""
        with self._lock:
            self._abandon()

    def _abandon(self) -> None:
        if self.current is not None:
            self.server.log.info("SIGHUP: the replacement of worker %s is left to the reload", self.current.old_pid)
            old = self.current.old_pid
            self.current = None
            self.shared.set_surge_old(0)
            self.shared.clear_surge_request(old)

    def planned_after_change(self, new_value: int) -> int | None:
        """nworkers_changed: the planned count for an operator's change, None for the surge's own.

        While a replacement is under way `num_workers` holds one more than the
        plan: a TTIN or TTOU moves the plan to one less than what it set.
        """
        if self.own_change:
            return None
        if self.current is not None:
            return max(1, new_value - 1)
        return new_value


def wake_master(master_pid: int) -> None:
    """Worker: get the master's loop to look at the shared state now, not at its next 1 s tick."""
    _signal(master_pid, WAKE_SIGNAL)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
