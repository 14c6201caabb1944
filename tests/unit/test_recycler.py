"""The worker recycler (fitflix.serving.recycler.WorkerRecycler) in this process, on its real /proc/self.

A budget far below this process's own size makes every read "over the
threshold"; a limit far above it keeps the hard cap out of reach unless a
test lowers it. The backstop's rlimit and the wake-up signal to the master
are recorded, never applied to the test runner.
"""

from __future__ import annotations

import os
import sys
import tracemalloc
from dataclasses import replace

import pytest

from fitflix.serving import backstop
from fitflix.serving import recycler as recycler_module
from fitflix.serving.recycler import WorkerRecycler
from fitflix.serving.sizing import make_plan
from fitflix.serving.state import SharedState
from fitflix.settings import Settings
from harness.wait import poll_until
from tests.fakes import FakeWorker, container, stop_recyclers


@pytest.fixture
def woken(monkeypatch):
    """The master wake-ups the recycler sends, recorded; the rlimit it would set, not set."""
    calls: list[int] = []
    monkeypatch.setattr(recycler_module, "wake_master", calls.append)
    monkeypatch.setattr(backstop, "set_data_limit", lambda limit: None)
    return calls  # tracemalloc, which a recycler starts past 90% of its threshold, is stopped by conftest


@pytest.fixture
def recyclers():
    """Make recyclers; their timeout-watch threads are stopped at teardown."""
    made: list[WorkerRecycler] = []

    def make(worker: FakeWorker, shared: SharedState | None, **settings) -> WorkerRecycler:
        plan = make_plan(
            Settings(**{"max_memory_mb": 64000, "worker_max_memory_mb": 16, **settings}), container(64000, 2)
        )
        recycler = WorkerRecycler(worker, plan, shared)
        recycler.started -= 10  # past the minimum lifetime
        made.append(recycler)
        return recycler

    yield make
    stop_recyclers(made)


def over_threshold(recycler: WorkerRecycler, requests: int = 40) -> None:
    for _ in range(requests):  # reads may be skipped a few requests at a time
        recycler.worker.nr += 1
        recycler.after_request()


def test_over_its_threshold_it_asks_for_a_replacement_and_serves_on(woken, recyclers):
    shared = SharedState()
    recycler = recyclers(FakeWorker(), shared)
    over_threshold(recycler)
    assert recycler.worker.alive is True
    assert recycler.waiting == "memory" and shared.surge_request() == os.getpid()
    assert woken == [-1]  # once, however many requests passed since
    assert recycler.exit_reason() == "memory"  # what it logs when the master's SIGTERM comes


def test_past_its_hard_cap_while_it_waits_it_stops_accepting_at_once(woken, recyclers):
    recycler = recyclers(FakeWorker(), SharedState())
    over_threshold(recycler)
    assert recycler.worker.alive is True
    recycler.limits = replace(recycler.limits, hard_cap_bytes=1)
    over_threshold(recycler, 1)
    assert recycler.worker.alive is False and recycler.reason == "memory"


def test_max_requests_becomes_the_recyclers_and_asks_for_a_replacement(woken, recyclers):
    worker = FakeWorker(max_requests=5)
    recycler = recyclers(worker, SharedState(), worker_max_memory_mb=60000)  # memory never in the way
    assert worker.max_requests == sys.maxsize  # gunicorn's own check can no longer stop it at once
    over_threshold(recycler, 4)
    assert recycler.waiting is None
    over_threshold(recycler, 1)
    assert recycler.waiting == "max_requests" and worker.alive is True and woken == [-1]
    assert recycler.exit_reason() == "max_requests"


def test_a_request_slot_held_by_another_worker_is_asked_for_again_after_the_next_request(woken, recyclers):
    shared = SharedState()
    assert shared.request_surge(os.getppid())  # a live process holds it
    recycler = recyclers(FakeWorker(), shared)
    over_threshold(recycler)
    assert recycler.waiting == "memory" and recycler.asked_at is None and woken == []
    shared.clear_surge_request(os.getppid())
    over_threshold(recycler, 1)
    assert recycler.asked_at is not None and shared.surge_request() == os.getpid() and woken == [-1]


def test_with_replace_first_off_it_stops_accepting_at_once(woken, recyclers):
    recycler = recyclers(FakeWorker(), SharedState(), recycle_replace_first=False)
    over_threshold(recycler)
    assert recycler.worker.alive is False and recycler.reason == "memory" and woken == []


def test_with_no_answer_from_the_master_it_leaves_on_its_own(woken, recyclers, monkeypatch):
    monkeypatch.setattr(recycler_module, "SURGE_WAIT_S", 0.2)
    recycler = recyclers(FakeWorker(), SharedState())
    over_threshold(recycler)
    assert recycler.worker.alive is True
    poll_until(lambda: recycler.worker.alive is False, 10, "the recycler to give up waiting")
    assert recycler.reason == "memory"


def test_past_ninety_percent_of_its_threshold_it_traces_allocations(woken, recyclers):
    assert not tracemalloc.is_tracing()  # conftest stops what an earlier test started
    recycler = recyclers(FakeWorker(), SharedState())
    assert recycler.growth.arming is None
    over_threshold(recycler)
    assert recycler.growth.arming is not None and tracemalloc.is_tracing()
