"""SIGTERM drains: `Drain` on a stand-in arbiter starts the drain and ends in gunicorn's own stop.

tests/live/test_drain.py sends real signals to real gunicorn."""

from __future__ import annotations

import queue
import signal
from types import SimpleNamespace

import pytest

from fitflix.serving.drain import Drain
from fitflix.serving.state import SharedState


class Arbiter:
    """What Drain uses of gunicorn's arbiter: its signal queue, log and config."""

    def __init__(self) -> None:
        self.SIG_QUEUE = queue.SimpleQueue()
        self.log = SimpleNamespace(info=lambda *args: None)
        self.cfg = SimpleNamespace(graceful_timeout=20)


def test_sigterm_starts_a_drain_and_the_drain_ends_in_gunicorns_stop(tmp_path):
    arbiter, shared = Arbiter(), SharedState(str(tmp_path))
    drain = Drain(arbiter, lambda: 60, shared)

    drain.handle_term()  # no StopIteration: the arbiter carries on serving
    assert shared.draining()
    drain.handle_term()  # a second SIGTERM changes nothing
    assert arbiter.SIG_QUEUE.empty()

    drain.timer.cancel()
    drain.end()  # what the timer does after DRAIN_S
    assert arbiter.SIG_QUEUE.get_nowait() == signal.SIGTERM
    with pytest.raises(StopIteration):
        drain.handle_term()


def test_drain_s_0_stops_at_once_and_still_tells_workers_to_take_the_backlog(tmp_path):
    shared = SharedState(str(tmp_path))
    with pytest.raises(StopIteration):
        Drain(Arbiter(), lambda: 0, shared).handle_term()
    assert shared.draining()
