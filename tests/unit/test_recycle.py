"""The pure recycle decisions in fitflix.serving.recycle, on plain numbers."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from fitflix.memory.container import MIB
from fitflix.serving.recycle import (
    DATA_LIMIT_RECYCLE_FRACTION,
    KEEP,
    MAX_SKIPPED_REQUESTS,
    RECYCLE,
    SKIP_GROWTH_BYTES,
    URGENT,
    MonitorLogPolicy,
    WorkerLimits,
    backstop_data_limit,
    draw_threshold,
    guard_pick,
    memory_status,
    memory_verdict,
    needs_exact_check,
    requests_to_skip,
)
from fitflix.serving.sizing import MIN_WORKER_LIFETIME_S

LIMITS = WorkerLimits(threshold_bytes=300 * MIB, hard_cap_bytes=400 * MIB, data_limit_bytes=1000 * MIB)
NO_DATA_LIMIT = WorkerLimits(threshold_bytes=300 * MIB, hard_cap_bytes=400 * MIB, data_limit_bytes=None)
DATA_EDGE = int(1000 * MIB * DATA_LIMIT_RECYCLE_FRACTION)


@pytest.mark.parametrize("budget_mb", [16, 90, 361, 2000])
def test_draw_threshold_stays_within_the_jitter_band(budget_mb):
    budget_bytes = budget_mb * MIB
    thresholds = [draw_threshold(budget_mb, random.Random(seed).random()) for seed in range(500)]

    assert all(budget_bytes * 0.9 <= threshold <= budget_bytes for threshold in thresholds)
    # spread over the band, not stuck at one end
    assert min(thresholds) < budget_bytes * 0.92 and max(thresholds) > budget_bytes * 0.98


def test_draw_threshold_spreads_the_workers_draws_and_the_budget_is_its_top():
    assert draw_threshold(361, 0.0) == 361 * MIB  # the whole budget at one end of the band
    assert draw_threshold(361, 0.25) > draw_threshold(361, 0.75)
    assert len({draw_threshold(361, random.Random(seed).random()) for seed in range(50)}) > 40


@pytest.mark.parametrize(
    ("data_bytes", "uss_bytes", "hard_cap_bytes", "stack_bytes", "expected"),
    [
        (100 * MIB, 20 * MIB, 400 * MIB, 64 * MIB, 100 * MIB + 380 * MIB + 64 * MIB),
        (100 * MIB, 400 * MIB, 400 * MIB, 8 * MIB, 108 * MIB),  # at the cap: no room to grow
        (100 * MIB, 500 * MIB, 400 * MIB, 8 * MIB, 108 * MIB),  # past the cap: never below data + stacks
        (0, 0, 0, 0, 0),
    ],
)
def test_backstop_data_limit(data_bytes, uss_bytes, hard_cap_bytes, stack_bytes, expected):
    assert backstop_data_limit(data_bytes, uss_bytes, hard_cap_bytes, stack_bytes) == expected


@pytest.mark.parametrize(
    ("rss_bytes", "data_bytes", "limits", "expected"),
    [
        (100 * MIB, 100 * MIB, LIMITS, False),
        (300 * MIB - 1, 100 * MIB, LIMITS, False),
        (300 * MIB, 100 * MIB, LIMITS, True),
        (900 * MIB, 100 * MIB, LIMITS, True),
        (100 * MIB, DATA_EDGE - 1, LIMITS, False),
        (100 * MIB, DATA_EDGE, LIMITS, True),  # near the backstop, whatever the RSS says
        (100 * MIB, 10**12, NO_DATA_LIMIT, False),
        (300 * MIB, 0, NO_DATA_LIMIT, True),
    ],
)
def test_needs_exact_check(rss_bytes, data_bytes, limits, expected):
    assert needs_exact_check(rss_bytes, data_bytes, limits) is expected


OLD = MIN_WORKER_LIFETIME_S + 10
YOUNG = MIN_WORKER_LIFETIME_S / 2


@pytest.mark.parametrize(
    ("uss_bytes", "data_bytes", "age_s", "limits", "expected"),
    [
        pytest.param(100 * MIB, 100 * MIB, OLD, LIMITS, KEEP, id="below threshold"),
        pytest.param(300 * MIB - 1, 100 * MIB, OLD, LIMITS, KEEP, id="just below threshold"),
        pytest.param(300 * MIB, 100 * MIB, OLD, LIMITS, RECYCLE, id="at threshold"),
        pytest.param(350 * MIB, 100 * MIB, OLD, LIMITS, RECYCLE, id="past threshold"),
        pytest.param(350 * MIB, 100 * MIB, YOUNG, LIMITS, KEEP, id="past threshold but too young"),
        pytest.param(350 * MIB, 100 * MIB, MIN_WORKER_LIFETIME_S, LIMITS, RECYCLE, id="exactly old enough"),
        pytest.param(
            350 * MIB, 100 * MIB, YOUNG, replace(LIMITS, boot_uss_bytes=149 * MIB), RECYCLE, id="young, but it grew"
        ),
        pytest.param(
            350 * MIB, 100 * MIB, YOUNG, replace(LIMITS, boot_uss_bytes=150 * MIB), KEEP, id="young, born near it"
        ),
        pytest.param(400 * MIB, 100 * MIB, OLD, LIMITS, URGENT, id="at hard cap"),
        pytest.param(450 * MIB, 100 * MIB, YOUNG, LIMITS, URGENT, id="past hard cap even when young"),
        pytest.param(450 * MIB, 100 * MIB, 0.0, NO_DATA_LIMIT, URGENT, id="past hard cap without data limit"),
        pytest.param(100 * MIB, DATA_EDGE, OLD, LIMITS, URGENT, id="near the data limit"),
        pytest.param(100 * MIB, DATA_EDGE, YOUNG, LIMITS, URGENT, id="near the data limit even when young"),
        pytest.param(100 * MIB, DATA_EDGE - 1, OLD, LIMITS, KEEP, id="just short of the data edge"),
        pytest.param(100 * MIB, 10**12, OLD, NO_DATA_LIMIT, KEEP, id="no data limit: data ignored"),
    ],
)
def test_memory_verdict(uss_bytes, data_bytes, age_s, limits, expected):
    assert memory_verdict(uss_bytes, data_bytes, age_s, limits) == expected


@pytest.mark.parametrize(
    ("worker_uss", "busy_pid", "expected"),
    [
        ({101: 50 * MIB, 102: 90 * MIB, 103: 70 * MIB}, 0, 102),
        ({101: 50 * MIB}, 0, 101),
        ({101: 50 * MIB, 102: 90 * MIB}, 101, None),  # one is already leaving
        ({101: 50 * MIB, 102: 90 * MIB}, 999, None),
        ({}, 0, None),
        ({101: 80 * MIB, 205: 80 * MIB}, 0, 205),  # a tie goes the same way every time
    ],
)
def test_guard_pick(worker_uss, busy_pid, expected):
    assert guard_pick(worker_uss, busy_pid) == expected


@pytest.mark.parametrize(
    ("used_percent", "expected"),
    [
        (None, "OK"),
        (0.0, "OK"),
        (79.99, "OK"),
        (80.0, "WARNING"),
        (89.99, "WARNING"),
        (90.0, "CRITICAL"),
        (100.0, "CRITICAL"),
        (140.0, "CRITICAL"),
    ],
)
def test_memory_status(used_percent, expected):
    assert memory_status(used_percent, 80, 90) == expected


def test_memory_status_with_other_levels():
    assert memory_status(69.0, 70, 95) == "OK"
    assert memory_status(94.0, 70, 95) == "WARNING"
    assert memory_status(95.0, 70, 95) == "CRITICAL"


def _alerts(policy: MonitorLogPolicy, steps: list[tuple[float, str]]) -> list[tuple[float, str]]:
    return [(now, status) for now, status in steps if policy.step(now, status)[1]]


def test_usage_line_once_per_interval():
    policy = MonitorLogPolicy(interval_s=60)

    logged = [now for now in range(0, 181) if policy.step(float(now), "OK")[0]]

    assert logged == [0, 60, 120, 180]


def test_steady_ok_never_alerts():
    policy = MonitorLogPolicy(interval_s=60)

    assert _alerts(policy, [(float(now), "OK") for now in range(300)]) == []


def test_an_alert_once_per_state_change():
    policy = MonitorLogPolicy(interval_s=60)
    steps = [(float(now), "OK") for now in range(10)]
    steps += [(float(now), "WARNING") for now in range(10, 100)]

    assert _alerts(policy, steps) == [(10.0, "WARNING")]


def test_escalation_right_after_a_warning_is_logged_at_once():
    policy = MonitorLogPolicy(interval_s=60)

    alerts = _alerts(policy, [(0.0, "OK"), (1.0, "WARNING"), (2.0, "CRITICAL"), (3.0, "CRITICAL")])

    assert alerts == [(1.0, "WARNING"), (2.0, "CRITICAL")]


def test_straight_to_critical_is_logged():
    policy = MonitorLogPolicy(interval_s=60)

    assert _alerts(policy, [(0.0, "OK"), (1.0, "CRITICAL")]) == [(1.0, "CRITICAL")]


def test_recovery_to_ok_is_logged():
    policy = MonitorLogPolicy(interval_s=60)

    alerts = _alerts(policy, [(0.0, "WARNING"), (5.0, "CRITICAL"), (30.0, "OK"), (31.0, "OK")])

    assert alerts == [(0.0, "WARNING"), (5.0, "CRITICAL"), (30.0, "OK")]


@pytest.mark.parametrize(("low", "high"), [("OK", "WARNING"), ("WARNING", "CRITICAL"), ("OK", "CRITICAL")])
def test_a_status_flapping_every_second_logs_at_most_once_per_status_per_interval(low, high):
    interval_s = 60
    policy = MonitorLogPolicy(interval_s=interval_s)
    steps = [(float(now), high if now % 2 else low) for now in range(0, 600)]

    alerts = _alerts(policy, steps)

    assert alerts, "the first change must be logged"
    for status in (low, high):
        times = [now for now, alerted in alerts if alerted == status]
        assert all(later - earlier >= interval_s for earlier, later in zip(times, times[1:], strict=False)), times
    # a line per interval at most for each of the two statuses, not one per second
    assert len(alerts) <= 2 * (600 // interval_s + 1)


def test_a_status_held_back_by_the_interval_is_logged_when_it_lasts():
    policy = MonitorLogPolicy(interval_s=60)
    steps = [(0.0, "WARNING"), (1.0, "OK"), (2.0, "WARNING")]  # the second WARNING is held back
    steps += [(float(now), "WARNING") for now in range(3, 70)]

    alerts = _alerts(policy, steps)

    assert alerts == [(0.0, "WARNING"), (1.0, "OK"), (60.0, "WARNING")]


@pytest.mark.parametrize(
    ("rss_mb", "data_mb", "data_limit_mb", "skipped"),
    [
        (30, 60, None, MAX_SKIPPED_REQUESTS),  # far below: the most
        (300, 60, None, 2),  # 330 - 300 = 30 MB of room: 30 // 8 - 1
        (322, 60, None, 0),  # less than one request's allowance left: read every request
        (340, 60, None, 0),  # past the threshold already
        (30, 460, 600, 9),  # the data segment is the closer limit: 540 - 460 = 80 MB of room
    ],
)
def test_requests_to_skip_shrinks_with_the_room_left(rss_mb, data_mb, data_limit_mb, skipped):
    limits = WorkerLimits(330 * MIB, 400 * MIB, None if data_limit_mb is None else data_limit_mb * MIB)
    assert requests_to_skip(rss_mb * MIB, data_mb * MIB, limits) == skipped


def test_no_request_can_cross_the_threshold_unread_at_the_assumed_growth():
    limits = WorkerLimits(330 * MIB, 400 * MIB, None)
    for rss_mb in range(0, 330):
        skipped = requests_to_skip(rss_mb * MIB, 0, limits)
        # the skipped requests and the next (read) one, each growing by the allowance, stay below the threshold
        assert skipped == 0 or rss_mb * MIB + (skipped + 1) * SKIP_GROWTH_BYTES <= limits.threshold_bytes


@pytest.mark.parametrize(
    ("rss_mb", "last_mb", "trim_mb", "expected"),
    [
        (100, 96, 4, True),  # grew exactly the threshold
        (100, 97, 4, False),  # grew less
        (90, 100, 4, False),  # shrank
        (500, 10, 0, False),  # HEAP_TRIM_MB=0: never
    ],
)
def test_should_trim_after_growth_of_at_least_heap_trim_mb(rss_mb, last_mb, trim_mb, expected):
    from fitflix.serving.recycle import should_trim

    assert should_trim(rss_mb * MIB, last_mb * MIB, trim_mb * MIB) is expected
