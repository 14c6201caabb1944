"""`python -m fitflix plan` and `gunicorn --print-config` tell the same plan."""

from __future__ import annotations

import json
import re
import sys

import pytest

from harness.server import GUNICORN, run_to_exit

ENV = {"MAX_MEMORY_MB": "1024", "ENABLE_CLUSTERING": "true", "THREADS": "6", "MAX_REQUESTS": "777"}


def test_plan_json_and_gunicorn_print_config_agree():
    plan = json.loads(run_to_exit(sys.executable, "-m", "fitflix", "plan", "--json", env=ENV).stdout)["plan"]
    printed = run_to_exit(*GUNICORN, "--print-config", env=ENV).stdout
    config = dict(re.findall(r"^(\w+)\s+= (.*)$", printed, flags=re.MULTILINE))
    assert (plan["limit_mb"], plan["limit_source"], plan["workers"]) == (1024, "env", 3)
    assert config["workers"] == str(plan["workers"])
    assert config["threads"] == str(plan["threads"]) == "6"
    assert config["max_requests"] == str(plan["max_requests"]) == "777"
    assert config["max_requests_jitter"] == str(plan["max_requests_jitter"])
    assert config["worker_class"] == plan["worker_class"]
    assert config["graceful_timeout"] == str(plan["graceful_timeout_s"])
    assert config["preload_app"] == "True" and config["control_socket_disable"] == "True"


def test_plan_table_names_every_input_and_its_source():
    result = run_to_exit(sys.executable, "-m", "fitflix", "plan", env=ENV)
    assert result.returncode == 0
    for row in ("limit", "CPUs", "workers", "worker budget", "worker hard cap", "max_requests", "worker baseline"):
        assert re.search(rf"^{row}\s", result.stdout, flags=re.MULTILINE), row
    assert re.search(r"^limit\s+1024 MB\s+env$", result.stdout, flags=re.MULTILINE)
    # The "from" column says where each variable's value came from.
    assert re.search(r"^worker class\s+.* x 6 threads\s+THREADS \(set\)$", result.stdout, flags=re.MULTILINE)
    assert "MAX_REQUESTS (set), MAX_REQUESTS_JITTER (default)" in result.stdout
    assert "WORKER_MAX_MEMORY_MB (unset)" in result.stdout


@pytest.mark.parametrize(
    ("env", "code", "says"),
    [
        ({"WORKER_MAX_MEMORY_MB": "16"}, 1, "refused: WORKER_MAX_MEMORY_MB=16"),
        ({"THREADS": "0"}, 2, "THREADS='0'"),
    ],
)
def test_plan_refuses_what_the_server_would_refuse(env, code, says):
    result = run_to_exit(sys.executable, "-m", "fitflix", "plan", env=env)
    assert result.returncode == code
    assert says in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_plan_loads_the_app_it_is_given_as_gunicorn_names_it():
    django = run_to_exit(
        sys.executable, "-m", "fitflix", "plan", "harness.apps.django_project.wsgi:application", env=ENV
    )
    assert django.returncode == 0, django.stderr
    assert "worker baseline" in django.stdout

    missing = run_to_exit(sys.executable, "-m", "fitflix", "plan", "nowhere.wsgi:application", env=ENV)
    assert missing.returncode == 2 and missing.stdout == ""
    assert "cannot load the app 'nowhere.wsgi:application'" in missing.stderr and "Traceback" not in missing.stderr
