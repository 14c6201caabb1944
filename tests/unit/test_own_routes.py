"""Your own routes through the test client: a blueprint in create_app, another Flask app with fitflix.init_app."""

from __future__ import annotations

import json
import threading

import pytest
from flask import Blueprint, Flask, Response, abort, jsonify
from werkzeug.exceptions import HTTPException

import fitflix
from fitflix import create_app, init_app
from fitflix.serving import backstop
from fitflix.settings import Settings

pytestmark = pytest.mark.usefixtures("standalone_runtime")

SETTINGS = Settings(max_memory_mb=512)
FITFLIX_ENDPOINTS = ("/health", "/health/live", "/health/ready", "/health/memory", "/metrics", "/openapi.json")

workouts = Blueprint("workouts", __name__, url_prefix="/api/workouts")


@workouts.get("")
def list_workouts():
    return jsonify(workouts=[{"id": 1}])


@workouts.get("/<int:workout_id>")
def get_workout(workout_id: int):
    abort(404, description=f"No workout {workout_id}.")


@workouts.get("/catalogue")
def catalogue():
    response = jsonify(workouts=[])
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


@workouts.get("/own-headers")
def own_headers():
    response = jsonify(workouts=[])
    # any spelling of a header name is the same header: the app's value stays, and stays alone
    response.headers["cache-control"] = "private"
    response.headers["X-FRAME-OPTIONS"] = "SAMEORIGIN"
    return response


@workouts.get("/out-of-memory")
def out_of_memory():
    raise MemoryError


def other_app() -> Flask:
    """A Flask app of someone else's, with a route of its own."""
    app = Flask(__name__)

    @app.get("/api/hello")
    def hello():
        return jsonify(message="hello")

    return app


def test_create_app_serves_your_blueprint_beside_the_health_endpoints():
    client = create_app(SETTINGS, blueprints=[workouts]).test_client()

    response = client.get("/api/workouts")
    assert response.status_code == 200 and response.get_json() == {"workouts": [{"id": 1}]}
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/health").status_code == 200


def test_your_blueprints_errors_are_the_same_json_errors():
    client = create_app(SETTINGS, blueprints=[workouts]).test_client()

    response = client.get("/api/workouts/7")

    assert response.status_code == 404 and response.content_type == "application/json"
    assert json.loads(response.data) == {"error": "Not Found", "status": 404, "message": "No workout 7."}
    # create_app's URL map merges no slashes, for your routes too: a 404, never a redirect built from Host
    assert client.get("/api//workouts").status_code == 404


def test_a_route_that_sets_its_own_cache_control_keeps_it():
    client = create_app(SETTINGS, blueprints=[workouts]).test_client()

    assert client.get("/api/workouts/catalogue").headers["Cache-Control"] == "public, max-age=60"
    assert client.get("/api/workouts").headers["Cache-Control"] == "no-store"
    own = client.get("/api/workouts/own-headers").headers
    assert own.getlist("Cache-Control") == ["private"] and own.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert own["X-Content-Type-Options"] == "nosniff"


def test_a_blueprint_of_yours_on_a_fitflix_path_is_refused_by_create_app():
    own_health = Blueprint("own_health", __name__)
    own_health.add_url_rule("/health", "health", lambda: "ok")

    with pytest.raises(RuntimeError, match="already has a route at /health"):
        create_app(SETTINGS, blueprints=[own_health])


@pytest.mark.parametrize("path", FITFLIX_ENDPOINTS)
def test_init_app_gives_another_app_every_fitflix_endpoint(path):
    client = init_app(other_app(), SETTINGS).test_client()

    response = client.get(path)

    assert response.status_code == 200, response.data
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_init_app_keeps_the_apps_own_routes_and_makes_its_errors_json():
    client = init_app(other_app(), SETTINGS).test_client()

    assert client.get("/api/hello").get_json() == {"message": "hello"}
    response = client.get("/nowhere")
    assert response.status_code == 404 and response.content_type == "application/json"
    response = client.post("/api/hello")
    assert response.status_code == 405 and response.headers["Allow"] and response.content_type == "application/json"


def test_init_app_returns_the_app_and_is_reachable_as_fitflix_init_app():
    app = other_app()
    assert fitflix.init_app(app, SETTINGS) is app


@pytest.mark.parametrize("first", [lambda: init_app(other_app(), SETTINGS), lambda: create_app(SETTINGS)])
def test_a_second_call_is_refused_with_a_clear_error(first):
    app = first()

    with pytest.raises(RuntimeError, match="call it once per app"):
        init_app(app, SETTINGS)


@pytest.mark.parametrize("path", ["/health", "/health/memory", "/metrics", "/openapi.json"])
def test_an_app_with_a_route_on_a_fitflix_path_is_refused_and_left_as_it_was(path):
    app = other_app()
    app.add_url_rule(path, "mine", lambda: "mine")
    rules_before = sorted(rule.rule for rule in app.url_map.iter_rules())

    with pytest.raises(RuntimeError, match=f"already has a route at {path}"):
        init_app(app, SETTINGS)

    assert sorted(rule.rule for rule in app.url_map.iter_rules()) == rules_before
    assert "FITFLIX_SETTINGS" not in app.config and not app.after_request_funcs
    assert app.test_client().get(path).data == b"mine"


def test_paths_that_only_look_alike_are_no_conflict():
    app = other_app()
    app.add_url_rule("/healthz", "healthz", lambda: "mine")

    client = init_app(app, SETTINGS).test_client()

    assert client.get("/healthz").data == b"mine" and client.get("/health").status_code == 200


def test_an_app_with_a_blueprint_named_health_is_refused():
    app = other_app()
    app.register_blueprint(Blueprint("health", __name__, url_prefix="/status"))

    with pytest.raises(RuntimeError, match="blueprint named 'health'"):
        init_app(app, SETTINGS)


def test_the_apps_own_error_handlers_win():
    app = other_app()

    @app.errorhandler(HTTPException)
    def own_http_error(error: HTTPException):
        return Response(f"<h1>{error.code}</h1>", status=error.code, mimetype="text/html")

    @app.errorhandler(RuntimeError)
    def own_runtime_error(error: RuntimeError):
        return Response("mine", status=500, mimetype="text/plain")

    @app.get("/broken")
    def broken():
        raise RuntimeError("boom")

    client = init_app(app, SETTINGS).test_client()

    response = client.get("/nowhere")
    assert (response.status_code, response.mimetype, response.data) == (404, "text/html", b"<h1>404</h1>")
    assert client.get("/broken").data == b"mine"


def test_an_apps_code_handler_wins_and_fitflix_answers_the_other_codes():
    app = other_app()

    @app.errorhandler(404)
    def own_not_found(error):
        return Response("no such page", status=404, mimetype="text/plain")

    client = init_app(app, SETTINGS).test_client()

    assert client.get("/nowhere").data == b"no such page"
    assert client.post("/api/hello").content_type == "application/json"


def test_memory_error_still_trips_the_backstop_beside_the_apps_catch_all_handler(monkeypatch):
    monkeypatch.setattr(backstop, "_tripped", threading.Event())  # trip() sets a process-wide flag
    app = other_app()
    app.register_blueprint(workouts)

    @app.errorhandler(Exception)
    def own_catch_all(error: Exception):
        return Response("mine", status=500, mimetype="text/plain")

    response = init_app(app, SETTINGS).test_client().get("/api/workouts/out-of-memory")

    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert backstop.tripped()


def test_fitflix_paths_never_merge_slashes_and_the_apps_own_routes_keep_its_choice():
    client = init_app(other_app(), SETTINGS).test_client()

    assert client.get("/health//memory").status_code == 404
    assert client.get("/api//hello").status_code == 308  # the app's map merges slashes, as Flask's does by default


def test_a_header_the_app_sets_wins():
    app = other_app()

    @app.get("/framed")
    def framed():
        return Response("{}", mimetype="application/json", headers={"X-Frame-Options": "SAMEORIGIN"})

    response = init_app(app, SETTINGS).test_client().get("/framed")

    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert response.headers["Cache-Control"] == "no-store"
