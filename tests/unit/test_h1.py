"""fitflix.serving.h1: requests as FitFlix's own worker reads them, gunicorn's rules or stricter.

gunicorn's whole request corpus is replayed against both parsers in tests/live/test_request_corpus.py;
these are the rules this module adds to llhttp's, one case each, and how bytes that come in pieces are read.
"""

from __future__ import annotations

import pytest

from fitflix.serving.h1 import HEAD_BUFFER_MAX, BadRequest, HeadRules, RequestReader, parse_all

RULES = HeadRules()


def one(data: bytes, rules: HeadRules = RULES, peer=("127.0.0.1", 40000)):
    [request] = parse_all(data, rules, peer)
    return request


def test_a_plain_get_gives_what_gunicorn_names():
    request = one(b"GET /a/b?x=1&y=2#top HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n")

    assert (request.method, request.uri, request.path, request.query, request.fragment) == (
        "GET",
        "/a/b?x=1&y=2#top",
        "/a/b",
        "x=1&y=2",
        "top",
    )
    assert request.version == (1, 1)
    assert request.headers == [("HOST", "example.com"), ("ACCEPT", "*/*")]
    assert request.environ_headers == {"HTTP_HOST": "example.com", "HTTP_ACCEPT": "*/*"}
    assert request.keep_alive and request.complete and request.body == b""


def test_repeated_fields_join_with_a_comma_in_the_environ():
    request = one(b"GET / HTTP/1.1\r\nX-A: 1\r\nX-A: 2\r\n\r\n")

    assert request.headers == [("X-A", "1"), ("X-A", "2")]
    assert request.environ_headers["HTTP_X_A"] == "1,2"


def test_content_type_and_length_take_their_cgi_names():
    request = one(b"POST /p HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc")

    assert request.environ_headers == {"CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "3"}
    assert request.body == b"abc" and request.content_length == 3


def test_pipelined_requests_come_in_order_each_with_its_body():
    first, second, third = parse_all(
        b"POST /1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
        b"POST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n"
        b"GET /3 HTTP/1.0\r\n\r\n",
        RULES,
    )

    assert [request.path for request in (first, second, third)] == ["/1", "/2", "/3"]
    assert (first.body, second.body, third.body) == (b"hi", b"abc", b"")
    assert second.chunked and second.trailers == [("X-SUM", "1")]
    assert not third.keep_alive  # HTTP/1.0 without keep-alive


def test_bytes_fed_one_at_a_time_make_the_same_request():
    data = b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    reader = RequestReader(RULES, trusted=True)
    for index in range(len(data)):
        reader.feed(data[index : index + 1])

    [request] = reader.ready
    assert (request.path, request.query, request.headers, request.body) == (
        "/p",
        "q=1",
        [("HOST", "h"), ("CONTENT-LENGTH", "5")],
        b"hello",
    )


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\nHost: x\n\n", 400),  # bare LF
        (b"GET / HTTP/1.1\r\nHost: x\rY: 1\r\n\r\n", 400),  # bare CR
        (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 400),  # obsolete line folding
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),  # whitespace before the colon
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n", 400),  # bad chunk size
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),  # chunked HTTP/1.0
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),  # no length can be known
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),  # a singleton field twice
        (b"GET / HTTP/1.1\r\nExpect: the-moon\r\n\r\n", 417),
        (b"GET a/b HTTP/1.1\r\n\r\n", 400),  # authority form without CONNECT
        (b"GET * HTTP/1.1\r\n\r\n", 400),  # asterisk form without OPTIONS
        (b"GET /\x01 HTTP/1.1\r\n\r\n", 400),
        (b"get / HTTP/1.1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nHost: evil\r\n\r\n", 400),  # forbidden trailer
    ],
)
def test_what_gunicorn_refuses_is_refused(data, status):
    with pytest.raises(BadRequest) as refused:
        parse_all(data, RULES)

    assert refused.value.status == status


def test_the_request_line_limit_is_a_414():
    rules = HeadRules(line_limit=100)

    with pytest.raises(BadRequest) as refused:
        parse_all(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n", rules)
    assert refused.value.status == 414
    assert one(b"GET /" + b"a" * 90 + b" HTTP/1.1\r\n\r\n", rules).path == "/" + "a" * 90


def test_too_many_fields_and_too_large_a_field_are_refused():
    rules = HeadRules(fields_limit=3, field_size_limit=64)
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % index for index in range(4)) + b"\r\n"

    with pytest.raises(BadRequest, match="Too many"):
        parse_all(head, rules)
    with pytest.raises(BadRequest, match="too large"):
        parse_all(b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 64 + b"\r\n\r\n", rules)


def test_a_head_past_the_buffer_bound_is_a_431_before_it_ends():
    reader = RequestReader(HeadRules(fields_limit=10_000, field_size_limit=HEAD_BUFFER_MAX), trusted=True)
    reader.feed(b"GET / HTTP/1.1\r\n")

    with pytest.raises(BadRequest) as refused:
        for index in range(HEAD_BUFFER_MAX // 16 + 1):
            reader.feed(b"X-%07d: 12345\r\n" % index)
    assert refused.value.status == 431
    with pytest.raises(BadRequest):  # a refused connection stays refused
        reader.feed(b"\r\n")


@pytest.mark.parametrize(("header_map", "kept"), [("drop", False), ("dangerous", True)])
def test_underscore_names_follow_header_map(header_map, kept):
    request = one(b"GET / HTTP/1.1\r\nX_Forwarded_For: 10.0.0.1\r\nX-Ok: 1\r\n\r\n", HeadRules(header_map=header_map))

    assert ("HTTP_X_FORWARDED_FOR" in request.environ_headers) is kept
    assert request.environ_headers["HTTP_X_OK"] == "1"


def test_underscore_names_are_refused_under_header_map_refuse():
    with pytest.raises(BadRequest):
        parse_all(b"GET / HTTP/1.1\r\nX_A: 1\r\n\r\n", HeadRules(header_map="refuse"))


def test_a_trusted_proxy_sets_the_scheme_and_script_name_an_untrusted_peer_does_not():
    data = b"GET /app/x HTTP/1.1\r\nX-Forwarded-Proto: https\r\nSCRIPT_NAME: /app\r\n\r\n"

    trusted = one(data, peer=("127.0.0.1", 1))
    untrusted = one(data, peer=("10.1.2.3", 1))

    assert trusted.scheme == "https" and trusted.environ_headers["HTTP_SCRIPT_NAME"] == "/app"
    assert untrusted.scheme == "http" and "HTTP_SCRIPT_NAME" not in untrusted.environ_headers


def test_contradictory_scheme_headers_from_a_trusted_proxy_are_refused():
    with pytest.raises(BadRequest, match="scheme"):
        parse_all(b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n", RULES)


def test_forwarded_allow_ips_takes_networks_and_a_star():
    rules = HeadRules(forwarded_allow_ips=("10.0.0.0/8",))

    assert rules.trusted(("10.9.9.9", 1)) and not rules.trusted(("11.0.0.1", 1))
    assert HeadRules(forwarded_allow_ips=("*",)).trusted(("203.0.113.7", 1))
    assert rules.trusted("/run/app.sock")  # a unix socket's peer, as gunicorn trusts it


def test_expect_100_continue_is_noted_on_http_1_1_only():
    head = b"POST / HTTP/1.%d\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    reader = RequestReader(RULES, trusted=True)
    reader.feed(head % 1)
    assert reader.ready[0].expect_continue and not reader.ready[0].complete
    reader10 = RequestReader(RULES, trusted=True)
    reader10.feed(head % 0)
    assert not reader10.ready[0].expect_continue


def test_an_upgrade_request_is_served_once_and_ends_the_connection():
    request = one(b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")

    assert request.should_close()


def test_absolute_form_is_split_as_gunicorn_splits_it():
    request = one(b"GET http://example.com/a?b=1 HTTP/1.1\r\n\r\n")

    assert (request.path, request.query) == ("/a", "b=1")


def test_an_unfinished_request_is_not_a_request():
    with pytest.raises(BadRequest, match="not complete"):
        parse_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", RULES)


def test_one_empty_line_before_a_request_is_allowed_and_two_are_not():
    assert one(b"\r\nGET / HTTP/1.1\r\n\r\n").path == "/"
    with pytest.raises(BadRequest, match="empty line"):
        parse_all(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", RULES)
    reader = RequestReader(RULES, trusted=True)  # counted across reads too
    reader.feed(b"\r\n")
    with pytest.raises(BadRequest):
        reader.feed(b"\r\nGET / HTTP/1.1\r\n\r\n")


@pytest.mark.parametrize("first", [b"GET /first HTTP/1.0\r\n\r\n", b"GET /first HTTP/1.1\r\nConnection: close\r\n\r\n"])
def test_bytes_after_a_request_that_ends_the_connection_are_not_read(first):
    reader = RequestReader(RULES, trusted=True)
    reader.feed(first + b"GET /second HTTP/1.1\r\n\r\n")
    reader.feed(b"anything at all")

    assert [request.path for request in reader.ready] == ["/first"]
    assert reader.ready[0].should_close()


def test_a_trailer_follows_gunicorns_rules_for_one():
    body = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n%s\r\n\r\n"

    assert one(body % b"x-checksum: 1\r\nX_Under: 2").trailers == [("X-CHECKSUM", "1")]  # header_map=drop
    with pytest.raises(BadRequest):
        parse_all(body % b"Content-Length: 1", RULES)
    with pytest.raises(BadRequest):
        parse_all(body % b"X_Under: 2", HeadRules(header_map="refuse"))
