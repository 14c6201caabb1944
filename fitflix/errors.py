"""The service's JSON error and the headers its answers carry, for the Flask app and the gunicorn worker alike.

The bottom layer, beside `settings` (`.importlinter`): the worker writes its own answers
(408, gunicorn's 400s) with it in every request's process, so it imports the standard library only.
"""

from __future__ import annotations

import json

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # JSON needs nothing; the memory page sets its own, narrower-than-nothing-plus-a-nonce policy.
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}

# What every answer gets unless it set its own, in this order: no cache may keep one, and the security headers.
RESPONSE_HEADERS = {"Cache-Control": "no-store", **SECURITY_HEADERS}


def error_document(status: int, error: str, message: str) -> dict[str, str | int]:
    """The fields of a JSON error: the reason phrase, the status code, and what went wrong."""
    return {"error": error, "status": status, "message": message}


def error_body(status: int, error: str, message: str) -> bytes:
    """A JSON error's body, as the error handlers, the backstop and the worker send it."""
    return json.dumps(error_document(status, error, message)).encode()


def error_response(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer a worker writes itself: the JSON error, the security headers, then close."""
    body = error_body(status, reason, message)
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **RESPONSE_HEADERS,
    }
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("latin-1") + b"\r\n" + body
