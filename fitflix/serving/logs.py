"""gunicorn's logger, with `LOG_FORMAT=json`, `ACCESS_LOG_HEALTH=false`, and no secrets.

Set as `logger_class` in gunicorn.conf.py. Text stays gunicorn's own format;
json gives one object per line for gunicorn's error and access logs and the
app's own logger alike, so a log pipeline parses one shape.

No line carries a secret: the Basic user name (`%(u)s`; clients put tokens
there) is never logged, query values under secret-looking names are
replaced, and `HEALTH_TOKEN` itself (plain or URL-encoded) is cut from every
formatted line, whatever put it there.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from urllib.parse import quote, quote_plus

from gunicorn.glogging import Logger

from fitflix.settings import load_settings

# Probes arrive every few seconds from a platform; they are noise in an access log.
PROBE_PATHS = frozenset({"/health", "/health/live", "/health/ready"})

REDACTED = "[redacted]"
# A query parameter whose name says it holds a credential: its value is not logged.
SECRET_PARAMETER = re.compile(
    r"(?P<name>[^&=?\s]*(?:token|key|secret|pass|auth|sig|session|code|credential)[^&=\s]*)=(?P<value>[^&\s]*)",
    re.IGNORECASE,
)


def redact_query(text: str) -> str:
    """`a=1&access_token=abc` -> `a=1&access_token=[redacted]`."""
    return SECRET_PARAMETER.sub(lambda match: f"{match.group('name')}={REDACTED}", text)


class RedactingFormatter(logging.Formatter):
    """Formats with the handler's own formatter, then cuts every form of the token out of the line."""

    def __init__(self, inner: logging.Formatter | None, token: str | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        forms = {token, quote(token, safe=""), quote_plus(token)} if token else set()
        self.forms = sorted(forms, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        for form in self.forms:
            line = line.replace(form, REDACTED)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        document.update(getattr(record, "access", {}))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document)


def access_fields(atoms: dict) -> dict:
    """The access-log atoms gunicorn computes, under names a log pipeline understands."""

    def atom(key: str):
        value = atoms.get(key, "-")
        return None if value == "-" else value

    duration_us = atom("D")
    return {
        "remote": atom("h"),
        "method": atom("m"),
        "path": atom("U"),
        "query": atom("q") or None,
        "protocol": atom("H"),
        "status": int(atoms["s"]) if str(atoms.get("s", "")).isdigit() else None,
        "bytes": int(atoms["B"]) if str(atoms.get("B", "")).isdigit() else None,
        "durationMs": round(int(duration_us) / 1000, 3) if duration_us is not None else None,
        "referer": atom("f"),
        "userAgent": atom("a"),
    }


class FitflixLogger(Logger):
    def setup(self, cfg) -> None:
        super().setup(cfg)
        settings = load_settings()
        self.json_format = settings.log_format == "json"
        self.access_log_health = settings.access_log_health
        app_log = logging.getLogger("fitflix")
        app_log.setLevel(self.loglevel)
        app_log.propagate = False
        app_log.handlers = list(self.error_log.handlers)  # the app's lines go where gunicorn's go
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                inner = JsonFormatter() if self.json_format else handler.formatter
                if not isinstance(inner, RedactingFormatter):
                    handler.setFormatter(RedactingFormatter(inner, settings.health_token))

    def atoms(self, resp, req, environ, request_time) -> dict:
        """gunicorn's access-log atoms without the Basic user name, and with secret query values replaced."""
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["u"] = "-"
        for key in ("r", "q", "f"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_query(atoms[key])
        for key in ("{authorization}i", "{proxy-authorization}i", "{cookie}i", "{http_authorization}e"):
            if key in atoms:
                atoms[key] = REDACTED
        return atoms

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_health and environ.get("PATH_INFO") in PROBE_PATHS:
            return
        if not self.json_format:
            super().access(resp, req, environ, request_time)
            return
        if not self.access_log_enabled:
            return
        self.access_log.info("request", extra={"access": access_fields(self.atoms(resp, req, environ, request_time))})
