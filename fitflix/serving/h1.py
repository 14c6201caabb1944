"""HTTP/1 requests as FitFlix's own worker reads them: `httptools` (llhttp, Node's parser) plus gunicorn 27's rules.

llhttp does the framing in C and refuses what request smuggling needs (a bare
CR or LF, obsolete line folding, whitespace before a colon, Content-Length
beside Transfer-Encoding, two lengths, a bad chunk size). What gunicorn checks
beyond it is checked here, once per request, in Python: the request-line
limit, the header count and size, the request target's form, the HTTP
version, chunked HTTP/1.0, repeated Host or Content-Type, `Expect`, header
names with an underscore (`header_map`), and the scheme and forwarder headers
a trusted proxy may set (`forwarded_allow_ips`, `secure_scheme_headers`,
`forwarder_headers`). Where llhttp is stricter than gunicorn (it knows only
registered method names, and never folds lines) the request is refused: the
rules here are gunicorn's or stricter, never looser
(tests/live/test_request_corpus.py replays gunicorn's own corpus).

Nothing here touches a socket: `RequestReader.feed` takes bytes and queues
the requests they complete; the worker (`fitflix.serving.h1worker`) reads.
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque

import httptools
from gunicorn.http.message import MAX_REQUEST_LINE
from gunicorn.util import split_request_uri

# What one connection's head may take while it is read: every open connection can be mid-head at
# once, so 1,000 of them hold 32 MiB at most (nginx allows 4 x 8 KiB). The same bound as today's worker.
HEAD_BUFFER_MAX = 32 * 1024

TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+")
# RFC 9110 section 5.5: controls other than HTAB are refused in a field value (llhttp already refuses them).
INVALID_VALUE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 9112 section 3.2: the request target is printable ASCII.
TARGET_INVALID_RE = re.compile(r"[^\x21-\x7e]")
# RFC 9110 section 6.5.1: fields a trailer may not carry.
FORBIDDEN_TRAILERS = frozenset(("HOST", "CONTENT-LENGTH", "TRANSFER-ENCODING", "TRAILER", "AUTHORIZATION", "TE"))
SINGLETON_FIELDS = frozenset(("HOST", "CONTENT-TYPE"))
# What `Transfer-Encoding` may name (gunicorn's set_body_reader); llhttp frames only a final `chunked`.
KNOWN_CODINGS = frozenset(("chunked", "identity", "compress", "deflate", "gzip"))


class BadRequest(Exception):
    """A request refused before the app sees it: answered with `status` and the connection closed."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def bad(message: str) -> BadRequest:
    return BadRequest(400, "Bad Request", message)


class HeadRules:
    """gunicorn's request rules, read from its Config once (a Config attribute is a lookup on each access)."""

    def __init__(
        self,
        line_limit: int | None = 4094,
        fields_limit: int = 100,
        field_size_limit: int = 8190,
        header_map: str = "drop",
        forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1"),
        secure_scheme_headers: dict[str, str] | None = None,
        forwarder_headers: tuple[str, ...] = ("SCRIPT_NAME", "PATH_INFO"),
        head_max_bytes: int = HEAD_BUFFER_MAX,
    ) -> None:
        self.line_limit = line_limit
        self.fields_limit = fields_limit
        self.field_size_limit = field_size_limit
        self.header_map = header_map
        self.forwarded_allow_ips = forwarded_allow_ips
        self.networks = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in forwarded_allow_ips if entry != "*"
        )
        self.secure_scheme_headers = (
            dict(secure_scheme_headers)
            if secure_scheme_headers is not None
            else {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}
        )
        self.forwarder_headers = tuple(forwarder_headers)
        self.head_max_bytes = head_max_bytes
        self._trusted: dict[str, bool] = {}

    @classmethod
    def from_cfg(cls, cfg) -> HeadRules:
        limit = cfg.limit_request_line
        line_limit = None if limit == 0 else (limit if 0 < limit < MAX_REQUEST_LINE else MAX_REQUEST_LINE)
        fields = cfg.limit_request_fields if 0 < cfg.limit_request_fields <= 32768 else 32768
        field_size = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else 8190
        return cls(
            line_limit=line_limit,
            fields_limit=fields,
            field_size_limit=field_size,
            header_map=cfg.header_map,
            forwarded_allow_ips=tuple(cfg.forwarded_allow_ips),
            secure_scheme_headers=dict(cfg.secure_scheme_headers),
            forwarder_headers=tuple(cfg.forwarder_headers),
        )

    def trusted(self, peer) -> bool:
        """Whether `peer` may set the scheme and forwarder headers: decided once per address, not per request."""
        if not isinstance(peer, tuple):
            return True  # a unix socket: gunicorn trusts it
        address = peer[0]
        known = self._trusted.get(address)
        if known is None:
            if "*" in self.forwarded_allow_ips:
                known = True
            else:
                try:
                    ip = ipaddress.ip_address(address)
                except ValueError:
                    known = False
                else:
                    known = any(ip in network for network in self.networks)
            if len(self._trusted) < 1024:  # a bounded memo: addresses are few behind a balancer
                self._trusted[address] = known
        return known


class Request:
    """One request: its head as gunicorn's `Request` names it, and its body as it comes."""

    __slots__ = (
        "method",
        "uri",
        "path",
        "query",
        "fragment",
        "version",
        "headers",
        "scheme",
        "content_length",
        "chunked",
        "expect_continue",
        "keep_alive",
        "chunks",
        "buffered",
        "complete",
        "trailers",
        "raw_headers",
        "url",
        "head_complete",
        "environ_headers",
        "must_close",
    )

    def __init__(self) -> None:
        self.url = b""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers: list[tuple[str, str]] = []
        self.environ_headers: dict[str, str] = {}
        self.trailers: list[tuple[str, str]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.head_complete = False
        self.scheme = "http"
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.keep_alive = True
        self.must_close = False

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def should_close(self) -> bool:
        return self.must_close or not self.keep_alive


# Header names seen before: raw name -> (NAME, HTTP_NAME environ key). Bounded; names are few.
_NAMES: dict[bytes, tuple[str, str]] = {}
_NAMES_MAX = 512


def header_name(raw: bytes) -> tuple[str, str]:
    known = _NAMES.get(raw)
    if known is not None:
        return known
    text = raw.decode("latin-1")
    if not TOKEN_RE.fullmatch(text):  # llhttp refuses these first; kept as gunicorn's own check
        raise bad(f"Invalid header name {text!r}")
    upper = text.upper()
    known = (upper, "HTTP_" + upper.replace("-", "_"))
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[raw] = known
    return known


class RequestReader:
    """Feeds an httptools parser and queues each request as its head completes; one per connection.

    `ready` holds requests whose head is complete, oldest first; each one's body
    chunks arrive on it as later bytes are fed. `head_bytes` counts the bytes
    of the head being read, so a head past HEAD_BUFFER_MAX is refused with 431.
    """

    __slots__ = (
        "rules",
        "trusted",
        "parser",
        "current",
        "ready",
        "head_bytes",
        "fields",
        "in_head",
        "error",
        "blank",
        "ended",
    )

    def __init__(self, rules: HeadRules, trusted: bool) -> None:
        self.rules = rules
        self.trusted = trusted
        self.parser = httptools.HttpRequestParser(self)
        self.current: Request | None = None
        self.ready: deque[Request] = deque()
        self.head_bytes = 0
        self.fields = 0
        self.in_head = False
        self.error: BadRequest | None = None
        self.blank = 0  # CR and LF bytes before the request line of the next request
        self.ended = False  # a request that ends the connection was read: what follows is not read

    def feed(self, data: bytes) -> None:
        """Parse `data`; raise BadRequest for a request gunicorn (or llhttp) would refuse."""
        if self.error is not None:
            raise self.error
        if self.ended:
            return
        if self.current is None and (self.blank or data[:1] in (b"\r", b"\n")):
            self._blank_lines(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade or CONNECT request: served as a plain request (the app may answer 101 itself, as under
            # gunicorn), and the connection ends after it: llhttp reads no further bytes as HTTP.
            request = self.current if self.current is not None else (self.ready[-1] if self.ready else None)
            if request is not None:
                request.must_close = True
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            self.error = cause if isinstance(cause, BadRequest) else bad(str(cause or error))
            raise self.error from None
        except httptools.HttpParserInvalidURLError as error:
            self.error = bad(f"Invalid request target: {error}")
            raise self.error from None
        except httptools.HttpParserInvalidMethodError:
            self.error = bad("Invalid request method")
            raise self.error from None
        except httptools.HttpParserError as error:
            if self.ready and self.ready[-1].complete and self.ready[-1].should_close():
                # Bytes after a request that ends the connection (Connection: close, HTTP/1.0): gunicorn serves
                # that request and reads no further; llhttp refuses the bytes. They are not read.
                self.ended = True
                return
            self.error = bad(str(error) or "Invalid request")
            raise self.error from None
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > self.rules.head_max_bytes:
                self.error = BadRequest(
                    431,
                    "Request Header Fields Too Large",
                    f"The request head is over {self.rules.head_max_bytes} bytes.",
                )
                raise self.error

    def _blank_lines(self, data: bytes) -> None:
        """RFC 9112 section 2.2 lets one empty line come before a request line, and gunicorn allows no more.

        llhttp skips any number: counted here, from the start of each read between requests. (Blank lines
        between two pipelined requests that come in one read are llhttp's alone to judge.)
        """
        stripped = len(data) - len(data.lstrip(b"\r\n"))
        self.blank += stripped
        if self.blank > 2:
            self.error = bad("More than one empty line before the request line")
            raise self.error
        if stripped < len(data):
            self.blank = 0

    # httptools' callbacks.

    def on_message_begin(self) -> None:
        self.current = Request()
        self.in_head = True
        self.head_bytes = 0
        self.fields = 0

    def on_url(self, url: bytes) -> None:
        request = self.current
        request.url += url
        limit = self.rules.line_limit
        if limit is not None and len(request.url) > limit:
            raise BadRequest(414, "Request-URI Too Long", f"The request line is over {limit} bytes.")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.current
        self.fields += 1
        rules = self.rules
        if self.fields > rules.fields_limit:
            raise BadRequest(431, "Request Header Fields Too Large", "Too many request header fields.")
        if len(name) + len(value) + 4 > rules.field_size_limit:
            raise BadRequest(431, "Request Header Fields Too Large", "A request header field is too large.")
        if request.head_complete:
            self._trailer(request, name, value)
            return
        request.raw_headers.append((name, value))

    def _trailer(self, request: Request, raw_name: bytes, raw_value: bytes) -> None:
        """A field of a chunked body's trailer, under gunicorn's rules for one (parse_headers(from_trailer=True))."""
        name, _key = header_name(raw_name)
        if name in FORBIDDEN_TRAILERS:
            raise bad(f"Invalid trailer field {name!r}")
        if "_" in name:  # no forwarder may set a trailer
            if self.rules.header_map == "drop":
                return
            if self.rules.header_map != "dangerous":
                raise bad(f"Invalid header name {name!r}")
        request.trailers.append((name, raw_value.decode("latin-1").strip(" \t")))

    def on_headers_complete(self) -> None:
        request = self.current
        parser = self.parser
        request.method = parser.get_method().decode("ascii")
        version = parser.get_http_version()
        if version == "1.1":
            request.version = (1, 1)
        elif version == "1.0":
            request.version = (1, 0)
        else:
            raise BadRequest(400, "Bad Request", f"Invalid HTTP Version: HTTP/{version}")
        request.keep_alive = parser.should_keep_alive()
        self._target(request)
        self._headers(request)
        request.head_complete = True
        self.in_head = False
        self.fields = 0  # a trailer's fields are counted on their own, as gunicorn counts them
        self.ready.append(request)

    def on_body(self, body: bytes) -> None:
        request = self.current
        request.chunks.append(body)
        request.buffered += len(body)

    def on_message_complete(self) -> None:
        self.current.complete = True
        self.current = None
        self.fields = 0

    # The checks gunicorn makes beyond llhttp's.

    def _target(self, request: Request) -> None:
        uri = request.url.decode("latin-1")
        request.uri = uri
        if not uri or TARGET_INVALID_RE.search(uri):
            raise bad(f"Invalid request line: {uri!r}")
        method = request.method
        if uri[0] == "/" and uri[:2] != "//":  # origin-form, nearly every request: split here
            path, _, fragment = uri.partition("#")
            path, _, query = path.partition("?")
            request.path, request.query, request.fragment = path, query, fragment
            return
        if uri == "*":
            if method != "OPTIONS":
                raise bad("The asterisk form is for OPTIONS only")
        elif method != "CONNECT" and uri[0] != "/" and "://" not in uri:
            raise bad(f"Invalid request target {uri!r}")
        try:
            parts = split_request_uri(uri)
        except ValueError:
            raise bad(f"Invalid request target {uri!r}") from None
        request.path, request.query, request.fragment = parts.path or "", parts.query or "", parts.fragment or ""

    def _headers(self, request: Request) -> None:
        rules = self.rules
        trusted = self.trusted
        secure = rules.secure_scheme_headers if trusted else {}
        forwarders = rules.forwarder_headers if trusted else ()
        headers = request.headers
        environ = request.environ_headers
        scheme_set = False
        seen_singletons: set[str] = set()
        transfer_encoding = None
        for raw_name, raw_value in request.raw_headers:
            name, key = header_name(raw_name)
            value = raw_value.decode("latin-1").strip(" \t")
            if name in SINGLETON_FIELDS:
                if name in seen_singletons:
                    raise bad(f"Repeated header {name}")
                seen_singletons.add(name)
            if name == "CONTENT-LENGTH":
                if not value.isdigit() or not value.isascii():
                    raise bad("Invalid Content-Length")
                request.content_length = int(value)
            elif name == "TRANSFER-ENCODING":
                transfer_encoding = value if transfer_encoding is None else f"{transfer_encoding},{value}"
            elif name == "EXPECT":
                if value.lower() != "100-continue":
                    raise BadRequest(417, "Expectation Failed", f"Unsupported Expect: {value}")
                if request.version >= (1, 1):
                    request.expect_continue = True
            if name in secure:
                scheme = "https" if value == secure[name] else "http"
                if scheme_set and scheme != request.scheme:
                    raise bad("Contradictory scheme headers")
                scheme_set, request.scheme = True, scheme
            if "_" in name and not (name in forwarders or "*" in forwarders):
                if rules.header_map == "drop":
                    continue
                if rules.header_map != "dangerous":
                    raise bad(f"Invalid header name {name!r}")
            headers.append((name, value))
            if name == "CONTENT-TYPE":
                environ["CONTENT_TYPE"] = value
            elif name == "CONTENT-LENGTH":
                environ["CONTENT_LENGTH"] = value
            elif key in environ:
                environ[key] = f"{environ[key]},{value}"
            else:
                environ[key] = value
        if transfer_encoding is not None:
            self._transfer_encoding(request, transfer_encoding)

    @staticmethod
    def _transfer_encoding(request: Request, value: str) -> None:
        """gunicorn's set_body_reader rules on Transfer-Encoding (llhttp has framed the body already)."""
        codings = [coding.strip(" \t").lower() for coding in value.split(",")]
        for index, coding in enumerate(codings):
            if coding not in KNOWN_CODINGS:
                raise BadRequest(501, "Not Implemented", f"Unsupported transfer coding: {value!r}")
            if coding == "chunked" and index != len(codings) - 1:
                raise bad("Invalid Transfer-Encoding")
            if coding in ("compress", "deflate", "gzip"):
                request.must_close = True
        if codings[-1] != "chunked":
            raise bad("Invalid Transfer-Encoding")
        if request.version < (1, 1):
            raise bad("Chunked transfer coding in HTTP/1.0")
        if request.content_length is not None:
            raise bad("Content-Length with Transfer-Encoding")
        request.chunked = True


def parse_all(data: bytes, rules: HeadRules, peer=("127.0.0.1", 40000)) -> list[Request]:
    """Every request in `data`, bodies whole; BadRequest at the first bad one (or for an unfinished one)."""
    reader = RequestReader(rules, rules.trusted(peer))
    reader.feed(data)
    requests = list(reader.ready)
    if reader.current is not None or (requests and not requests[-1].complete):
        raise bad("The request is not complete")
    return requests
