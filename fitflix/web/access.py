"""Who may see figures and pids: `HEALTH_TOKEN`, as a Bearer token or a Basic password.

Status-only answers (`/health`, `/health/live`, `/health/ready`) stay public;
everything that shows a figure or a pid needs the token once one is set.
Compared in constant time. Basic is accepted so a browser shows its login
prompt (any user name, the token as the password).
"""

from __future__ import annotations

import base64
import binascii
import hmac

from flask import Request, Response, jsonify

from fitflix.errors import error_document

REALM = "fitflix"


def presented_token(request: Request) -> str | None:
    """The token in `Authorization`, Bearer or Basic (the password); None when absent or malformed."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme == "bearer" and credentials:
        return credentials
    if scheme == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, separator, password = decoded.partition(":")
        return password if separator else None
    return None


def is_authorized(request: Request, token: str | None) -> bool:
    """True when no token is configured, or the request presents it."""
    if token is None:
        return True
    presented = presented_token(request)
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())


def unauthorized() -> Response:
    message = (
        "These figures need HEALTH_TOKEN: send it as 'Authorization: Bearer <token>' or as the password of HTTP Basic."
    )
    # Through Flask's JSON (compact, keys sorted), unlike the other JSON errors (json.dumps): as it always was.
    response = jsonify(error_document(401, "Unauthorized", message))
    response.status_code = 401
    response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
    response.headers.add("WWW-Authenticate", f'Bearer realm="{REALM}"')
    return response
