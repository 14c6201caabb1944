"""The probe shortcut gives Flask's own answer, and steps aside whenever Flask would do more."""

from __future__ import annotations

import json
import re

import pytest
from flask import request_started
from werkzeug.test import EnvironBuilder

from fitflix import create_app
from fitflix.settings import Settings
from fitflix.web.probes import ProbeShortcut

pytestmark = pytest.mark.usefixtures("standalone_runtime")

TOKEN = "s3cret-token"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def app_for(token: str | None = None):
    return create_app(Settings(max_memory_mb=512, health_token=token))


def environ_for(path: str, method: str = "GET", headers: dict | None = None) -> dict:
    return EnvironBuilder(path=path, method=method, headers=headers or {}).get_environ()


def call(wsgi, environ: dict) -> tuple[str, list[tuple[str, str]], bytes]:
    started = []
    body = b"".join(wsgi(environ, lambda status, headers, exc_info=None: started.append((status, headers))))
    ((status, headers),) = started
    return status, list(headers), body


def comparable(body: bytes) -> dict:
    """The JSON with the figures that move between two calls checked and set aside."""
    if not body:
        return {}
    document = json.loads(body)
    if "timestamp" in document:
        assert TIMESTAMP.fullmatch(document.pop("timestamp"))
        assert document.pop("uptimeSeconds") >= 0
    return document


@pytest.mark.parametrize("token", [None, TOKEN])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", ["/health", "/health/live", "/health?probe=render"])
@pytest.mark.parametrize("accept", [None, "*/*"])
def test_a_plain_probe_gets_flasks_answer_byte_for_byte(token, method, path, accept):
    app = app_for(token)
    shortcut = app.wsgi_app
    assert isinstance(shortcut, ProbeShortcut)
    environ = environ_for(path, method, {"Accept": accept} if accept else {})

    assert shortcut.answer(dict(environ)) is not None
    fast = call(shortcut, dict(environ))
    flask = call(shortcut.wsgi_app, dict(environ))  # the same app, through Flask

    assert fast[0] == flask[0] == "200 OK"
    fast_headers, flask_headers = dict(fast[1]), dict(flask[1])
    if fast_headers["Content-Length"] != flask_headers["Content-Length"]:  # the uptime's digits can differ
        assert "timestamp" in fast[2].decode() or method == "HEAD"
        fast_headers.pop("Content-Length"), flask_headers.pop("Content-Length")
    assert fast_headers == flask_headers
    assert [name for name, _ in fast[1]] == [name for name, _ in flask[1]]
    assert comparable(fast[2]) == comparable(flask[2])
    assert (fast[2] == b"") is (method == "HEAD")


@pytest.mark.parametrize(
    ("path", "method", "headers", "token"),
    [
        ("/health/memory", "GET", {}, None),
        ("/health/ready", "GET", {}, None),
        ("/health/", "GET", {}, None),
        ("/health", "POST", {}, None),
        ("/health", "OPTIONS", {}, None),
        ("/health", "GET", {"Accept": "text/html"}, None),
        ("/health", "GET", {"Accept": "application/health+json"}, None),
        ("/health", "GET", {"Authorization": f"Bearer {TOKEN}"}, TOKEN),  # the token is Flask's to check
    ],
)
def test_anything_but_a_plain_probe_goes_to_flask(path, method, headers, token):
    assert app_for(token).wsgi_app.answer(environ_for(path, method, headers)) is None


def test_the_shortcut_steps_aside_for_an_app_with_its_own_request_hooks():
    app = app_for()
    seen = []
    app.before_request(lambda: seen.append("before"))
    status, _headers, _body = call(app.wsgi_app, environ_for("/health"))
    assert status == "200 OK" and seen == ["before"]


@pytest.mark.parametrize("hook", ["after_request", "teardown_request"])
def test_other_app_wide_hooks_also_send_probes_through_flask(hook):
    app = app_for()
    getattr(app, hook)(lambda value: value)
    assert app.wsgi_app.answer(environ_for("/health")) is None
    assert app_for().wsgi_app.answer(environ_for("/health")) is not None  # and without one, the shortcut


def test_a_request_signal_receiver_sees_every_probe():
    app = app_for()
    seen = []

    def receiver(sender, **extra):
        seen.append(sender)

    request_started.connect(receiver, app)
    try:
        call(app.wsgi_app, environ_for("/health"))
    finally:
        request_started.disconnect(receiver, app)
    assert seen == [app]
    # blinker keeps saying "probably" for a sender once connected: another app has the shortcut
    assert app_for().wsgi_app.answer(environ_for("/health")) is not None


def test_a_token_keeps_the_figures_out_of_a_plain_probe():
    _status, _headers, body = call(app_for(TOKEN).wsgi_app, environ_for("/health"))
    assert json.loads(body) == {"status": "OK"}


def test_an_app_with_its_own_response_or_json_class_gets_probes_through_flask():
    from flask import Response
    from flask.json.provider import DefaultJSONProvider

    class Tagged(Response):
        default_mimetype = "application/json"

    class Pretty(DefaultJSONProvider):
        def response(self, *args, **kwargs):
            response = super().response(*args, **kwargs)
            response.headers["X-Pretty"] = "1"
            return response

    own_response = app_for()
    own_response.response_class = Tagged
    own_json = app_for()
    own_json.json = Pretty(own_json)
    for app in (own_response, own_json):
        assert app.wsgi_app.answer(environ_for("/health")) is None
    _status, headers, _body = call(own_json.wsgi_app, environ_for("/health"))
    assert dict(headers)["X-Pretty"] == "1"
