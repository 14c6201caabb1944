"""Part 14, CPU per request: the floor subprocess run once for real (tests/unit/test_bench_cpu.py: the arithmetic)."""

from __future__ import annotations

import pytest

from bench import cpu


@pytest.mark.timeout(60)
def test_the_floor_calls_the_app_for_real_and_gets_a_200():
    figures = cpu.run_floor(calls=50, batches=2, paths=["/health"])
    status, per_call_us = figures["/health"]
    assert status == "200 OK"
    assert len(per_call_us) == 2 and all(value > 0 for value in per_call_us)
