"""The memory promise at its edges, with real gunicorn in real memory cgroups.

Spikes of every size around the hard cap and past the limit at any THREADS;
memory in the cgroup that is not the service's; a SIGUSR2 upgrade under load
and CRITICAL memory; TTIN and TTOU moving the per-worker budgets.
"""

from __future__ import annotations

import os
import re
import signal
import threading

import pytest

from fitflix.memory.process import children_of, read_smaps_rollup
from harness.load import run_load
from harness.wait import poll_until

pytestmark = [pytest.mark.cgroup]

SERVICE_WITH_LEAKS = "harness.apps.service_with_leaks:app"
MIB = 1024 * 1024
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:\d+ \((\d+)\)")
RECYCLING = re.compile(r"Memory guard: recycling worker (\d+) ")


def answers(server) -> bool:
    try:
        return server.request("GET", "/health", timeout_s=2)[0] == 200
    except OSError:
        return False


def spike_sizes_mb(hard_cap_mb: int, limit_mb: int) -> list[int]:
    """From 10% under the hard cap to 4x the limit."""
    return [
        int(hard_cap_mb * 0.9),
        hard_cap_mb,
        (hard_cap_mb + limit_mb) // 2,
        limit_mb,
        limit_mb * 3 // 2,
        limit_mb * 4,
    ]


@pytest.mark.parametrize("threads", [1, 8, 32])
@pytest.mark.parametrize("limit_mb", [256, 512])
def test_no_spike_of_any_size_meets_the_oom_killer(live_server, memory_cgroup, limit_mb, threads):
    cgroup = memory_cgroup(limit_mb)
    server = live_server({"THREADS": str(threads)}, app=SERVICE_WITH_LEAKS, cgroup=cgroup)
    hard_cap_mb = server.get_json("/health/memory")[1]["thresholds"]["workerHardCapMb"]

    outcomes = {}
    for size_mb in spike_sizes_mb(hard_cap_mb, limit_mb):
        status, _headers, body = server.request("GET", f"/spike?mb={size_mb}", timeout_s=60)
        outcomes[size_mb] = status
        assert status in (200, 503), (size_mb, status, body)
        poll_until(lambda: answers(server), 10, f"a 200 from /health after a {size_mb} MB spike")

    sizes = list(outcomes)
    assert outcomes[sizes[0]] == 200, f"a spike under the hard cap ({hard_cap_mb} MB) was refused: {outcomes}"
    assert all(outcomes[size] == 503 for size in sizes[1:]), outcomes
    assert cgroup.oom_kills() == 0, outcomes
    assert cgroup.peak_bytes() < limit_mb * MIB


def monitor_samples(server) -> int:
    return server.log().count("Memory usage:")


@pytest.mark.parametrize(
    ("cgroup_mb", "env", "holder_mb", "status", "used_source"),
    [
        (1024, {"MAX_MEMORY_MB": "256"}, 400, "OK", "service PSS"),
        (512, {}, 440, "CRITICAL", "cgroup v1 working set"),
    ],
    ids=["MAX_MEMORY_MB-below-the-cgroup", "the-cgroup-is-the-container"],
)
def test_memory_that_is_not_the_services_is_reported_and_never_recycled_for(
    live_server, memory_cgroup, memory_holder, cgroup_mb, env, holder_mb, status, used_source
):
    cgroup = memory_cgroup(cgroup_mb)
    server = live_server({"MEMORY_LOG_INTERVAL_S": "1", **env}, cgroup=cgroup)
    workers_before = server.worker_pids()
    if status == "CRITICAL":
        # Past the 90% line by 24 MB whatever this interpreter's tree holds: 3.13's is smaller than 3.11's,
        # and a fixed holder left the SIGUSR2 test below at 89% in CI.
        holder_mb = max(holder_mb, cgroup_mb * 90 // 100 + 24 - cgroup.working_set_bytes() // MIB)
    memory_holder(cgroup, holder_mb)

    # 12 samples of the master's monitor (one a second) with the holder in place: two guard cooldowns and more.
    after_holder = monitor_samples(server)
    poll_until(lambda: monitor_samples(server) >= after_holder + 12, 30, "12 more samples of the memory monitor")

    _code, memory = server.get_json("/health/memory")
    container = memory["container"]
    if container["usedSource"].startswith("cgroup"):
        used_source = used_source.replace("v1", f"v{container['cgroupVersion']}")
    assert (memory["status"], container["usedSource"]) == (status, used_source), memory
    assert container["neighboursBytes"] >= (holder_mb - 10) * MIB
    assert container["neighboursBytes"] == container["workingSetBytes"] - memory["servicePssBytes"]
    assert memory["recycles"]["guard"] == 0
    assert server.worker_pids() == workers_before
    log = server.log()
    assert "Memory guard: recycling worker" not in log
    if status == "CRITICAL":
        assert log.count("held outside the workers") == 1, log
    assert cgroup.oom_kills() == 0


def masters(server) -> list[int]:
    return [int(pid) for pid in LISTENING.findall(server.log())]


def private_mb(pid: int) -> int:
    """A process's private memory (USS) in whole MB, rounded up; 0 when it is gone."""
    memory = read_smaps_rollup(pid)
    return -(-(memory.private_bytes() or 0) // MIB) if memory is not None else 0


def logged_by(server, pid: int, text: str) -> bool:
    return f"[{pid}] " in server.log() and any(
        f"[{pid}] " in line and text in line for line in server.log().splitlines()
    )


def test_sigusr2_upgrade_under_load_and_critical_memory_loses_nothing(live_server, memory_cgroup, memory_holder):
    """The old master's guard at CRITICAL must never take the new master (its child, and bigger) for a worker."""
    cgroup = memory_cgroup(1024)
    server = live_server({"WEB_CONCURRENCY": "2", "MEMORY_LOG_INTERVAL_S": "1"}, app=SERVICE_WITH_LEAKS, cgroup=cgroup)
    old_master = server.master_pid
    seen_workers: list[object] = []
    stop_sampling = threading.Event()

    old_tree: set[int] = set()  # every child the old master had, seen every 50 ms: its workers, and the new master
    new_tree: set[int] = set()  # the new master and every worker it had

    def sample_worker_counts() -> None:
        while not stop_sampling.wait(0.05):
            old_tree.update(children_of(old_master))
            if new_master is not None:
                new_tree.update([new_master, *children_of(new_master)])
            try:
                seen_workers.append(server.get_json("/health/memory", timeout_s=5)[1]["clustering"]["workers"])
            except OSError as error:
                seen_workers.append(repr(error))

    sampler = threading.Thread(target=sample_worker_counts, daemon=True)
    load = {}
    loader = threading.Thread(
        target=lambda: load.update(result=run_load(server.port, "/sleep?ms=20", 3000, 4, time_limit_s=60)),
        daemon=True,
    )
    new_master = None
    sampler.start()
    loader.start()
    try:
        os.kill(old_master, signal.SIGUSR2)
        new_master = poll_until(lambda: [pid for pid in masters(server) if pid != old_master], 30, "a new master")[0]
        poll_until(lambda: server.log().count("Booting worker") >= 4, 30, "the new master's two workers")
        # Now push the shared cgroup over its critical level (90%, 922 MB) with both trees in it. The
        # holder tops up what the trees hold: on 3.13 they are smaller, and a fixed 860 MB left it at 89%.
        # It also covers the old workers' private memory, all that recycling them could give back: with
        # 24 MB over critical alone, usage that sagged a few MB let the old guard rightly recycle one.
        critical_mb = 1024 * 90 // 100
        old_workers_mb = sum(private_mb(pid) for pid in children_of(old_master) if pid != new_master)
        memory_holder(cgroup, critical_mb + 24 + old_workers_mb - cgroup.working_set_bytes() // MIB)
        poll_until(lambda: logged_by(server, old_master, "Memory CRITICAL"), 15, "CRITICAL in the old master")
        poll_until(lambda: logged_by(server, old_master, "Memory guard:"), 15, "the old master's guard to act")
        os.kill(old_master, signal.SIGTERM)  # the graceful end of the old master and its workers
        server.process.wait(timeout=40)
        loader.join(90)
        assert os.kill(new_master, 0) is None  # the new master survived its parent's guard and exit
        assert answers(server)
    finally:
        stop_sampling.set()
        sampler.join(10)
        if new_master is not None:
            try:
                os.kill(new_master, signal.SIGTERM)  # a child of the old master we started: ours to end
            except ProcessLookupError:
                pass

    result = load["result"]
    assert result.failed == 0 and result.unsent == 0, result.statuses
    assert server.process.returncode == 0
    # The old master's guard judged the memory outside its workers, and never took the new master, or its
    # workers, for one of its own: whatever it recycled was a worker it had. (The promoted master's own guard
    # may rightly recycle one of its workers: the holder leaves usage at the critical level.)
    assert logged_by(server, old_master, "the memory is held outside the workers")
    recycled = [
        int(match.group(1))
        for line in server.log().splitlines()
        if f"[{old_master}] " in line and (match := RECYCLING.search(line))
    ]
    old_workers = old_tree - set(masters(server))
    assert old_workers and new_tree and not old_workers & new_tree, (old_workers, new_tree)
    assert set(recycled) <= old_workers, (recycled, old_workers, new_tree)
    assert seen_workers and all(count in (1, 2) for count in seen_workers), seen_workers
    assert cgroup.oom_kills() == 0


def test_ttin_and_ttou_move_the_budgets_with_the_worker_count(live_server, memory_cgroup):
    cgroup = memory_cgroup(512)
    server = live_server({"WEB_CONCURRENCY": "1"}, app=SERVICE_WITH_LEAKS, cgroup=cgroup)
    one = server.get_json("/health/memory")[1]["thresholds"]
    assert (one["workerBudgetMb"], one["workerHardCapMb"]) == (361, 412)

    os.kill(server.master_pid, signal.SIGTTIN)
    poll_until(lambda: len(server.worker_pids()) == 2, 15, "a second worker")
    assert "Plan: 2 workers now (was 1): worker budget 180MB, hard cap 205MB" in server.log()

    # The first worker adopts the new budgets after its next request; the new one was born with them.
    def both_follow() -> bool:
        run_load(server.port, "/health", requests=20, clients=2, time_limit_s=10)
        return "budgets for 2 workers" in server.log()

    poll_until(both_follow, 20, "the first worker to adopt the budgets for 2 workers")
    two = server.get_json("/health/memory")[1]
    assert (two["thresholds"]["workerBudgetMb"], two["thresholds"]["workerHardCapMb"]) == (180, 205)
    assert two["clustering"]["plannedWorkers"] == 2
    # 300 MB fitted under one worker's 412 MB hard cap; under 205 MB it fails alone, in either worker
    for _ in range(4):
        status, _headers, _body = server.request("GET", "/spike?mb=300", timeout_s=60)
        assert status == 503
        poll_until(lambda: answers(server), 10, "a 200 after the spike")

    os.kill(server.master_pid, signal.SIGTTOU)
    poll_until(lambda: "Plan: 1 workers now (was 2)" in server.log(), 15, "the plan for one worker")
    poll_until(lambda: len(server.worker_pids()) == 1, 30, "one worker again")
    back = server.get_json("/health/memory")[1]
    assert (back["thresholds"]["workerBudgetMb"], back["clustering"]["plannedWorkers"]) == (361, 1)
    assert cgroup.oom_kills() == 0


@pytest.mark.parametrize(
    "flags", [("--threads", "2"), ("-k", "sync", "--threads", "1")], ids=["threads-flag", "sync-worker"]
)
def test_a_flag_that_overrides_the_plans_threads_keeps_the_hard_cap_exact(live_server, memory_cgroup, flags):
    """The pool is gunicorn's size, not the plan's: no room is left for stacks that will never exist."""
    cgroup = memory_cgroup(256)
    server = live_server(app=SERVICE_WITH_LEAKS, cgroup=cgroup, extra_args=flags)
    hard_cap_mb = server.get_json("/health/memory")[1]["thresholds"]["workerHardCapMb"]

    assert server.request("GET", f"/spike?mb={hard_cap_mb * 9 // 10}", timeout_s=60)[0] == 200
    poll_until(lambda: answers(server), 10, "a 200 after the spike")
    assert server.request("GET", f"/spike?mb={hard_cap_mb + 16}", timeout_s=60)[0] == 503
    assert "Memory recycling is off" not in server.log()
    assert cgroup.oom_kills() == 0
