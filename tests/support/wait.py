"""Waiting for a state: poll it against a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Timeout(AssertionError):
    pass


def poll_until(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.02) -> T:
    """Call `check` until it returns something truthy; raise Timeout naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout_s:.1f}s waiting for {what}")
        time.sleep(interval_s)  # the poll interval, not a wait for a state
