"""The access line: FitFlix's used-atoms path gives what gunicorn's atoms give, redacted, for any format."""

from __future__ import annotations

import datetime
import logging
import re

import pytest
from gunicorn.config import Config
from gunicorn.glogging import SafeAtoms

from fitflix.serving.logs import REDACTED, FitflixLogger, format_atoms, redact_query
from fitflix.settings import Settings

DEFAULT_FORMAT = Config().access_log_format
FORMATS = [
    DEFAULT_FORMAT,
    '%(h)s %(t)s "%(r)s" %(s)s %(B)s %(D)s %(M)s %(L)s %(T)s %(p)s %(m)s %(U)s %(q)s %(H)s',
    "%({User-Agent}i)s %({x-request-id}i)s %({Content-Type}o)s %({remote_addr}e)s %({missing}i)s %(nothing)s",
    "%({Authorization}i)s %({cookie}i)s %({proxy-authorization}i)s %({HTTP_AUTHORIZATION}e)s %(u)s %(l)s",
    '"%(f)s" "%(a)s" %(b)s',
]


class Request:
    """What gunicorn's atoms read of a request: headers as its parser keeps them (upper-case names)."""

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.headers = headers


class Response:
    def __init__(self, status: str, sent: int | None, headers: list[tuple[str, str]]) -> None:
        self.status, self.sent, self.headers = status, sent, headers


def request_case(path: str, query: str, headers: dict[str, str], sent: int | None = 15):
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"{path}?{query}" if query else path,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.7",
        **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()},
    }
    request = Request([(name.upper(), value) for name, value in headers.items()])
    response = Response("200 OK", sent, [("Content-Type", "application/json"), ("Content-Length", "15")])
    return response, request, environ, datetime.timedelta(seconds=1, microseconds=2345)


CASES = [
    request_case("/health", "", {"User-Agent": "wrk"}),
    request_case("/health", "", {}, sent=None),
    request_case(
        "/api/x",
        "a=1&access_token=abc&b=2",
        {
            "User-Agent": 'curl "quoted"',
            "Referer": "https://example.com/?session=s3cret",
            "Authorization": "Basic dXNlcjpwYXNz",
            "Cookie": "id=1",
            "X-Request-Id": "r-1",
        },
    ),
]


@pytest.fixture
def logger(monkeypatch, tmp_path):
    """A FitflixLogger set up as gunicorn.conf.py sets it up, writing nowhere."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = Config()
    cfg.set("accesslog", "-")  # streams, not files: gunicorn's loggers are global and outlive the test
    cfg.set("errorlog", "-")
    # setup() points the app's "fitflix" logger at gunicorn's handlers: put every logger back for the next test
    names = ("fitflix", "gunicorn.error", "gunicorn.access")
    saved = [(log, list(log.handlers), log.propagate, log.level) for log in map(logging.getLogger, names)]
    yield FitflixLogger(cfg)
    for log, handlers, propagate, level in saved:
        log.handlers[:], log.propagate = handlers, propagate
        log.setLevel(level)


@pytest.mark.parametrize("access_log_format", FORMATS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_used_atoms_format_as_gunicorns_full_atoms_do(logger, access_log_format, case):
    response, request, environ, request_time = CASES[case]
    keys = tuple(key for key in format_atoms(access_log_format) if key != "t")  # the time is tested below
    expected = SafeAtoms(logger.atoms(response, request, environ, request_time))
    used = logger.used_atoms(keys, response, request, environ, request_time)
    assert {key: used[key] for key in keys} == {key: expected[key] for key in keys}


def test_secrets_never_reach_the_used_atoms(logger):
    response, request, environ, request_time = CASES[2]
    used = logger.used_atoms(format_atoms(FORMATS[3]) + ("r", "q", "f"), response, request, environ, request_time)
    line = repr(used)
    for secret in ("abc", "s3cret", "dXNlcjpwYXNz", "id=1"):
        assert secret not in line
    assert used["{Authorization}i"] == REDACTED and used["u"] == "-"


def test_format_atoms_keeps_the_formats_spelling_once_each():
    assert format_atoms('%(h)s %({User-Agent}i)s %(h)s "%(r)s"') == ("h", "{User-Agent}i", "r")


@pytest.mark.parametrize("text", ["", "/health", "a=1&token=x", "password=1&x=2", "x=1"])
def test_redact_query_shortcut_changes_nothing(text):
    from fitflix.serving.logs import SECRET_PARAMETER

    assert redact_query(text) == SECRET_PARAMETER.sub(lambda match: f"{match.group('name')}={REDACTED}", text)


def test_the_time_atom_is_gunicorns_format_and_made_once_a_second(logger, monkeypatch):
    monkeypatch.setattr("fitflix.serving.logs.time.time", lambda: 1_800_000_000.25)
    first = logger.now()
    assert re.fullmatch(r"\[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\]", first)
    assert logger.now() is first
    monkeypatch.setattr("fitflix.serving.logs.time.time", lambda: 1_800_000_001.0)
    assert logger.now() is not first


@pytest.mark.parametrize("json_format", [False, True])
def test_one_access_record_per_request_with_the_line_gunicorn_would_write(logger, json_format):
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    keep = Keep()
    logger.access_log.addHandler(keep)
    logger.json_format = json_format
    try:
        response, request, environ, request_time = CASES[2]
        logger.access(response, request, environ, request_time)
    finally:
        logger.access_log.removeHandler(keep)
    (record,) = records
    if json_format:
        assert record.getMessage() == "request"
        assert record.access["query"] == f"a=1&access_token={REDACTED}&b=2"
        assert record.access["userAgent"] == 'curl "quoted"' and record.access["status"] == 200
    else:
        expected = DEFAULT_FORMAT % SafeAtoms(logger.atoms(response, request, environ, request_time))
        line = record.getMessage()
        # the time atom may have moved on by a second between the two
        assert re.sub(r"\[[^]]+\]", "[t]", line) == re.sub(r"\[[^]]+\]", "[t]", expected)
        assert "abc" not in line and "s3cret" not in line


class Stream:
    """A stream that records each write: one entry per system call a real stream would make."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def record(message: str) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": message, "levelno": logging.INFO, "levelname": "INFO"})


def test_buffered_lines_wait_for_the_flush_and_go_out_in_one_write():
    from fitflix.serving.logs import BufferedLineHandler

    stream = Stream()
    handler = BufferedLineHandler(stream)
    for number in range(3):
        handler.handle(record(f"line {number}"))
    assert stream.writes == []
    handler.flush()
    assert stream.writes == ["line 0\nline 1\nline 2\n"]
    handler.flush()
    assert len(stream.writes) == 1  # nothing pending: no write


def test_buffered_lines_are_bounded_and_written_at_shutdown():
    from fitflix.serving.logs import BufferedLineHandler

    stream = Stream()
    handler = BufferedLineHandler(stream, max_bytes=20)
    handler.handle(record("a" * 15))
    assert stream.writes == []
    handler.handle(record("b" * 15))  # past 20 bytes pending: written without waiting for the loop
    assert stream.writes == ["a" * 15 + "\n" + "b" * 15 + "\n"]
    handler.handle(record("last"))
    logging.shutdown([lambda: handler])  # what a recycled worker's way out runs
    assert stream.writes[-1] == "last\n"


def test_only_the_worker_buffers_and_only_a_stream_to_stdout(logger):
    from fitflix.serving.logs import BufferedLineHandler

    before = list(logger.access_log.handlers)
    logger.buffer_access_lines()
    try:
        after = logger.access_log.handlers
        assert len(after) == len(before) and all(isinstance(handler, BufferedLineHandler) for handler in after)
        assert [handler.formatter for handler in after] == [handler.formatter for handler in before]
    finally:
        logger.access_log.handlers[:] = before


def test_the_loop_writes_at_most_once_an_interval_and_at_once_after_a_quiet_spell():
    from fitflix.serving.logs import BufferedLineHandler

    stream = Stream()
    handler = BufferedLineHandler(stream, interval_s=0.05)
    handler.handle(record("first"))
    handler.flush_due(now=1_000.0)  # nothing written for a long time: this line goes at once
    assert stream.writes == ["first\n"]
    written_at = handler.written_at
    handler.handle(record("second"))
    handler.flush_due(now=written_at + 0.01)  # under load: kept with the next ones
    assert len(stream.writes) == 1
    handler.handle(record("third"))
    handler.flush_due(now=written_at + 0.06)
    assert stream.writes[-1] == "second\nthird\n"


@pytest.mark.parametrize("case", range(len(CASES)))
def test_the_default_lines_own_path_writes_what_the_format_and_the_used_atoms_write(logger, case):
    response, request, environ, request_time = CASES[case]
    atoms = logger.used_atoms(format_atoms(DEFAULT_FORMAT), response, request, environ, request_time)

    assert logger._default_line(response, environ) == DEFAULT_FORMAT % atoms


def test_the_buffered_access_line_skips_logging_and_still_redacts_the_token(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    token_settings = Settings.from_env({"HEALTH_TOKEN": "t0ken-t0ken-t0ken-t0ken"})
    monkeypatch.setattr("fitflix.serving.logs.load_settings", lambda: token_settings)
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("errorlog", "-")
    names = ("fitflix", "gunicorn.error", "gunicorn.access")
    saved = [(log, list(log.handlers), log.propagate, log.level) for log in map(logging.getLogger, names)]
    try:
        logger = FitflixLogger(cfg)
        logger.buffer_access_lines()
        response, request, environ, request_time = request_case("/p", "x=t0ken-t0ken-t0ken-t0ken", {})
        logger.access(response, request, environ, request_time)
        assert logger._plain_buffered_handlers()  # the record-free path was taken
        logger.flush_access_lines()
    finally:
        for log, handlers, propagate, level in saved:
            log.handlers[:], log.propagate = handlers, propagate
            log.setLevel(level)

    line = capsys.readouterr().out
    assert '"GET /p?x=[redacted] HTTP/1.1" 200 15' in line and "t0ken" not in line  # the token's own redaction
