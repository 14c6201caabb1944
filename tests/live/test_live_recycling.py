"""Sizing and recycling with real gunicorn, gunicorn.conf.py and a leaking app, in real memory cgroups."""

from __future__ import annotations

import pytest

from harness.fitflix_log import parse_recycles
from harness.load import run_load
from harness.server import GUNICORN, run_to_exit
from harness.wait import poll_until

LEAKY = "harness.apps.leaky:app"


@pytest.mark.cgroup
@pytest.mark.parametrize(
    ("limit_mb", "env", "workers"),
    [(512, {}, 1), (1024, {"ENABLE_CLUSTERING": "true"}, 3)],
    ids=["512MB-default", "1024MB-clustering"],
)
def test_steady_leak_is_recycled_with_no_failed_request_and_no_oom_kill(
    live_server, memory_cgroup, limit_mb, env, workers
):
    cgroup = memory_cgroup(limit_mb)
    server = live_server(env, app=LEAKY, cgroup=cgroup)
    poll_until(lambda: len(server.worker_pids()) == workers, 10, f"{workers} worker(s)")

    result = run_load(server.port, "/leak?mb=2", requests=1000, clients=4, time_limit_s=120)

    assert result.unsent == 0
    assert result.statuses == {200: 1000}
    assert cgroup.oom_kills() == 0
    assert len(parse_recycles(server.log(), "memory")) >= 2  # 2 GB leaked through a limit of at most 1 GB
    assert cgroup.peak_bytes() < limit_mb * 1024 * 1024 * 0.9


@pytest.mark.cgroup
def test_one_request_past_the_limit_fails_alone_and_the_service_answers_after(live_server, memory_cgroup):
    cgroup = memory_cgroup(512)
    server = live_server(app=LEAKY, cgroup=cgroup)

    status, headers, body = server.request("GET", "/spike?mb=700", timeout_s=60)

    assert status == 503 and headers["Content-Type"] == "application/json" and b"memory" in body
    poll_until(lambda: server.request("GET", "/health")[0] == 200, 5, "a 200 after the spike")
    assert cgroup.oom_kills() == 0
    poll_until(lambda: parse_recycles(server.log(), "backstop"), 10, "the backstop recycle line")


def test_max_requests_with_jitter_recycles_workers_at_different_counts(live_server):
    server = live_server({"WEB_CONCURRENCY": "2", "MAX_REQUESTS": "20", "MAX_REQUESTS_JITTER": "15"}, app=LEAKY)

    # A worker at its count serves on until its replacement is up, hundreds of requests at this speed:
    # load in rounds of 100 until four have left (bounded: the deadline ends the rounds).
    def four_have_left():
        result = run_load(server.port, "/health", requests=100, clients=2, time_limit_s=30)
        assert result.statuses == {200: 100}
        return parse_recycles(server.log(), "max_requests")[3:] and parse_recycles(server.log())

    lines = poll_until(four_have_left, 30, "four max_requests recycles")
    served = [recycle.requests for recycle in lines]
    assert all(count >= 20 for count in served)
    assert len(set(served)) > 1, f"every worker recycled after the same count: {served}"


def test_recycle_counts_show_in_health_memory(live_server):
    server = live_server({"MAX_REQUESTS": "5", "MAX_REQUESTS_JITTER": "0"})
    for _ in range(12):
        assert server.request("GET", "/health")[0] == 200

    def counted():
        return server.get_json("/health/memory")[1]["recycles"]["max_requests"] >= 2

    poll_until(counted, 10, "two max_requests recycles counted in /health/memory")
    assert len(parse_recycles(server.log(), "max_requests")) >= 2


@pytest.mark.cgroup
@pytest.mark.parametrize(
    ("limit_mb", "env", "workers"),
    [
        (512, {"ENABLE_CLUSTERING": "true"}, 1),
        (1024, {"ENABLE_CLUSTERING": "true"}, 3),
        (512, {"WEB_CONCURRENCY": "3"}, 3),
    ],
    ids=["512MB-clustering-one", "1024MB-clustering-three", "web-concurrency-wins"],
)
def test_worker_count_follows_the_cgroup_limit(live_server, memory_cgroup, limit_mb, env, workers):
    server = live_server(env, cgroup=memory_cgroup(limit_mb))
    poll_until(lambda: len(server.worker_pids()) == workers, 10, f"{workers} workers")
    status, memory = server.get_json("/health/memory")
    assert memory["clustering"]["plannedWorkers"] == workers
    assert memory["memory"]["limitSource"].startswith("cgroup")
    # one truth: the banner and the JSON agree on whether the service runs as a cluster
    banner_says = "Clustering: Enabled" in server.log()
    assert banner_says is memory["clustering"]["enabled"] is (workers > 1)


def test_budget_below_the_worker_baseline_is_refused_before_binding():
    result = run_to_exit(*GUNICORN, env={"WORKER_MAX_MEMORY_MB": "16"})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "WORKER_MAX_MEMORY_MB=16" in output and "recycled after every request" in output
    assert "Listening at" not in output and "Traceback" not in output
