"""Part 5's arithmetic: each recycle as the clients saw it, its gap, the windows around it, its targets (no servers)."""

from __future__ import annotations

import pytest

from bench.load import Sample
from bench.recycle import (
    Handover,
    Measured,
    added_ms,
    handovers,
    quiet_windows,
    recycle_windows,
    spread,
    surge_targets,
)


def answer(end_s: float, pid: int | None, latency_s: float = 0.002, status: int | None = 200) -> Sample:
    return Sample(end_s - latency_s, end_s, status, None if status else "RemoteDisconnected", True, pid)


def test_one_worker_after_another_leaves_a_positive_gap():
    samples = [answer(1.00, 10), answer(1.01, 10), answer(1.05, 11), answer(1.06, 11), answer(2.00, 12)]
    first, second = handovers(samples)
    assert (first.old_pid, first.new_pid, first.old_last_s, first.new_first_s) == (10, 11, 1.01, 1.05)
    assert first.gap_s == pytest.approx(0.04)
    assert (second.old_pid, second.new_pid) == (11, 12)
    assert second.gap_s == pytest.approx(0.94)


def test_workers_that_answer_side_by_side_give_a_negative_gap():
    # Replace first: the new worker's first answer comes before the old one's last.
    samples = [answer(1.00, 10), answer(1.02, 11), answer(1.03, 10), answer(1.04, 11)]
    (event,) = handovers(samples)
    assert (event.old_pid, event.new_pid) == (10, 11)
    assert event.gap_s == pytest.approx(-0.01)
    assert (event.start_s, event.end_s) == (1.02, 1.03)


def test_failed_requests_and_answers_without_a_pid_are_no_worker():
    samples = [answer(1.0, 10), answer(1.1, None, status=None), answer(1.2, None), answer(1.3, 11)]
    (event,) = handovers(samples)
    assert (event.old_last_s, event.new_first_s) == (1.0, 1.3)
    assert handovers([answer(1.0, 10), answer(1.1, 10)]) == []


def test_the_windows_around_recycles_and_the_quiet_ones_between_them():
    events = [Handover(10, 11, 1.0, 1.05), Handover(11, 12, 2.0, 1.98)]
    windows = recycle_windows(events, 0.1)
    assert windows == [pytest.approx((0.9, 1.15)), pytest.approx((1.88, 2.1))]
    # 0.25 s long, 0.73 s of room between them: one as long, centred in the room.
    (quiet,) = quiet_windows(windows)
    assert quiet == pytest.approx((1.39, 1.64))
    assert quiet_windows([(0.0, 1.0), (1.5, 2.0)]) == []  # no room for one as long


def test_added_is_the_worst_latency_in_each_window_less_the_median():
    samples = [answer(1.0, 10, 0.002), answer(1.1, 10, 0.030), answer(2.0, 11, 0.004)]
    assert added_ms(samples, [(0.9, 1.2), (1.9, 2.1), (5.0, 6.0)], 2.0) == pytest.approx([28.0, 2.0])


def test_spread_is_the_median_and_the_max():
    assert spread([1.0, 3.0, 20.0]) == "3 (20)"
    assert spread([]) == "-"


def measured(gaps_ms, added, failed=0, quiet=()) -> Measured:
    return Measured(2500, failed, len(gaps_ms), list(gaps_ms), list(added), list(quiet), "3 replaced first")


def test_the_surge_targets_are_met_with_no_failure_little_added_and_a_gap_within_a_pause():
    failed, added, gap = surge_targets("fitflix", 0.01, measured([12.0, 15.0, 30.0], [2.0, 4.0, 9.0], quiet=[3.0]))
    assert (failed.met, added.met, gap.met) == (True, True, True)
    assert "median 15.0 ms (max 30)" in gap.measured and "3 replaced first" in gap.measured
    assert "away from recycles 3 ms" in added.measured


def test_the_surge_targets_miss_on_a_failure_on_added_latency_and_on_a_gap():
    failed, added, gap = surge_targets("fitflix", 0.05, measured([150.0, 190.0, 200.0], [90.0, 140.0], failed=1))
    assert (failed.met, added.met, gap.met) == (False, False, False)
    assert "<= 100 ms" in gap.text  # the 50 ms pause plus one more


def test_at_a_cpu_quota_the_added_latency_target_is_its_own():
    _failed, added, _gap = surge_targets("fitflix @ 0.1 CPU", 0.05, measured([60.0], [35.0]), 40.0)
    assert added.met is True and "at most 40 ms added" in added.text
    _failed, added, _gap = surge_targets("fitflix @ 0.1 CPU", 0.05, measured([60.0], [45.0]), 40.0)
    assert added.met is False


def test_the_surge_targets_without_a_run_or_a_recycle_are_not_measured():
    assert [target.met for target in surge_targets("fitflix", 0.01, None)] == [None, None, None]
    assert [target.measured for target in surge_targets("fitflix", 0.01, measured([], []))] == [
        "no recycle observed"
    ] * 3


def test_a_recycles_cpu_is_each_rows_cpu_less_the_no_recycle_rows_scaled_to_its_requests():
    from bench.peers import fitflix
    from bench.recycle import Row, recycle_cpu_notes

    rows = [Row(fitflix("app", {}, name="recycling"), cpus=0.1), Row(fitflix("app", {}, name="none"), baseline=True)]
    # 1,000 ms for 1,000 requests and 10 recycles, against 400 ms for 500 requests without one: 20 ms each.
    notes = recycle_cpu_notes(rows, {"recycling": (1000.0, 10, 1000), "none": (400.0, 0, 500)})
    assert len(notes) == 1 and notes[0].startswith("recycling: a recycle cost 20.0 ms of the cgroup's CPU")
    assert recycle_cpu_notes(rows, {"recycling": (1000.0, 10, 1000)}) == []  # no baseline run: nothing to say
