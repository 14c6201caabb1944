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
import os
import re
import time
import traceback
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
    if "=" not in text:  # nearly every line: no parameter, nothing to look for
        return text
    return SECRET_PARAMETER.sub(lambda match: f"{match.group('name')}={REDACTED}", text)


# The atoms a format names: `%(h)s`, `%({user-agent}i)s`.
FORMAT_ATOM = re.compile(r"%\(([^)]*)\)")
# Atoms whose value is a header or a variable that can carry a credential.
SECRET_ATOMS = frozenset({"{authorization}i", "{proxy-authorization}i", "{cookie}i", "{http_authorization}e"})
# gunicorn's access_log_format default: FitflixLogger writes its line without looking up each atom.
GUNICORN_ACCESS_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
# What access_fields reads: the json format computes only these.
JSON_ATOMS = ("h", "m", "U", "q", "H", "s", "B", "D", "f", "a")


# Atoms read straight from the environ: (variable, what gunicorn gives when it is missing).
ENVIRON_ATOMS = {
    "h": ("REMOTE_ADDR", "-"),
    "m": ("REQUEST_METHOD", None),
    "U": ("PATH_INFO", None),
    "q": ("QUERY_STRING", None),
    "H": ("SERVER_PROTOCOL", None),
    "f": ("HTTP_REFERER", "-"),
    "a": ("HTTP_USER_AGENT", "-"),
}


def _quoted(value):
    """An atom as gunicorn's SafeAtoms gives text: `"` escaped."""
    return value.replace('"', '\\"') if isinstance(value, str) and '"' in value else value


def format_atoms(access_log_format: str) -> tuple[str, ...]:
    """The atom keys `access_log_format` uses, each once, spelled as in the format (`%` looks them up so)."""
    return tuple(dict.fromkeys(FORMAT_ATOM.findall(access_log_format)))


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
        growth = getattr(record, "growth", None)  # a recycled worker's report of what grew
        if growth is not None:
            document["growth"] = growth
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


class BufferedLineHandler(logging.StreamHandler):
    """A stream handler that keeps its lines and writes them together when flushed.

    The access log of a threaded worker: a write per line is a system call made
    by a request thread, which gives up the GIL to make it, and costs about as
    much as formatting the line. The worker's event loop writes what is
    pending on a turn at least `interval_s` after the last write: under light
    load that is at once (the loop turns after every answer), under load the
    lines of up to `interval_s` go out in one write, and the last ones of a
    burst on the loop's next turn (within its 1 s wait). `max_bytes` bounds
    what waits; logging.shutdown() (a recycled worker's way out) and the end
    of the worker's loop write the rest. Only a kill loses what is pending.
    """

    def __init__(self, stream, max_bytes: int = 64 * 1024, interval_s: float = 0.05) -> None:
        super().__init__(stream)
        self.max_bytes = max_bytes
        self.interval_s = interval_s
        self.pending: list[str] = []
        self.pending_bytes = 0
        self.written_at = 0.0  # time.monotonic() of the last write

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._keep(line)

    def append(self, line: str) -> None:
        """A whole line, already formatted (FitflixLogger.access's own path), kept as `emit` keeps one."""
        self.acquire()
        try:
            self._keep(line)
        finally:
            self.release()

    def _keep(self, line: str) -> None:
        self.pending.append(line)
        self.pending_bytes += len(line)
        if self.pending_bytes >= self.max_bytes:
            self._write()

    def flush(self) -> None:
        self.acquire()
        try:
            self._write()
        finally:
            self.release()

    def flush_due(self, now: float) -> None:
        """The event loop's turn: write what is pending if the last write was `interval_s` ago or more."""
        if self.pending and now - self.written_at >= self.interval_s:
            self.flush()

    def _write(self) -> None:
        if not self.pending:
            return
        self.written_at = time.monotonic()
        text = "".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # logging's own rule: a log that cannot be written never breaks a request
            self.handleError(logging.makeLogRecord({"msg": "access lines lost", "levelno": logging.ERROR}))


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

    _access_log_format = ""

    def buffer_access_lines(self) -> None:
        """Worker, after fork: the access log's stream handlers keep lines until `flush_access_lines`.

        A worker's settings no longer change (a SIGHUP makes new workers): the access format is read once.
        """
        self._access_log_format = self.cfg.access_log_format
        handlers = self.access_log.handlers
        for index, handler in enumerate(handlers):
            if type(handler) is logging.StreamHandler:  # "-": stdout; a file keeps its own (reopened on USR1)
                buffered = BufferedLineHandler(handler.stream)
                buffered._gunicorn = getattr(handler, "_gunicorn", False)  # gunicorn finds its own handler by it
                buffered.setFormatter(handler.formatter)
                buffered.setLevel(handler.level)
                for log_filter in handler.filters:
                    buffered.addFilter(log_filter)
                handlers[index] = buffered

    def flush_access_lines(self, now: float | None = None) -> None:
        """Write the access lines kept: all of them, or with `now` (the loop's turn) those whose time has come."""
        for handler in self.access_log.handlers:
            if isinstance(handler, BufferedLineHandler):
                if now is None:
                    handler.flush()
                else:
                    handler.flush_due(now)

    def access_lines_pending(self) -> bool:
        """Whether access lines wait to be written (the worker's loop then turns within a second)."""
        return any(getattr(handler, "pending", None) for handler in self.access_log.handlers)

    def atoms(self, resp, req, environ, request_time) -> dict:
        """gunicorn's access-log atoms without the Basic user name, and with secret query values replaced."""
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["u"] = "-"
        for key in ("r", "q", "f"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_query(atoms[key])
        for key in SECRET_ATOMS:
            if key in atoms:
                atoms[key] = REDACTED
        return atoms

    def used_atoms(self, keys: tuple[str, ...], resp, req, environ, request_time, quoted: bool = True) -> dict:
        """What `atoms` gives for `keys` alone; `quoted`: with `"` escaped, as gunicorn's SafeAtoms does for text.

        gunicorn builds some 20 atoms plus one per request header, response header
        and environ variable (about 60 on a plain GET), then copies them all to
        escape quotes: most of an access line's cost. A format uses a handful.
        """
        values = {}
        for key in keys:
            value = self._atom(key, resp, req, environ, request_time)
            values[key] = value.replace('"', '\\"') if quoted and isinstance(value, str) else value
        return values

    def _atom(self, key: str, resp, req, environ, request_time):
        """One atom as gunicorn's Logger.atoms computes it, redacted as `atoms` redacts it; "-" when unknown."""
        if key in ENVIRON_ATOMS:
            variable, default = ENVIRON_ATOMS[key]
            value = environ.get(variable, default)
            return redact_query(value) if key in ("q", "f") and isinstance(value, str) else value
        if key in ("l", "u"):
            return "-"  # the Basic user name is never logged
        if key == "t":
            return self.now()
        if key == "r":
            return redact_query(f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}")
        if key == "s":
            status = resp.status
            return status.split(None, 1)[0] if isinstance(status, str) else status
        if key == "b":
            sent = getattr(resp, "sent", None)
            return str(sent) if sent is not None and str(sent) else "-"
        if key == "B":
            return getattr(resp, "sent", None)
        if key in ("T", "D", "M", "L"):
            seconds, microseconds = request_time.seconds, request_time.microseconds
            return {
                "T": seconds,
                "D": seconds * 1000000 + microseconds,
                "M": seconds * 1000 + int(microseconds / 1000),
                "L": f"{seconds}.{microseconds:06d}",
            }[key]
        if key == "p":
            return f"<{os.getpid()}>"
        name, kind = key[1:-2].lower(), key[-1:]
        if not (key.startswith("{") and key[-2:-1] == "}" and kind in "ioe"):
            return "-"
        if kind == "e":
            pairs = environ.items()
        else:
            pairs = (req.headers if hasattr(req, "headers") else req) if kind == "i" else resp.headers
            pairs = pairs.items() if hasattr(pairs, "items") else pairs
        # the last one whose lower-cased name matches, as gunicorn's dict update keeps it
        found = [value for pair_name, value in pairs if pair_name.lower() == name]
        if not found:
            return "-"
        return REDACTED if f"{{{name}}}{kind}" in SECRET_ATOMS else found[-1]

    def now(self) -> str:
        """gunicorn's `[%d/%b/%Y:%H:%M:%S %z]`, formatted once a second rather than once a line."""
        second = int(time.time())
        if second != self._now_second:
            self._now_text, self._now_second = super().now(), second
        return self._now_text

    _now_second = -1
    _now_text = ""

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_health and environ.get("PATH_INFO") in PROBE_PATHS:
            return
        if not self.access_log_enabled:
            return
        try:
            if self.json_format:
                fields = access_fields(self.used_atoms(JSON_ATOMS, resp, req, environ, request_time, quoted=False))
                self._emit("request", (), {"access": fields})
            else:
                keys = self._format_keys()
                handlers = self._plain_buffered_handlers()
                if handlers and self._keys_for == GUNICORN_ACCESS_FORMAT:
                    self._append(handlers, self._default_line(resp, environ))
                    return
                atoms = self.used_atoms(keys, resp, req, environ, request_time)
                if handlers:
                    self._append(handlers, self._keys_for % atoms)
                else:
                    self._emit(self._keys_for, (atoms,))
        except Exception:
            self.error(traceback.format_exc())

    def _default_line(self, resp, environ) -> str:
        """gunicorn's default access line, as `used_atoms` and the format would make it, in one expression."""
        get = environ.get
        status = resp.status
        code = status.split(None, 1)[0] if isinstance(status, str) else status
        sent = getattr(resp, "sent", None)
        size = str(sent) if sent is not None and str(sent) else "-"
        request = redact_query(f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}")
        remote, referer, agent = get("REMOTE_ADDR", "-"), get("HTTP_REFERER", "-"), get("HTTP_USER_AGENT", "-")
        line = f'{remote} - - {self.now()} "{request}" {code} {size} "{redact_query(referer)}" "{agent}"'
        if line.count('"') == 6:  # no quote in any atom: nothing to escape
            return line
        return (
            f'{_quoted(remote)} - - {self.now()} "{_quoted(request)}" {_quoted(code)} {size} '
            f'"{_quoted(redact_query(referer))}" "{_quoted(agent)}"'
        )

    def _plain_buffered_handlers(self) -> tuple[BufferedLineHandler, ...]:
        """The access log's handlers when a line can skip logging's record: every one a BufferedLineHandler
        writing gunicorn's plain `%(message)s`, no filter anywhere; else none (the line goes through logging).

        A LogRecord and its formatting cost about as much as the rest of the line (measured: ~10 us of the
        ~40 us a request costs FitFlix's own worker); the line and its redaction are the same either way.
        """
        log = self.access_log
        handlers = tuple(log.handlers)
        if handlers == self._plain_for:
            return self._plain
        plain = bool(handlers) and not log.filters and log.isEnabledFor(logging.INFO)
        for handler in handlers:
            formatter = handler.formatter
            plain = (
                plain
                and type(handler) is BufferedLineHandler
                and not handler.filters
                and handler.level <= logging.INFO
                and isinstance(formatter, RedactingFormatter)
                and type(formatter.inner) is logging.Formatter
                and formatter.inner._fmt == "%(message)s"
            )
        self._plain_for, self._plain = handlers, (handlers if plain else ())
        return self._plain

    @staticmethod
    def _append(handlers: tuple[BufferedLineHandler, ...], message: str) -> None:
        for handler in handlers:
            line = message
            for form in handler.formatter.forms:
                line = line.replace(form, REDACTED)
            handler.append(line + handler.terminator)

    _plain_for: tuple = ()
    _plain: tuple = ()

    def _format_keys(self) -> tuple[str, ...]:
        access_log_format = self._access_log_format or self.cfg.access_log_format
        if self._keys_for != access_log_format:  # a SIGHUP can change the format
            self._keys, self._keys_for = format_atoms(access_log_format), access_log_format
        return self._keys

    _keys: tuple[str, ...] = ()
    _keys_for: str | None = None

    def _emit(self, message: str, args: tuple, extra: dict | None = None) -> None:
        """access_log.info(message, *args), without the caller lookup (a walk up the stack) logging does first."""
        log = self.access_log
        if log.isEnabledFor(logging.INFO):
            log.handle(log.makeRecord(log.name, logging.INFO, "(access)", 0, message, args, None, extra=extra))
