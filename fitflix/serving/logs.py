"""gunicorn's logger, with `LOG_FORMAT=json` and `ACCESS_LOG_HEALTH=false`.

Set as `logger_class` in gunicorn.conf.py. Text stays gunicorn's own format;
json gives one object per line for gunicorn's error and access logs and the
app's own logger alike, so a log pipeline parses one shape.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from gunicorn.glogging import Logger

from fitflix.settings import load_settings

# Probes arrive every few seconds from a platform; they are noise in an access log.
PROBE_PATHS = frozenset({"/health", "/health/live", "/health/ready"})


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
        if self.json_format:
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:
                    handler.setFormatter(JsonFormatter())

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_health and environ.get("PATH_INFO") in PROBE_PATHS:
            return
        if not self.json_format:
            super().access(resp, req, environ, request_time)
            return
        if not self.access_log_enabled:
            return
        self.access_log.info("request", extra={"access": access_fields(self.atoms(resp, req, environ, request_time))})
