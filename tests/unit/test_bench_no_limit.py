"""Part 16's verdicts and figure: a leak where no limit exists (no servers)."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import pytest

from bench import plots
from bench.load import Sample
from bench.no_limit import (
    REQUESTS,
    LeakRun,
    absolute_target,
    leak_mb_per_s,
    recycled_at,
    relative_targets,
    stopped_by,
)
from harness.fitflix_log import parse_budget, parse_recycles

MIB = 1024 * 1024
BANNER = (
    "Memory profile: standard (recycle at 69 MB, cap 21646 MB, 8 threads)\n"
    "Worker budget: absolute 19236 MB, relative 69 MB (3 x the app's 23 MB): relative applies (the default)\n"
)


def recycle_line(pid: int, uss_mb: float, reason: str = "memory") -> str:
    return (
        f"Recycling worker pid={pid} reason={reason} rss={uss_mb + 20}MB uss={uss_mb}MB budget=69MB "
        f"threshold=63.7MB hard_cap=21646MB requests=30 age=3.1s\n"
    )


def leak_run(count: int, log_text: str, stopped_at_mb: float | None = None, peak_mb: float = 100) -> LeakRun:
    samples = [Sample(index * 0.01, index * 0.01 + 0.002, 200, None, True, 10) for index in range(count)]
    stopped = int(stopped_at_mb * MIB) if stopped_at_mb is not None else None
    return LeakRun(samples, 2.0, stopped, int(peak_mb * MIB), 0, log_text)


def test_which_bound_ended_a_run():
    assert stopped_by(leak_run(400, "", stopped_at_mb=1030), REQUESTS) == "the bench, at 1030 MB (past 1,024)"
    assert stopped_by(leak_run(REQUESTS, ""), REQUESTS) == f"the request count ({REQUESTS:,})"
    assert stopped_by(leak_run(12, ""), REQUESTS) == "the time bound (120 s)"


def test_the_leak_rate_is_answered_requests_times_the_leak_over_the_run():
    assert leak_mb_per_s(leak_run(100, "")) == pytest.approx(100.0)  # 100 x 2 MB over 2 s


def test_recycled_at_counts_memory_recycles_only():
    recycles = parse_recycles(recycle_line(1, 60.0) + recycle_line(2, 70.0) + recycle_line(3, 5.0, "max_requests"))
    assert recycled_at(recycles, "uss") == "65 (70)"
    assert recycled_at(recycles, "rss") == "85 (90)"
    assert recycled_at([], "uss") == "-"


def test_the_relative_budget_is_met_when_every_recycle_is_under_four_times_the_app_and_the_peak_is_low():
    text = BANNER + recycle_line(1, 68.0) + recycle_line(2, 69.0)
    recycled, peak = relative_targets("fitflix", parse_budget(text), leak_run(250, text, peak_mb=111))
    assert (recycled.met, peak.met) == (True, True)
    assert "largest USS at a recycle 69 MB of 2 recycles; 4 x the app's 23 MB = 92 MB" in recycled.measured
    assert peak.measured == "peak 111 MB"


def test_the_relative_budget_misses_a_leak_that_outruns_it():
    text = BANNER + recycle_line(1, 1065.5)
    recycled, peak = relative_targets("fitflix", parse_budget(text), leak_run(600, text, peak_mb=1120))
    assert (recycled.met, peak.met) == (False, False)
    stopped = BANNER
    recycled, _peak = relative_targets("fitflix", parse_budget(stopped), leak_run(495, stopped, 1029, 1032))
    assert recycled.met is False
    assert "no memory recycle in 495 requests" in recycled.measured
    assert "hard cap 21,646 MB; stopped by the bench at 1029 MB" in recycled.measured


def test_the_relative_targets_without_a_run_or_an_app_size():
    assert [target.met for target in relative_targets("fitflix", None, None)] == [None, None]
    recycled, _peak = relative_targets("fitflix", None, leak_run(10, ""))
    assert recycled.met is None


def test_without_the_relative_budget_the_target_is_the_bench_stopping_the_leak():
    assert absolute_target("fitflix", leak_run(497, "", stopped_at_mb=1025, peak_mb=1028)).met is True
    assert absolute_target("fitflix", leak_run(REQUESTS, recycle_line(1, 80.0))).met is False
    assert absolute_target("fitflix", None).met is None


def test_the_figure_draws_each_run_in_mb_with_its_new_workers_and_the_reference_lines(tmp_path):
    plots.use_directory(tmp_path)
    traces = [
        plots.Trace("fitflix", 0.0, [0.0, 1.0, 2.0], [30.0, 600.0, 1030.0], new_worker_s=[1.9]),
        plots.Trace("fitflix, slow leak", 0.0, [0.0, 3.0, 6.0], [30.0, 90.0, 40.0], new_worker_s=[3.1]),
    ]
    picture = plots.memory_mb_over_time("no-limit", "A leak", traces, [(256, "256 MB"), (1024, "stop")])
    root = ElementTree.parse(picture.svg).getroot()
    ids = {element.get("id") for element in root.iter() if element.get("id")}
    assert {"trace-fitflix", "new-worker-fitflix", "trace-fitflix-slow-leak", "level-fitflix-256-mb"} <= ids
    rows = picture.csv.read_text().splitlines()
    assert rows[0] == "peer,t_s,usage_mb,kind"
    assert "fitflix,2.0,1030.0,sample" in rows and ",,256,reference: 256 MB" in rows
