"""fitflix.memory.process in a real fork's child: what a worker's boot takes for its USS."""

from __future__ import annotations

import os

import pytest

from fitflix.memory.process import PAGE_BYTES, faulted_bytes, huge_pages_always, read_smaps_rollup

MIB = 1024 * 1024


def test_a_forks_page_faults_bound_its_uss_from_above_and_closely():
    """What a worker's boot takes for its USS (recycler `_boot_uss`), against smaps in a real fork's child."""
    if huge_pages_always():
        pytest.skip("transparent huge pages are 'always' here: one fault may bring 512 pages, no bound is claimed")
    inherited = bytearray(48 * MIB)
    inherited[::PAGE_BYTES] = b"x" * len(range(0, len(inherited), PAGE_BYTES))  # resident, shared after the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: make some pages its own, as a worker's boot does, then compare
        try:
            inherited[: 12 * MIB : PAGE_BYTES] = b"y" * len(range(0, 12 * MIB, PAGE_BYTES))  # copies on write
            fresh = bytearray(6 * MIB)
            fresh[::PAGE_BYTES] = b"z" * len(range(0, len(fresh), PAGE_BYTES))  # new pages
            memory = read_smaps_rollup("self")
            os.write(write_end, f"{faulted_bytes()} {memory.uss_bytes}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        faulted, uss = (int(value) for value in os.read(read_end, 100).split())
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert uss >= 18 * MIB  # the 12 MB copied and the 6 MB new are the child's own
    assert uss <= faulted <= uss * 1.25 + 2 * MIB, (faulted / MIB, uss / MIB)
