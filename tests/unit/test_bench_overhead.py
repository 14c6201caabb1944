"""Part 2's worker-CPU target: median CPU per request with recycling on / off <= 1.05 (no servers)."""

from __future__ import annotations

import pytest

from bench.overhead import TARGET_CPU_RATIO, cpu_ratio_target


def test_the_target_is_five_percent():
    assert TARGET_CPU_RATIO == 1.05


@pytest.mark.parametrize(
    ("a_us", "b_us", "met"),
    [
        ([100.0], [100.0], True),  # no cost
        ([105.0], [100.0], True),  # exactly 1.05: met
        ([105.1], [100.0], False),  # just over
        ([90.0], [100.0], True),  # cheaper with recycling (noise): met
        ([200.0, 104.0, 104.0], [100.0, 100.0, 500.0], True),  # medians 104 / 100: one wild round each ignored
        ([106.0, 106.0, 50.0], [100.0, 100.0, 100.0], False),  # median 106 / 100
    ],
)
def test_the_median_ratio_is_judged(a_us, b_us, met):
    target = cpu_ratio_target(a_us, b_us)
    assert target.met is met
    assert "<= 1.05" in target.text and "CPU per request" in target.text


def test_the_measured_text_shows_the_medians_and_the_ratio():
    target = cpu_ratio_target([552.6, 560.0, 540.0], [532.9, 530.0, 540.0])
    assert target.measured == "median 552.6 / 532.9 us = 1.037 over 3 / 3 rounds"


@pytest.mark.parametrize(("a_us", "b_us"), [([], [100.0]), ([100.0], []), ([], []), ([100.0], [0.0])])
def test_without_rounds_on_either_side_it_is_not_measured(a_us, b_us):
    target = cpu_ratio_target(a_us, b_us)
    assert target.met is None
    assert target.measured == f"rounds measured: A {len(a_us)}, B {len(b_us)}"
