"""fitflix.serving.h1worker without a socket: start_response's checks, and the answer's head.

The worker on the wire (keep-alive, pipelining, bodies, hostile clients) is in tests/live/test_own_worker.py
and tests/live/test_hostile_clients.py.
"""

from __future__ import annotations

import pytest

from fitflix.serving.h1 import HeadRules, parse_all
from fitflix.serving.h1worker import _LINES, Response


class Worker:
    io_timeout_s = 1.0

    def date_lines(self) -> str:
        return "Server: gunicorn\r\nDate: Mon, 07 Dec 2026 00:00:00 GMT\r\n"


def response(request_bytes: bytes = b"GET / HTTP/1.1\r\n\r\n", must_close: bool = False) -> Response:
    [request] = parse_all(request_bytes, HeadRules())
    return Response(Worker(), None, request, must_close)


@pytest.mark.parametrize(
    "header",
    [
        ("X-Split", "a\r\nSet-Cookie: stolen=1"),
        ("X-Split", "a\nb"),
        ("X-Split", "a\rb"),
        ("X-Nul", "a\x00b"),
        ("X-Del", "a\x7fb"),
        ("X-Bell", "a\x07b"),
        ("Bad Name", "1"),
        ("Bad:Name", "1"),
    ],
)
def test_what_would_split_or_break_the_answer_is_refused_and_never_remembered(header):
    with pytest.raises(ValueError):
        response().start_response("200 OK", [("Content-Type", "text/plain"), header])
    assert header not in _LINES
    with pytest.raises(ValueError):  # the second time too: nothing of it was kept as good
        response().start_response("200 OK", [header])


@pytest.mark.parametrize("status", ["200\r\nX: y", "2000 OK", "OK 200", "20 OK"])
def test_a_bad_status_is_refused(status):
    with pytest.raises(ValueError):
        response().start_response(status, [])


def test_names_and_values_must_be_strings():
    with pytest.raises(TypeError):
        response().start_response("200 OK", [(b"X-A", "1")])
    with pytest.raises(TypeError):
        response().start_response("200 OK", [("X-A", 1)])


def test_the_head_carries_the_apps_headers_a_tab_and_text_beyond_ascii_and_the_framing():
    answer = response()
    answer.start_response("200 OK", [("X-Tab", "a\tb"), ("X-Latin", "caf\xe9"), ("Content-Length", "3")])

    head = answer.head().decode("latin-1")
    assert head == (
        "HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Mon, 07 Dec 2026 00:00:00 GMT\r\nConnection: keep-alive\r\n"
        "X-Tab: a\tb\r\nX-Latin: caf\xe9\r\nContent-Length: 3\r\n\r\n"
    )


def test_hop_by_hop_fields_are_the_servers_and_no_length_means_chunked_on_1_1():
    answer = response()
    answer.start_response("200 OK", [("Connection", "close"), ("Transfer-Encoding", "gzip"), ("Keep-Alive", "5")])

    head = answer.head().decode()
    assert "Transfer-Encoding: chunked\r\n" in head and "gzip" not in head and "Keep-Alive" not in head
    assert answer.chunked and not answer.should_close()


def test_http_1_0_without_a_length_closes_and_a_204_drops_its_length():
    old = response(b"GET / HTTP/1.0\r\n\r\n")
    old.start_response("200 OK", [])
    assert old.should_close() and not old.chunked and old.head().startswith(b"HTTP/1.0 200 OK\r\n")

    empty = response()
    empty.start_response("204 No Content", [("Content-Length", "4")])
    assert b"Content-Length" not in empty.head() and empty.omits_body and not empty.should_close()
