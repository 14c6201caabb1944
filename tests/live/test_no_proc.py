"""The service on a host without /proc and /sys (what a Mac offers it), played in a private mount namespace.

Real gunicorn, real kernel; only the mounts differ. The test itself still sees
the real /proc from outside, so what the service says can be checked against it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from harness.fitflix_log import parse_recycles
from harness.load import run_load
from harness.noproc import NO_PROC, no_proc_problem
from harness.server import run_to_exit
from harness.wait import poll_until
from tests.conftest import REQUIRE_CGROUP

MIB = 1024 * 1024
LEAKS = "harness.apps.service_with_leaks:app"


@pytest.fixture(scope="module")
def no_proc():
    problem = no_proc_problem()
    if problem:
        if REQUIRE_CGROUP:
            pytest.fail(f"FITFLIX_REQUIRE_CGROUP=1 but a host without /proc cannot be played here: {problem}")
        pytest.skip(f"a host without /proc cannot be played here: {problem}")
    return NO_PROC


def host_mb() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // MIB


def test_plan_takes_the_limit_from_the_hosts_memory(no_proc):
    result = run_to_exit(*no_proc, sys.executable, "-m", "fitflix", "plan", "--json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["container"]["host_memory_source"] == "sysconf"  # psutil cannot read meminfo without /proc
    assert document["plan"]["limit_mb"] == host_mb()
    assert document["plan"]["limit_source"] == "host"
    assert document["container"]["cgroup_version"] is None
    assert document["workerBaselineMb"] > 10  # getrusage's peak, not the 0 of a figure that could not be read


def test_defaults_start_and_health_answers_with_the_hosts_limit(live_server, no_proc):
    server = live_server(prefix=no_proc)

    status, body = server.get_json("/health")
    assert (status, body["status"]) == (200, "OK")
    status, body = server.get_json("/health/memory")
    assert status == 200
    assert (body["memory"]["limit"], body["memory"]["limitSource"]) == (host_mb(), "host")
    assert body["container"]["cgroupVersion"] is None and "container" in body["unavailable"]
    assert body["servicePssBytes"] is None and "servicePssBytes" in body["unavailable"]
    worker = next(process for process in body["processes"] if process["role"] == "worker")
    assert worker["pssBytes"] is None and worker["unavailable"]["pssBytes"]
    assert "getrusage peak" in worker["source"]
    # The kernel's own peak, read from outside, never falls: the figure reported before it is at most that
    # (but for the few hundred KB Linux's per-CPU RSS counters differ by), and near it.
    status_lines = Path(f"/proc/{worker['pid']}/status").read_text().splitlines()
    hwm_bytes = next(int(line.split()[1]) for line in status_lines if line.startswith("VmHWM:")) * 1024
    assert 0.8 * hwm_bytes <= worker["peakRssBytes"] <= 1.02 * hwm_bytes
    assert "Memory figures: no /proc here" in server.log()
    assert "Traceback" not in server.log()


def test_a_leaking_app_is_recycled_without_proc(live_server, no_proc):
    # 512, not less: a server on getrusage's peak starts at the peak of whatever started it (ru_maxrss
    # survives fork and exec), and this test runner's peak reaches 160-200 MB by the time this runs.
    server = live_server({"MAX_MEMORY_MB": "512"}, app=LEAKS, prefix=no_proc)
    first_worker = server.worker_pids()

    result = run_load(server.port, "/leak?mb=2", requests=450, clients=2, time_limit_s=90)

    assert result.unsent == 0
    assert result.statuses == {200: 450}
    poll_until(
        lambda: [recycle for recycle in parse_recycles(server.log(), "memory") if recycle.figures == "getrusage-peak"],
        10,
        "a memory recycle line with figures=getrusage-peak",
    )
    status, body = server.get_json("/health/memory")
    assert status == 200
    assert body["recycles"]["memory"] >= 2  # 900 MB leaked through a 361 MB budget
    assert body["requestsServed"] >= 450
    assert server.worker_pids() != first_worker
