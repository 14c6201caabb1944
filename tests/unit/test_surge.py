"""Replace, then retire (fitflix.serving.surge), against an arbiter that counts workers as gunicorn's does.

`FakeArbiter` keeps gunicorn's rules that matter here: setting `num_workers`
calls `nworkers_changed`, `manage_workers` spawns up to `num_workers` and
SIGTERMs the oldest beyond it, a worker reaped leaves WORKERS before
`child_exit` runs. The live tests (tests/live/test_live_surge.py) run real gunicorn.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

import pytest

from fitflix.memory.container import MIB
from fitflix.serving.overlap import BOOT_CONTENTION, DEFAULT_HANDOVER_S, TIMINGS_TTL_S
from fitflix.serving.state import SharedState
from fitflix.serving.surge import BOOT_TIMEOUT_S, Surge

OLD = 1000


@dataclass
class FakeWorkerEntry:
    age: int


class FakeArbiter:
    def __init__(self, workers: int, shared: SharedState) -> None:
        self.log = logging.getLogger("test-surge")
        self.shared = shared
        self.WORKERS: dict[int, FakeWorkerEntry] = {}
        self.worker_age = 0
        self.next_pid = OLD
        self.sent: list[tuple[int, int]] = []
        self.changes: list[tuple[int, int | None]] = []
        self.reloads = 0
        self.surge: Surge | None = None
        self._num_workers = workers
        self.timeout = 30  # gunicorn's worker timeout
        self.waits: list[float] = []  # each wait of the arbiter's loop for a signal
        self.manage_workers()

    @property
    def num_workers(self) -> int:
        return self._num_workers

    @num_workers.setter
    def num_workers(self, value: int) -> None:
        old, self._num_workers = self._num_workers, value
        if self.surge is None or self.surge.planned_after_change(value) is not None:
            self.changes.append((value, old))  # what the hook would re-plan for

    def manage_workers(self) -> None:
        while len(self.WORKERS) < self.num_workers:
            self.spawn_worker()
        for pid, _entry in sorted(self.WORKERS.items(), key=lambda item: item[1].age)[
            : max(len(self.WORKERS) - self.num_workers, 0)
        ]:
            self.sent.append((pid, signal.SIGTERM))

    def spawn_worker(self) -> int:
        self.worker_age += 1
        pid = self.next_pid
        self.WORKERS[pid] = FakeWorkerEntry(self.worker_age)
        self.next_pid += 1
        return pid

    def wait_for_signals(self, timeout: float = 1.0) -> list:
        self.waits.append(timeout)
        return []

    def handle_hup(self) -> None:
        self.reloads += 1
        self.manage_workers()  # gunicorn's reload ends with it: no replacement may start there

    def boot(self, pid: int) -> None:
        """The worker ran post_worker_init: it holds a shared slot."""
        self.shared._slots_for_test.add(pid)

    def reap(self, pid: int) -> None:
        self.WORKERS.pop(pid)
        self.shared._slots_for_test.discard(pid)
        self.surge.on_child_exit(pid)


class FakeShared(SharedState):
    """The real shared state, with the booted-worker list under the test's control."""

    def __init__(self) -> None:
        super().__init__()
        self._slots_for_test: set[int] = set()

    def worker_pids(self) -> list[int]:
        return sorted(self._slots_for_test)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def setup(workers: int = 1, fits: bool = True, planned: list[int] | None = None):
    shared = FakeShared()
    arbiter = FakeArbiter(workers, shared)
    for pid in arbiter.WORKERS:
        arbiter.boot(pid)
    plan_workers = planned if planned is not None else [workers]
    clock = Clock()

    def room(pid: int, boot_s: float, handover_s: float) -> tuple[bool, str]:
        arbiter.room_asked.append((pid, boot_s, handover_s))
        return fits, "room" if fits else "no room"

    arbiter.room_asked = []
    surge = Surge(
        arbiter,
        shared,
        room,
        lambda: plan_workers[0],
        clock=clock,
        send=lambda pid, signum: arbiter.sent.append((pid, signum)),
    )
    arbiter.surge = surge
    surge.install()
    return arbiter, shared, surge, clock


def newest(arbiter: FakeArbiter) -> int:
    return max(arbiter.WORKERS, key=lambda pid: arbiter.WORKERS[pid].age)


def test_the_replacement_boots_before_the_old_worker_is_sent_sigterm_and_the_count_comes_back():
    arbiter, shared, surge, _clock = setup(workers=1)
    assert shared.request_surge(OLD)
    arbiter.manage_workers()  # the master's loop, woken by the worker
    assert len(arbiter.WORKERS) == 2 and arbiter.num_workers == 2
    assert shared.surge_old() == OLD
    assert arbiter.sent == []  # nothing leaves before its replacement serves
    replacement = newest(arbiter)
    arbiter.manage_workers()  # spawned, not booted yet: still nothing sent
    assert arbiter.sent == []
    arbiter.boot(replacement)
    arbiter.manage_workers()
    assert arbiter.sent == [(OLD, signal.SIGTERM)]
    arbiter.reap(OLD)
    assert arbiter.num_workers == 1 and list(arbiter.WORKERS) == [replacement]
    assert shared.surge_old() == 0 and shared.surge_request() == 0
    assert arbiter.changes == []  # the plan never saw the extra worker
    assert surge.replaced == 1


def test_without_room_the_worker_is_sent_sigterm_at_once_and_no_worker_is_added():
    arbiter, shared, surge, _clock = setup(workers=1, fits=False)
    shared.request_surge(OLD)
    arbiter.manage_workers()
    assert arbiter.sent == [(OLD, signal.SIGTERM)]
    assert arbiter.num_workers == 1 and len(arbiter.WORKERS) == 1
    assert shared.surge_request() == 0
    assert surge.current is None


def test_the_replacement_is_under_way_while_the_room_is_asked_so_the_monitors_watch_finds_it():
    """The monitor starts its watch inside room() and its thread may look before room() returns: a watch
    that finds no replacement under way ends, and the overlap it was for went unwatched (an OOM kill)."""
    arbiter, shared, surge, clock = setup(workers=1)
    asked = surge.room
    seen = []

    def racing_room(pid: int, boot_s: float, handover_s: float) -> tuple[bool, str]:
        answer = asked(pid, boot_s, handover_s)
        seen.append(surge.current)  # what the monitor's thread, woken by the watch's start, finds
        clock.now += 0.5  # a slow forecast (a whole report where there is no cgroup)
        return answer

    surge.room = racing_room
    shared.request_surge(OLD)
    arbiter.manage_workers()
    assert seen[0] is not None and seen[0].old_pid == OLD and seen[0] is surge.current
    replacement = newest(arbiter)
    clock.now += 0.02
    arbiter.boot(replacement)
    arbiter.manage_workers()
    assert surge.boots_s[-1][1] == pytest.approx(0.02)  # timed from the spawn, not from the forecast


def test_a_replacement_that_never_boots_is_given_up_on_and_the_old_worker_leaves():
    arbiter, shared, _surge, clock = setup(workers=1)
    shared.request_surge(OLD)
    arbiter.manage_workers()
    clock.now += BOOT_TIMEOUT_S - 1
    arbiter.manage_workers()
    assert arbiter.sent == []
    clock.now += 2
    arbiter.manage_workers()
    assert arbiter.sent == [(OLD, signal.SIGTERM)]
    arbiter.reap(OLD)
    assert arbiter.num_workers == 1


def test_an_old_worker_that_leaves_on_its_own_ends_the_surge():
    arbiter, shared, surge, _clock = setup(workers=1)
    shared.request_surge(OLD)
    arbiter.manage_workers()
    arbiter.reap(OLD)  # past its hard cap: it stopped accepting without waiting
    assert arbiter.num_workers == 1 and surge.current is None
    assert arbiter.sent == []


def test_ttin_during_a_surge_moves_the_plan_by_one_and_the_extra_still_goes():
    arbiter, shared, _surge, _clock = setup(workers=2, planned=[2])
    shared.request_surge(OLD)
    arbiter.manage_workers()
    assert arbiter.num_workers == 3
    arbiter.num_workers += 1  # the operator's TTIN
    assert arbiter.changes == [(4, 3)]
    planned = arbiter.surge.planned_after_change(4)
    assert planned == 3
    arbiter.manage_workers()
    replacement = newest(arbiter)
    arbiter.boot(replacement)
    arbiter.manage_workers()
    assert (OLD, signal.SIGTERM) in arbiter.sent


def test_ttou_during_a_surge_ends_with_one_worker_fewer_than_planned_before():
    planned = [2]
    arbiter, shared, surge, _clock = setup(workers=2, planned=planned)
    shared.request_surge(OLD)
    arbiter.manage_workers()
    assert arbiter.num_workers == 3
    arbiter.num_workers -= 1  # the operator's TTOU
    planned[0] = surge.planned_after_change(arbiter.num_workers)  # what the hook re-plans for
    assert planned == [1]
    arbiter.manage_workers()  # gunicorn SIGTERMs the oldest beyond the count: the old worker itself
    assert (OLD, signal.SIGTERM) in arbiter.sent
    arbiter.reap(OLD)
    assert arbiter.num_workers == 1


def test_sighup_during_a_surge_leaves_the_replacement_to_the_reload():
    arbiter, shared, surge, _clock = setup(workers=1)
    shared.request_surge(OLD)
    arbiter.manage_workers()
    arbiter.handle_hup()
    assert arbiter.reloads == 1
    assert surge.current is None and shared.surge_old() == 0 and shared.surge_request() == 0


def test_a_request_that_comes_during_a_reload_waits_for_the_loop_after_it():
    arbiter, shared, surge, _clock = setup(workers=1)
    shared.request_surge(OLD)
    arbiter.handle_hup()  # the wrapped one: its manage_workers does not take the request
    assert surge.current is None and shared.surge_request() == OLD and arbiter.num_workers == 1
    assert surge.reloading is False
    arbiter.manage_workers()  # the loop's next turn does
    assert surge.current is not None and arbiter.num_workers == 2


def test_a_request_from_a_worker_already_gone_is_dropped():
    arbiter, shared, surge, _clock = setup(workers=1)
    shared.request_surge(4242)
    arbiter.manage_workers()
    assert surge.current is None and arbiter.num_workers == 1 and shared.surge_request() == 0


@pytest.mark.parametrize("other_first", [True, False])
def test_one_request_at_a_time(other_first):
    shared = SharedState()
    me = os.getpid()
    parent = os.getppid()  # alive: it holds the request while it lives
    first, second = (parent, me) if other_first else (me, parent)
    assert shared.request_surge(first)
    assert shared.request_surge(second) is False
    shared.clear_surge_request(first)
    assert shared.request_surge(second)


def test_boots_and_handovers_are_timed_and_forecast_the_next_replacement():
    arbiter, shared, surge, clock = setup(workers=1)
    shared.set_last_boot(0.04)  # the first worker's own boot, fork to ready
    assert surge.expected_boot_s() == pytest.approx(0.04 * BOOT_CONTENTION)
    assert surge.expected_handover_s() == DEFAULT_HANDOVER_S
    shared.request_surge(OLD, rate_bytes_per_s=100 * MIB, per_request_bytes=MIB)
    arbiter.manage_workers()
    assert arbiter.room_asked == [(OLD, pytest.approx(0.08), DEFAULT_HANDOVER_S)]
    replacement = newest(arbiter)
    clock.now += 0.5
    arbiter.boot(replacement)
    arbiter.manage_workers()
    clock.now += 1.25
    shared.set_report_time(OLD, 0.25)  # its report of what grew: left out of the handover
    arbiter.reap(OLD)
    assert surge.expected_boot_s() == pytest.approx(0.5)
    assert surge.expected_handover_s() == pytest.approx(1.0)
    # A minute later the slow handover no longer counts.
    clock.now += TIMINGS_TTL_S + 1
    assert surge.expected_handover_s() == DEFAULT_HANDOVER_S


def test_the_monitor_can_retire_the_old_worker_before_its_replacement_serves():
    arbiter, shared, surge, _clock = setup(workers=1)
    shared.request_surge(OLD)
    arbiter.manage_workers()
    assert surge.retire_early(OLD)
    assert arbiter.sent == [(OLD, signal.SIGTERM)]
    assert not surge.retire_early(OLD)  # once
    replacement = newest(arbiter)
    arbiter.boot(replacement)
    arbiter.manage_workers()  # it serves: nothing more is sent, and it was not a replacement first
    assert arbiter.sent == [(OLD, signal.SIGTERM)] and surge.replaced == 0
    assert surge.current.replacement_pid == replacement
    arbiter.reap(OLD)
    assert arbiter.num_workers == 1 and surge.current is None
    assert surge.expected_handover_s() == DEFAULT_HANDOVER_S  # an early retirement is not a handover


def test_retire_early_is_refused_for_another_worker_or_after_the_handover():
    arbiter, shared, surge, _clock = setup(workers=1)
    assert not surge.retire_early(OLD)  # no replacement under way
    shared.request_surge(OLD)
    arbiter.manage_workers()
    assert not surge.retire_early(OLD + 1)
    arbiter.boot(newest(arbiter))
    arbiter.manage_workers()  # retired by the surge itself
    assert not surge.retire_early(OLD)
    assert arbiter.sent == [(OLD, signal.SIGTERM)]


def test_the_arbiters_loop_waits_a_quarter_timeout_while_idle_and_a_second_while_a_replacement_boots():
    arbiter, shared, _surge, _clock = setup(workers=1)
    old = newest(arbiter)

    arbiter.wait_for_signals(timeout=1.0)  # what gunicorn's loop asks for
    assert arbiter.waits == [7.5]  # a signal still ends the wait at once; a hung worker is found in time

    assert shared.request_surge(old)
    arbiter.manage_workers()  # the replacement is spawned
    arbiter.wait_for_signals(timeout=1.0)
    assert arbiter.waits[-1] == 1.0  # its boot timeout is looked at every second

    arbiter.timeout = 2
    assert _surge.idle_wait_s() == 1.0  # never longer than gunicorn's own second


def test_a_worker_claims_its_slot_and_wakes_the_master_only_once_its_recycler_is_ready(monkeypatch):
    """The master counts a worker as booted when it holds a slot, and then sends the worker it replaces away:
    claimed last, the old worker serves until this one's loop is about to run."""
    from fitflix.serving import hooks
    from fitflix.serving.sizing import make_plan
    from fitflix.settings import Settings
    from tests.fakes import container

    shared = SharedState()
    shared.set_surge_old(OLD)  # this worker is a replacement the master waits for
    events: list[str] = []

    class Recycler:
        boot_uss_bytes = 9 * 2**20  # what it measured as the worker booted

        def __init__(self, *_args, **_kwargs) -> None:
            events.append(f"recycler, booted workers {shared.worker_pids()}")

        def publish_to(self, slot) -> None:
            events.append(f"publish to slot {slot}")

    class Worker:
        ppid = 4242
        wsgi = staticmethod(lambda environ, start_response: [])
        log = logging.getLogger("test-surge")

    monkeypatch.setattr(hooks, "WorkerRecycler", Recycler)
    monkeypatch.setattr(hooks, "wake_master", lambda pid: events.append(f"wake {pid}, booted {shared.worker_pids()}"))
    monkeypatch.setattr(hooks.signal, "signal", lambda *_args: None)
    monkeypatch.setattr(hooks.signal, "siginterrupt", lambda *_args: None)
    monkeypatch.setattr(hooks.backstop, "watch_framework_errors", lambda: None)
    monkeypatch.setattr(hooks, "_recycler", None)
    monkeypatch.setattr(hooks, "_request_slot", None)
    monkeypatch.setattr(hooks.RUNTIME, "shared", shared)
    monkeypatch.setattr(hooks.RUNTIME, "plan", make_plan(Settings(), container(512, 2)))
    monkeypatch.setattr(hooks.RUNTIME, "forked_monotonic", None)
    monkeypatch.setattr(hooks.RUNTIME, "worker", None)

    hooks.post_worker_init(Worker())

    assert events == ["recycler, booted workers []", "publish to slot 0", f"wake 4242, booted [{os.getpid()}]"]
    assert hooks._request_slot == 0
    # With its slot the worker says what it held as it booted: the master's yardstick for a fresh worker.
    assert shared.boot_memory([os.getpid()]) == {os.getpid(): 9 * 2**20}


def test_pre_fork_collects_and_freezes_without_walking_what_is_frozen(monkeypatch):
    """gc.get_freeze_count walks every frozen object: 3.3 ms of the master's CPU at each fork, for a debug line."""
    from fitflix.serving import hooks

    calls: list[str] = []

    def walk() -> int:
        raise AssertionError("pre_fork walked the frozen objects")

    monkeypatch.setattr(hooks.gc, "get_freeze_count", walk)
    monkeypatch.setattr(hooks.gc, "collect", lambda generation=2: calls.append(f"collect {generation}") or 3)
    monkeypatch.setattr(hooks.gc, "freeze", lambda: calls.append("freeze"))

    class Monitor:
        def look_after_boot(self) -> None:
            calls.append("look after boot")

    class Log:
        def debug(self, message, *args) -> None:
            calls.append(message % args)

    monkeypatch.setattr(hooks, "_monitor", Monitor())
    hooks.pre_fork(type("Server", (), {"log": Log()})(), None)

    assert calls == [
        "collect 1",
        "freeze",
        "pre_fork: gc.collect() freed 3 unreachable objects; the rest frozen",
        "look after boot",
    ]
