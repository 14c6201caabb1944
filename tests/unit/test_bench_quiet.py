"""Part 21's reading of wake-ups: each thread's voluntary context switches, from a fake /proc."""

from __future__ import annotations

from bench.quiet import thread_switches, wakeups_per_s
from tests.fakes import write


def status(voluntary: int, nonvoluntary: int = 3) -> str:
    return (
        f"Name:\tgunicorn\nState:\tS (sleeping)\n"
        f"voluntary_ctxt_switches:\t{voluntary}\nnonvoluntary_ctxt_switches:\t{nonvoluntary}\n"
    )


def test_each_threads_voluntary_switches_are_read_and_a_process_that_ended_reads_empty(tmp_path):
    write(tmp_path / "proc/700/task/700/status", status(120))
    write(tmp_path / "proc/700/task/703/status", status(45, nonvoluntary=900))  # preempted often: not a wake-up

    assert thread_switches(700, tmp_path) == {700: 120, 703: 45}
    assert thread_switches(701, tmp_path) == {}


def test_wakeups_a_second_count_only_threads_seen_at_both_ends():
    before = {700: 120, 703: 45, 705: 10}  # 705 ends during the window
    after = {700: 130, 703: 50, 708: 99}  # 708 is born during it

    assert wakeups_per_s(before, after, 5.0) == 3.0  # (10 + 5) / 5 s
