"""The FitFlix Flask app, and what it adds to any other Flask app (`from fitflix import create_app, init_app`).

Two ways in, one code path:

- `create_app(settings, blueprints=[...])`: the FitFlix app, with your own
  blueprints (your API) served beside the health endpoints;
- `init_app(app, settings)`: what FitFlix adds to any other Flask app, in one
  call (the health endpoints, /metrics, /openapi.json, JSON errors, the
  response headers). `create_app` is a Flask app plus this call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from fitflix.errors import RESPONSE_HEADERS, error_body
from fitflix.settings import Settings, load_settings

# The paths and blueprint names init_app adds: an app that already has one would shadow ours.
FITFLIX_BLUEPRINTS = ("health", "metrics", "api_docs")
FITFLIX_PATHS = ("/health", "/metrics", "/openapi.json")


def create_app(settings: Settings | None = None, blueprints: Iterable[Blueprint] = ()) -> Flask:
    """Build the app; `settings` defaults to the process environment (and `.env`).

    `blueprints` are your own routes (a FitFlix API): registered here, they are
    served by the same workers, counted in `requestsServed` and recycled like
    the rest, and they get the JSON errors and headers of the health endpoints.
    """
    # "fitflix": the name of its logger (and of its root folder), as when this code was fitflix/__init__.py.
    app = Flask("fitflix")
    # Every route of this app, yours too: /health//memory is a 404, not a 308
    # whose Location is built from the Host header.
    app.url_map.merge_slashes = False
    # Never debug mode, whatever FLASK_DEBUG says: it would serve tracebacks.
    app.config.update(DEBUG=False, PROPAGATE_EXCEPTIONS=False, TRAP_HTTP_EXCEPTIONS=False)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    init_app(app, settings)
    return app


def init_app(app: Flask, settings: Settings | None = None) -> Flask:
    """Give any Flask app what FitFlix adds, in one call; return the app.

    That is the health blueprint (`/health`, `/health/live`, `/health/ready`,
    `/health/memory`), `/metrics`, `/openapi.json`, JSON error handlers (with
    the backstop's 503 on MemoryError) and the response headers. `settings`
    default to the environment and the `.env` that gunicorn.conf.py read.

    The app keeps what it chose: its own error handler for a class or a status
    code wins over the JSON ones, a header it sets over ours, its URL map's
    `merge_slashes` over its own routes (FitFlix's never merge slashes). A
    second call, or an app that already has one of FitFlix's paths or
    blueprint names, is refused before anything is changed.
    """
    problem = _refusal(app)
    if problem:
        raise RuntimeError(f"fitflix.init_app: {problem}")
    app.config["FITFLIX_SETTINGS"] = settings or load_settings()
    register_blueprints(app)
    register_error_handlers(app)
    register_response_headers(app)
    register_probe_shortcut(app)
    return app


def _refusal(app: Flask) -> str | None:
    """Why `app` cannot take FitFlix's endpoints, or None."""
    if "FITFLIX_SETTINGS" in app.config:
        return "this app has FitFlix's endpoints already (create_app calls init_app): call it once per app"
    names = [name for name in FITFLIX_BLUEPRINTS if name in app.blueprints]
    if names:
        return f"this app already has a blueprint named {', '.join(map(repr, names))}; rename yours (name=...)"
    taken = sorted({rule.rule for rule in app.url_map.iter_rules() if is_fitflix_path(rule.rule)})
    if taken:
        return f"this app already has a route at {', '.join(taken)}: two routes on one path, one never answers"
    return None


def is_fitflix_path(path: str) -> bool:
    """A path FitFlix answers: /health and what is under /health/, /metrics, /openapi.json."""
    return path in FITFLIX_PATHS or path.startswith("/health/")


def register_blueprints(app: Flask) -> None:
    from fitflix.web.health import health
    from fitflix.web.metrics import register_metrics
    from fitflix.web.openapi import api_docs

    # Rules take the map's merge_slashes when they are added: FitFlix's are added
    # without it, so /health//memory is a 404 whatever the app's own routes do.
    merge_slashes, app.url_map.merge_slashes = app.url_map.merge_slashes, False
    try:
        app.register_blueprint(health)
        app.register_blueprint(api_docs)
        register_metrics(app)
    finally:
        app.url_map.merge_slashes = merge_slashes


def _json_error(status: int, name: str, message: str, response: Response | None = None) -> Response:
    if response is None:
        response = Response(status=status)
    response.set_data(error_body(status, name, message))
    response.content_type = "application/json"
    return response


def _http_error(error: HTTPException) -> Response:
    # get_response keeps the error's own headers (Allow on a 405, for one)
    return _json_error(error.code or 500, error.name, error.description or "", error.get_response())


def _out_of_memory(error: MemoryError) -> Response:
    from fitflix.serving import backstop

    backstop.trip()
    response = _json_error(503, "Service Unavailable", backstop.OUT_OF_MEMORY_MESSAGE)
    response.headers["Retry-After"] = "1"
    return response


def _unexpected(error: Exception) -> Response:
    current_app.logger.exception("Unhandled error")
    return _json_error(500, "Internal Server Error", "The server could not complete the request.")


JSON_ERROR_HANDLERS = ((HTTPException, _http_error), (MemoryError, _out_of_memory), (Exception, _unexpected))


def register_error_handlers(app: Flask) -> None:
    """JSON errors, and the backstop's 503 on MemoryError; an app's own handler for the same class stays.

    A handler for a status code (`@app.errorhandler(404)`) or in a blueprint
    is a closer match in Flask's lookup, so it wins over these anyway. The
    other way round, an app's catch-all `Exception` handler no longer sees
    HTTP errors or MemoryError: these two are the closer match for them.
    """
    own = app.error_handler_spec[None][None]  # the app's handlers by exception class, not by code
    for exception_class, handler in JSON_ERROR_HANDLERS:
        if exception_class not in own:
            app.register_error_handler(exception_class, handler)


def register_response_headers(app: Flask) -> None:
    app.after_request(_add_response_headers)


def register_probe_shortcut(app: Flask) -> None:
    """Plain probes of /health and /health/live answered before Flask builds a request (fitflix/web/probes.py)."""
    from fitflix.web.probes import ProbeShortcut

    headers = [(name, value) for _key, name, value in DEFAULT_HEADERS]
    app.wsgi_app = ProbeShortcut(app, app.wsgi_app, app.config["FITFLIX_SETTINGS"].health_token, headers)


# What every answer gets unless it set its own: (lower-case name, name, value), matched without
# werkzeug's Headers.setdefault, whose miss raises and catches a KeyError (18% of /health's own time).
DEFAULT_HEADERS = tuple((name.lower(), name, value) for name, value in RESPONSE_HEADERS.items())


def _add_response_headers(response: Response) -> Response:
    """Every answer of the app: no-store and the security headers, unless it set its own."""
    if request.method == "OPTIONS" and response.status_code == 200 and not response.get_data():
        # Flask's automatic OPTIONS answer is an empty text/html: say the same in JSON.
        allowed = sorted(response.allow)
        response.set_data(json.dumps({"allow": allowed}))
        response.content_type = "application/json"
    # Health figures change every second: no browser or proxy may keep one. A route of
    # yours that sets its own Cache-Control (a catalogue kept for a minute) keeps it.
    headers = response.headers
    present = {name.lower() for name, _value in headers}
    for key, name, value in DEFAULT_HEADERS:
        if key not in present:
            headers.add(name, value)
    return response
