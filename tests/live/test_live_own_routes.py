"""Your own routes under real gunicorn and gunicorn.conf.py: served, counted and recycled like the rest.

The same leaking blueprint (`harness/apps/own_routes.py`) in the FitFlix app
(create_app), in another Flask app with fitflix.init_app, and in one without
it: that one is still recycled, but has no /health.
"""

from __future__ import annotations

import pytest

from harness.fitflix_log import parse_recycles
from harness.load import run_load
from harness.wait import poll_until

OWN_ROUTES = "harness.apps.own_routes"
# A small worker budget gets a leaking worker recycled after a few dozen
# requests of 2 MB, without a memory cgroup: threshold 58-64 MB, hard cap 89 MB.
SMALL_BUDGET = {"MAX_MEMORY_MB": "256", "WORKER_MAX_MEMORY_MB": "64"}
# No drain at teardown: these tests stop the server, they do not test the stop.
NO_DRAIN = {"DRAIN_S": "0"}


def leak_once(server) -> None:
    """Ten 2 MB leaks in a row, none of which may fail."""
    result = run_load(server.port, "/api/leak?mb=2", requests=10, clients=1, time_limit_s=10)
    assert result.statuses == {200: 10}, result.statuses


def memory_recycles(server) -> int:
    return server.get_json("/health/memory")[1]["recycles"]["memory"]


def requests_served(server) -> int:
    return server.get_json("/health/memory")[1]["requestsServed"]


@pytest.mark.parametrize("factory", ["in_create_app()", "with_init_app()"])
def test_a_blueprint_of_your_own_is_served_counted_and_recycled(live_server, factory):
    server = live_server(SMALL_BUDGET | NO_DRAIN, app=f"{OWN_ROUTES}:{factory}")
    status, headers, _body = server.request("GET", "/api/hello")
    assert status == 200
    assert headers["Content-Type"] == "application/json" and headers["Cache-Control"] == "no-store"
    first_pid = server.get_json("/api/hello")[1]["pid"]

    served_before = requests_served(server)
    result = run_load(server.port, "/api/hello", requests=50, clients=2, time_limit_s=30)
    assert result.statuses == {200: 50}
    # post_request counts a request after its response is sent: poll for the last ones.
    poll_until(lambda: requests_served(server) >= served_before + 50, 10, "50 more requests in requestsServed")

    def leaked_until_recycled() -> bool:
        leak_once(server)
        return memory_recycles(server) > 0

    poll_until(leaked_until_recycled, 60, "recycles.memory > 0 in /health/memory")
    assert parse_recycles(server.log(), "memory")
    assert server.get_json("/api/hello")[1]["pid"] != first_pid  # a new worker serves the blueprint


def test_without_init_app_the_app_is_still_recycled_but_has_no_health(live_server):
    # The trade-off of `gunicorn -c gunicorn.conf.py myapp:app` alone: the hooks are
    # gunicorn.conf.py's, the endpoints are the app's. Render's healthCheckPath would fail.
    server = live_server(SMALL_BUDGET | NO_DRAIN, app=f"{OWN_ROUTES}:without_init_app()", ready_path="/api/hello")
    for path in ("/health", "/health/memory", "/metrics"):
        assert server.request("GET", path)[0] == 404, path

    def leaked_until_recycled():
        leak_once(server)
        return parse_recycles(server.log(), "memory")

    poll_until(leaked_until_recycled, 60, "a 'reason=memory' recycle line in the log")


def test_without_init_app_a_request_past_the_data_limit_still_replaces_its_worker(live_server):
    # Flask answers the MemoryError with its own HTML 500 before guard_wsgi sees it; the worker
    # must still leave (the backstop trips on Flask's got_request_exception), not keep serving.
    server = live_server(SMALL_BUDGET | NO_DRAIN, app=f"{OWN_ROUTES}:without_init_app()", ready_path="/api/hello")
    first_pid = server.get_json("/api/hello")[1]["pid"]

    status, _headers, _body = server.request("GET", "/api/spike?mb=700", timeout_s=60)

    assert status == 500
    poll_until(
        lambda: [recycle for recycle in parse_recycles(server.log(), "backstop") if recycle.pid == first_pid],
        10,
        "the backstop line",
    )
    poll_until(lambda: server.get_json("/api/hello")[1]["pid"] != first_pid, 10, "a new worker")


@pytest.mark.parametrize(
    ("app", "path"),
    [("examples.myapp:app", "/api/hello"), ("examples.wsgi_with_api:app", "/api/workouts")],
)
def test_the_readme_examples_serve_their_routes_beside_fitflix_health(live_server, app, path):
    server = live_server(NO_DRAIN, app=app)  # it waits for a 200 from /health
    status, body = server.get_json(path)
    assert status == 200, body
    status, memory = server.get_json("/health/memory")
    assert status == 200 and memory["recycles"] is not None and memory["requestsServed"] >= 1
    status, error = server.get_json("/api/nowhere")
    assert status == 404 and error["status"] == 404
