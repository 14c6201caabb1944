"""The head-first worker's pure parts: when a head is whole, the longest head, the JSON error answers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from gunicorn import util

from fitflix import SECURITY_HEADERS
from fitflix.serving.worker import (
    _CapturedSocket,
    error_response,
    head_complete,
    json_from_gunicorn_error,
    max_head_bytes,
)


@pytest.mark.parametrize(
    ("data", "complete"),
    [
        (b"", False),
        (b"GET / HTTP/1.1\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", True),
        (b"GET / HTTP/1.0\n\n", True),  # bare LF: the parser answers 400 now, not at the deadline
        (b"x" * 101, True),  # past max_head: the parser refuses it from what it has
        (b"x" * 100, False),
    ],
)
def test_head_complete(data, complete):
    assert head_complete(data, max_head=100) is complete


def cfg(line: int, fields: int, field_size: int) -> SimpleNamespace:
    return SimpleNamespace(limit_request_line=line, limit_request_fields=fields, limit_request_field_size=field_size)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (cfg(4094, 100, 8190), 4094 + 2 + 100 * 8192 + 4),  # gunicorn's defaults
        (cfg(0, 100, 8190), 8190 + 2 + 100 * 8192 + 4),  # 0: no line limit, so gunicorn's 8190 ceiling
        (cfg(20000, 100, 8190), 8190 + 2 + 100 * 8192 + 4),  # above the ceiling: the ceiling
        (cfg(100, 0, 0), 100 + 2 + 32768 * 8192 + 4),  # 0 fields and 0 size: gunicorn's own maxima
    ],
)
def test_max_head_bytes_follows_gunicorns_limits(config, expected):
    assert max_head_bytes(config) == expected


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    return status_line, dict(line.split(": ", 1) for line in lines), body


def test_error_response_is_the_apps_json_error_with_the_security_headers():
    status_line, headers, body = split(error_response(408, "Request Timeout", "too slow"))
    assert status_line == "HTTP/1.1 408 Request Timeout"
    assert json.loads(body) == {"error": "Request Timeout", "status": 408, "message": "too slow"}
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Connection"] == "close"
    assert headers["Cache-Control"] == "no-store"
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (400, "Bad Request", "Invalid HTTP Version 'HTTP/9.9'"),
        (414, "URI Too Long", "Request Line is too large (9014 > 4094)"),
        (431, "Request Header Fields Too Large", "Error parsing headers: 'limit request headers fields'"),
        (400, "Bad Request", '<script>alert(1)</script> & "quotes"'),
        (500, "Internal Server Error", ""),
    ],
)
def test_gunicorns_own_error_page_becomes_json(status, reason, message):
    captured = _CapturedSocket()
    util.write_error(captured, status, reason, message)  # exactly what gunicorn's handle_error sends
    assert captured.data.startswith(f"HTTP/1.1 {status} ".encode())  # the capture saw gunicorn's page

    status_line, headers, body = split(json_from_gunicorn_error(captured.data))

    assert status_line == f"HTTP/1.1 {status} {reason}"
    assert json.loads(body) == {"error": reason, "status": status, "message": message or reason}
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_what_is_not_gunicorns_error_page_is_left_alone():
    assert json_from_gunicorn_error(b"") is None
    assert json_from_gunicorn_error(b"<html>no status line</html>") is None
