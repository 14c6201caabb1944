"""The FitFlix log lines the benchmarks count (harness/fitflix_log.py): banner, recycles, replacements (no servers)."""

from __future__ import annotations

import os
import time

import pytest

from fitflix.memory.container import MIB
from fitflix.memory.process import StatmReader
from fitflix.memory.reader import PeakReader, PsutilReader
from fitflix.serving import backstop
from fitflix.serving.recycler import WorkerRecycler
from fitflix.serving.sizing import make_plan
from fitflix.settings import Settings
from harness.fitflix_log import (
    Recycle,
    parse_budget,
    parse_hard_cap_mb,
    parse_recycles,
    recycle_summary,
    surge_counts,
    without_reasons,
)
from tests.fakes import FakeWorker, container, stop_recyclers

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


class RecordedLog:
    """A worker's `log`: the messages it was given, formatted as logging would."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args, **_kwargs) -> None:
        self.lines.append(message % args)

    debug = warning = exception = info


class ReaderSource:
    """A per-request reader (fitflix.memory.reader) as far as the recycle line sees it: its source."""

    def __init__(self, reader_class) -> None:
        self.source = reader_class.source
        self.is_peak = reader_class.is_peak


@pytest.fixture
def recycle_line(monkeypatch):
    """The line a real WorkerRecycler logs when it leaves (recycler.py's own format) and what went into it."""
    monkeypatch.setattr(backstop, "set_data_limit", lambda limit: None)  # not this test process's rlimit
    made: list[WorkerRecycler] = []

    def leave(reason: str, reader, rss_bytes: int, uss_bytes: int, requests: int, age_s: float):
        plan = make_plan(Settings(max_memory_mb=64000, worker_max_memory_mb=16), container(64000, 2))
        worker = FakeWorker(max_requests=0, log=RecordedLog())  # max_requests 0: gunicorn's off
        recycler = WorkerRecycler(worker, plan, None)
        made.append(recycler)
        recycler.statm = reader  # the source the line names (figures=) is the per-request reader's
        worker.nr = requests
        recycler.leave(reason, rss_bytes, uss_bytes)
        recycler.started = time.monotonic() - age_s
        assert recycler.on_exit() == reason
        return "\n".join(PREFIX + line for line in worker.log.lines), recycler

    yield leave
    stop_recyclers(made)


# Every reason recycler.py writes: over its threshold or hard cap, the MemoryError backstop, a request
# past the timeout, gunicorn's max_requests, and the master's container guard.
REASONS = ("memory", "backstop", "timeout", "max_requests", "guard")


@pytest.mark.parametrize("reason", REASONS)
def test_the_recyclers_own_line_parses_to_every_figure_it_wrote(recycle_line, reason):
    rss_bytes, uss_bytes = int(186.23 * MIB), int(163.27 * MIB)
    text, recycler = recycle_line(reason, ReaderSource(StatmReader), rss_bytes, uss_bytes, requests=535, age_s=12.3)
    (recycle,) = parse_recycles(text)  # for memory, the 'What grew' line after it is not one
    assert (recycle.pid, recycle.reason, recycle.requests) == (os.getpid(), reason, 535)
    assert (recycle.rss_mb, recycle.uss_mb) == (186.2, 163.3)
    assert recycle.budget_mb == recycler.plan.worker_budget_mb
    assert recycle.threshold_mb == round(recycler.limits.threshold_bytes / MIB, 1)
    assert recycle.hard_cap_mb == recycler.plan.worker_hard_cap_mb
    assert 12.3 <= recycle.age_s < 13  # the age is measured as the line is written
    assert recycle.figures is None  # /proc/self/statm: the line says nothing of its source
    assert parse_recycles(text, reason) == [recycle]
    assert parse_recycles(text, "not-a-reason") == []


@pytest.mark.parametrize(
    ("reader_class", "figures"), [(PsutilReader, "psutil"), (PeakReader, "getrusage-peak")], ids=["psutil", "peak"]
)
def test_without_proc_the_recyclers_line_names_where_its_figures_came_from(recycle_line, reader_class, figures):
    text, _recycler = recycle_line("memory", ReaderSource(reader_class), 90 * MIB, 90 * MIB, requests=7, age_s=3.0)
    (recycle,) = parse_recycles(text)
    assert (recycle.reason, recycle.rss_mb, recycle.uss_mb, recycle.requests) == ("memory", 90.0, 90.0, 7)
    assert recycle.figures == figures


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
    assert (first.figures, second.figures) == (None, "psutil")
    assert parse_recycles(text, "max_requests") == [second]


def test_a_recycle_line_inside_a_json_log_record_parses_the_same():
    # LOG_FORMAT=json: the line is the record's "message"; the figures' source ends at its closing quote.
    line = (
        '{"time": "2026-12-02T02:17:03+00:00", "level": "INFO", "message": "Recycling worker pid=4242 '
        "reason=backstop rss=512.0MB uss=498.5MB budget=361MB threshold=352.2MB hard_cap=412MB requests=3 "
        'age=9.0s figures=getrusage-peak", "pid": 4242}'
    )
    assert parse_recycles(line) == [
        Recycle(4242, "backstop", 512.0, 498.5, 361, 352.2, 412, 3, 9.0, "getrusage-peak"),
    ]


def test_a_log_without_recycle_lines_or_with_a_cut_one_has_none():
    cut = PREFIX + "Recycling worker pid=12 reason=memory rss=80.0MB uss=75.1MB budget=69MB threshold="
    assert parse_recycles("Booting worker with pid: 12\n" + cut) == []


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
