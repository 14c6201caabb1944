"""SharedState across real forked processes: counts, and the one memory-recycle slot."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fitflix.serving.state import REASONS


def in_child(action: Callable[[], int]) -> int:
    """Fork, run `action` in the child and exit with its return code; 99 if it raised."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = action()
        finally:
            os._exit(code)  # never back into pytest in the child
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_count_made_in_a_forked_child_is_seen_by_the_parent(state):
    def child() -> int:
        state.count_recycle("memory")
        state.count_recycle("backstop")
        state.count_recycle("memory")
        return 0

    assert in_child(child) == 0

    assert state.recycle_counts() == {**dict.fromkeys(REASONS, 0), "memory": 2, "backstop": 1}


def test_a_count_made_in_the_parent_is_seen_by_a_child(state):
    state.count_recycle("guard")

    assert in_child(lambda: state.recycle_counts()["guard"]) == 1


def test_concurrent_children_lose_no_count(state):
    per_child, children = 200, 4
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                for _ in range(per_child):
                    state.count_recycle("max_requests")
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]

    assert codes == [0] * children
    assert state.recycle_counts()["max_requests"] == per_child * children


def test_memory_recycle_is_one_at_a_time_across_processes(state):
    me = os.getpid()
    assert state.claim_memory_recycle(me) is True
    assert state.claim_memory_recycle(me) is True  # the holder may ask again

    # A live holder (this process) keeps the slot from a child.
    assert in_child(lambda: int(state.claim_memory_recycle(os.getpid()))) == 0
    assert state.memory_recycle_holder() == me

    state.release(me)
    assert state.memory_recycle_holder() == 0

    # Free again: a child takes it, then ends without releasing it.
    claimed_in_child = in_child(lambda: int(state.claim_memory_recycle(os.getpid())))
    assert claimed_in_child == 1

    # The holder is dead (and reaped): the slot is free for the next one.
    assert state.memory_recycle_holder() == 0
    assert state.claim_memory_recycle(me) is True
    assert state.memory_recycle_holder() == me
    state.release(me)


@contextmanager
def live_child(action: Callable[[], object]) -> Iterator[int]:
    """Fork a child that runs `action` and then stays alive until the block ends; yield its pid."""
    done_read, done_write = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.close(done_read)
            os.close(go_write)
            action()
            os.write(done_write, b"x")
            os.read(go_read, 1)  # alive until the parent has looked
            code = 0
        finally:
            os._exit(code)
    os.close(done_write)
    os.close(go_read)
    try:
        assert os.read(done_read, 1) == b"x", "the child's action failed"
        yield pid
    finally:
        os.write(go_write, b"x")
        os.close(go_write)
        os.close(done_read)
        _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_live_child_holding_the_slot_keeps_it_until_it_ends(state):
    with live_child(lambda: state.claim_memory_recycle(os.getpid()) or sys.exit(1)) as pid:
        assert state.memory_recycle_holder() == pid
        assert state.claim_memory_recycle(os.getpid()) is False

    assert state.claim_memory_recycle(os.getpid()) is True
    state.release(os.getpid())


def test_release_frees_the_slot_for_another_live_process(state):
    with live_child(lambda: state.claim_memory_recycle(os.getpid())) as pid:
        assert state.claim_memory_recycle(os.getpid()) is False

        state.release(pid)  # what the master does when it reaps the worker

        assert state.claim_memory_recycle(os.getpid()) is True
    state.release(os.getpid())


def test_requests_served_add_up_across_workers_and_survive_their_exit(state):
    def serve(count: int):
        def action():
            slot = state.claim_worker_slot(os.getpid())
            state.set_requests(slot, count)

        return action

    with live_child(serve(7)) as first, live_child(serve(5)):
        assert state.requests_served() == 12
        state.release(first)  # reaped: its count is kept, its slot freed
        assert state.requests_served() == 12
    # the second ended without being released: its slot is reused, its count kept
    with live_child(serve(1)):
        assert state.requests_served() == 13


def test_guard_target_is_shared_and_released(state):
    state.mark_guard_target(4321)

    assert in_child(lambda: 0 if state.guard_target() == 4321 else 1) == 0

    state.release(1234)  # someone else: no change
    assert state.guard_target() == 4321
    state.release(4321)
    assert state.guard_target() == 0


def test_workers_are_the_processes_that_claimed_a_slot_not_every_child(state):
    def worker() -> None:
        state.claim_worker_slot(os.getpid())

    with live_child(worker) as booted, live_child(lambda: None):  # the second never claims: a re-executed master
        assert state.worker_pids() == [booted]
        assert in_child(lambda: 0 if state.worker_pids() == [booted] else 1) == 0
    assert state.worker_pids() == []  # it ended without being reaped by a master: not listed


def test_the_planned_worker_count_is_shared_with_workers(state):
    assert state.planned_workers() == 0
    state.set_planned_workers(3)

    assert in_child(state.planned_workers) == 3


def test_cut_counts_from_children_add_up_by_reason(state):
    def child() -> int:
        state.count_cuts({"slow_head": 2, "silent": 1})
        return 0

    assert in_child(child) == 0 and in_child(child) == 0
    state.count_cuts({"idle_at_cap": 3})

    assert state.cut_counts() == {"slow_head": 4, "silent": 2, "idle_at_cap": 3}


def test_draining_set_by_the_master_is_seen_by_a_worker_and_touches_no_other_field(state):
    state.set_planned_workers(3)
    state.count_cuts({"silent": 1})
    assert in_child(lambda: int(state.draining())) == 0

    state.set_draining()

    assert in_child(lambda: int(state.draining())) == 1
    assert state.planned_workers() == 3 and state.cut_counts()["silent"] == 1
