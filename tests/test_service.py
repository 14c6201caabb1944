"""The memory report: the whole tree found through the master, the used figure, the one-second cache."""

from __future__ import annotations

from fitflix.memory.service import MemoryProbe, tree_pids
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


def test_tree_is_the_master_and_its_children(tmp_path):
    fake_tree(tmp_path)
    assert tree_pids("worker", MASTER, tmp_path) == [("master", MASTER), ("worker", 4003), ("worker", 4007)]
    assert tree_pids("standalone", MASTER, tmp_path)[0][0] == "standalone"


def test_service_pss_is_the_sum_over_the_tree_and_judges_usage_without_a_cgroup(tmp_path):
    fake_tree(tmp_path)
    report = MemoryProbe((512, "env"), root=tmp_path, cache_s=0).report("worker", MASTER)
    assert [process.memory.pid for process in report.processes] == [MASTER, *WORKERS]
    assert report.service_pss_bytes == 3 * 20 * MIB
    assert (report.used_bytes, report.used_source) == (3 * 20 * MIB, "service PSS")
    assert report.used_percent == 100 * 60 / 512


def test_with_a_cgroup_the_working_set_is_what_usage_is_judged_on(tmp_path):
    fake_tree(tmp_path)
    make_cgroup_v1(tmp_path, "/app", limit_bytes=512 * MIB, usage=200 * MIB, inactive_file=50 * MIB)
    report = MemoryProbe((512, "cgroup v1"), root=tmp_path, cache_s=0).report("worker", MASTER)
    assert (report.used_bytes, report.used_source) == (150 * MIB, "cgroup v1 working set")
    assert report.cgroup_memory.usage_bytes == 200 * MIB


def test_a_report_is_reused_for_one_second_then_measured_again(tmp_path):
    fake_tree(tmp_path)
    clock = Clock()
    probe = MemoryProbe((512, "env"), root=tmp_path, cache_s=1.0, clock=clock)
    first = probe.report("worker", MASTER)
    fake_tree(tmp_path, pss_kb=40 * 1024)  # the processes grew
    clock.now += 0.9
    assert probe.report("worker", MASTER) is first
    clock.now += 0.2
    again = probe.report("worker", MASTER)
    assert again.service_pss_bytes == 3 * 40 * MIB


def test_a_process_that_ends_between_listing_and_reading_is_left_out(tmp_path):
    fake_tree(tmp_path)
    (tmp_path / f"proc/{WORKERS[1]}/smaps_rollup").unlink()
    report = MemoryProbe((512, "env"), root=tmp_path, cache_s=0).report("worker", MASTER)
    assert [process.memory.pid for process in report.processes] == [MASTER, WORKERS[0]]


def test_the_kernels_children_file_is_read_when_present(tmp_path):
    fake_tree(tmp_path)
    children = tmp_path / f"proc/{MASTER}/task/{MASTER}/children"
    children.parent.mkdir(parents=True)
    children.write_text("4007 ")  # the kernel's own list wins over a scan (which would also find 4003)
    assert tree_pids("master", MASTER, tmp_path) == [("master", MASTER), ("worker", 4007)]
