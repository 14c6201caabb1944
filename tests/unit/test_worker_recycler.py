"""The worker recycler (fitflix.serving.recycler.WorkerRecycler) on fake readers and a fake clock.

`memory` stands for the worker's figures: statm's cheap RSS and data segment,
read after requests, and smaps' USS, the exact figure; it counts each read.
`exact_checks` counts the verdicts asked of the rules on the exact figures.
`clock` stands for time.monotonic in the recycler (its minimum lifetime, the
once-a-second smaps read, the request timeout). The backstop's rlimit and the
wake-up signal to the master are recorded, never applied to the test runner.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from fitflix.memory.container import MIB
from fitflix.memory.growth import DEFAULT_REPORT_TIME_LIMIT_S
from fitflix.memory.reader import Fallbacks
from fitflix.memory.report import measure_container
from fitflix.serving import backstop
from fitflix.serving import recycler as recycler_module
from fitflix.serving.recycle import (
    DATA_LIMIT_RECYCLE_FRACTION,
    KEEP,
    MAX_SKIPPED_REQUESTS,
    MEMORY_RULES,
    RECYCLE,
    ExactCheckLevels,
    WorkerLimits,
    memory_verdict,
)
from fitflix.serving.recycler import (
    HOLD_POLL_S,
    REPORT_TIME_SHARE,
    RETIRED_FIRST_REPORT_S,
    SURGE_WAIT_S,
    USS_READ_INTERVAL_S,
    WorkerRecycler,
)
from fitflix.serving.sizing import MIN_WORKER_LIFETIME_S, make_plan
from fitflix.serving.state import SharedState
from fitflix.settings import Settings
from harness.wait import poll_until
from tests.fakes import FakeWorker, container, stop_recyclers

BUDGET_MB = 1000  # the plan: one worker, threshold drawn in [900, 1000] MB, hard cap 1800 MB
BOOT_RSS, BOOT_DATA, BOOT_USS = 100 * MIB, 120 * MIB, 80 * MIB  # born far below its threshold


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class USSFigures:
    uss_bytes: int


class FakeMemory:
    """statm (RSS, data segment) and smaps (USS) of the worker, each read counted."""

    source = "statm"
    is_peak = False

    def __init__(self) -> None:
        self.rss, self.data, self.uss = BOOT_RSS, BOOT_DATA, BOOT_USS
        self.faults: int | None = None  # bytes faulted in since the fork; None: the USS itself
        self.statm_reads = 0
        self.smaps_reads = 0

    def set(self, rss: int, uss: int | None = None, data: int | None = None) -> None:
        self.rss = rss
        self.uss = rss if uss is None else uss
        if data is not None:
            self.data = data

    def read(self) -> tuple[int, int]:
        self.statm_reads += 1
        return self.rss, self.data

    def read_process_memory(self, pid, root, fallbacks) -> USSFigures:
        assert pid == "self"
        self.smaps_reads += 1
        return USSFigures(self.uss)

    def faulted_bytes(self) -> int:
        """The page faults' bound on the USS (exact, unless a test sets `faults`)."""
        return self.uss if self.faults is None else self.faults


@dataclass
class Recyclers:
    make: object
    memory: FakeMemory
    clock: FakeClock
    woken: list[int]
    data_limits: list[int]
    exact_checks: list[str]


@pytest.fixture
def recyclers(monkeypatch):
    """Make recyclers on one fake memory and clock; their timeout-watch threads are stopped at teardown."""
    memory, clock = FakeMemory(), FakeClock()
    woken: list[int] = []
    data_limits: list[int] = []
    exact_checks: list[str] = []

    def counted_verdict(*args):
        exact_checks.append(verdict := memory_verdict(*args))
        return verdict

    monkeypatch.setattr(recycler_module, "memory_verdict", counted_verdict)
    monkeypatch.setattr(recycler_module, "time", clock)
    monkeypatch.setattr(recycler_module, "self_memory_reader", lambda root, fallbacks: memory)
    monkeypatch.setattr(recycler_module, "read_process_memory", memory.read_process_memory)
    monkeypatch.setattr(recycler_module, "faulted_bytes", memory.faulted_bytes)
    monkeypatch.setattr(recycler_module, "HUGE_PAGES_ALWAYS", False)
    monkeypatch.setattr(recycler_module, "wake_master", woken.append)
    monkeypatch.setattr(backstop, "set_data_limit", data_limits.append)
    made: list[WorkerRecycler] = []

    def make(
        worker: FakeWorker | None = None, shared: SharedState | None = None, *, rules=MEMORY_RULES, **settings
    ) -> WorkerRecycler:
        settings = {"max_memory_mb": 8000, "worker_max_memory_mb": BUDGET_MB, **settings}
        plan = make_plan(Settings(**settings), container(8000, 2))
        recycler = WorkerRecycler(worker or FakeWorker(), plan, shared, rules=rules)
        made.append(recycler)
        return recycler

    yield Recyclers(make, memory, clock, woken, data_limits, exact_checks)
    stop_recyclers(made)


def serve(recycler: WorkerRecycler, requests: int = 1, clock: FakeClock | None = None, step_s: float = 0.0) -> None:
    for _ in range(requests):
        recycler.worker.nr += 1
        recycler.after_request()
        if clock is not None:
            clock.advance(step_s)


def old_enough(r: Recyclers) -> None:
    r.clock.advance(MIN_WORKER_LIFETIME_S + 1)


# --- below every level: nothing happens, reads are skipped ------------------------------------


def test_far_below_every_level_it_serves_on_and_reads_statm_once_in_32_requests(recyclers):
    recycler = recyclers.make(recycle_replace_first=False)
    old_enough(recyclers)
    reads_at_boot, smaps_at_boot = recyclers.memory.statm_reads, recyclers.memory.smaps_reads

    serve(recycler, 10 * (MAX_SKIPPED_REQUESTS + 1), recyclers.clock, step_s=USS_READ_INTERVAL_S)

    assert recycler.reason is None and recycler.waiting is None and recycler.worker.alive is True
    assert recyclers.memory.statm_reads - reads_at_boot == 10
    assert recyclers.exact_checks == [] and recyclers.memory.smaps_reads == smaps_at_boot  # USS never read


@pytest.mark.parametrize(
    ("room_mb", "reads_in_96_requests"),
    [
        (30, 32),  # 30 // 8 - 1 = 2 requests skipped after each read
        (20, 48),  # one skipped
        (12, 96),  # less than two requests' allowance: every request read
    ],
)
def test_the_closer_to_its_threshold_the_more_often_it_reads(recyclers, room_mb, reads_in_96_requests):
    recycler = recyclers.make()
    recyclers.memory.set(recycler.limits.threshold_bytes - room_mb * MIB)
    reads_before = recyclers.memory.statm_reads

    serve(recycler, 96)

    assert recyclers.memory.statm_reads - reads_before == reads_in_96_requests
    assert recycler.reason is None and recycler.waiting is None


def test_the_data_limit_is_a_level_too_and_is_read_for(recyclers):
    recycler = recyclers.make()
    data_edge = recycler.limits.data_limit_bytes * DATA_LIMIT_RECYCLE_FRACTION
    recyclers.memory.set(BOOT_RSS, data=int(data_edge) - 12 * MIB)  # RSS far below its threshold
    reads_before = recyclers.memory.statm_reads

    serve(recycler, 32)

    assert recyclers.memory.statm_reads - reads_before == 32  # 12 MB from the data edge: every request
    assert recyclers.exact_checks == []  # still below it
    assert recycler.reason is None


def test_the_data_limit_is_what_the_backstop_was_given(recyclers):
    recycler = recyclers.make()
    # What it holds plus the room up to its hard cap (no unstarted thread stacks here).
    expected = BOOT_DATA + recycler.limits.hard_cap_bytes - BOOT_USS
    assert recycler.limits.data_limit_bytes == expected and recyclers.data_limits == [expected]


# --- the boot: its USS bounded by its page faults, no smaps walk --------------------------------


def test_at_boot_the_uss_is_the_page_faults_bound_and_smaps_is_not_read(recyclers):
    recyclers.memory.faults = BOOT_USS + 3 * MIB  # the bound is a little high: shared file pages fault too
    recycler = recyclers.make()
    assert recyclers.memory.smaps_reads == 0
    assert recycler.boot_uss_bytes == BOOT_USS + 3 * MIB
    # The data limit leaves the room to the hard cap less the bound: 3 MB less room, never more.
    assert recycler.limits.data_limit_bytes == BOOT_DATA + recycler.limits.hard_cap_bytes - BOOT_USS - 3 * MIB


def test_at_boot_the_page_faults_bound_is_never_above_the_rss(recyclers):
    recyclers.memory.faults = BOOT_RSS + 50 * MIB  # a process that was not forked: every fault of its life
    recycler = recyclers.make()
    assert recycler.boot_uss_bytes == BOOT_RSS and recyclers.memory.smaps_reads == 0


def test_where_one_fault_can_bring_a_huge_page_the_boot_reads_smaps(recyclers, monkeypatch):
    monkeypatch.setattr(recycler_module, "HUGE_PAGES_ALWAYS", True)
    recyclers.memory.faults = BOOT_USS // 512  # a few huge pages: the faults undercount
    recycler = recyclers.make()
    assert recyclers.memory.smaps_reads == 1 and recycler.boot_uss_bytes == BOOT_USS


def test_where_the_app_was_imported_in_the_worker_the_boot_reads_smaps(recyclers):
    worker = FakeWorker()
    worker.cfg = SimpleNamespace(preload_app=False)  # its imports may have mapped huge pages since the fork
    recyclers.memory.faults = BOOT_USS // 512
    recycler = recyclers.make(worker)
    assert recyclers.memory.smaps_reads == 1 and recycler.boot_uss_bytes == BOOT_USS


# --- the exact check: only where a rule may fire ----------------------------------------------


def test_just_below_its_threshold_the_exact_check_is_skipped(recyclers):
    recycler = recyclers.make(recycle_replace_first=False)
    old_enough(recyclers)
    recyclers.memory.set(recycler.limits.threshold_bytes - 1)
    reads_before = recyclers.memory.statm_reads

    serve(recycler, 20)

    assert recyclers.memory.statm_reads - reads_before == 20 and recyclers.exact_checks == []
    assert recycler.reason is None


def test_at_its_threshold_by_rss_it_reads_uss_and_keeps_a_worker_whose_uss_is_below(recyclers):
    recycler = recyclers.make(recycle_replace_first=False)
    old_enough(recyclers)
    threshold = recycler.limits.threshold_bytes
    recyclers.memory.set(threshold, uss=threshold - 50 * MIB)  # RSS counts shared pages, USS does not
    reads_before, smaps_before = recyclers.memory.statm_reads, recyclers.memory.smaps_reads

    serve(recycler, 5, recyclers.clock, step_s=USS_READ_INTERVAL_S)

    assert recyclers.memory.statm_reads - reads_before == 5  # no request skipped at a level
    assert recyclers.exact_checks == [KEEP] * 5
    assert recyclers.memory.smaps_reads - smaps_before == 5  # USS read at most once a second: each request here
    assert recycler.reason is None and recycler.worker.alive is True


def test_between_smaps_reads_uss_is_the_last_one_plus_the_rss_growth_since(recyclers):
    recycler = recyclers.make(recycle_replace_first=False)
    old_enough(recyclers)
    threshold = recycler.limits.threshold_bytes
    recyclers.memory.set(threshold, uss=threshold - 50 * MIB)
    serve(recycler)  # reads smaps: USS 50 MB below
    smaps_after_first = recyclers.memory.smaps_reads
    recyclers.memory.set(threshold + 60 * MIB, uss=threshold - 50 * MIB)  # grew 60 MB, less than a second later

    serve(recycler)

    assert recyclers.memory.smaps_reads == smaps_after_first
    assert recycler.reason == "memory" and recycler.figures == (threshold + 60 * MIB, threshold + 10 * MIB)


# --- the reasons to leave ---------------------------------------------------------------------


def test_past_its_threshold_it_leaves_for_memory(recyclers):
    recycler = recyclers.make(recycle_replace_first=False)
    old_enough(recyclers)
    recyclers.memory.set(recycler.limits.threshold_bytes + 10 * MIB)
    recyclers.clock.advance(USS_READ_INTERVAL_S)

    serve(recycler)

    assert recycler.reason == "memory" and recycler.worker.alive is False
    assert recycler.exit_reason() == "memory"


def test_past_its_threshold_with_replace_first_it_asks_for_a_replacement_and_serves_on(recyclers):
    shared = SharedState()
    recycler = recyclers.make(FakeWorker(), shared)
    old_enough(recyclers)
    recyclers.memory.set(recycler.limits.threshold_bytes + 10 * MIB)
    recyclers.clock.advance(USS_READ_INTERVAL_S)

    serve(recycler, 3)

    assert recycler.worker.alive is True and recycler.reason is None
    assert recycler.waiting == "memory" and shared.surge_request() == os.getpid()
    assert recyclers.woken == [-1]  # once, however many requests passed since
    assert recycler.exit_reason() == "memory"


def test_while_another_worker_leaves_for_memory_it_serves_on_past_its_threshold(recyclers):
    shared = SharedState()
    assert shared.claim_memory_recycle(os.getppid())  # a live process holds the one slot
    recycler = recyclers.make(FakeWorker(), shared)
    old_enough(recyclers)
    recyclers.memory.set(recycler.limits.threshold_bytes + 10 * MIB)

    serve(recycler, 3)

    assert recycler.worker.alive is True and recycler.reason is None and recycler.waiting is None


def test_a_young_worker_born_near_its_threshold_is_kept_until_its_minimum_lifetime(recyclers):
    recyclers.memory.set(960 * MIB)  # above half of any threshold drawn for a 1000 MB budget
    recycler = recyclers.make(recycle_replace_first=False)
    recyclers.memory.set(recycler.limits.threshold_bytes + 10 * MIB)

    serve(recycler, 5)
    assert recycler.reason is None

    old_enough(recyclers)
    serve(recycler)
    assert recycler.reason == "memory"


def test_a_young_worker_born_far_below_its_threshold_that_grew_past_it_leaves(recyclers):
    recycler = recyclers.make(recycle_replace_first=False)  # born at BOOT_USS, far below
    recyclers.memory.set(recycler.limits.threshold_bytes + 10 * MIB)
    recyclers.clock.advance(USS_READ_INTERVAL_S)

    serve(recycler)

    assert recycler.reason == "memory"


def test_past_its_hard_cap_it_leaves_at_once_young_and_while_another_worker_leaves(recyclers):
    shared = SharedState()
    assert shared.claim_memory_recycle(os.getppid())
    recyclers.memory.set(960 * MIB)  # born near its threshold: the minimum lifetime would hold a recycle back
    recycler = recyclers.make(FakeWorker(), shared)
    recyclers.memory.set(recycler.limits.hard_cap_bytes)
    recyclers.clock.advance(USS_READ_INTERVAL_S)

    serve(recycler)

    assert recycler.reason == "memory" and recycler.worker.alive is False
    assert recycler.waiting is None and recyclers.woken == []  # no replacement first


def test_near_its_data_limit_it_leaves_at_once_far_below_its_threshold(recyclers):
    recyclers.memory.set(960 * MIB)  # born near its threshold, and young
    recycler = recyclers.make(FakeWorker(), SharedState())
    data_edge = recycler.limits.data_limit_bytes * DATA_LIMIT_RECYCLE_FRACTION
    recyclers.memory.set(BOOT_RSS, data=int(data_edge) + 1)

    serve(recycler)

    assert recycler.reason == "memory" and recycler.worker.alive is False and recycler.waiting is None


def test_after_the_backstop_failed_a_request_it_leaves(recyclers, monkeypatch):
    recycler = recyclers.make(FakeWorker(), SharedState())
    monkeypatch.setattr(backstop, "tripped", lambda: True)

    serve(recycler)

    assert recycler.reason == "backstop" and recycler.worker.alive is False


def test_at_max_requests_with_replace_first_it_asks_for_a_replacement(recyclers):
    worker = FakeWorker(max_requests=5)
    recycler = recyclers.make(worker, SharedState())
    assert worker.max_requests == sys.maxsize  # gunicorn's own check can no longer stop it at once

    serve(recycler, 4)
    assert recycler.waiting is None
    serve(recycler)

    assert recycler.waiting == "max_requests" and worker.alive is True and recyclers.woken == [-1]
    assert recycler.exit_reason() == "max_requests"


def test_an_ask_refused_while_another_replacement_runs_is_made_again_with_no_request_to_come(recyclers):
    shared = SharedState()
    other = os.getppid()  # a live process: its replacement is under way
    assert shared.request_surge(other)
    worker = FakeWorker(max_requests=5)
    recycler = recyclers.make(worker, shared)
    serve(recycler, 5)
    assert recycler.waiting == "max_requests" and recycler.asked_at is None and recyclers.woken == []

    shared.clear_surge_request(other)  # that replacement ended; the load has stopped

    poll_until(lambda: recyclers.woken, 10, "the idle worker's ask, made again by its own watch")
    assert shared.surge_request() == os.getpid() and worker.nr == 5 and worker.alive is True


def test_at_max_requests_without_replace_first_gunicorn_stops_it_and_the_reason_is_logged(recyclers):
    worker = FakeWorker(max_requests=5)
    recycler = recyclers.make(worker, SharedState(), recycle_replace_first=False)
    assert worker.max_requests == 5  # gunicorn's own check stays

    serve(recycler, 5)

    assert recycler.waiting is None and recycler.reason is None
    assert recycler.exit_reason() == "max_requests"


def test_the_guards_target_logs_the_guard_as_its_reason(recyclers, caplog):
    shared = SharedState()
    recycler = recyclers.make(FakeWorker(), shared)
    assert recycler.exit_reason() is None
    shared.mark_guard_target(os.getpid())

    with caplog.at_level(logging.INFO, logger="test-worker"):
        assert recycler.on_exit() == "guard"
        assert recycler.on_exit() is None  # once

    lines = [record.getMessage() for record in caplog.records if "Recycling worker" in record.getMessage()]
    assert len(lines) == 1 and f"pid={os.getpid()} reason=guard rss=100.0MB uss=80.0MB" in lines[0]
    assert shared.recycle_counts()["guard"] == 1


def test_a_request_stuck_past_the_timeout_replaces_the_worker(recyclers):
    # A 2 s timeout: the idle watch sleeps half of it, so it sees the request within a second here.
    recycler = recyclers.make(FakeWorker(), SharedState(), worker_timeout_s=2)
    finished: list[str | None] = []
    recycler.finish = lambda: finished.append(recycler.reason)  # the real one ends the process
    recycler.request_started()

    recyclers.clock.advance(recycler.plan.timeout_s + 1)

    poll_until(lambda: finished, 10, "the timeout watch to replace the worker")
    assert finished == ["timeout"] and recycler.worker.alive is False


def test_a_stuck_worker_ends_only_once_its_loop_closed_the_listeners(recyclers):
    """FitFlix's worker may accept in the turn under way: a connection accepted after the count would be cut."""
    worker = FakeWorker()
    worker.listeners_closed = threading.Event()
    recycler = recyclers.make(worker, SharedState(), worker_timeout_s=2)
    finished: list[str | None] = []
    recycler.finish = lambda: finished.append(recycler.reason)
    recycler.request_started()

    recyclers.clock.advance(recycler.plan.timeout_s + 1)
    poll_until(lambda: worker.alive is False, 10, "the timeout watch to stop the worker accepting")
    assert not worker.listeners_closed.wait(0.3) and finished == []  # the loop has not closed them: it waits

    worker.listeners_closed.set()
    poll_until(lambda: finished, 10, "the worker to end once its listeners are closed")
    assert finished == ["timeout"]


@pytest.mark.parametrize("threads, stuck, extra", [(1, 1, 1), (2, 2, 1), (2, 1, 0)])
def test_when_every_request_thread_is_stuck_one_more_serves_what_waits_with_room_for_its_stack(
    recyclers, threads, stuck, extra
):
    """THREADS=1 and one hung request: connections accepted before the listeners closed would wait for a
    thread that never comes, until the exit cut them. With a thread still free, none is added."""
    worker = FakeWorker()
    worker.request_threads = threads
    started: list[int] = []
    worker.start_request_thread = lambda: started.append(1)
    worker.listeners_closed = threading.Event()
    worker.listeners_closed.set()
    recycler = recyclers.make(worker, SharedState(), worker_timeout_s=2)
    limit_before = recycler.limits.data_limit_bytes
    finished: list[str | None] = []
    recycler.finish = lambda: finished.append(recycler.reason)
    released = threading.Event()

    def stuck_request() -> None:
        recycler.request_started()
        released.wait(10)  # alive until the end: a thread's ident is reused once it ends

    for _ in range(stuck):
        threading.Thread(target=stuck_request).start()
    poll_until(lambda: len(recycler._in_flight) == stuck, 10, "the stuck requests to start")

    recyclers.clock.advance(recycler.plan.timeout_s + 1)
    poll_until(lambda: finished, 10, "the timeout watch to replace the worker")
    released.set()
    assert len(started) == extra
    assert recycler.limits.data_limit_bytes == limit_before + extra * recycler.stack_bytes
    assert recyclers.data_limits[-1] == recycler.limits.data_limit_bytes


def test_the_timeout_watch_sleeps_half_the_timeout_while_idle_and_looks_every_second_while_busy(recyclers):
    recycler = recyclers.make(FakeWorker(), SharedState())  # WORKER_TIMEOUT_S=30
    timeout_s = recycler.plan.timeout_s
    assert recycler._next_look_s(timeout_s) == timeout_s / 2  # a request started meanwhile is seen in time

    recycler.request_started()
    assert recycler._next_look_s(timeout_s) == 1.0
    serve(recycler)  # answered: idle again
    assert recycler._next_look_s(timeout_s) == timeout_s / 2
    assert recycler._next_look_s(2) == 1.0  # never longer than a second past a short timeout's deadline


def test_with_no_replacement_in_time_it_leaves_on_its_own(recyclers):
    recycler = recyclers.make(FakeWorker(), SharedState())
    old_enough(recyclers)
    recyclers.memory.set(recycler.limits.threshold_bytes + 10 * MIB)
    serve(recycler)
    assert recycler.waiting == "memory" and recycler.worker.alive is True

    recyclers.clock.advance(SURGE_WAIT_S + 1)

    poll_until(lambda: recycler.worker.alive is False, 10, "the recycler to give up waiting")
    assert recycler.reason == "memory"


# --- a rule of one's own ----------------------------------------------------------------------


class AtLevel:
    """Test-only: recycle once USS reaches a level of its own, far below the budget."""

    def __init__(self, level_bytes: int) -> None:
        self.level_bytes = level_bytes

    def levels(self, limits: WorkerLimits) -> ExactCheckLevels:
        return ExactCheckLevels(rss_bytes=self.level_bytes)

    def verdict(self, uss_bytes: int, data_bytes: int, age_s: float, limits: WorkerLimits) -> str:
        return RECYCLE if uss_bytes >= self.level_bytes else KEEP


LEVEL = 300 * MIB  # a third of the threshold


def test_the_rules_of_today_never_check_below_the_budget(recyclers):
    recycler = recyclers.make(recycle_replace_first=False)
    old_enough(recyclers)
    recyclers.memory.set(LEVEL + 10 * MIB)

    serve(recycler, 64)

    assert recycler.reason is None and recyclers.exact_checks == []


def test_a_rule_that_fires_below_the_budget_runs(recyclers):
    recycler = recyclers.make(recycle_replace_first=False, rules=(*MEMORY_RULES, AtLevel(LEVEL)))
    old_enough(recyclers)
    recyclers.memory.set(LEVEL - 30 * MIB)
    reads_before = recyclers.memory.statm_reads

    serve(recycler, 96)
    assert recycler.reason is None and recyclers.exact_checks == []
    assert recyclers.memory.statm_reads - reads_before == 32  # its level, not the threshold's, sets the skips

    recyclers.memory.set(LEVEL + 10 * MIB)
    recyclers.clock.advance(USS_READ_INTERVAL_S)
    serve(recycler, 3)  # at most two requests may still pass unread

    assert recycler.reason == "memory" and recycler.worker.alive is False
    assert recycler.figures == (LEVEL + 10 * MIB, LEVEL + 10 * MIB) and recyclers.exact_checks == [RECYCLE]


def test_new_limits_move_the_levels_it_reads_for(recyclers):
    recycler = recyclers.make()
    recyclers.memory.set(500 * MIB)  # far below the threshold it was born with
    recycler.limits = WorkerLimits(threshold_bytes=530 * MIB, hard_cap_bytes=700 * MIB, data_limit_bytes=None)
    reads_before = recyclers.memory.statm_reads

    serve(recycler, 96)

    assert recyclers.memory.statm_reads - reads_before == 32  # 30 MB below the new threshold: 2 skipped per read
    assert recycler.reason is None


# --- without /proc (moved from test_portable.py) ------------------------------------------------


def test_a_worker_on_its_peak_recycles_for_memory_with_no_backstop_and_publishes(no_proc, monkeypatch):
    monkeypatch.setattr(backstop, "set_data_limit", lambda limit: pytest.fail("no data figure: no data limit"))
    peak = [30 * MIB]
    state = SharedState()
    slot = state.claim_worker_slot(os.getpid())
    # Leaving at once (no replacement first): this test is about the figures, not the surge.
    host = Fallbacks(None, lambda: 8 * 1024 * MIB, lambda: 70 * MIB)
    plan = make_plan(Settings(max_memory_mb=256, recycle_replace_first=False), measure_container(no_proc, host))
    recycler = WorkerRecycler(
        FakeWorker(), plan, state, root=no_proc, slot=slot, fallbacks=Fallbacks(None, lambda: None, lambda: peak[0])
    )
    try:
        assert recycler.limits.data_limit_bytes is None
        assert state.published_memory(os.getpid()) == (30 * MIB, "peak")
        recycler.started -= 10  # past the minimum lifetime
        recycler.after_request()
        assert recycler.reason is None
        peak[0] = (plan.worker_budget_mb + 1) * MIB
        for _ in range(40):  # the reader may skip requests while far below the threshold
            recycler.after_request()
            if recycler.reason:
                break
        assert recycler.reason == "memory"
        assert recycler.worker.alive is False
        assert state.published_memory(os.getpid()) == ((plan.worker_budget_mb + 1) * MIB, "peak")
    finally:
        recycler.stop_watch()
        assert recycler.join_watch(5)


# --- replace, then retire: what it tells the master, the hold, its report's budget ---------------


def test_its_request_says_how_fast_it_grew_the_faster_of_its_life_and_its_last_window(recyclers):
    shared = SharedState()
    recycler = recyclers.make(FakeWorker(), shared)
    near = recycler.limits.threshold_bytes - 12 * MIB  # close enough that every request is read
    recyclers.clock.advance(1000.0)  # a long, quiet life: 1000 s to get near its threshold
    for _ in range(4):
        recyclers.memory.set(near)
        serve(recycler)
        recyclers.clock.advance(1.0)
    recyclers.memory.set(near + 22 * MIB)  # then 22 MB in one second: past its threshold
    serve(recycler)
    assert recycler.waiting == "memory"
    rate, per_request = shared.surge_growth()
    lifetime_rate = (near + 22 * MIB - BOOT_USS) / 1004.0
    assert lifetime_rate < 1 * MIB and rate == pytest.approx(22 * MIB, rel=0.01)
    assert per_request == (near + 22 * MIB - BOOT_USS) // 5


def test_while_the_master_holds_for_another_worker_a_new_request_waits_until_it_is_gone(recyclers, monkeypatch):
    shared = SharedState()
    recycler = recyclers.make(FakeWorker(), shared)
    shared.set_hold_for(os.getppid())  # a live process: the worker being replaced
    looks = []

    def wait(seconds):  # each look, the master's watch lets go after the third
        looks.append(seconds)
        recyclers.clock.advance(seconds)
        if len(looks) == 3:
            shared.set_hold_for(0)
        return False

    monkeypatch.setattr(recycler._stopping, "wait", wait)
    recycler.request_started("/api/workouts")
    assert looks == [HOLD_POLL_S] * 3 and recycler.held_s == pytest.approx(3 * HOLD_POLL_S)
    recycler.request_started("/api/workouts")  # no hold now: no wait
    assert len(looks) == 3


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready"])
def test_the_probes_never_wait_for_a_hold(recyclers, path):
    shared = SharedState()
    recycler = recyclers.make(FakeWorker(), shared)
    shared.set_hold_for(os.getppid())
    recycler.request_started(path)
    assert recycler.held_s == 0


def test_the_worker_held_for_and_a_holder_gone_never_wait(recyclers, monkeypatch):
    shared = SharedState()
    recycler = recyclers.make(FakeWorker(), shared)
    shared.set_hold_for(os.getpid())  # this worker is the one being replaced: it does not wait for itself
    recycler.request_started("/x")
    shared.set_hold_for(os.getppid())
    monkeypatch.setattr(recycler_module, "pid_alive", lambda pid: pid != os.getppid())  # gone, not reaped yet
    recycler.request_started("/x")
    assert recycler.held_s == 0


def test_a_hold_never_lasts_past_half_the_request_timeout(recyclers, monkeypatch, caplog):
    shared = SharedState()
    recycler = recyclers.make(FakeWorker(), shared)
    shared.set_hold_for(os.getppid())
    monkeypatch.setattr(recycler._stopping, "wait", lambda seconds: recyclers.clock.advance(seconds))
    recycler.request_started("/x")
    assert recycler.held_s == pytest.approx(recycler.plan.timeout_s / 2, abs=HOLD_POLL_S)
    assert "serving it now" in caplog.text


def test_the_report_budget_retired_first_in_a_one_worker_service_is_short(recyclers):
    recycler = recyclers.make(FakeWorker(), SharedState())
    seconds, room = recycler.report_budget(BOOT_USS)
    assert seconds == RETIRED_FIRST_REPORT_S and room == recycler.limits.hard_cap_bytes - BOOT_USS


def test_replaced_first_the_report_takes_a_share_of_the_time_the_room_lasts(recyclers):
    shared = SharedState()
    recycler = recyclers.make(FakeWorker(), shared)
    shared.set_surge_old(os.getpid())
    shared.set_overlap(60 * MIB, 200 * MIB)  # 60 MB left at 200 MB a second: 0.3 s
    seconds, room = recycler.report_budget(BOOT_USS)
    assert seconds == pytest.approx(REPORT_TIME_SHARE * 0.3) and room == 60 * MIB
    shared.set_overlap(4 * MIB, 200 * MIB)  # 20 ms: too short for a report
    assert "4.0MB are left below the critical level at 200.0MB/s" in recycler.report_budget(BOOT_USS)
    shared.set_overlap(60 * MIB, 0)  # no growth seen: the whole default
    assert recycler.report_budget(BOOT_USS)[0] == DEFAULT_REPORT_TIME_LIMIT_S
    shared.set_overlap(60 * MIB, 200 * MIB)
    shared.set_hold_for(os.getpid())  # the others wait for this worker: no report at all
    assert "hold their requests" in recycler.report_budget(BOOT_USS)


def test_a_skipped_report_is_said_and_its_time_is_published(recyclers, caplog):
    shared = SharedState()
    recycler = recyclers.make(FakeWorker(), shared)
    shared.set_surge_old(os.getpid())
    shared.set_hold_for(os.getpid())
    with caplog.at_level(logging.INFO):
        recycler.report_growth(BOOT_USS)
    assert "no report of what grew: the other workers hold" in caplog.text
    written, _reports = shared.growth_reports()
    assert written == 0 and shared.report_time_s(os.getpid()) >= 0
    assert shared.report_time_s(os.getpid() + 1) == 0
