"""Pure decisions: when a worker leaves, which worker the guard takes, what to log.

The gunicorn hooks (`hooks.py`) and the master's monitor (`monitor.py`)
measure and act; every choice they make is a function here, tested on plain
numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from fitflix.memory.container import MIB
from fitflix.serving.sizing import MIN_WORKER_LIFETIME_S, THRESHOLD_JITTER_FRACTION, Plan

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
    # Its USS at boot. The minimum lifetime guards against a worker born at or near its threshold
    # flapping; one born far below it that has grown past it is a leak, whatever its age (a leak of
    # 100 MB/s crossed a 80 MB threshold at 0.4 s and met its hard cap before 2 s: always the urgent
    # path, never a replacement first; BENCHMARKS.md part 5). None: treated as born near it.
    boot_uss_bytes: int | None = None


# A worker born with less than this share of its threshold is not held back by the minimum lifetime.
BORN_FAR_BELOW_FRACTION = 0.5


def draw_threshold(budget_mb: int, draw: float) -> int:
    """A per-worker threshold in [budget x (1 - jitter), budget] bytes; `draw` is the worker's, in [0, 1)."""
    budget_bytes = budget_mb * MIB
    return int(budget_bytes * (1 - THRESHOLD_JITTER_FRACTION * draw))


def backstop_data_limit(data_bytes: int, uss_bytes: int, hard_cap_bytes: int, stack_allowance_bytes: int) -> int:
    """RLIMIT_DATA that lets this worker's private memory grow to its hard cap and no further.

    `data_bytes` already counts the heap inherited from the master; new
    private memory may add up to the hard cap less what is private now, plus
    the stacks of threads not started yet (they count as data too).
    """
    return data_bytes + max(hard_cap_bytes - uss_bytes, 0) + stack_allowance_bytes


def should_trim(rss_bytes: int, rss_at_last_read_bytes: int, trim_growth_bytes: int) -> bool:
    """HEAP_TRIM_MB: the worker grew at least that much since the last read (0: never trim)."""
    return trim_growth_bytes > 0 and rss_bytes - rss_at_last_read_bytes >= trim_growth_bytes


def _born_far_below(limits: WorkerLimits) -> bool:
    return (
        limits.boot_uss_bytes is not None and limits.boot_uss_bytes < limits.threshold_bytes * BORN_FAR_BELOW_FRACTION
    )


# --- the memory rules -------------------------------------------------------------------------
# After each request the recycler reads two cheap figures, RSS and the data segment (statm); the
# exact one, USS (smaps), costs far more. Each rule declares the cheap levels from which it may
# fire, and its verdict on the exact figures. The exact check runs once either figure reaches the
# lowest level any rule declared, and whole reads are skipped only while both figures are far
# below it. To add a rule: write a class with these two methods and add it to MEMORY_RULES; the
# recycler needs no change.


class ExactCheckLevels(NamedTuple):
    """Cheap figures from which a rule may fire; math.inf: a figure it does not watch."""

    rss_bytes: float = math.inf
    data_bytes: float = math.inf


class MemoryRule(Protocol):
    def levels(self, limits: WorkerLimits) -> ExactCheckLevels:
        """The RSS and data-segment size from which this rule may fire (RSS >= USS: a USS level is its RSS level)."""
        ...

    def verdict(self, uss_bytes: int, data_bytes: int, age_s: float, limits: WorkerLimits) -> str:
        """URGENT or RECYCLE when the rule fires on the exact figures, else KEEP."""
        ...


class HardCap:
    """Past its hard cap a worker leaves now, whatever its age and whatever other workers do."""

    def levels(self, limits: WorkerLimits) -> ExactCheckLevels:
        return ExactCheckLevels(rss_bytes=limits.hard_cap_bytes)

    def verdict(self, uss_bytes: int, data_bytes: int, age_s: float, limits: WorkerLimits) -> str:
        return URGENT if uss_bytes >= limits.hard_cap_bytes else KEEP


class NearDataLimit:
    """Near the backstop's RLIMIT_DATA a worker leaves now, before the backstop fails one of its requests."""

    def levels(self, limits: WorkerLimits) -> ExactCheckLevels:
        if limits.data_limit_bytes is None:
            return ExactCheckLevels()
        # A float, kept as it is: rounding it to whole bytes would move the edge by one.
        return ExactCheckLevels(data_bytes=limits.data_limit_bytes * DATA_LIMIT_RECYCLE_FRACTION)

    def verdict(self, uss_bytes: int, data_bytes: int, age_s: float, limits: WorkerLimits) -> str:
        if limits.data_limit_bytes is not None and data_bytes >= limits.data_limit_bytes * DATA_LIMIT_RECYCLE_FRACTION:
            return URGENT
        return KEEP


class OverThreshold:
    """Past its own threshold a worker is recycled, one at a time, once past its minimum lifetime.

    One born far below its threshold that has grown past it is a leak, whatever its age.
    """

    def levels(self, limits: WorkerLimits) -> ExactCheckLevels:
        return ExactCheckLevels(rss_bytes=limits.threshold_bytes)

    def verdict(self, uss_bytes: int, data_bytes: int, age_s: float, limits: WorkerLimits) -> str:
        if uss_bytes >= limits.threshold_bytes and (age_s >= limits.min_lifetime_s or _born_far_below(limits)):
            return RECYCLE
        return KEEP


MEMORY_RULES: tuple[MemoryRule, ...] = (HardCap(), NearDataLimit(), OverThreshold())

# Room past which the most requests are skipped (more room buys no more).
_MAX_SKIP_ROOM_BYTES = (MAX_SKIPPED_REQUESTS + 1) * SKIP_GROWTH_BYTES


def exact_check_levels(limits: WorkerLimits, rules: Sequence[MemoryRule] = MEMORY_RULES) -> ExactCheckLevels:
    """The lowest levels any rule declared: below both, no rule can fire.

    They change only with the limits: the recycler works them out once per limits, not per request.
    """
    rss_level = data_level = math.inf
    for rule in rules:
        levels = rule.levels(limits)
        rss_level = min(rss_level, levels.rss_bytes)
        data_level = min(data_level, levels.data_bytes)
    return ExactCheckLevels(rss_level, data_level)


def headroom_bytes(rss_bytes: int, data_bytes: int, levels: ExactCheckLevels) -> float:
    """How far the cheap figures are below the nearest level: 0 or less, some rule may fire and the exact check runs."""
    rss_level, data_level = levels
    return min(rss_level - rss_bytes, data_level - data_bytes)


def requests_within(room_bytes: float) -> int:
    """How many requests may pass before the next statm read, with `room_bytes` left below the nearest level.

    Far below every level a read every request buys nothing: allowing each
    skipped request to grow the worker by SKIP_GROWTH_BYTES, the worker
    cannot reach a level before the next read. Near one, every request is
    read. A request that grows more than that is what the hard cap, the
    data-segment backstop and the master's guard are for.
    """
    return max(0, int(min(room_bytes, _MAX_SKIP_ROOM_BYTES) // SKIP_GROWTH_BYTES) - 1)


def needs_exact_check(
    rss_bytes: int, data_bytes: int, limits: WorkerLimits, rules: Sequence[MemoryRule] = MEMORY_RULES
) -> bool:
    """Whether some rule may fire at these cheap figures; if not, smaps need not be read."""
    return headroom_bytes(rss_bytes, data_bytes, exact_check_levels(limits, rules)) <= 0


def requests_to_skip(
    rss_bytes: int, data_bytes: int, limits: WorkerLimits, rules: Sequence[MemoryRule] = MEMORY_RULES
) -> int:
    """How many requests may pass before the next statm read, given the room left below every rule's levels."""
    return requests_within(headroom_bytes(rss_bytes, data_bytes, exact_check_levels(limits, rules)))


def memory_verdict(
    uss_bytes: int, data_bytes: int, age_s: float, limits: WorkerLimits, rules: Sequence[MemoryRule] = MEMORY_RULES
) -> str:
    """KEEP, RECYCLE (gracefully, one worker at a time) or URGENT (gracefully, now): the gravest any rule says."""
    verdict = KEEP
    for rule in rules:
        said = rule.verdict(uss_bytes, data_bytes, age_s, limits)
        if said == URGENT:
            return URGENT
        if said == RECYCLE:
            verdict = RECYCLE
    return verdict


def hung_requests(started_at: dict[int, float], now: float, timeout_s: float) -> set[int]:
    """The threads whose request has been in flight longer than `timeout_s`."""
    return {thread for thread, started in started_at.items() if now - started > timeout_s}


def guard_pick(worker_uss_bytes: dict[int, int], busy_pid: int) -> int | None:
    """The worker holding the most private memory, unless one is already leaving."""
    if busy_pid or not worker_uss_bytes:
        return None
    return max(worker_uss_bytes, key=lambda pid: (worker_uss_bytes[pid], pid))


def reclaimable_bytes(worker_uss_bytes: dict[int, int], fresh_worker_uss_bytes: int) -> int:
    """What recycling every worker in turn could give back: each one's private memory less a fresh worker's."""
    return sum(max(uss - fresh_worker_uss_bytes, 0) for uss in worker_uss_bytes.values())


# The guard's pause after it acts, doubled after each action that could not
# help (a recycle that did not lower usage, or usage held outside the workers),
# up to the cap; back to the first pause when a recycle gives memory back.
GUARD_COOLDOWN_S = 5.0
GUARD_MAX_PAUSE_S = 60.0
# A recycle that lowered usage by less than this gave nothing back.
GUARD_MIN_GAIN_BYTES = MIB

OUTSIDE, FUTILE, EFFECTIVE = "outside", "futile", "effective"


@dataclass(frozen=True)
class GuardAction:
    clean_up: bool  # send every worker the cleanup signal (gc.collect + malloc_trim)
    target: int | None  # the worker to recycle gracefully
    change: str | None  # OUTSIDE, FUTILE or EFFECTIVE when what the guard knows changed: log it once


NO_ACTION = GuardAction(False, None, None)


class GuardPolicy:
    """What the master's guard does at CRITICAL: never recycle a worker in vain.

    It recycles only when recycling the workers can bring usage back under
    the critical level; it judges each recycle by the usage after it, and
    after one that did not lower usage, or while the memory is held outside
    the workers (another process in the cgroup, page cache, a new master
    booting), it waits longer each time. It reports a change of what it
    knows once (OUTSIDE or FUTILE, then EFFECTIVE when a recycle helps again).
    """

    def __init__(self, cooldown_s: float = GUARD_COOLDOWN_S, max_pause_s: float = GUARD_MAX_PAUSE_S) -> None:
        self.cooldown_s = cooldown_s
        self.max_pause_s = max_pause_s
        self.pause_s = cooldown_s
        self.last_act: float | None = None
        self.used_before_recycle: int | None = None  # set while a recycle awaits its verdict
        self.outside = False
        self.fresh_worker_uss_bytes: int | None = None  # the smallest worker USS seen: what a new worker holds

    def observe(self, worker_uss: dict[int, int]) -> None:
        """Every sample, whatever the status: a worker seen small tells what a fresh worker holds."""
        if worker_uss:
            smallest = min(worker_uss.values())
            if self.fresh_worker_uss_bytes is None or smallest < self.fresh_worker_uss_bytes:
                self.fresh_worker_uss_bytes = smallest

    def calm(self) -> None:
        """Usage is under the critical level again: the next CRITICAL starts with the first pause."""
        self.pause_s = self.cooldown_s
        self.used_before_recycle = None

    def _back_off(self) -> None:
        self.pause_s = min(self.pause_s * 2, self.max_pause_s)

    def _change(self, outside: bool, change: str) -> str | None:
        if outside == self.outside:
            return None
        self.outside = outside
        return change

    def step(
        self, now: float, used_bytes: int, critical_bytes: int, worker_uss: dict[int, int], busy_pid: int
    ) -> GuardAction:
        """The action for one CRITICAL sample; `busy_pid` is a worker already leaving (0 for none)."""
        if self.last_act is not None and now - self.last_act < self.pause_s:
            return NO_ACTION
        self.last_act = now
        if busy_pid:
            return GuardAction(True, None, None)  # let the leaving worker go before judging anything
        change = None
        if self.used_before_recycle is not None:
            gained = self.used_before_recycle - used_bytes
            self.used_before_recycle = None
            if gained < GUARD_MIN_GAIN_BYTES:
                self._back_off()
                change = self._change(True, FUTILE)
            else:
                self.pause_s = self.cooldown_s
                change = self._change(False, EFFECTIVE)
        reclaimable = reclaimable_bytes(worker_uss, self.fresh_worker_uss_bytes or 0)
        if used_bytes - reclaimable >= critical_bytes:
            self._back_off()
            return GuardAction(True, None, change or self._change(True, OUTSIDE))
        target = guard_pick(worker_uss, 0)
        if target is not None:
            self.used_before_recycle = used_bytes
        return GuardAction(True, target, change)


def threshold_bytes(limit_bytes: int, plan: Plan) -> tuple[int, int]:
    """The warning and critical levels in bytes: the plan's percentages of the limit, rounded down."""
    return limit_bytes * plan.warn_percent // 100, limit_bytes * plan.critical_percent // 100


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

    def usage_due_in(self, now: float) -> float:
        """Seconds until the next usage line (0 when it is due)."""
        if self.last_usage_log is None:
            return 0.0
        return max(self.last_usage_log + self.interval_s - now, 0.0)

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
