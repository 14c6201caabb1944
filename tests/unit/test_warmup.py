"""The master's warm-up: the service's read-only endpoints, once per start, and never another app's code."""

from __future__ import annotations

from flask import Flask

from fitflix import create_app, init_app
from fitflix.serving.warmup import WARM_UP_PATHS, warm_up
from fitflix.settings import Settings


def test_the_service_is_warmed_on_its_own_read_only_endpoints(standalone_runtime):
    answered = warm_up(create_app(Settings()))
    assert [path for path, _status in answered] == list(WARM_UP_PATHS)
    assert {status for _path, status in answered} == {"200 OK"}


def test_another_app_with_init_app_is_warmed_on_fitflix_endpoints_only(standalone_runtime):
    app = Flask("theirs")
    calls: list[str] = []

    @app.before_request
    def count() -> None:
        from flask import request

        calls.append(request.path)

    init_app(app, Settings())
    warm_up(app)
    assert calls and set(calls) <= set(WARM_UP_PATHS)


def test_an_app_without_fitflix_endpoints_is_not_run():
    app = Flask("theirs")
    ran: list[str] = []
    app.before_request(lambda: ran.append("ran"))
    assert warm_up(app) == []
    assert ran == []
