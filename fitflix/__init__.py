"""FitFlix backend: a Flask app that knows the memory of the container it runs in."""

from __future__ import annotations

import json

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from fitflix.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; `settings` defaults to the process environment (and `.env`)."""
    settings = settings or load_settings()
    app = Flask(__name__)
    # /health//memory is a 404, not a 308 whose Location is built from the Host header.
    app.url_map.merge_slashes = False
    # Never debug mode, whatever FLASK_DEBUG says: it would serve tracebacks.
    app.config.update(DEBUG=False, PROPAGATE_EXCEPTIONS=False, TRAP_HTTP_EXCEPTIONS=False)
    app.config["FITFLIX_SETTINGS"] = settings
    register_blueprints(app)
    register_error_handlers(app)
    register_response_headers(app)
    return app


def register_blueprints(app: Flask) -> None:
    from fitflix.health import health
    from fitflix.metrics import register_metrics
    from fitflix.openapi import api_docs

    app.register_blueprint(health)
    app.register_blueprint(api_docs)
    register_metrics(app)


def _json_error(status: int, name: str, message: str, response: Response | None = None) -> Response:
    body = json.dumps({"error": name, "status": status, "message": message})
    if response is None:
        response = Response(status=status)
    response.set_data(body)
    response.content_type = "application/json"
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        # get_response keeps the error's own headers (Allow on a 405, for one)
        return _json_error(error.code or 500, error.name, error.description or "", error.get_response())

    @app.errorhandler(MemoryError)
    def out_of_memory(error: MemoryError) -> Response:
        from fitflix.serving import backstop

        backstop.trip()
        response = _json_error(503, "Service Unavailable", backstop.OUT_OF_MEMORY_MESSAGE)
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        app.logger.exception("Unhandled error")
        return _json_error(500, "Internal Server Error", "The server could not complete the request.")


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # JSON needs nothing; the memory page sets its own, narrower-than-nothing-plus-a-nonce policy.
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


def register_response_headers(app: Flask) -> None:
    @app.after_request
    def headers(response: Response) -> Response:
        if request.method == "OPTIONS" and response.status_code == 200 and not response.get_data():
            # Flask's automatic OPTIONS answer is an empty text/html: say the same in JSON.
            allowed = sorted(response.allow)
            response.set_data(json.dumps({"allow": allowed}))
            response.content_type = "application/json"
        # Health figures change every second: no browser or proxy may keep one.
        response.headers["Cache-Control"] = "no-store"
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
