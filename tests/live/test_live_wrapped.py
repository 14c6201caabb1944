"""Any WSGI app under the package's configuration, live: Django and a bare callable behind `fitflix.wrap`.

Each app is served by real gunicorn with `-c python:fitflix.gunicorn_conf` (the package's
configuration, as a user's project starts it): FitFlix's endpoints answer, a leak is recycled
with no failed request, a request past the data limit gets the JSON 503 and its worker is
replaced, the token guards the figures, and the app's own answers pass through untouched.
"""

from __future__ import annotations

import json

import pytest

from fitflix.errors import SECURITY_HEADERS
from fitflix.serving.backstop import OUT_OF_MEMORY_BODY
from harness.fitflix_log import parse_recycles
from harness.load import run_load
from harness.wait import poll_until
from tests.fakes import TOKEN

PACKAGE_CONFIG = "python:fitflix.gunicorn_conf"
# A small worker budget gets a leaking worker recycled after a few dozen 2 MB requests,
# without a memory cgroup (as tests/live/test_live_own_routes.py); no drain at teardown.
SMALL_BUDGET = {"MAX_MEMORY_MB": "256", "WORKER_MAX_MEMORY_MB": "64", "DRAIN_S": "0"}
CSP = SECURITY_HEADERS["Content-Security-Policy"]

DJANGO = "harness.apps.django_project.wsgi"
# (app, its own path that answers {"pid": ...}, its leak path, its spike path)
APPS = {
    "django": (f"{DJANGO}:application", "/hello/", "/leak/?mb=2", "/spike/?mb=700"),
    "bare-wsgi": ("harness.apps.bare_wsgi:application", "/pid", "/leak?mb=2", "/spike?mb=700"),
}


@pytest.fixture(params=sorted(APPS))
def wrapped(request, live_server):
    """(server, own path, leak path, spike path) for each app behind fitflix.wrap."""
    app, own, leak, spike = APPS[request.param]

    def start(env: dict[str, str] | None = None):
        server = live_server(SMALL_BUDGET | (env or {}), app=app, config=PACKAGE_CONFIG)
        return server, own, leak, spike

    return start


def pid_of(server, path: str) -> int:
    status, body = server.get_json(path)
    assert status == 200, body
    return body["pid"]


def test_the_endpoints_answer_in_front_of_the_app(wrapped):
    server, own, _leak, _spike = wrapped()

    status, health = server.get_json("/health")
    assert status == 200 and health["service"] == "fitflix-backend"
    status, memory = server.get_json("/health/memory")
    assert status == 200 and memory["memory"]["limit"] == 256 and memory["recycles"] is not None
    assert server.get_json("/openapi.json")[1]["openapi"] == "3.0.3"
    status, headers, body = server.request("GET", "/metrics")
    assert status == 200 and b"fitflix_memory_limit_bytes" in body
    status, headers, _body = server.request("GET", "/health/memory", headers={"Accept": "text/html"})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert server.request("GET", "/health")[1]["Content-Security-Policy"] == CSP
    assert pid_of(server, own) in server.worker_pids()


def test_a_leak_is_recycled_for_memory_with_no_failed_request(wrapped):
    server, own, leak, _spike = wrapped()
    first_pid = pid_of(server, own)

    def leaked_until_recycled():
        result = run_load(server.port, leak, requests=10, clients=1, time_limit_s=10)
        assert result.statuses == {200: 10}, result.statuses  # no request fails, before, during or after
        return parse_recycles(server.log(), "memory")

    recycles = poll_until(leaked_until_recycled, 60, "a 'reason=memory' recycle line")
    assert recycles[0].pid == first_pid
    poll_until(lambda: server.get_json("/health/memory")[1]["recycles"]["memory"] > 0, 10, "recycles.memory > 0")
    assert pid_of(server, own) != first_pid


def test_a_request_past_the_data_limit_gets_the_json_503_and_its_worker_is_replaced(wrapped):
    server, own, _leak, spike = wrapped()
    first_pid = pid_of(server, own)

    status, headers, body = server.request("GET", spike, timeout_s=60)

    assert status == 503, body[:200]
    assert headers["Content-Type"] == "application/json" and headers["Retry-After"] == "1"
    assert body == OUT_OF_MEMORY_BODY
    poll_until(
        lambda: [recycle for recycle in parse_recycles(server.log(), "backstop") if recycle.pid == first_pid],
        10,
        "the backstop's recycle line for the worker that failed",
    )
    poll_until(lambda: pid_of(server, own) != first_pid, 10, "a new worker")


def test_the_token_guards_the_figures_and_not_the_apps_own_paths(wrapped):
    server, own, _leak, _spike = wrapped({"HEALTH_TOKEN": TOKEN})
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    for path in ("/health/memory", "/metrics"):
        assert server.request("GET", path)[0] == 401, path
        assert server.request("GET", path, headers=bearer)[0] == 200, path
    assert server.get_json("/health")[0] == 200  # Render's check needs no token
    assert pid_of(server, own) > 0


def test_djangos_own_answers_pass_through_untouched(live_server):
    server = live_server(SMALL_BUDGET, app=f"{DJANGO}:application", config=PACKAGE_CONFIG)

    status, headers, body = server.request("GET", "/nowhere/")
    assert status == 404 and headers["Content-Type"].startswith("text/html") and b"Not Found" in body
    assert "Content-Security-Policy" not in headers  # FitFlix's headers are for its own answers only
    status, headers, _body = server.request("GET", "/hello")
    assert (status, headers["Location"]) == (301, "/hello/")  # APPEND_SLASH
    status, headers, _body = server.request("GET", "/go/")
    assert (status, headers["Location"]) == (302, "/hello/")
    status, headers, _body = server.request("GET", "/form/")
    assert status == 200 and "csrftoken=" in headers["Set-Cookie"]
    assert server.request("POST", "/form/", body=b"")[0] == 403  # no CSRF token: Django's refusal
    assert json.loads(server.request("GET", "/hello/")[2])["framework"] == "django"
    # Under /health/ the wrapper takes its own paths only: the project's own health check stays its own.
    status, _headers, body = server.request("GET", "/health/db/")
    assert (status, json.loads(body)) == (200, {"database": "ok", "framework": "django"})
    status, headers, _body = server.request("GET", "/health/")
    assert status == 404 and headers["Content-Type"].startswith("text/html")  # Django's 404, not FitFlix's


def test_the_bare_apps_own_answers_pass_through_untouched(live_server):
    server = live_server(SMALL_BUDGET, app="harness.apps.bare_wsgi:application", config=PACKAGE_CONFIG)

    status, headers, body = server.request("GET", "/nowhere")
    assert (status, headers["Content-Type"], body) == (404, "application/json", b'{"error": "Not Found"}')
    assert "Content-Security-Policy" not in headers
    status, headers, body = server.request("GET", "/pid")
    assert status == 200 and headers["Content-Length"] == str(len(body)) and json.loads(body)["kept_mb"] == 0


def test_django_without_the_wrapper_is_recycled_but_has_no_health(live_server):
    # The trade-off of the configuration alone: its hooks recycle any app, the endpoints are the wrapper's.
    server = live_server(SMALL_BUDGET, app=f"{DJANGO}:plain", config=PACKAGE_CONFIG, ready_path="/hello/")
    assert server.request("GET", "/health")[0] == 404
    first_pid = pid_of(server, "/hello/")

    status, _headers, body = server.request("GET", "/spike/?mb=700", timeout_s=60)

    assert status == 500 and b"Server Error" in body  # Django's own page: it caught the MemoryError
    poll_until(
        lambda: [recycle for recycle in parse_recycles(server.log(), "backstop") if recycle.pid == first_pid],
        10,
        "the backstop's line: Django's got_request_exception tripped it",
    )
    poll_until(lambda: pid_of(server, "/hello/") != first_pid, 10, "a new worker")
