"""The platform's probes, `/health` and `/health/live`, answered before Flask builds a request.

Render, Heroku and Kubernetes probe every few seconds, and on a tenth of a
CPU each answer's cost counts: Flask's request and app contexts, routing
and response object are about 70% of what `/health` costs in the app. A
plain probe (GET or HEAD, no Accept preference, no credentials to check)
gets the same answer here, byte for byte, from the same document and
headers; everything else, and every request to an app that has its own
request hooks or signal receivers (which would expect to see the probe),
goes through Flask as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flask import Flask, Response
from flask import signals as flask_signals
from flask.json.provider import DefaultJSONProvider

from fitflix.web.health import LIVE_DOCUMENT, VARY, status_document

PROBE_PATHS = frozenset({"/health", "/health/live"})
# Flask's per-request signals: a receiver (an APM agent, a metrics library) expects every request.
REQUEST_SIGNALS = (
    flask_signals.request_started,
    flask_signals.request_finished,
    flask_signals.request_tearing_down,
    flask_signals.appcontext_pushed,
    flask_signals.appcontext_popped,
    flask_signals.appcontext_tearing_down,
)


class ProbeShortcut:
    """WSGI middleware set by `init_app` on `app.wsgi_app`: plain probes here, the rest to Flask."""

    def __init__(self, app: Flask, wsgi_app: Callable, token: str | None, headers: Iterable[tuple[str, str]]) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.token = token
        self.headers = [("Vary", VARY), *headers]  # after Content-Type and Content-Length, as Flask orders them
        self.own_after = list(app.after_request_funcs.get(None, ()))  # init_app's own: the response headers

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        answer = self.answer(environ)
        if answer is None:
            return self.wsgi_app(environ, start_response)
        headers, body = answer
        start_response("200 OK", headers)
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]

    def answer(self, environ: dict) -> tuple[list[tuple[str, str]], bytes] | None:
        """(headers, body) for a plain probe, or None: Flask answers it."""
        path = environ.get("PATH_INFO")
        if path not in PROBE_PATHS or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return None
        accept = environ.get("HTTP_ACCEPT")
        if accept and accept != "*/*":
            return None  # health+json or the page: Flask negotiates
        if self.token is not None and "HTTP_AUTHORIZATION" in environ:
            return None  # credentials to check: Flask's route checks them
        if not self.plain_app() or any(signal.has_receivers_for(self.app) for signal in REQUEST_SIGNALS):
            return None
        document = LIVE_DOCUMENT if path == "/health/live" else status_document(shown=self.token is None)
        json = self.app.json
        # What jsonify makes of it with the app's own JSON provider (flask/json/provider.py, `response`).
        compact = not ((json.compact is None and self.app.debug) or json.compact is False)
        dump_args = {"separators": (",", ":")} if compact else {"indent": 2}
        body = f"{json.dumps(document, **dump_args)}\n".encode()
        headers = [("Content-Type", json.mimetype), ("Content-Length", str(len(body))), *self.headers]
        return headers, body

    def plain_app(self) -> bool:
        """Flask's own response and JSON classes, and no hook that Flask would run for a probe but
        init_app's own: the app's and the health blueprint's.

        Looked at on each probe (a few dict lookups): hooks can still be added
        while every request so far has been a probe, which Flask never saw.
        """
        app = self.app
        if app.response_class is not Response or type(app.json).response is not DefaultJSONProvider.response:
            return False  # an answer made another way than jsonify's: only Flask can make it
        for funcs in (app.before_request_funcs, app.teardown_request_funcs, app.url_value_preprocessors):
            if funcs.get(None) or funcs.get("health"):
                return False
        after = app.after_request_funcs
        return after.get(None, []) == self.own_after and not after.get("health")
