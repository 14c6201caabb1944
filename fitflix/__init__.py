"""FitFlix backend: a Flask app that knows the memory of the container it runs in."""

from __future__ import annotations

import json

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from fitflix.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; `settings` defaults to the process environment (and `.env`)."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["FITFLIX_SETTINGS"] = settings
    register_blueprints(app)
    register_error_handlers(app)
    register_response_headers(app)
    return app


def register_blueprints(app: Flask) -> None:
    from fitflix.health import health

    app.register_blueprint(health)


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
        response = _json_error(503, "Service Unavailable", json.loads(backstop.OUT_OF_MEMORY_BODY)["message"])
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        app.logger.exception("Unhandled error")
        return _json_error(500, "Internal Server Error", "The server could not complete the request.")


def register_response_headers(app: Flask) -> None:
    @app.after_request
    def no_store(response: Response) -> Response:
        # Health figures change every second: no browser or proxy may keep one.
        response.headers["Cache-Control"] = "no-store"
        return response
