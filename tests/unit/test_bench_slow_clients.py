"""Part 10's helpers for the hostile clients: the probes' summary, fitflix's targets, the settings (no servers)."""

from __future__ import annotations

from collections import Counter

import pytest

from bench import slow_clients
from bench.scale import FULL, QUICK
from bench.slow_clients import (
    HOSTILE_KINDS,
    HOSTILE_PROBE_TIMEOUT_S,
    ProbeSummary,
    answered_latencies,
    counted_s,
    hostile_env,
    hostile_target,
    hostile_window_s,
    seconds_text,
    statuses_text,
    summarize,
)


def test_the_windows_at_each_scale_keep_the_part_short():
    assert hostile_window_s(FULL) == 10.0
    assert hostile_window_s(QUICK) == 5.0  # 5 s at least
    # Eight runs (two workers x four clients): the probes' windows plus one last probe's timeout each.
    assert 8 * (hostile_window_s(FULL) + HOSTILE_PROBE_TIMEOUT_S) <= 100


def test_the_four_hostile_clients_and_their_settings():
    assert [kind.key for kind in HOSTILE_KINDS] == ["body", "unread", "trickle", "slowloris"]
    env = hostile_env("gthread", HOSTILE_KINDS[3])
    assert env == {
        "WORKER": "gthread",
        "THREADS": "2",
        "WEB_CONCURRENCY": "1",
        "DRAIN_S": "0",
        "HEAD_TIMEOUT_S": "60",
        "GUNICORN_CMD_ARGS": "--worker-connections 50",
    }
    assert hostile_env("fitflix", HOSTILE_KINDS[1])["WORKER_TIMEOUT_S"] == "3"
    # HEAD_TIMEOUT_S, the write deadline of FitFlix's worker, under half the request timeout, as by default.
    assert int(HOSTILE_KINDS[1].env["HEAD_TIMEOUT_S"]) < int(HOSTILE_KINDS[1].env["WORKER_TIMEOUT_S"]) / 2


def test_a_probe_is_answered_only_by_a_2xx_within_the_timeout():
    results = [(0.01, 200), (0.02, 204), (0.5, 408), (None, None), (None, 200), (2.5, 200), (0.03, None)]
    assert answered_latencies(results, 2.0) == [0.01, 0.02, None, None, None, None, None]


def test_the_summary_counts_a_failed_probe_as_the_whole_timeout():
    results = [(0.004, 200)] * 97 + [(1.5, 200), (None, None), (0.3, 503)]
    summary = summarize(results, 2.0)
    assert summary == ProbeSummary(
        probes=100, within_1_s=97, within_2_s=98, failed=2, p50_s=0.004, p99_s=2.0, max_s=2.0
    )


def test_the_summary_of_no_probes():
    assert summarize([], 2.0) == ProbeSummary(0, 0, 0, 0, None, None, None)


def test_counted_s_uses_the_timeout_it_is_given():
    assert counted_s([0.1, None], 2.0) == [0.1, 2.0]
    assert counted_s([None]) == [slow_clients.PROBE_TIMEOUT_S]


def quick(probes: int, latency_s: float = 0.002) -> ProbeSummary:
    return summarize([(latency_s, 200)] * probes, HOSTILE_PROBE_TIMEOUT_S)


@pytest.mark.parametrize(
    ("summary", "met"),
    [
        (quick(20), True),
        (quick(20, 0.999), True),
        (quick(20, 1.0), False),  # p99 must be under 1 s
        (summarize([(0.002, 200)] * 199 + [(None, None)], 2.0), False),  # p99 2 ms, but one probe failed
        (summarize([(0.002, 200)] * 199 + [(0.01, 500)], 2.0), False),  # a 500 is a failed probe
    ],
)
def test_fitflix_meets_its_target_with_p99_under_1_s_and_no_failed_probe(summary, met):
    target = hostile_target("a body that never comes", summary)
    assert target.met is met
    assert target.text == (
        "fitflix under a body that never comes: /health p99 from a fresh client < 1 s and no probe failed"
    )


def test_the_target_says_what_it_was_judged_on():
    summary = summarize([(0.002, 200)] * 19 + [(None, None)], 2.0)
    assert hostile_target("x", summary).measured == "p99 2000 ms, 1 of 20 probes failed"


@pytest.mark.parametrize("summary", [None, summarize([], 2.0)])
def test_a_run_without_probes_is_not_measured(summary):
    target = hostile_target("slowloris at the connection cap", summary)
    assert target.met is None and target.measured == "fitflix did not run"


def test_statuses_and_seconds_text():
    assert statuses_text(Counter()) == "nothing"
    assert statuses_text(Counter([408, None, 408, 405])) == "405 x 1, 408 x 2, none x 1"
    assert statuses_text(Counter(["fin", "orphaned", "fin"])) == "fin x 2, orphaned x 1"
    assert seconds_text([]) == "-"
    assert seconds_text([3.04]) == "3.0 s"
    assert seconds_text([3.04, 2.96, 3.1]) == "3.0-3.1 s"


def test_probe_while_probes_until_the_window_ends_and_ticks_after_each(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(slow_clients.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(slow_clients.time, "sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    starts = []

    def probe(port, timeout_s):
        assert (port, timeout_s) == (8000, 2.0)
        starts.append(round(clock[0], 2))
        if len(starts) == 2:  # the second gets no answer: it takes the whole timeout
            clock[0] += timeout_s
            return None, None
        clock[0] += 0.01
        return 0.01, 200

    ticks = []
    monkeypatch.setattr(slow_clients.hostile, "probe_health", probe)
    results = slow_clients.probe_while(8000, 3.0, lambda: ticks.append(clock[0]), every_s=0.25, timeout_s=2.0)
    # One at a time on the 250 ms ticks; the ticks the failed probe took are caught up at once; none at 3 s.
    assert starts == [0.0, 0.25, 2.25, 2.26, 2.27, 2.28, 2.29, 2.3, 2.31, 2.32, 2.5, 2.75]
    assert results[1] == (None, None) and len(results) == len(ticks) == 12
