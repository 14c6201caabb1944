"""The relative budget, with real gunicorn on this machine as a laptop is: no memory limit anywhere.

The test runner's own cgroup has no memory limit here, so the plan's limit is
the host's (24 GB: 19 GB a worker). The leak is paced (a worker younger than
2 s is not recycled below its hard cap) and bounded by the test, never by the
machine.
"""

from __future__ import annotations

import re

import pytest

from harness.fitflix_log import parse_recycles
from harness.load import run_load
from harness.wait import poll_until

SERVICE = "harness.apps.service_with_leaks:app"
BANNER = re.compile(r"Worker budget: absolute (\d+) MB, relative (\d+) MB \(3 x the app's (\d+) MB\): relative applies")
# 1 MB each 25 ms from one client: about 35 MB/s, so the worker is past its 2 s minimum lifetime near
# the relative budget (the hard cap stays the absolute one, and nothing else stops a young worker).
LEAK = "/leak?mb=1&ms=25"


def host_limit_or_skip(server) -> None:
    status, document = server.get_json("/health/memory")
    if document["memory"]["limitSource"] != "host":
        pytest.skip(f"this machine gives the service a limit ({document['memory']['limitSource']}): not a laptop")


def test_with_no_limit_a_leaking_worker_is_recycled_at_three_times_the_apps_size(live_server):
    server = live_server({"MAX_REQUESTS": "0"}, app=SERVICE)
    host_limit_or_skip(server)
    banner = poll_until(lambda: BANNER.search(server.log()), 10, "the banner's budgets")
    absolute_mb, relative_mb, app_mb = map(int, banner.groups())
    assert absolute_mb > 10 * relative_mb  # the host's share, far above what the app needs
    assert 2.5 * app_mb <= relative_mb <= 3.5 * app_mb
    for _round in range(40):  # at most 40 x 20 MB leaked
        assert run_load(server.port, LEAK, requests=20, clients=1, time_limit_s=60).failed == 0
        if parse_recycles(server.log(), "memory"):
            break
    recycled = poll_until(lambda: parse_recycles(server.log(), "memory"), 10, "a memory recycle at the relative budget")
    uss_mb, budget_mb = recycled[0].uss_mb, recycled[0].budget_mb
    assert budget_mb == relative_mb
    assert uss_mb < 2 * relative_mb, "recycled far past the relative budget"
    document = server.get_json("/health/memory")[1]["thresholds"]
    assert (document["budgetRule"], document["relativeBudgetMb"], document["memoryMultiple"]) == (
        "relative",
        relative_mb,
        3,
    )


def test_with_the_multiple_off_the_same_leak_grows_past_it_until_the_test_stops(live_server):
    server = live_server({"MAX_REQUESTS": "0", "WORKER_MEMORY_MULTIPLE": "0"}, app=SERVICE)
    host_limit_or_skip(server)
    assert "applies; relative off (WORKER_MEMORY_MULTIPLE=0)" in server.log()
    relative_would_be_mb = 3 * server.get_json("/health/memory")[1]["thresholds"]["appBaselineMb"]
    for _round in range(12):  # 240 MB in all, well past 2 x what the relative budget would allow
        assert run_load(server.port, LEAK, requests=20, clients=1, time_limit_s=60).failed == 0
    status, document = server.get_json("/health/memory")
    worker_uss_mb = max(p["ussBytes"] for p in document["processes"] if p["role"] == "worker") / 2**20
    assert worker_uss_mb > 2 * relative_would_be_mb
    assert "reason=memory" not in server.log()
