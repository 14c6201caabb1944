"""A process that ended reads as None on a host without /proc: a real child, forked and reaped."""

from __future__ import annotations

import os

from fitflix.memory.reader import (
    read_process_memory,
)
from tests.fakes import (
    FakePsutil,
    fallbacks,
)


def test_a_process_that_ended_is_none_without_proc(no_proc):
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    assert read_process_memory(child, no_proc, fallbacks(FakePsutil({}))) is None
