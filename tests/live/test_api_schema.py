"""schemathesis against the live server: no server errors, every answer matches /openapi.json."""

from __future__ import annotations

import pytest
import schemathesis

from harness.server import LiveServer


@pytest.fixture(scope="module")
def api_server():
    """One real gunicorn for the whole schema run (module scope: schemathesis runs many cases)."""
    server = LiveServer({"WEB_CONCURRENCY": "2"})
    try:
        server.start()
    except AssertionError as error:
        pytest.fail(str(error))
    yield server
    server.close()


@pytest.fixture(scope="module")
def api_schema(api_server):
    """The OpenAPI document as the live server serves it."""
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{api_server.port}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_documented_answer_matches_the_document(case):
    case.call_and_validate()
