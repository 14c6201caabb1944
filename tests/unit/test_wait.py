"""harness/wait.py: deadlines that stretch on a slow host (FITFLIX_TIME_SCALE), and refuse a bad factor."""

from __future__ import annotations

import time

import pytest

from harness import wait


@pytest.mark.parametrize("text", ["fast", "0.5", "0", "1000", ""])
def test_a_bad_time_scale_is_refused_with_the_variable_and_what_is_accepted(monkeypatch, text):
    monkeypatch.setenv("FITFLIX_TIME_SCALE", text)

    with pytest.raises(ValueError, match=r"FITFLIX_TIME_SCALE=.*a number from 1 to 100"):
        wait._time_scale()


def test_the_scale_stretches_the_deadline_and_says_so(monkeypatch):
    monkeypatch.setattr(wait, "TIME_SCALE", 3.0)
    started = time.monotonic()

    with pytest.raises(wait.Timeout, match=r"timed out after 0\.3s waiting for nothing"):
        wait.poll_until(lambda: False, 0.1, "nothing")

    assert time.monotonic() - started >= 0.3


def test_a_state_that_comes_is_seen_before_the_deadline(monkeypatch):
    monkeypatch.setattr(wait, "TIME_SCALE", 100.0)
    calls = []

    assert wait.poll_until(lambda: calls.append(1) or len(calls) >= 3, 1, "three calls") is True
