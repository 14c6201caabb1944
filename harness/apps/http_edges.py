"""A bare WSGI app for the HTTP edges of a worker: bodies read in pieces, streamed and empty answers, errors.

Wrapped by `fitflix.wrap`, so FitFlix's /health answers beside it. Routes:
  /echo        reads wsgi.input in pieces (?piece=N bytes, default 65536; ?lines=1 by readline), answers
               the length, a SHA-256 and the largest piece read
  /environ...  the CGI and WSGI keys a request set (any path under /environ)
  /stream?n=   n pieces and no Content-Length (chunked on HTTP/1.1)
  /status?code= an answer with that status (204 and 304 with no body) and a body that must not go out
  /file?kb=    wsgi.file_wrapper over an in-memory file
  /bad-header  a header value with CR LF in it (response splitting): the server must refuse it
  /raise       an exception before start_response
  /unread      answers without reading the body
"""

from __future__ import annotations

import hashlib
import io
import json
from urllib.parse import parse_qs

import fitflix

ENVIRON_KEYS = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "RAW_URI",
    "SERVER_PROTOCOL",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "HTTP_HOST",
    "HTTP_X_A",
    "wsgi.url_scheme",
)


def _json(start_response, document: dict, status: str = "200 OK"):
    body = json.dumps(document).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _query(environ) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}


def edges(environ, start_response):
    path, query = environ["PATH_INFO"], _query(environ)
    if path == "/echo":
        body = environ["wsgi.input"]
        digest, length, largest = hashlib.sha256(), 0, 0
        piece_bytes = int(query.get("piece", 65536))
        while True:
            piece = body.readline() if query.get("lines") else body.read(piece_bytes)
            if not piece:
                break
            digest.update(piece)
            length += len(piece)
            largest = max(largest, len(piece))
        return _json(start_response, {"length": length, "sha256": digest.hexdigest(), "largest": largest})
    if path.startswith("/environ"):
        return _json(start_response, {key: environ.get(key) for key in ENVIRON_KEYS})
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"piece %d\n" % index for index in range(int(query.get("n", 3))))
    if path == "/status":
        code = int(query.get("code", 200))
        start_response(f"{code} Status", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"body"]
    if path == "/file":
        data = b"f" * (int(query.get("kb", 100)) * 1024)
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data)))])
        return environ["wsgi.file_wrapper"](io.BytesIO(data), 8192)
    if path == "/bad-header":
        start_response("200 OK", [("X-Split", "a\r\nSet-Cookie: stolen=1")])
        return [b"never"]
    if path == "/raise":
        raise RuntimeError("the app failed on purpose")
    if path == "/unread":
        return _json(start_response, {"read": False})
    return _json(start_response, {"error": "Not Found"}, "404 Not Found")


app = fitflix.wrap(edges)
