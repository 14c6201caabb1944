"""The FitFlix log lines the benchmarks count (harness/fitflix_log.py): banner, recycles, replacements (no servers)."""

from __future__ import annotations

import pytest

from harness.fitflix_log import (
    parse_budget,
    parse_hard_cap_mb,
    parse_recycles,
    recycle_summary,
    surge_counts,
    without_reasons,
)

PREFIX = "[2026-12-02 02:17:03 +0000] [9981] [INFO] "
RELATIVE = (
    PREFIX + "Worker budget: absolute 19236 MB, relative 69 MB (3 x the app's 23 MB): relative applies "
    "(the default where no memory limit exists)"
)
OFF = PREFIX + "Worker budget: absolute 19236 MB applies; relative off (WORKER_MEMORY_MULTIPLE=0)"
REAL_LIMIT = (
    PREFIX + "Worker budget: absolute 361 MB applies; relative off: the limit is real (cgroup v1); set "
    "WORKER_MEMORY_MULTIPLE to add it"
)
NOT_MEASURED = (
    PREFIX + "Worker budget: absolute 361 MB, relative 3 x the app's size at start (not measured yet): absolute "
    "applies (WORKER_MEMORY_MULTIPLE)"
)


@pytest.mark.parametrize(
    ("line", "absolute", "relative", "app", "applies", "budget", "short"),
    [
        (RELATIVE, 19236, 69, 23, "relative", 69, "relative 69 MB (3 x 23 MB)"),
        (OFF, 19236, None, None, "absolute", 19236, "absolute 19,236 MB"),
        (REAL_LIMIT, 361, None, None, "absolute", 361, "absolute 361 MB"),
        (NOT_MEASURED, 361, None, None, "absolute", 361, "absolute 361 MB"),
    ],
)
def test_the_budget_banner_says_both_budgets_and_which_applies(line, absolute, relative, app, applies, budget, short):
    parsed = parse_budget("Starting gunicorn\n" + line + "\nBooting worker")
    assert (parsed.absolute_mb, parsed.relative_mb, parsed.app_mb, parsed.applies) == (absolute, relative, app, applies)
    assert parsed.worker_budget_mb == budget
    assert parsed.short() == short
    assert parsed.text.startswith("absolute ")


def test_a_log_without_the_banner_has_no_budget_and_no_hard_cap():
    assert parse_budget("Booting worker with pid: 12") is None
    assert parse_hard_cap_mb("Booting worker with pid: 12") is None


def test_the_hard_cap_comes_from_the_memory_profile_line():
    line = (
        PREFIX + "Memory profile: standard (recycle at 69 MB, cap 21646 MB, 8 threads, max_requests 10000, "
        "Python's GC, no trim, glibc's arenas)"
    )
    assert parse_hard_cap_mb(line) == 21646


def test_each_recycle_line_gives_its_pid_reason_and_figures():
    text = "\n".join(
        [
            PREFIX + "Recycling worker pid=19586 reason=memory rss=1086.9MB uss=1065.5MB budget=69MB "
            "threshold=63.7MB hard_cap=21646MB requests=535 age=2.1s",
            PREFIX + "What grew in worker 19586 (memory): uss 1077.8MB",
            PREFIX + "Recycling worker pid=9984 reason=max_requests rss=29.8MB uss=4.6MB budget=361MB "
            "threshold=340.1MB hard_cap=412MB requests=55 age=0.3s figures=psutil",
        ]
    )
    first, second = parse_recycles(text)
    assert (first.pid, first.reason, first.requests) == (19586, "memory", 535)
    assert (first.rss_mb, first.uss_mb) == (1086.9, 1065.5)
    assert (first.budget_mb, first.threshold_mb) == (69, 63.7)
    assert (first.hard_cap_mb, first.age_s) == (21646, 2.1)
    assert (second.pid, second.reason, second.uss_mb, second.requests) == (9984, "max_requests", 4.6, 55)
    assert recycle_summary([first, second]) == (
        "2 recycles (memory x1, max_requests x1), median age 1.2 s, 1 younger than 2 s"
    )
    assert recycle_summary([]) == "0 recycles"


def test_the_master_lines_count_replacements_first_and_retirements_without_one():
    text = "\n".join(
        [
            "Replacing worker 10: its replacement boots first (33.3MB used + 16.0MB for a fresh worker ...)",
            "Worker 11 serves; retiring worker 10",
            "Replacing worker 11: its replacement boots first (...)",
            "No replacement booted in 30 s; retiring worker 11 anyway",
            "Retiring worker 12 without a replacement first: 450.0MB used + 16.0MB for a fresh worker over 460.8MB",
        ]
    )
    counts = surge_counts(text)
    assert (counts.asked, counts.replaced, counts.without, counts.timed_out) == (2, 1, 1, 1)
    assert counts.text() == "1 replaced first, 1 without a replacement, 1 replacement boots timed out"
    assert without_reasons(text) == ["450.0MB used + 16.0MB for a fresh worker over 460.8MB"]
    assert surge_counts("").text() == "0 replaced first, 0 without a replacement"
