"""fitflix.wrap in one process: FitFlix's paths answered, every other request passed through as the app made it.

The app behind it is a bare WSGI callable that records what it was given, or the
test Django project (harness/apps/django_project), called through werkzeug's test client.
"""

from __future__ import annotations

import json
import threading

import pytest
from werkzeug.test import Client

from fitflix import wrap
from fitflix.errors import SECURITY_HEADERS
from fitflix.serving import backstop
from fitflix.serving.warmup import WARM_UP_PATHS, warm_up
from fitflix.settings import Settings
from fitflix.web.wrapper import Wrapped

SETTINGS = Settings(max_memory_mb=512)
OWN_HEADERS = [("Content-Type", "text/plain; charset=latin-1"), ("X-Own", "1"), ("Set-Cookie", "a=1")]


class RecordingApp:
    """A bare WSGI app: answers `status` with its own headers and body, and keeps what it was called with."""

    def __init__(self, status: str = "200 OK", trip: bool = False) -> None:
        self.status = status
        self.trip = trip
        self.paths: list[str] = []
        self.closed = 0

    def __call__(self, environ, start_response):
        self.paths.append(environ["PATH_INFO"])
        if self.trip:  # as a framework's handler does with a MemoryError: trip, then answer its own 500
            backstop.trip()
        start_response(self.status, list(OWN_HEADERS))
        app = self

        class Body(list):
            def close(self) -> None:
                app.closed += 1

        return Body([b"own ", environ["PATH_INFO"].encode()])


@pytest.fixture
def fresh_backstop(monkeypatch):
    """trip() sets process-wide and per-thread flags: start with neither, and leave neither behind."""
    monkeypatch.setattr(backstop, "_tripped", threading.Event())
    monkeypatch.setattr(backstop, "_here", threading.local())


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready", "/health/memory", "/metrics"])
def test_fitflix_paths_are_answered_by_fitflix_and_never_reach_the_app(standalone_runtime, path):
    app = RecordingApp()
    response = Client(wrap(app, SETTINGS)).get(path)

    assert response.status_code == 200, response.data
    assert app.paths == []
    assert response.headers["X-Content-Type-Options"] == SECURITY_HEADERS["X-Content-Type-Options"]


def test_the_wrapper_answers_what_a_fitflix_app_answers(standalone_runtime):
    wrapped = Client(wrap(RecordingApp(), SETTINGS))

    assert json.loads(wrapped.get("/health").data)["service"] == "fitflix-backend"
    assert json.loads(wrapped.get("/openapi.json").data)["openapi"] == "3.0.3"
    memory = json.loads(wrapped.get("/health/memory").data)
    assert memory["memory"]["limit"] == 512
    page = wrapped.get("/health/memory", headers={"Accept": "text/html"})
    assert page.mimetype == "text/html"


# Under /health/ only FitFlix's own paths are taken: a Django project's /health/ or /health/db/ stays its own.
@pytest.mark.parametrize(
    "path",
    ["/", "/healthz", "/healthy", "/metrics/extra", "/api/health", "/openapi.yaml"]
    + ["/health/", "/health/db/", "/health/nowhere", "/health/memory/", "/health//memory", "/static/page.js"],
)
def test_every_other_request_is_passed_through_untouched(standalone_runtime, path):
    app = RecordingApp("418 I'm a teapot")
    response = Client(wrap(app, SETTINGS)).post(path, data=b"x")

    assert app.paths == [path]
    assert response.status == "418 I'm a teapot"
    assert [(name, value) for name, value in response.headers if name != "Content-Length"] == OWN_HEADERS
    assert response.data == b"own " + path.encode()


def test_the_apps_own_body_is_handed_to_the_server_as_it_is(standalone_runtime):
    app = RecordingApp()
    started = []
    environ = {"PATH_INFO": "/api", "REQUEST_METHOD": "GET"}

    body = wrap(app, SETTINGS)(environ, lambda status, headers, exc_info=None: started.append((status, headers)))

    assert started == [("200 OK", OWN_HEADERS)]
    assert list(body) == [b"own ", b"/api"]
    body.close()  # the server's close reaches the app's own body: it is that body, not a copy
    assert app.closed == 1


def test_a_500_the_backstop_tripped_for_becomes_the_json_503(standalone_runtime, fresh_backstop):
    app = RecordingApp("500 Internal Server Error", trip=True)
    response = Client(wrap(app, SETTINGS)).get("/api/big")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1" and response.content_type == "application/json"
    assert response.data == backstop.OUT_OF_MEMORY_BODY
    assert app.closed == 1  # the framework's 500 page is closed, never sent
    assert backstop.tripped()


def test_a_500_of_another_kind_is_the_apps_own(standalone_runtime, fresh_backstop):
    response = Client(wrap(RecordingApp("500 Internal Server Error"), SETTINGS)).get("/api/broken")

    assert response.status_code == 500 and response.data == b"own /api/broken"


def test_a_trip_in_another_thread_or_an_earlier_request_leaves_this_500_alone(standalone_runtime, fresh_backstop):
    wrapped = Client(wrap(RecordingApp("500 Internal Server Error"), SETTINGS))
    backstop.trip()  # an earlier request of this thread tripped: the worker is leaving, but this 500 is not that
    assert wrapped.get("/api/broken").status_code == 500

    other = threading.Thread(target=backstop.trip)
    other.start()
    other.join()
    assert wrapped.get("/api/broken").status_code == 500
    assert backstop.tripped()


def test_a_success_after_a_trip_is_untouched(standalone_runtime, fresh_backstop):
    backstop.trip()
    assert Client(wrap(RecordingApp(), SETTINGS)).get("/api/fine").status_code == 200


def test_an_app_that_writes_its_body_keeps_its_write_callable(standalone_runtime):
    def legacy(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]

    assert Client(wrap(legacy, SETTINGS)).get("/old").data == b"written returned"


def test_a_memory_error_raised_through_the_wrapper_is_left_to_the_workers_guard(standalone_runtime, fresh_backstop):
    def raising(environ, start_response):
        raise MemoryError

    wrapped = wrap(raising, SETTINGS)
    with pytest.raises(MemoryError):
        Client(wrapped).get("/api/big")
    started = []  # gunicorn's start_response, which takes exc_info before any header is sent (werkzeug's re-raises)
    guarded = backstop.guard_wsgi(wrapped)  # what post_worker_init puts around it
    body = guarded({"PATH_INFO": "/api/big"}, lambda status, headers, exc_info=None: started.append(status))
    assert started == [backstop.OUT_OF_MEMORY_STATUS] and body == [backstop.OUT_OF_MEMORY_BODY]


def test_wrap_refuses_what_is_not_an_app_and_a_second_wrap(standalone_runtime):
    with pytest.raises(TypeError, match="not a WSGI application"):
        wrap("wsgi:app", SETTINGS)
    with pytest.raises(RuntimeError, match="wrapped already"):
        wrap(wrap(RecordingApp(), SETTINGS), SETTINGS)


def test_the_warm_up_warms_the_endpoints_and_never_calls_the_app(standalone_runtime):
    app = RecordingApp()
    wrapped = wrap(app, SETTINGS)

    warmed = warm_up(wrapped)

    assert [path for path, _status in warmed] == list(WARM_UP_PATHS)
    assert all(status.startswith("200") for _path, status in warmed), warmed
    assert app.paths == []
    assert isinstance(wrapped, Wrapped) and "health" in wrapped.fitflix_endpoints.blueprints


@pytest.fixture
def django_project(standalone_runtime, fresh_backstop, monkeypatch):
    """The test Django project, wrapped, with the backstop watching Django's signal (as post_worker_init does)."""
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "harness.apps.django_project.settings")
    from django.core.signals import got_request_exception

    from harness.apps.django_project import wsgi

    assert "django" in backstop.watch_framework_errors()
    yield wsgi
    got_request_exception.disconnect(dispatch_uid="fitflix.serving.backstop")


def test_django_out_of_memory_is_the_json_503_and_trips_the_backstop(django_project):
    response = Client(django_project.application).get("/oom/")

    assert response.status_code == 503 and response.data == backstop.OUT_OF_MEMORY_BODY
    assert backstop.tripped()


def test_unwrapped_django_keeps_its_500_but_the_backstop_still_trips(django_project):
    response = Client(django_project.plain).get("/oom/")

    assert response.status_code == 500 and b"Server Error" in response.data
    assert backstop.tripped()


def test_djangos_own_answers_pass_through_the_wrapper(django_project):
    wrapped, plain = Client(django_project.application), Client(django_project.plain)
    for path in ("/hello", "/go/", "/nowhere/", "/form/"):
        mine, theirs = wrapped.get(path), plain.get(path)
        assert (mine.status, mine.headers.get("Location"), mine.mimetype) == (
            theirs.status,
            theirs.headers.get("Location"),
            theirs.mimetype,
        ), path
        assert "Content-Security-Policy" not in mine.headers, path
    assert "csrftoken=" in wrapped.get("/form/").headers["Set-Cookie"]
    assert wrapped.post("/form/").status_code == 403  # no CSRF token: Django's refusal
    assert not backstop.tripped()
