"""The operator's drill: rolling restarts and a memory recycle behind HAProxy, and not one request lost.

Two instances with the defaults, each in a 512 MB memory cgroup, behind
Debian's HAProxy (checks /health/ready every 250 ms, no retries, no
redispatch); 8 keep-alive clients through HAProxy for the whole run. Every
instance in turn gets SIGTERM, exits and is replaced on its port, and HAProxy
must show it UP before the next one goes: twice over. Then one instance is fed
a leak until it recycles a worker for memory, the clients still going.

Skips without haproxy; fails instead under FITFLIX_REQUIRE_HAPROXY=1 (.ci/run).
"""

from __future__ import annotations

import http.client
import os
import subprocess
import time

import pytest

from harness.balancer import (
    READY_PATH,
    Balancer,
    ClientLoad,
    Instance,
    error_terminations,
    failure_kinds,
    failures_by_phase,
    free_port,
    haproxy_config,
    haproxy_path,
    haproxy_problem,
    rolling_restarts,
)
from harness.fitflix_log import parse_recycles
from harness.wait import poll_until

REQUIRE_HAPROXY = os.environ.get("FITFLIX_REQUIRE_HAPROXY") == "1"
INSTANCES = ("a", "b")
LIMIT_MB = 512
ROUNDS = 2
CLIENTS = 8
LEAK_MB = 16  # per request: the default 361 MB budget is crossed after ~20 of them
LEAK_REQUESTS_MAX = 40  # 640 MB: past the budget, the hard cap and the limit, so it must recycle before
LEAK_TIME_LIMIT_S = 30.0


@pytest.fixture
def haproxy() -> str:
    """HAProxy's path; skip without it (fail under FITFLIX_REQUIRE_HAPROXY=1)."""
    problem = haproxy_problem()
    if problem is not None:
        if REQUIRE_HAPROXY:
            pytest.fail(f"FITFLIX_REQUIRE_HAPROXY=1 but {problem}")
        pytest.skip(problem)
    return haproxy_path()


@pytest.fixture
def instances(memory_cgroup):
    """Start fitflix instances (name -> env) on fixed ports, each generation in its own cgroup; closed at teardown."""
    started: list[Instance] = []

    def start(env: dict[str, str] | None = None) -> list[Instance]:
        for name in INSTANCES:
            instance = Instance(name, free_port(), env=env, limit_mb=LIMIT_MB, cgroup_factory=memory_cgroup)
            started.append(instance)
            try:
                instance.start()
            except AssertionError as error:
                pytest.fail(str(error))
        return started

    yield start
    for instance in started:
        instance.close()


def test_the_balancer_config_is_one_haproxy_accepts(haproxy, tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(free_port(), free_port(), {"a": free_port(), "b": free_port()}))
    checked = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "retries 0" in config.read_text() and "redispatch" not in config.read_text()


def memory_recycle_pids(instance: Instance) -> list[int]:
    """The workers that left `instance` for memory, from their own lines (fitflix/serving/recycler.py), in log order."""
    return [recycle.pid for recycle in parse_recycles(instance.log(), "memory")]


def leak_until_a_memory_recycle(instance: Instance) -> tuple[int, int]:
    """GET /leak straight to `instance` (bounded) until a worker leaves for memory: (leak requests, its pid)."""
    already = len(memory_recycle_pids(instance))
    deadline = time.monotonic() + LEAK_TIME_LIMIT_S
    sent = 0
    while sent < LEAK_REQUESTS_MAX and time.monotonic() < deadline:
        sent += 1
        try:
            instance.server.request("GET", f"/leak?mb={LEAK_MB}", timeout_s=10)
        except (OSError, http.client.HTTPException):
            pass  # the worker may be on its way out: its log says whether it left for memory
        recycles = memory_recycle_pids(instance)
        if len(recycles) > already:
            return sent, recycles[-1]
    # The recycle line comes once the worker's last requests are done: give it a moment.
    recycles = poll_until(lambda: memory_recycle_pids(instance)[already:], 10, f"a memory recycle in {instance.name}")
    return sent, recycles[-1]


@pytest.mark.drill
@pytest.mark.cgroup
@pytest.mark.timeout(150)
def test_rolling_restarts_and_a_memory_recycle_behind_haproxy_lose_no_request(haproxy, instances):
    fleet = instances()
    with Balancer({instance.name: instance.port for instance in fleet}) as balancer:
        balancer.wait_until_up(INSTANCES)
        load = ClientLoad(balancer.port, clients=CLIENTS, time_limit_s=140)
        with load:
            rounds = rolling_restarts(balancer, fleet, ROUNDS, load)
            load.wait_for_more(200)
            leak_started = time.monotonic()
            leaked, recycled_pid = leak_until_a_memory_recycle(fleet[0])
            poll_until(fleet[0].ready, 15, f"{fleet[0].name}'s new worker to answer {READY_PATH}")
            balancer.wait_until_up(INSTANCES)
            load.wait_for_more(200)
        answers = load.answers()
    terminations = error_terminations(balancer.log())  # once HAProxy has stopped: its whole log is read

    failures = failure_kinds(answers)
    phases = rounds.phases() + [(leak_started, "the leak")]
    failed_text = f" {dict(failures)}, by phase {dict(failures_by_phase(answers, phases))}" if failures else ""
    print(
        f"drill: {len(answers)} requests through HAProxy, {sum(failures.values())} failed{failed_text}"
        f"{'; HAProxy logged ' + str(dict(terminations)) if terminations else ''}; {rounds.summary()}; "
        f"memory recycle of worker {recycled_pid} after {leaked} leak requests of {LEAK_MB} MB"
    )

    assert len(rounds.restarts) == ROUNDS * len(fleet)
    for restart in rounds.restarts:
        assert restart.new_master != restart.old_master, restart
        assert restart.exit_code == 0, restart
    assert all(len(set(instance.masters)) == ROUNDS + 1 for instance in fleet), [i.masters for i in fleet]
    assert recycled_pid not in fleet[0].server.worker_pids()
    assert len(answers) >= 1000, f"only {len(answers)} requests went through HAProxy"
    assert not failures, (
        f"{sum(failures.values())} of {len(answers)} requests failed: {dict(failures)}; "
        f"by phase {dict(failures_by_phase(answers, phases))}; HAProxy's 5xx: {dict(terminations)}"
    )
    assert {instance.name: instance.oom_kills() for instance in fleet} == dict.fromkeys(INSTANCES, 0)
