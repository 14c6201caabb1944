"""SharedState in one process: counts start at zero, reasons and slots are checked, reports kept and freed.

tests/live/test_state.py shares it across real forked processes."""

from __future__ import annotations

import os

import pytest

from fitflix.serving.state import REASONS, WORKER_SLOTS, SharedState


def test_counts_start_at_zero_and_leave_no_file_behind(state, tmp_path):
    assert state.recycle_counts() == dict.fromkeys(REASONS, 0)
    assert list(tmp_path.iterdir()) == []
    assert state.memory_recycle_holder() == 0
    assert state.guard_target() == 0


def test_an_unknown_reason_is_refused(state):
    with pytest.raises(ValueError):
        state.count_recycle("boredom")


def test_worker_slots_run_out_without_an_error(state):
    me = os.getpid()
    slots = [state.claim_worker_slot(me) for _ in range(WORKER_SLOTS)]
    assert sorted(slots) == list(range(WORKER_SLOTS))
    assert state.claim_worker_slot(me) is None


def test_what_a_worker_held_at_boot_is_kept_with_its_slot_and_goes_with_it(state):
    me, parent = os.getpid(), os.getppid()  # two live pids: a claimed slot stays theirs
    state.claim_worker_slot(me, boot_bytes=12 * 2**20)
    state.claim_worker_slot(parent)  # said nothing
    state.publish_memory(0, 30 * 2**20, peak=False)  # the memory report beside it is its own field
    assert state.boot_memory([me, parent, 1]) == {me: 12 * 2**20}
    state.release(me)
    assert state.boot_memory([me, parent]) == {}
    state.claim_worker_slot(me, boot_bytes=-5)  # never below 0: said nothing
    assert state.boot_memory([me]) == {}


def test_growth_reports_keep_the_last_few_newest_first_and_count_them_all():
    from fitflix.serving.state import GROWTH_SLOT_BYTES, GROWTH_SLOTS

    state = SharedState()
    assert state.growth_reports() == (0, [])
    for number in range(GROWTH_SLOTS + 2):
        state.add_growth_report(b'{"n": %d}' % number)
    written, reports = state.growth_reports()
    assert written == GROWTH_SLOTS + 2
    assert reports == [b'{"n": %d}' % n for n in range(GROWTH_SLOTS + 1, 1, -1)]
    state.add_growth_report(b"x" * (GROWTH_SLOT_BYTES * 2))  # cut to its slot, never into the next
    assert len(state.growth_reports()[1][0]) < GROWTH_SLOT_BYTES
    assert state.growth_reports()[1][1] == b'{"n": %d}' % (GROWTH_SLOTS + 1)


def test_the_surge_fields_are_freed_when_the_worker_is_reaped():
    state = SharedState()
    me = os.getpid()
    assert state.request_surge(me) and state.surge_request() == me
    state.set_surge_old(me)
    assert state.surge_old() == me
    state.release(me)
    assert state.surge_request() == 0
    state.set_surge_old(0)
    assert state.surge_old() == 0
