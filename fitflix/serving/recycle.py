"""Pure decisions: when a worker leaves, which worker the guard takes, what to log.

The gunicorn hooks (`hooks.py`) and the master's monitor (`watchdog.py`)
measure and act; every choice they make is a function here, tested on plain
numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fitflix.serving.sizing import MIB, MIN_WORKER_LIFETIME_S, THRESHOLD_JITTER_FRACTION

KEEP, RECYCLE, URGENT = "keep", "recycle", "urgent"

# Fraction of the data-segment rlimit past which a worker leaves before the
# backstop can fail one of its requests (freed-but-mapped heap grows VmData).
DATA_LIMIT_RECYCLE_FRACTION = 0.9

# Between statm reads, each request is assumed to grow the worker by at most
# this much, and at most this many requests go unread. A read costs ~8 us in a
# busy worker (cold caches), 1.6% of a /health request: reading one request in
# 32 far from the threshold brings it near zero (BENCHMARKS.md, part 2).
SKIP_GROWTH_BYTES = 8 * MIB
MAX_SKIPPED_REQUESTS = 31


@dataclass(frozen=True)
class WorkerLimits:
    threshold_bytes: int  # this worker's own soft level (USS), drawn once per worker
    hard_cap_bytes: int  # past this: recycle at once, whatever other workers do
    data_limit_bytes: int | None  # the backstop's RLIMIT_DATA, when set
    min_lifetime_s: float = MIN_WORKER_LIFETIME_S


def draw_threshold(budget_mb: int, rng: random.Random) -> int:
    """A per-worker threshold in [budget x (1 - jitter), budget] bytes."""
    budget_bytes = budget_mb * MIB
    return int(budget_bytes * (1 - THRESHOLD_JITTER_FRACTION * rng.random()))


def backstop_data_limit(data_bytes: int, uss_bytes: int, hard_cap_bytes: int, stack_allowance_bytes: int) -> int:
    """RLIMIT_DATA that lets this worker's private memory grow to its hard cap and no further.

    `data_bytes` already counts the heap inherited from the master; new
    private memory may add up to the hard cap less what is private now, plus
    the stacks of threads not started yet (they count as data too).
    """
    return data_bytes + max(hard_cap_bytes - uss_bytes, 0) + stack_allowance_bytes


def needs_exact_check(rss_bytes: int, data_bytes: int, limits: WorkerLimits) -> bool:
    """RSS >= USS always: below the threshold, USS is too, and smaps need not be read."""
    if limits.data_limit_bytes is not None and data_bytes >= limits.data_limit_bytes * DATA_LIMIT_RECYCLE_FRACTION:
        return True
    return rss_bytes >= limits.threshold_bytes


def requests_to_skip(rss_bytes: int, data_bytes: int, limits: WorkerLimits) -> int:
    """How many requests may pass before the next statm read, given the room left.

    Far below the threshold a read every request buys nothing: allowing each
    skipped request to grow the worker by SKIP_GROWTH_BYTES, the worker
    cannot reach its threshold before the next read. Near it, every request
    is read. A request that grows more than that is what the hard cap, the
    data-segment backstop and the master's guard are for.
    """
    room = limits.threshold_bytes - rss_bytes
    if limits.data_limit_bytes is not None:
        room = min(room, int(limits.data_limit_bytes * DATA_LIMIT_RECYCLE_FRACTION) - data_bytes)
    return max(0, min(MAX_SKIPPED_REQUESTS, room // SKIP_GROWTH_BYTES - 1))


def memory_verdict(uss_bytes: int, data_bytes: int, age_s: float, limits: WorkerLimits) -> str:
    """KEEP, RECYCLE (gracefully, one worker at a time) or URGENT (gracefully, now)."""
    if uss_bytes >= limits.hard_cap_bytes:
        return URGENT
    if limits.data_limit_bytes is not None and data_bytes >= limits.data_limit_bytes * DATA_LIMIT_RECYCLE_FRACTION:
        return URGENT
    if uss_bytes >= limits.threshold_bytes and age_s >= limits.min_lifetime_s:
        return RECYCLE
    return KEEP


def hung_requests(started_at: dict[int, float], now: float, timeout_s: float) -> set[int]:
    """The threads whose request has been in flight longer than `timeout_s`."""
    return {thread for thread, started in started_at.items() if now - started > timeout_s}


def guard_pick(worker_uss_bytes: dict[int, int], busy_pid: int) -> int | None:
    """The worker holding the most private memory, unless one is already leaving."""
    if busy_pid or not worker_uss_bytes:
        return None
    return max(worker_uss_bytes, key=lambda pid: (worker_uss_bytes[pid], pid))


def memory_status(used_percent: float | None, warn_percent: int, critical_percent: int) -> str:
    """OK, WARNING or CRITICAL for a share of the limit."""
    if used_percent is None:
        return "OK"
    if used_percent >= critical_percent:
        return "CRITICAL"
    if used_percent >= warn_percent:
        return "WARNING"
    return "OK"


class MonitorLogPolicy:
    """When the master's monitor logs: usage every interval, alerts once per state change.

    An alert (WARNING, CRITICAL, or back to OK after one) is logged when the
    status changes, and each status at most once per interval: a status
    flapping around a threshold every second gives a line per interval, not
    one per second, while an escalation to CRITICAL is never held back by a
    WARNING logged just before it.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last_usage_log: float | None = None
        self.last_alert_log: dict[str, float] = {}
        self.reported_status = "OK"

    def step(self, now: float, status: str) -> tuple[bool, bool]:
        """(log the usage line now, log an alert for `status` now)."""
        log_usage = self.last_usage_log is None or now - self.last_usage_log >= self.interval_s
        if log_usage:
            self.last_usage_log = now
        last = self.last_alert_log.get(status)
        log_alert = status != self.reported_status and (last is None or now - last >= self.interval_s)
        if log_alert:
            self.last_alert_log[status] = now
            self.reported_status = status
        return log_usage, log_alert
