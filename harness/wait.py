"""Waiting for a state: poll it against a deadline, never a fixed sleep."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _time_scale() -> float:
    text = os.environ.get("FITFLIX_TIME_SCALE", "1")
    try:
        scale = float(text)
    except ValueError:
        scale = 0.0
    if not 1 <= scale <= 100:
        raise ValueError(f"FITFLIX_TIME_SCALE={text!r}: a number from 1 to 100 (how many times slower this host is)")
    return scale


# Every deadline stretches by this on a host known to be slow: scripts/test-v2 sets it in its guest, which
# runs under qemu's software emulation (gunicorn takes about 20 s to boot a worker there, 1.5 s here).
# Deadlines only, never sleeps: a state that comes early is still seen at once.
TIME_SCALE = _time_scale()


class Timeout(AssertionError):
    pass


def poll_until(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.02) -> T:
    """Call `check` until it returns something truthy; raise Timeout naming `what` at the deadline."""
    timeout_s *= TIME_SCALE
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout_s:.1f}s waiting for {what}")
        time.sleep(interval_s)  # the poll interval, not a wait for a state
