"""MEMORY_PROFILE under real gunicorn: the leak in a real 512 MB cgroup under each profile, and the arena cap.

Speed and memory targets (memory-optimized's peak at most 0.85 x standard's, the busy worker's USS) are
in the benchmark (bench/profiles.py, BENCHMARKS.md part 13); here only what must always hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.fitflix_log import parse_recycles
from harness.load import run_load
from harness.wait import poll_until

LEAKY = "harness.apps.leaky:app"
# glibc reserves each thread arena's heap as 64 MB of address space; what is not in use yet is a
# PROT_NONE (---p) anonymous mapping of most of that size. Nothing else in a worker maps one that big.
ARENA_RESERVE_KB = range(32 * 1024, 64 * 1024 + 1)


@pytest.mark.cgroup
def test_the_leak_under_each_profile_loses_nothing_and_memory_optimized_peaks_lower(live_server, memory_cgroup):
    peaks = {}
    for profile in ("standard", "memory-optimized"):
        cgroup = memory_cgroup(512)
        server = live_server({"MEMORY_PROFILE": profile, "DRAIN_S": "0"}, app=LEAKY, cgroup=cgroup)

        result = run_load(server.port, "/leak?mb=2", requests=600, clients=2, time_limit_s=120)

        assert result.unsent == 0, profile
        assert result.statuses == {200: 600}, profile  # 1.2 GB leaked through 512 MB, no request lost
        assert cgroup.oom_kills() == 0, profile
        assert len(parse_recycles(server.log(), "memory")) >= 2, profile
        assert f"Memory profile: {profile} (" in server.log()
        peaks[profile] = cgroup.peak_bytes()
        server.close()
    assert peaks["memory-optimized"] < peaks["standard"], peaks


def thread_arenas(pid: int) -> int:
    """Thread malloc arenas of `pid`: their PROT_NONE reserves in /proc/PID/smaps."""
    count = 0
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[1] == "---p":  # anonymous: no path
            start, end = (int(value, 16) for value in fields[0].split("-"))
            count += (end - start) // 1024 in ARENA_RESERVE_KB
    return count


def test_malloc_arena_max_caps_arenas_before_any_thread_starts(live_server):
    arenas = {}
    for cap in ("0", "2"):
        # 8 threads in both, so only the arena cap differs; 8 clients at once keep them all busy.
        server = live_server({"MALLOC_ARENA_MAX": cap, "THREADS": "8", "DRAIN_S": "0"}, app=LEAKY)
        result = run_load(server.port, "/sleep?ms=20", requests=400, clients=8, time_limit_s=60)
        assert result.statuses == {200: 400}
        (worker,) = poll_until(lambda s=server: s.worker_pids() or None, 10, "the worker")
        arenas[cap] = thread_arenas(worker)
        server.close()
    assert arenas["2"] <= 1  # the main arena and one more
    assert arenas["0"] > arenas["2"], arenas  # glibc's own: one per busy thread
