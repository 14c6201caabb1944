"""`application = fitflix.wrap(application)`: FitFlix's endpoints in front of any WSGI app.

Django, Flask without `init_app`, or a bare callable: the wrapper answers
`/health`, `/health/live`, `/health/ready`, `/health/memory` (JSON,
health+json and the page), `/metrics` and `/openapi.json`, and hands every
other request to the app untouched (its status, headers and body as the app
made them). Those exact paths, nothing else: `/health/` and `/health/db/` are
the app's own, as many a Django project already has them. The endpoints are `create_app`'s Flask app, the same code
`init_app` adds to a Flask app: one answer, whichever way in.

One thing of the app's own is changed, and only when the backstop tripped in
that request's thread: a framework that turns a `MemoryError` into its own 500
page (Django, Flask) has its 500 replaced by the backstop's JSON 503 with
`Retry-After`, as a FitFlix app answers. The worker is replaced either way
(`serving/backstop.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fitflix.serving import backstop
from fitflix.settings import Settings
from fitflix.web.flask_app import create_app


class Wrapped:
    """A WSGI app: FitFlix's paths to `fitflix_endpoints`, the rest to `application`."""

    def __init__(self, application: Callable, settings: Settings | None = None) -> None:
        if not callable(application):
            raise TypeError(f"fitflix.wrap: {application!r} is not a WSGI application (it cannot be called)")
        if isinstance(application, Wrapped):
            raise RuntimeError("fitflix.wrap: this application is wrapped already: wrap it once")
        self.application = application
        # The warm-up (serving/warmup.py) and the probes run these; nothing of the app's own.
        self.fitflix_endpoints = create_app(settings)
        # The paths its rules answer, read off its URL map so that a new endpoint needs no edit here;
        # not /static/ (the Flask default, unused: the page inlines its script and styles).
        self.fitflix_paths = frozenset(
            rule.rule for rule in self.fitflix_endpoints.url_map.iter_rules() if rule.endpoint != "static"
        )

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in self.fitflix_paths:
            return self.fitflix_endpoints(environ, start_response)
        return self.passed_through(environ, start_response)

    def passed_through(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """The app's answer, unless it is a 500 made of a MemoryError the backstop caught in this thread."""
        backstop.forget_here()
        replaced = False

        def app_start_response(status: str, headers: list, exc_info=None):
            nonlocal replaced
            if status.startswith("500") and backstop.tripped_here():
                replaced = True
                start_response(backstop.OUT_OF_MEMORY_STATUS, backstop.OUT_OF_MEMORY_HEADERS, exc_info)
                return _discard
            return start_response(status, headers, exc_info)

        body = self.application(environ, app_start_response)
        if not replaced:
            return body
        close = getattr(body, "close", None)
        if close is not None:
            close()  # the framework's 500 page, never sent
        return [backstop.OUT_OF_MEMORY_BODY]


def _discard(_data: bytes) -> None:
    """The `write` a replaced answer's app gets: its 500 page goes nowhere."""


def wrap(application: Callable, settings: Settings | None = None) -> Wrapped:
    """Give any WSGI app FitFlix's endpoints; `settings` default to the environment (and `.env`)."""
    return Wrapped(application, settings)
