"""The memory report: the whole tree found through the master, the used figure, the one-second cache."""

from __future__ import annotations

import pytest

from fitflix.memory.report import MemoryProbe, tree_pids
from tests.fakes import MIB, make_cgroup_v1, make_proc, smaps_rollup_text

MASTER, WORKERS = 4000, (4003, 4007)


def fake_tree(root, pss_kb: int = 20 * 1024) -> None:
    """A gunicorn master with two workers and one unrelated process, each with smaps_rollup."""
    make_proc(
        root, MASTER, 1, comm="gunicorn: master", smaps_rollup=smaps_rollup_text(35 * 1024, pss_kb, 1024, 6 * 1024)
    )
    for pid in WORKERS:
        make_proc(
            root, pid, MASTER, comm="gunicorn: worker", smaps_rollup=smaps_rollup_text(30 * 1024, pss_kb, 512, 7 * 1024)
        )
    make_proc(root, 4100, 1, comm="bash", smaps_rollup=smaps_rollup_text(5 * 1024, 5 * 1024, 0, 4 * 1024))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tree_is_the_master_and_the_workers_gunicorn_knows():
    assert tree_pids("worker", MASTER, [4007, 4003]) == [("master", MASTER), ("worker", 4003), ("worker", 4007)]
    assert tree_pids("master", MASTER, [MASTER, 4003]) == [("master", MASTER), ("worker", 4003)]
    assert tree_pids("standalone", MASTER, [4003])[0][0] == "standalone"


def probe(tmp_path, limit: tuple[int, str] = (512, "env"), **options) -> MemoryProbe:
    """A probe on the fake tree whose workers are the two gunicorn knows (the bash child is not one)."""
    return MemoryProbe(limit, root=tmp_path, worker_pids=lambda: WORKERS, **options)


def test_service_pss_is_the_sum_over_the_tree_and_judges_usage_without_a_cgroup(tmp_path):
    fake_tree(tmp_path)
    report = probe(tmp_path, cache_s=0).report("worker", MASTER)
    assert [process.memory.pid for process in report.processes] == [MASTER, *WORKERS]
    assert report.service_pss_bytes == 3 * 20 * MIB
    assert (report.used_bytes, report.used_source) == (3 * 20 * MIB, "service PSS")
    assert report.used_percent == 100 * 60 / 512


def test_with_a_cgroup_the_working_set_is_what_usage_is_judged_on(tmp_path):
    fake_tree(tmp_path)
    make_cgroup_v1(tmp_path, "/app", limit_bytes=512 * MIB, usage=200 * MIB, inactive_file=50 * MIB)
    report = probe(tmp_path, (512, "cgroup v1"), cache_s=0).report("worker", MASTER)
    assert (report.used_bytes, report.used_source) == (150 * MIB, "cgroup v1 working set")
    assert report.cgroup_memory.usage_bytes == 200 * MIB


def test_a_report_is_reused_for_one_second_then_measured_again(tmp_path):
    fake_tree(tmp_path)
    clock = Clock()
    cached = probe(tmp_path, cache_s=1.0, clock=clock)
    first = cached.report("worker", MASTER)
    fake_tree(tmp_path, pss_kb=40 * 1024)  # the processes grew
    clock.now += 0.9
    assert cached.report("worker", MASTER) is first
    clock.now += 0.2
    again = cached.report("worker", MASTER)
    assert again.service_pss_bytes == 3 * 40 * MIB


def test_a_process_that_ends_between_listing_and_reading_is_left_out(tmp_path):
    fake_tree(tmp_path)
    (tmp_path / f"proc/{WORKERS[1]}/smaps_rollup").unlink()
    report = probe(tmp_path, cache_s=0).report("worker", MASTER)
    assert [process.memory.pid for process in report.processes] == [MASTER, WORKERS[0]]


@pytest.mark.parametrize(
    ("cgroup_limit_mb", "limit", "judged", "used_mb"),
    [
        (512, (512, "cgroup v1"), "cgroup v1 working set", 450),  # the cgroup is the container
        (1024, (256, "env"), "service PSS", 60),  # MAX_MEMORY_MB below the cgroup's limit
        (None, (256, "env"), "service PSS", 60),  # a cgroup with no limit: a laptop's systemd scope
        (None, (24000, "host"), "service PSS", 60),
        (200, (256, "env"), "cgroup v1 working set", 450),  # the cgroup's own limit is tighter: it is in force
    ],
)
def test_the_cgroup_is_judged_only_where_its_own_limit_is_in_force(tmp_path, cgroup_limit_mb, limit, judged, used_mb):
    """A 450 MB working set of which the service holds 60 MB (PSS): 390 MB are neighbours'."""
    fake_tree(tmp_path)
    make_cgroup_v1(
        tmp_path,
        "/app",
        limit_bytes=cgroup_limit_mb * MIB if cgroup_limit_mb else None,
        usage=500 * MIB,
        inactive_file=50 * MIB,
    )
    report = probe(tmp_path, limit, cache_s=0).report("worker", MASTER)
    assert (report.used_bytes, report.used_source) == (used_mb * MIB, judged)
    assert report.neighbours_bytes == 390 * MIB


def test_without_a_cgroup_there_are_no_neighbours_to_report(tmp_path):
    fake_tree(tmp_path)
    report = probe(tmp_path, cache_s=0).report("worker", MASTER)
    assert report.neighbours_bytes is None
