"""The overlap of replace-then-retire, on plain numbers (fitflix.serving.overlap)."""

from __future__ import annotations

import pytest

from fitflix.serving.overlap import (
    HOLD,
    MIN_MARGIN_BYTES,
    REACTION_S,
    RELEASE,
    RETIRE_NOW,
    TIMINGS_TTL_S,
    OverlapWatch,
    expected_s,
    forecast,
    margin_bytes,
    rate_between,
)
from tests.fakes import MIB

CRITICAL = 460 * MIB
FRESH = 16 * MIB


def test_the_forecast_adds_both_workers_growth_a_fresh_worker_and_the_requests_in_flight():
    outlook = forecast(
        used_bytes=370 * MIB,
        rate_bytes_per_s=180 * MIB,
        per_request_bytes=1 * MIB,
        threads=8,
        fresh_bytes=FRESH,
        boot_s=0.1,
        handover_s=0.2,
        critical_bytes=CRITICAL,
    )
    # The old worker grows 18 MB while its replacement boots, the replacement 36 MB while the old one leaves.
    assert outlook.old_growth_bytes == pytest.approx(18 * MIB)
    assert outlook.new_growth_bytes == pytest.approx(36 * MIB)
    assert outlook.in_flight_bytes == 8 * MIB
    assert outlook.peak_bytes == pytest.approx((370 + 18 + 16 + 36 + 8) * MIB)
    assert outlook.fits
    assert "448.0MB, within the critical level of 460.0MB" in outlook.text()


def test_the_issues_case_a_fresh_worker_fit_but_the_overlap_does_not():
    """Issue 32's log: 266 MB used + 16 MB for a fresh worker fitted; the leak's 180 MB a second did not."""
    at_the_fast_rate = forecast(400 * MIB, 180 * MIB, 1 * MIB, 8, FRESH, 0.1, 0.25, CRITICAL)
    standing_still = forecast(400 * MIB, 0, 0, 8, FRESH, 0.1, 0.25, CRITICAL)
    assert standing_still.fits and not at_the_fast_rate.fits
    assert "past the critical level" in at_the_fast_rate.text()


def test_a_negative_rate_or_growth_counts_as_none():
    outlook = forecast(100 * MIB, -5 * MIB, -1 * MIB, 0, FRESH, 1.0, 1.0, CRITICAL)
    assert outlook.peak_bytes == 116 * MIB


def test_the_margin_covers_the_reaction_time_and_a_request_per_thread_and_never_less_than_the_least():
    assert margin_bytes(0, 0, 1) == MIN_MARGIN_BYTES
    assert margin_bytes(200 * MIB, 1 * MIB, 32) == int(200 * MIB * REACTION_S) + 32 * MIB


@pytest.mark.parametrize(
    ("measured", "now", "expected"),
    [
        ([], 100.0, 0.15),  # nothing measured: the default
        ([(90.0, 0.1), (95.0, 0.3), (99.0, 0.2)], 100.0, 0.3),  # the slowest recent one
        ([(10.0, 2.0), (99.0, 0.2)], 100.0, 0.2),  # a slow one long ago no longer counts
        ([(10.0, 2.0)], 10.0 + TIMINGS_TTL_S + 1, 0.15),
        ([(95.0, 9.0), (96.0, 0.1), (97.0, 0.1), (98.0, 0.1), (99.0, 0.1)], 100.0, 0.1),  # only the last four
    ],
)
def test_expected_timings(measured, now, expected):
    assert expected_s(measured, now, 0.15) == expected


def test_a_rate_needs_samples_far_enough_apart():
    assert rate_between(None, (1.0, 10)) is None
    assert rate_between((1.0, 0), (1.1, 10 * MIB)) is None
    assert rate_between((1.0, 0), (1.5, 10 * MIB)) == 20 * MIB
    assert rate_between((1.0, 10 * MIB), (2.0, 0)) == 0  # it shrank: no growth


def watch(rate=0.0, per_request=0.0, threads=1) -> OverlapWatch:
    return OverlapWatch(1234, CRITICAL, FRESH, rate, per_request, threads)


def test_while_the_replacement_boots_the_old_worker_is_retired_early_once_near_the_critical_level():
    overlap = watch()
    level = overlap.level_bytes()
    assert level == CRITICAL - MIN_MARGIN_BYTES
    assert overlap.step(0.0, level - FRESH - 1, booting=True, retiring=False) is None
    # The replacement's own boot is still to come: it counts before it is there.
    assert overlap.step(0.02, level - FRESH, booting=True, retiring=False) == RETIRE_NOW
    assert overlap.step(0.04, level + 1, booting=True, retiring=False) == RETIRE_NOW  # asked again: a no-op


def test_once_the_old_worker_retires_the_others_hold_near_the_level_and_are_released_below_it():
    overlap = watch()
    level = overlap.level_bytes()
    # Looks far apart in time: the usage's own growth rate stays too small to move the level.
    assert overlap.step(0.0, level - 1, booting=False, retiring=True) is None
    assert overlap.step(100.0, level, booting=False, retiring=True) == HOLD
    assert overlap.step(200.0, level + 10 * MIB, booting=False, retiring=True) is None  # already holding
    assert overlap.step(300.0, level - 1, booting=False, retiring=True) is None  # not far enough below
    assert overlap.step(400.0, level - 2 * MIN_MARGIN_BYTES, booting=False, retiring=True) == RELEASE
    assert overlap.holds == 1 and overlap.peak_bytes == level + 10 * MIB


def test_a_replacement_still_booting_counts_its_fresh_memory_when_the_old_worker_retired_early():
    overlap = watch()
    level = overlap.level_bytes()
    assert overlap.step(0.0, level - FRESH, booting=True, retiring=True) == HOLD


def test_growth_seen_during_the_overlap_widens_the_margin():
    overlap = watch(rate=0.0)
    before = overlap.level_bytes()
    overlap.step(0.0, 300 * MIB, booting=False, retiring=True)
    overlap.step(0.02, 310 * MIB, booting=False, retiring=True)  # one look to the next: too close to say
    assert overlap.rate_bytes_per_s == 0
    overlap.step(0.1, 320 * MIB, booting=False, retiring=True)  # 200 MB a second
    assert overlap.rate_bytes_per_s == pytest.approx(200 * MIB)
    assert overlap.level_bytes() == CRITICAL - int(200 * MIB * REACTION_S)
    assert overlap.level_bytes() < before


def test_the_working_set_is_needed_only_where_the_usage_and_what_is_to_come_reach_the_level():
    overlap = watch()
    level = overlap.level_bytes()
    assert not overlap.needs_working_set(level - 1, booting=False)
    assert overlap.needs_working_set(level, booting=False)
    assert overlap.needs_working_set(level - FRESH, booting=True)  # the booting replacement's memory is to come
    assert not overlap.needs_working_set(level - FRESH - 1, booting=True)


def test_the_rate_is_measured_on_the_usage_read_at_every_look_whichever_figure_is_judged():
    overlap = watch(rate=0.0)
    overlap.step(0.0, 300 * MIB, booting=False, retiring=True, usage_bytes=300 * MIB)
    # Near the level the working set is judged, below the usage by the page cache: that drop is no shrink
    # and the rise back no growth; the usage's own 100 MB a second is the rate.
    overlap.step(0.2, 250 * MIB, booting=False, retiring=True, usage_bytes=320 * MIB)
    assert overlap.rate_bytes_per_s == pytest.approx(100 * MIB)
    overlap.step(0.4, 340 * MIB, booting=False, retiring=True, usage_bytes=340 * MIB)
    assert overlap.rate_bytes_per_s == pytest.approx(100 * MIB)


def test_the_room_is_what_is_left_below_the_critical_level():
    assert watch().room_bytes(400 * MIB) == 60 * MIB
    assert watch().room_bytes(500 * MIB) == -40 * MIB
