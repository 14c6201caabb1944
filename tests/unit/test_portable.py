"""Each fallback for a host without /proc (fitflix.memory.reader), on fake trees and a fake psutil.

A fake root with an empty `proc` folder is a host without /proc; a fake psutil
(tests/fakes.py) plays a Mac's (RSS and USS, no PSS) or Linux's without /proc
(NoSuchProcess for every pid). One test runs the real psutil against a fake
root, so its real figures are checked against the kernel's."""

from __future__ import annotations

import os

import psutil
import pytest

from fitflix.memory.process import ProcessMemory, StatmReader
from fitflix.memory.reader import (
    PeakReader,
    PsutilReader,
    getrusage_peak_bytes,
    host_memory,
    proc_mounted,
    read_process_memory,
    self_memory_reader,
)
from fitflix.memory.report import MemoryProbe, ProcessFigures, measure_container, service_memory
from fitflix.serving.sizing import PlanError, make_plan
from fitflix.serving.state import SharedState
from fitflix.settings import Settings
from tests.fakes import (
    MIB,
    FakePsutil,
    fallbacks,
    make_meminfo,
    make_proc,
    smaps_rollup_text,
    write,
)


class LinuxPsutilWithoutProc(FakePsutil):
    """psutil on Linux with /proc hidden: it imports, and then every call fails."""

    def __init__(self) -> None:
        super().__init__({})

    def virtual_memory(self):
        raise FileNotFoundError("/proc/meminfo")


# --- host memory ------------------------------------------------------------------------------


def test_host_memory_comes_from_meminfo_where_it_is_there(tmp_path):
    make_meminfo(tmp_path, 2048 * 1024)
    assert host_memory(tmp_path, fallbacks(FakePsutil({}))) == (2048 * MIB, "/proc/meminfo")


@pytest.mark.parametrize(
    ("psutil_module", "phys_bytes", "expected"),
    [
        (FakePsutil({}, total_bytes=16 * 1024 * MIB), 8 * 1024 * MIB, (16 * 1024 * MIB, "psutil")),
        (LinuxPsutilWithoutProc(), 8 * 1024 * MIB, (8 * 1024 * MIB, "sysconf")),
        (None, 8 * 1024 * MIB, (8 * 1024 * MIB, "sysconf")),
        (None, None, (None, "unknown (no /proc/meminfo, psutil or sysconf)")),
    ],
    ids=["mac-psutil", "linux-psutil-no-proc", "no-psutil", "nothing"],
)
def test_host_memory_without_proc_falls_back_in_turn(no_proc, psutil_module, phys_bytes, expected):
    assert host_memory(no_proc, fallbacks(psutil_module, phys_bytes)) == expected


def test_the_plan_takes_the_hosts_memory_from_the_fallback(no_proc):
    container = measure_container(no_proc, fallbacks(None, phys_bytes=3072 * MIB))
    assert (container.host_memory_bytes, container.host_memory_source) == (3072 * MIB, "sysconf")
    plan = make_plan(Settings(), container)
    assert (plan.limit_mb, plan.limit_source) == (3072, "host")


def test_no_limit_anywhere_stops_the_plan_with_what_to_set(no_proc):
    container = measure_container(no_proc, fallbacks(None, phys_bytes=None))
    with pytest.raises(PlanError, match="set MAX_MEMORY_MB"):
        make_plan(Settings(), container)
    assert make_plan(Settings(max_memory_mb=256), container).limit_mb == 256  # the variable is the way out


# --- one process's figures ----------------------------------------------------------------------


def test_smaps_rollup_stays_the_first_choice(tmp_path):
    make_proc(tmp_path, 4001, 1, smaps_rollup=smaps_rollup_text(60 * 1024, 40 * 1024, 0, 16 * 1024))
    memory = read_process_memory(4001, tmp_path, fallbacks(FakePsutil({4001: (1, 1)})))
    assert (memory.rss_bytes, memory.pss_bytes, memory.uss_bytes, memory.source) == (
        60 * MIB,
        40 * MIB,
        16 * MIB,
        "smaps_rollup",
    )
    assert memory.unavailable == ()


def test_with_proc_mounted_a_missing_process_has_ended(tmp_path):
    make_proc(tmp_path, 4001, 1)
    assert proc_mounted(tmp_path)
    # Our own pid has no folder in this fake /proc: /proc is the truth there, psutil is never asked.
    assert read_process_memory(os.getpid(), tmp_path, fallbacks(FakePsutil({os.getpid(): (1, 1)}))) is None


def test_a_kernel_without_smaps_rollup_still_gives_rss_from_statm(tmp_path):
    make_proc(tmp_path, 4001, 1)
    write(tmp_path / "proc/4001/statm", "5000 1200 300 1 0 2500 0\n")
    memory = read_process_memory(4001, tmp_path, fallbacks(FakePsutil({4001: (1, 1)})))
    assert (memory.rss_bytes, memory.pss_bytes, memory.uss_bytes, memory.source) == (
        1200 * os.sysconf("SC_PAGE_SIZE"),
        None,
        None,
        "statm",
    )
    assert set(dict(memory.unavailable)) == {"pssBytes", "ussBytes"}


def test_a_mac_gives_rss_and_uss_through_psutil_and_says_why_pss_is_missing(no_proc):
    pid = os.getpid()
    memory = read_process_memory(pid, no_proc, fallbacks(FakePsutil({pid: (50 * MIB, 20 * MIB)})))
    assert (memory.rss_bytes, memory.uss_bytes, memory.pss_bytes, memory.source) == (
        50 * MIB,
        20 * MIB,
        None,
        "psutil",
    )
    assert dict(memory.unavailable) == {"pssBytes": "PSS is Linux-only; psutil on linux gives RSS and USS"}


def test_uss_denied_is_null_with_the_reason(no_proc):
    pid = os.getpid()
    memory = read_process_memory(pid, no_proc, fallbacks(FakePsutil({pid: (50 * MIB, None)})))
    assert (memory.rss_bytes, memory.uss_bytes) == (50 * MIB, None)
    assert "memory_full_info" in dict(memory.unavailable)["ussBytes"]


def test_this_process_without_psutil_falls_back_to_its_peak(no_proc):
    memory = read_process_memory("self", no_proc, fallbacks(None, peak_bytes=70 * MIB))
    assert memory.pid == os.getpid()
    assert (memory.rss_bytes, memory.pss_bytes, memory.uss_bytes, memory.swap_bytes) == (None, None, None, None)
    assert (memory.peak_rss_bytes, memory.source) == (70 * MIB, "getrusage peak")
    reasons = dict(memory.unavailable)
    assert set(reasons) == {"rssBytes", "pssBytes", "ussBytes"}
    assert "psutil is not installed" in reasons["rssBytes"]


def test_another_process_without_any_source_is_all_null_with_reasons(no_proc):
    parent = os.getppid()  # alive, and not this process
    memory = read_process_memory(parent, no_proc, fallbacks(LinuxPsutilWithoutProc()))
    assert (memory.rss_bytes, memory.peak_rss_bytes, memory.source) == (None, None, "none")
    assert "psutil cannot read processes here" in dict(memory.unavailable)["rssBytes"]


def test_real_psutil_agrees_with_the_kernel(no_proc):
    """psutil's own figures for this process against /proc/self/smaps_rollup, read a moment apart."""
    from fitflix.memory.process import read_smaps_rollup

    through_psutil = read_process_memory("self", no_proc, fallbacks(psutil))
    from_kernel = read_smaps_rollup("self")
    assert through_psutil.source == "psutil"
    assert through_psutil.rss_bytes == pytest.approx(from_kernel.rss_bytes, rel=0.05)
    assert through_psutil.uss_bytes == pytest.approx(from_kernel.uss_bytes, rel=0.05)
    assert through_psutil.pss_bytes is not None  # psutil on Linux gives PSS too: nothing is missing
    assert through_psutil.unavailable == ()


def test_getrusage_peak_is_at_least_what_this_process_held_a_moment_ago():
    statm = StatmReader()
    try:
        resident_before = statm.read()[0]
    finally:
        statm.close()
    # Linux keeps RSS in per-CPU counters that getrusage and statm sum differently: a few hundred KB apart.
    assert getrusage_peak_bytes() >= resident_before * 0.98


# --- the per-request reader ---------------------------------------------------------------------


def test_the_reader_is_statm_where_proc_is(tmp_path):
    write(tmp_path / "proc/self/statm", "5000 1200 300 1 0 2500 0\n")
    reader = self_memory_reader(tmp_path, fallbacks(FakePsutil({os.getpid(): (1, 1)})))
    try:
        assert isinstance(reader, StatmReader) and not reader.is_peak
        assert reader.read() == (1200 * os.sysconf("SC_PAGE_SIZE"), 2500 * os.sysconf("SC_PAGE_SIZE"))
    finally:
        reader.close()


def test_the_reader_is_psutil_without_proc_and_has_no_data_figure_on_a_mac(no_proc):
    reader = self_memory_reader(no_proc, fallbacks(FakePsutil({os.getpid(): (45 * MIB, 20 * MIB)})))
    assert isinstance(reader, PsutilReader)
    assert reader.read() == (45 * MIB, None)


def test_the_reader_is_the_peak_where_psutil_cannot_read(no_proc):
    reader = self_memory_reader(no_proc, fallbacks(LinuxPsutilWithoutProc(), peak_bytes=80 * MIB))
    assert isinstance(reader, PeakReader) and reader.is_peak
    assert reader.read() == (80 * MIB, None)


# --- the service's figure and the tree ----------------------------------------------------------


def figures(role: str, pid: int, **values) -> ProcessFigures:
    fields = {"rss_bytes": None, "pss_bytes": None, "uss_bytes": None, "swap_bytes": None} | values
    return ProcessFigures(role, ProcessMemory(pid=pid, **fields))


@pytest.mark.parametrize(
    ("processes", "expected"),
    [
        (
            [figures("master", 1, rss_bytes=40, pss_bytes=20), figures("worker", 2, rss_bytes=30, pss_bytes=12)],
            (32, "service PSS"),
        ),
        (
            [figures("master", 1, rss_bytes=40, uss_bytes=9), figures("worker", 2, rss_bytes=30, uss_bytes=12)],
            (52, "master RSS + workers' USS (no PSS here)"),
        ),
        (
            [figures("master", 1, peak_rss_bytes=45), figures("worker", 2, peak_rss_bytes=35)],
            (80, "master peak RSS + worker peak RSS (no PSS here)"),
        ),
        ([figures("master", 1), figures("worker", 2, peak_rss_bytes=35)], (35, "worker peak RSS (no PSS here)")),
        ([figures("master", 1)], (0, "nothing readable")),
    ],
    ids=["linux", "mac", "peaks", "master-unread", "nothing"],
)
def test_service_memory_is_pss_where_every_process_has_it_else_the_nearest_figure_above(processes, expected):
    assert service_memory(processes) == expected


def test_the_master_reads_what_a_worker_published_where_it_cannot_read_it(no_proc):
    state = SharedState()
    master, worker = os.getppid(), os.getpid()  # two live pids; the probe runs "in the master"
    slot = state.claim_worker_slot(worker)
    state.publish_memory(slot, 64 * MIB, peak=True)
    state.publish_master_memory(40 * MIB, peak=False)
    probe = MemoryProbe(
        (512, "env"),
        root=no_proc,
        cache_s=0,
        worker_pids=lambda: [worker],
        published=state.published_memory,
        fallbacks=fallbacks(LinuxPsutilWithoutProc(), peak_bytes=66 * MIB),
    )
    report = probe.report("master", master)
    by_role = {process.role: process.memory for process in report.processes}
    assert (by_role["master"].rss_bytes, by_role["master"].source) == (40 * MIB, "its own report (RSS)")
    assert "rssBytes" not in dict(by_role["master"].unavailable)
    # This process is the "worker" here: it reads its own peak live rather than the figure it published.
    assert (by_role["worker"].peak_rss_bytes, by_role["worker"].source) == (66 * MIB, "getrusage peak")
    assert report.service_pss_bytes is None and "servicePssBytes" in dict(report.unavailable)
    assert (report.used_bytes, report.used_source) == (106 * MIB, "master RSS + worker peak RSS (no PSS here)")


def test_published_figures_are_per_worker_and_go_with_the_worker():
    state = SharedState()
    first, second = os.getpid(), os.getppid()
    slots = state.claim_worker_slot(first), state.claim_worker_slot(second)
    assert state.published_memory(first) is None  # nothing published yet
    state.publish_memory(slots[0], 10 * MIB, peak=False)
    state.publish_memory(slots[1], 20 * MIB, peak=True)
    assert state.published_memory(first) == (10 * MIB, "rss")
    assert state.published_memory(second) == (20 * MIB, "peak")
    assert state.published_memory(second, master_pid=second) is None  # the master's own field, not yet set
    state.release(first)
    assert state.published_memory(first) is None
