"""fitflix.memory.process: smaps_rollup, /proc/PID/stat, and the kept statm fd."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from fitflix.memory.process import (
    PAGE_BYTES,
    StatmReader,
    children_of,
    huge_pages_always,
    parent_pid,
    parse_smaps_rollup,
    read_smaps_rollup,
)
from tests.fakes import MIB, make_proc, smaps_rollup_text, stat_text, write


def test_parse_smaps_rollup_uss_is_private_clean_plus_private_dirty():
    text = smaps_rollup_text(rss_kb=55300, pss_kb=37400, private_clean_kb=1200, private_dirty_kb=14500, swap_kb=64)

    memory = parse_smaps_rollup(4242, text)

    assert memory.pid == 4242
    assert memory.rss_bytes == 55300 * 1024
    assert memory.pss_bytes == 37400 * 1024
    assert memory.uss_bytes == (1200 + 14500) * 1024
    assert memory.swap_bytes == 64 * 1024


def test_parse_smaps_rollup_ignores_the_header_and_lookalike_keys():
    # Pss_Dirty, Pss_Anon and SwapPss must not be mistaken for Pss and Swap.
    text = smaps_rollup_text(rss_kb=1000, pss_kb=300, private_clean_kb=0, private_dirty_kb=700, swap_kb=0)

    memory = parse_smaps_rollup(1, text)

    assert (memory.pss_bytes, memory.swap_bytes) == (300 * 1024, 0)


def test_read_smaps_rollup_from_a_fake_tree(tmp_path):
    make_proc(tmp_path, 310, 1, smaps_rollup=smaps_rollup_text(20000, 9000, 500, 6000))

    memory = read_smaps_rollup(310, tmp_path)

    assert memory is not None
    assert (memory.pid, memory.rss_bytes, memory.pss_bytes, memory.uss_bytes) == (
        310,
        20000 * 1024,
        9000 * 1024,
        6500 * 1024,
    )


def test_read_smaps_rollup_of_a_gone_process_is_none(tmp_path):
    make_proc(tmp_path, 311, 1)  # no smaps_rollup: it ended, or it is not ours to read

    assert read_smaps_rollup(311, tmp_path) is None
    assert read_smaps_rollup(99999, tmp_path) is None


def test_read_smaps_rollup_of_self_names_this_pid(tmp_path):
    write(tmp_path / "proc/self/smaps_rollup", smaps_rollup_text(1000, 800, 100, 200))

    memory = read_smaps_rollup("self", tmp_path)

    assert memory is not None and memory.pid == os.getpid()
    assert memory.uss_bytes == 300 * 1024


def test_read_smaps_rollup_of_this_process_agrees_with_psutil():
    if not Path(f"/proc/{os.getpid()}/smaps_rollup").exists():
        pytest.skip("this kernel has no smaps_rollup")

    ours = read_smaps_rollup(os.getpid())
    theirs = psutil.Process().memory_full_info()

    assert ours is not None and ours.pid == os.getpid()
    assert abs(ours.uss_bytes - theirs.uss) <= 4 * MIB
    assert abs(ours.pss_bytes - theirs.pss) <= 4 * MIB
    assert abs(ours.rss_bytes - theirs.rss) <= 4 * MIB
    assert ours.rss_bytes >= ours.pss_bytes >= ours.uss_bytes > 0


def test_huge_pages_always_reads_the_bracketed_mode(tmp_path):
    write(tmp_path / "sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    assert huge_pages_always(tmp_path) is False
    write(tmp_path / "sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never\n")
    assert huge_pages_always(tmp_path) is True
    assert huge_pages_always(tmp_path / "no-sys") is False  # a kernel without THP: a fault is a page


@pytest.mark.parametrize(
    ("comm", "ppid"),
    [
        ("python3", 1),
        ("gunicorn: worker [wsgi:app]", 812),
        ("a) b (c", 44),
        ("x) S 999 (", 7),  # a name built to look like the fields that follow it
        (")", 2),
        ("", 3),
    ],
)
def test_parent_pid_survives_any_command_name(comm, ppid):
    assert parent_pid(stat_text(1234, ppid, comm)) == ppid


def test_parent_pid_of_this_process():
    assert parent_pid(Path("/proc/self/stat").read_text()) == os.getppid()


def test_children_of_a_fake_tree(tmp_path):
    make_proc(tmp_path, 100, 1, comm="gunicorn: master [wsgi:app]")
    make_proc(tmp_path, 205, 100, comm="gunicorn: worker [wsgi:app]")
    make_proc(tmp_path, 117, 100, comm="gunicorn: worker (busy) [x]")
    make_proc(tmp_path, 300, 205, comm="grandchild")
    make_proc(tmp_path, 400, 1, comm="someone else")
    write(tmp_path / "proc/self/stat", stat_text(100, 1))  # not a pid folder: skipped
    (tmp_path / "proc/999").mkdir()  # a process that ended while we looked: no stat

    assert children_of(100, tmp_path) == [117, 205]
    assert children_of(205, tmp_path) == [300]
    assert children_of(300, tmp_path) == []


def test_children_of_without_proc_is_empty(tmp_path):
    assert children_of(1, tmp_path) == []


def test_statm_reader_sees_this_process_grow():
    reader = StatmReader()
    try:
        rss_before, data_before = reader.read()
        buffer = bytearray(50 * MIB)
        for offset in range(0, len(buffer), PAGE_BYTES):
            buffer[offset] = 1  # touch every page so it is resident
        rss_after, data_after = reader.read()
        assert rss_after - rss_before >= 40 * MIB
        assert data_after - data_before >= 40 * MIB
        assert buffer[0] == 1  # the buffer is alive through both reads
    finally:
        reader.close()


def test_statm_reader_matches_psutil_rss():
    reader = StatmReader()
    try:
        rss, _data = reader.read()
        assert abs(rss - psutil.Process().memory_info().rss) <= 4 * MIB
    finally:
        reader.close()


def test_statm_reader_on_a_fake_tree(tmp_path):
    write(tmp_path / "proc/self/statm", "6361 1024 512 100 0 2048 0\n")
    reader = StatmReader(tmp_path)
    try:
        assert reader.read() == (1024 * PAGE_BYTES, 2048 * PAGE_BYTES)
    finally:
        reader.close()
