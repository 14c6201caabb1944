"""The head-first worker's pure parts: when the parser can answer, gunicorn's limits, the JSON error answers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from gunicorn import util
from gunicorn.config import Config

from fitflix.errors import SECURITY_HEADERS
from fitflix.serving.worker import (
    RequestLineCheck,
    _CapturedSocket,
    error_response,
    json_from_gunicorn_error,
    line_limit,
    max_head_bytes,
    parser_can_answer,
)


@pytest.mark.parametrize(
    ("data", "answerable"),
    [
        (b"", False),
        (b"GET / HTTP/1.1\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", True),
        # a bare LF anywhere: gunicorn refuses it (400) rather than wait for more
        (b"GET / HTTP/1.0\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\n", True),
        # a first line past the line limit with no end yet: 414 from what is here
        (b"GET /" + b"a" * 50, True),
        (b"GET /" + b"a" * 40, False),
        (b"GET /" + b"a" * 30 + b" HTTP/1.1\r\n" + b"X: y\r\n" * 5, False),  # the limit is the first line's only
        (b"GET /" + b"a" * 40 + b" HTTP/1.1\r\n" + b"X: y\r\n", True),  # a whole line past it: 414 now
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 20, True),  # past max_head: 431 from what is here
    ],
)
def test_parser_can_answer(data, answerable):
    assert parser_can_answer(data, line_limit=50, max_head=100) is answerable


@pytest.mark.parametrize(
    ("data", "answerable"),
    [
        # a whole request line gunicorn refuses: answered now, whatever is still to come
        (b"GET /v HTTP/9.9\r\nHost: x\r\n", True),
        (b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n", True),  # the PROXY protocol, which is off
        (b"GET\r\n", True),
        (b"GET * HTTP/1.1\r\n", True),
        (b"\r\nGET /v HTTP/9.9\r\n", True),  # after the one empty line the parser skips
        # a good line waits for the rest of its head; a line not yet whole is not judged
        (b"GET /v HTTP/1.1\r\nHost: x\r\n", False),
        (b"OPTIONS * HTTP/1.1\r\n", False),
        (b"GET /v HTTP/9.9", False),
        (b"\r\nGET /v HTTP/1.1\r\n", False),
        # a long line after the skipped empty line is gunicorn's 414, not a 431 at the buffer's end
        (b"\r\nGET /" + b"a" * 50, True),
        (b"\r\nGET /" + b"a" * 45, False),
        (b"\r\nGET /" + b"a" * 50 + b" HTTP/1.1\r\n", True),
    ],
)
def test_parser_can_answer_a_refused_request_line_at_once(data, answerable):
    refuses = RequestLineCheck(Config()).refuses
    assert parser_can_answer(data, line_limit=50, max_head=1000, refuses_line=refuses) is answerable


def test_an_unlimited_request_line_waits_for_its_end():
    assert not parser_can_answer(b"GET /" + b"a" * 5000, line_limit=None, max_head=10_000)


def cfg(line: int, fields: int = 100, field_size: int = 8190) -> SimpleNamespace:
    return SimpleNamespace(limit_request_line=line, limit_request_fields=fields, limit_request_field_size=field_size)


@pytest.mark.parametrize(
    ("config", "expected"), [(cfg(4094), 4094), (cfg(0), None), (cfg(20000), 8190), (cfg(-1), 8190), (cfg(1), 1)]
)
def test_line_limit_is_gunicorns(config, expected):
    assert line_limit(config) == expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (cfg(4094, 100, 8190), 4094 + 2 + 100 * 8192 + 4),  # gunicorn's defaults
        (cfg(0, 100, 8190), 1024 * 1024 + 2 + 100 * 8192 + 4),  # 0: no line limit; its fast parser's 1 MiB
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
