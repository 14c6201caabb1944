"""Real gunicorn with gunicorn.conf.py: the endpoints, the banner, bad settings, a real 512 MB cgroup."""

from __future__ import annotations

import os
import signal

import pytest

from harness.server import GUNICORN, project_copy, run_to_exit
from harness.wait import poll_until


def test_both_endpoints_answer_json_with_no_store(live_server):
    server = live_server()
    status, health = server.get_json("/health")
    assert status == 200
    assert health["status"] == "OK" and health["service"] == "fitflix-backend"
    status, memory = server.get_json("/health/memory")
    assert status == 200
    assert {process["role"] for process in memory["processes"]} == {"master", "worker"}
    assert memory["processes"][0]["pid"] == server.master_pid
    assert memory["clustering"]["isWorker"] is True
    assert memory["clustering"]["workerId"] in server.worker_pids()
    for path in ("/health", "/health/memory", "/nowhere"):
        _status, headers, _body = server.request("GET", path)
        assert headers["Cache-Control"] == "no-store"


def test_head_and_errors_are_json(live_server):
    server = live_server()
    status, headers, body = server.request("HEAD", "/health/memory")
    assert status == 200 and body == b"" and headers["Content-Type"] == "application/json"
    status, headers, body = server.request("POST", "/health")
    assert status == 405 and headers["Content-Type"] == "application/json" and b'"status": 405' in body
    status, headers, body = server.request("GET", "/no/such/page")
    assert status == 404 and headers["Content-Type"] == "application/json"


def test_banner_is_logged_once_per_start_with_the_real_port(live_server):
    server = live_server({"WEB_CONCURRENCY": "2"})
    log = server.log()
    assert log.count("FitFlix Backend Server running on port") == 1
    assert f"FitFlix Backend Server running on port {server.port}" in log
    assert "Clustering: Enabled (2 workers)" in log
    assert "Memory usage: " in log and "MB RSS (Limit: " in log


def test_bad_settings_stop_the_start_before_binding():
    result = run_to_exit(*GUNICORN, env={"MAX_MEMORY_MB": "abc", "ENABLE_CLUSTERING": "maybe"})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "MAX_MEMORY_MB='abc'" in output and "ENABLE_CLUSTERING='maybe'" in output
    assert "Traceback" not in output
    assert "Listening at" not in output


@pytest.mark.parametrize(
    ("dotenv", "expected"),
    [
        (b'MAX_MEMORY_MB=256\nHEALTH_TOKEN="never-echo-this-secret\n', "line 2: cannot be parsed"),
        (b"HEALTH_TOKEN never-echo-this-secret\n", "line 1: cannot be parsed"),
        (b"HEALTH_TOKEN=never-echo-this-secret\xff\n", "line 1: not UTF-8"),
        (None, "not a regular file"),
    ],
    ids=["unterminated-quote", "no-equals", "not-utf-8", "a-folder"],
)
def test_a_bad_dotenv_stops_the_start_before_binding(tmp_path, dotenv, expected):
    project = project_copy(tmp_path)
    if dotenv is None:
        (project / ".env").mkdir()
    else:
        (project / ".env").write_bytes(dotenv)
    result = run_to_exit(*GUNICORN, cwd=project)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "FitFlix cannot start: the .env file cannot be used" in output and expected in output
    assert str(project / ".env") in output
    assert "never-echo-this-secret" not in output
    assert "Traceback" not in output and "Listening at" not in output


def test_sighup_applies_a_changed_dotenv_and_says_what_changed(live_server, tmp_path):
    project = project_copy(tmp_path)
    dotenv = project / ".env"
    dotenv.write_text("MAX_REQUESTS=1000\nTHREADS=8\nMAX_MEMORY_MB=512\n")
    server = live_server({"MEMORY_LOG_INTERVAL_S": "1"}, project=project)
    first_workers = server.worker_pids()

    dotenv.write_text("MAX_REQUESTS=50\nTHREADS=4\nMAX_MEMORY_MB=256\nHEALTH_TOKEN=never-echo-this-secret\n")
    os.kill(server.master_pid, signal.SIGHUP)
    poll_until(lambda: "SIGHUP: MAX_REQUESTS 1000 -> 50" in server.log(), 15, "the changes logged")
    poll_until(lambda: server.worker_pids() and not set(server.worker_pids()) & set(first_workers), 30, "new workers")
    log = server.log()
    assert "SIGHUP: THREADS 8 -> 4" in log and "SIGHUP: plan threads 8 -> 4" in log
    assert "SIGHUP: HEALTH_TOKEN changed (needs a restart)" in log and "never-echo-this-secret" not in log
    memory = poll_until(lambda: server.get_json("/health/memory")[1], 10, "an answer from a new worker")
    assert (memory["clustering"]["threads"], memory["memory"]["limit"]) == (4, 256)
    # the master's monitor judges the new limit too
    poll_until(lambda: "MB of 256MB" in server.log(), 10, "the monitor's usage line against 256 MB")

    # A bad value on the next SIGHUP keeps the running plan, and the service keeps serving.
    dotenv.write_text("MAX_REQUESTS=lots\n")
    os.kill(server.master_pid, signal.SIGHUP)
    poll_until(lambda: "SIGHUP: keeping the running settings and plan" in server.log(), 15, "the refusal logged")
    assert "MAX_REQUESTS='lots'" in server.log()
    assert server.process.poll() is None
    assert server.get_json("/health/memory")[1]["clustering"]["threads"] == 4

    # A plan the start would refuse (a budget under a worker's baseline: a recycle after every
    # request) is refused on SIGHUP too, and the running plan stays.
    dotenv.write_text("THREADS=4\nMAX_MEMORY_MB=64\n")
    os.kill(server.master_pid, signal.SIGHUP)
    poll_until(lambda: "SIGHUP: keeping the running settings and plan: a 64 MB limit" in server.log(), 15, "refusal")
    poll_until(lambda: server.get_json("/health/memory")[1]["memory"]["limit"] == 256, 10, "the running limit")
    assert "reason=memory" not in server.log()


@pytest.mark.cgroup
def test_memory_figures_match_a_real_512mb_cgroup(live_server, memory_cgroup):
    cgroup = memory_cgroup(512)
    server = live_server(cgroup=cgroup)
    status, memory = server.get_json("/health/memory")
    assert status == 200
    assert memory["memory"]["limit"] == 512
    assert memory["memory"]["limitSource"] == f"cgroup v{cgroup.version}"
    usage_percent = 100 * cgroup.usage_bytes() / (512 * 1024 * 1024)
    assert abs(memory["memory"]["usage"] - usage_percent) <= 5
    assert memory["container"]["oomKills"] == cgroup.oom_kills() == 0
    assert set(cgroup.pids()) == {process["pid"] for process in memory["processes"]}
