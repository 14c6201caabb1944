"""A few requests through the app in the master, before the first fork.

What a first request builds lazily (Flask's URL adapter, the health context
and its probe, prometheus_client's registry walk, the OpenAPI document) and
the bytecode the interpreter specializes on first runs are then made once,
in the master, and shared with every worker, instead of once per worker in
private pages (`WARM_UP=false` turns it off; BENCHMARKS.md part 13 has a
busy worker with and without it).
"""

from __future__ import annotations

import io
import sys

# The service's own read-only endpoints; nothing here changes state.
WARM_UP_PATHS = ("/health", "/health/live", "/health/ready", "/health/memory", "/metrics", "/openapi.json")
ROUNDS = 3  # enough for the interpreter to quicken the code these run (it does so after a few calls)


def _environ(path: str) -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "localhost",
        "HTTP_ACCEPT": "application/json",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def warm_up(app) -> list[tuple[str, str]]:
    """(path, status) for each warm-up request; nothing when `app` is not one with FitFlix's endpoints.

    Another Flask app without `fitflix.init_app` is left alone: its code is not ours to run early.
    An app given by `fitflix.wrap` warms the endpoints in front of it, and none of its own.
    """
    app = getattr(app, "fitflix_endpoints", app)
    if "health" not in getattr(app, "blueprints", {}):
        return []
    answered: list[tuple[str, str]] = []
    for _round in range(ROUNDS):
        for path in WARM_UP_PATHS:
            status: list[str] = []

            def start_response(line: str, _headers, _exc_info=None, status=status) -> None:
                status.append(line)

            body = app(_environ(path), start_response)
            try:
                for _chunk in body:
                    pass
            finally:
                getattr(body, "close", lambda: None)()
            answered.append((path, status[0] if status else "no answer"))
    return answered[-len(WARM_UP_PATHS) :]
