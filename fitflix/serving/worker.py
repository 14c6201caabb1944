"""gunicorn's gthread worker, with request heads read on its event loop.

gunicorn 27's gthread hands each new connection to a request thread, which
reads the request head with blocking reads: a client that sends its head a
line at a time holds that thread for as long as it likes, and THREADS such
clients silence the worker, `/health` included. `HeadFirstWorker` reads heads
on the main thread's selector, the way gthread already waits on kept-alive
connections, and hands a thread only a complete head:

- a head not complete within HEAD_TIMEOUT_S of the connection (or, on a
  kept-alive connection, of its first byte) is answered 408 and closed; a
  new connection that sent nothing by then is closed without an answer;
- an idle connection never holds a thread; at the worker's connection cap
  (`worker_connections`) the longest idle one is closed to let a new one in;
- what was cut is counted in the shared state (`/metrics`) and logged at
  most once a minute;
- a connection closed after its answer lingers on the selector, not on the
  main thread: gthread's graceful close waits up to 2 s for the client's FIN
  right in its event loop, so a client that never closes stalled every
  other connection of the worker for 2 s.

TLS, the PROXY protocol, HTTP/2 prior knowledge and the uwsgi protocol keep
gthread's own path: their first bytes are not an HTTP/1 head. gunicorn's own
answers to bad requests (400, 414, 431, ...) go out as JSON with the
service's security headers.
"""

from __future__ import annotations

import errno
import html
import re
import selectors
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from functools import partial

from gunicorn import http, util
from gunicorn.http.message import MAX_REQUEST_LINE, Request
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker

from fitflix.errors import error_response
from fitflix.serving.state import RUNTIME
from fitflix.settings import Settings

READ_SIZE = 65536
CUT_LOG_INTERVAL_S = 60.0
# What gunicorn's util.close_graceful gives a closing client to send its FIN, and drains at most.
LINGER_S = 2.0
LINGER_MAX_DRAIN = 65536
# gunicorn's error page: "HTTP/1.1 <status> <reason>" ... "<h1><p>reason</p></h1> message </body>"
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n")
_ERROR_MESSAGE = re.compile(rb"</h1>(.*?)</body>", re.DOTALL)
_BARE_LF = re.compile(rb"(?<!\r)\n")
# What one connection's head may take while it is read here: every open connection
# can be mid-head at once, so 1,000 of them hold 32 MiB at most (nginx allows 4 x 8 KiB).
HEAD_BUFFER_MAX = 32 * 1024


def parser_can_answer(
    data: bytes | bytearray,
    line_limit: int | None,
    max_head: int,
    refuses_line: Callable[[bytes], bool] | None = None,
) -> bool:
    """Whether gunicorn's parser can answer from `data` alone, so no request thread waits on the client.

    A whole head (CRLF CRLF), or one the parser refuses from what is here: a
    bare LF anywhere (gunicorn rejects it rather than wait), a first line
    already past `line_limit` (414), a whole request line that `refuses_line`
    (gunicorn's own request-line rules: a 400 such as `HTTP/9.9`, or a PROXY
    line with the protocol off), more than `max_head` bytes (431). Like the
    parser, one empty line before the request line is skipped (RFC 9112
    section 2.2), so a long line after it is still a 414.
    """
    if b"\r\n\r\n" in data or _BARE_LF.search(data):
        return True
    start = 2 if data[:2] == b"\r\n" else 0
    end = data.find(b"\r\n", start)
    if end < 0:
        if line_limit is not None and len(data) - start - 2 > line_limit:
            return True
    elif (line_limit is not None and end - start > line_limit) or (
        refuses_line is not None and refuses_line(bytes(data[start:end]))
    ):
        return True
    return len(data) > max_head


class RequestLineCheck:
    """gunicorn's own request-line rules (`http.message.Request.parse_request_line`), on a line alone.

    The parser applies them as soon as the first line has come, before it waits
    for the headers: so must the head reader, or an invalid line in a head that
    never ends waits for HEAD_TIMEOUT_S where gunicorn answers 400 at once.
    """

    parse_request_line = Request.parse_request_line

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def refuses(self, line: bytes) -> bool:
        try:
            self.parse_request_line(line)
        except Exception:  # InvalidRequestLine, InvalidHTTPVersion, ...: the parser raises the same, and answers
            return True
        return False


def line_limit(cfg) -> int | None:
    """The request line limit gunicorn's parser applies (gunicorn/http/message.py); None: unlimited."""
    if cfg.limit_request_line == 0:
        return None
    return cfg.limit_request_line if 0 < cfg.limit_request_line < MAX_REQUEST_LINE else MAX_REQUEST_LINE


def max_head_bytes(cfg) -> int:
    """The longest head gunicorn's parser can accept under `cfg` (gunicorn/http/message.py)."""
    line = line_limit(cfg) or 1024 * 1024  # unlimited: the 1 MiB its fast parser uses
    fields = cfg.limit_request_fields if 0 < cfg.limit_request_fields <= 32768 else 32768
    field_size = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else 8190
    return line + 2 + fields * (field_size + 2) + 4


def json_from_gunicorn_error(page: bytes) -> bytes | None:
    """gunicorn's HTML error answer (util.write_error) as `error_response`; None if it is not one."""
    status = _STATUS_LINE.match(page)
    if status is None:
        return None
    reason = status.group(2).decode("latin-1")
    message = _ERROR_MESSAGE.search(page)
    text = html.unescape(message.group(1).decode("latin-1")).strip() if message else ""
    return error_response(int(status.group(1)), reason, text or reason)


class _CapturedSocket:
    """Takes what gunicorn's handle_error writes, so it can be rewritten before it is sent."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # util.write_nonblock then writes at once, without touching blocking mode

    def sendall(self, data: bytes) -> None:
        self.data += data


class _Conn(TConn):
    """gthread's connection, whose graceful close lingers on the worker's selector."""

    def __init__(self, worker: HeadFirstWorker, *args) -> None:
        super().__init__(*args)
        self.worker = worker
        self.head: bytearray | None = None  # the head being read on the selector
        self.head_deadline = 0.0

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.worker.linger(self.sock)
        else:
            util.close(self.sock)


class HeadFirstWorker(ThreadWorker):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        plan = RUNTIME.plan
        # Without the FitFlix plan (a gunicorn.conf.py that made none), HEAD_TIMEOUT_S's default.
        self.head_timeout_s = getattr(plan, "head_timeout_s", Settings.head_timeout_s)
        cfg = self.cfg
        # Settled at start (gunicorn's settings are properties, looked up on each access): what no peer changes.
        self.plain_http = not (
            cfg.is_ssl
            or getattr(cfg, "protocol", "http") != "http"
            or getattr(cfg, "proxy_protocol", "off") not in ("off", False, None)
        )
        self.line_limit = line_limit(self.cfg)
        self.max_head = max_head_bytes(self.cfg)
        self.refuses_line = RequestLineCheck(self.cfg).refuses
        # Connections whose head is being read, by deadline (all get the same timeout).
        self.head_conns: deque[_Conn] = deque()
        self.cuts: Counter[str] = Counter()  # not yet logged
        self.cuts_unshared: Counter[str] = Counter()  # not yet in the shared counts
        self.cuts_logged_at = -CUT_LOG_INTERVAL_S  # the first cut is logged at once
        self.backlog_taken = False  # the listen backlog was accepted for the stop (set_accept_enabled)
        # Sockets closing: (deadline, socket, bytes drained), by deadline.
        self.lingering: deque[list] = deque()
        self._flush_access_lines = getattr(self.log, "flush_access_lines", None)

    def reads_heads(self, client) -> bool:
        """Whether this connection's first bytes are a plain HTTP/1 head, read here."""
        return self.plain_http and not negotiation.prior_knowledge_allowed(self.cfg, client)

    def accept(self, listener) -> bool:
        """Take one connection from the listen backlog; False when none is waiting."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return error.errno == errno.ECONNABORTED  # one gone before its accept: others may wait
        self.nr_conns += 1
        conn = _Conn(self, self.cfg, client_sock, client_addr, listener.getsockname())
        if not self.reads_heads(client_addr):
            self.enqueue_req(conn)
            return True
        conn.head = bytearray()
        self._read_head(conn)
        if self.nr_conns >= self.worker_connections and self.alive:  # a stopping worker takes its whole backlog
            self._cut_longest_idle(newest=conn)
        return True

    def set_accept_enabled(self, enabled: bool) -> None:
        """When the service stops: take what waits in the listen backlog, then close this worker's listeners.

        gthread only stops watching its listeners, and closes them at exit; the
        kernel resets every connection still queued when the last copy of a
        listening socket closes. The master closes its copies before it sends
        SIGTERM; each worker accepts what is queued and closes its own at once,
        so the queue is empty when the socket goes, and a later connection is
        refused at once instead of queued and reset (after the drain, no
        balancer that saw /health/ready's 503 sends one). A worker that leaves
        on its own (recycled, SIGHUP) leaves the backlog to the others.
        """
        # Once: gthread calls this on each turn of its loop while at the connection cap, and on the way out.
        stopping = not enabled and not self.alive and not self.backlog_taken and self._service_stopping()
        if stopping:
            self.backlog_taken = True
            for listener in self.sockets:
                for _ in range(max(self.cfg.backlog, 1)):  # the queue holds at most `backlog` (listen(2))
                    if not self.accept(listener):
                        break
        super().set_accept_enabled(enabled)
        if stopping:
            for listener in self.sockets:
                listener.close()

    @staticmethod
    def _service_stopping() -> bool:
        return RUNTIME.shared is not None and RUNTIME.shared.draining()

    def enqueue_req(self, conn) -> None:
        """To a request thread, unless gthread sends one whose buffered next head is not whole yet.

        gthread's finish_request hands a kept-alive connection straight back to
        a thread when the last read took in bytes of the next request: a client
        that pipelines half a head would then hold that thread. Those bytes
        become the start of a head read here.
        """
        if conn.head is None and conn.parser is not None and self.reads_heads(conn.client):
            buffered = conn.parser.unreader.buf.getvalue()
            if buffered and not parser_can_answer(buffered, self.line_limit, self.max_head, self.refuses_line):
                conn.parser.unreader.take_buffered()
                conn.head = bytearray(buffered)
                conn.sock.setblocking(False)
                self._read_head(conn)
                return
        super().enqueue_req(conn)

    def on_client_socket_readable(self, conn, client) -> None:
        """A kept-alive connection has bytes: read its next head here too.

        Read at once, before the selector sees it again: the next head nearly
        always comes whole in this one read and goes straight to a thread,
        with no selector registration made and undone for it.
        """
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        if not self.reads_heads(conn.client):
            self.enqueue_req(conn)
            return
        conn.head = bytearray()
        conn.head_deadline = time.monotonic() + self.head_timeout_s
        self._take_head_bytes(conn, waiting=False)

    def _read_head(self, conn: _Conn) -> None:
        conn.head_deadline = time.monotonic() + self.head_timeout_s
        self._wait_for_head(conn)

    def _wait_for_head(self, conn: _Conn) -> None:
        """The rest of this head comes through the selector, by `conn.head_deadline`."""
        self.head_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_head_readable, conn))

    def on_head_readable(self, conn: _Conn, _client) -> None:
        if conn.head is None:
            return  # handed over or closed by an earlier event of the same select()
        self._take_head_bytes(conn, waiting=True)

    def _take_head_bytes(self, conn: _Conn, waiting: bool) -> None:
        """Read what the client sent and decide; `waiting`: the connection is on the selector for its head."""
        try:
            data = conn.sock.recv(max(1, HEAD_BUFFER_MAX + 1 - len(conn.head)))
        except (BlockingIOError, InterruptedError):
            if not waiting:
                self._wait_for_head(conn)
            return
        except OSError:
            data = b""
        if not data:  # the client left
            self._close(conn, waiting)
            return
        conn.head += data
        if parser_can_answer(conn.head, self.line_limit, self.max_head, self.refuses_line):
            if waiting:
                self._drop_head(conn)
            self._hand_over(conn)
        elif len(conn.head) > HEAD_BUFFER_MAX:
            peer = conn.client[0] if conn.client else ""  # a unix socket's peer has no address
            self.log.warning("Invalid request from ip=%s: request head over %s bytes", peer, HEAD_BUFFER_MAX)
            status = (414, "URI Too Long") if b"\r\n" not in conn.head else (431, "Request Header Fields Too Large")
            self._answer(conn, error_response(*status, f"The request head is over {HEAD_BUFFER_MAX} bytes."))
            self._close(conn, waiting)
        elif not waiting:
            self._wait_for_head(conn)

    def _drop_head(self, conn: _Conn) -> None:
        self.head_conns.remove(conn)
        self.poller.unregister(conn.sock)

    def _hand_over(self, conn: _Conn) -> None:
        """A complete head goes to a request thread, already in the parser's buffer."""
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(conn.head))
        conn.head = None
        conn.data_ready = True  # gthread's handle() must not wait for data again
        ThreadWorker.enqueue_req(self, conn)  # whole, just checked: not through enqueue_req's second look

    def _close(self, conn: _Conn, waiting: bool = False) -> None:
        """Close `conn`; `waiting`: it is still on the selector for its head, and leaves it first."""
        if waiting:
            self._drop_head(conn)
        conn.head = None
        self.nr_conns -= 1
        conn.close()

    def linger(self, sock: socket.socket) -> None:
        """RFC 9112 section 9.6 close, as util.close_graceful does it, without blocking the loop.

        Send FIN, then read (and drop) what the client still sends until it
        closes, LINGER_MAX_DRAIN bytes came, or LINGER_S passed: closing with
        unread bytes would reset the connection and could cut the answer short.
        """
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            util.close(sock)
            return
        entry = [time.monotonic() + LINGER_S, sock, 0]
        self.lingering.append(entry)
        self.poller.register(sock, selectors.EVENT_READ, partial(self._drain, entry))

    def _drain(self, entry: list, _sock) -> None:
        sock = entry[1]
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        entry[2] += len(data)
        if not data or entry[2] >= LINGER_MAX_DRAIN:
            self.lingering.remove(entry)
            self._end_linger(sock)

    def _end_linger(self, sock: socket.socket) -> None:
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        util.close(sock)

    def _cut(self, reason: str) -> None:
        self.cuts[reason] += 1
        self.cuts_unshared[reason] += 1

    def murder_pending(self) -> None:
        """gthread's sweep (run on every turn of its loop), plus heads past their deadline; the access lines out."""
        if self._flush_access_lines is not None:
            self._flush_access_lines(time.monotonic())
        super().murder_pending()
        now = time.monotonic()
        while self.lingering and self.lingering[0][0] <= now:
            self._end_linger(self.lingering.popleft()[1])
        while self.head_conns and self.head_conns[0].head_deadline <= now:
            conn = self.head_conns.popleft()
            self.poller.unregister(conn.sock)
            if conn.head:
                self._answer(conn, error_response(408, "Request Timeout", self._timeout_message()))
                self._cut("slow_head")
            else:
                self._cut("silent")
            self._close(conn)
        self._report_cuts(now)

    def _timeout_message(self) -> str:
        return f"The request head was not complete within {self.head_timeout_s} s (HEAD_TIMEOUT_S)."

    def _answer(self, conn: _Conn, response: bytes) -> None:
        """Best effort, never blocking: a slow client gets its 408 if its socket takes it now."""
        try:
            for _ in range(16):  # unread bytes at close() would reset the connection, 408 and all
                if not conn.sock.recv(READ_SIZE):
                    break
        except OSError:
            pass
        try:
            conn.sock.send(response)
        except OSError:
            pass

    def _cut_longest_idle(self, newest: _Conn) -> None:
        """At the connection cap: make room for the next one by closing the connection idle longest.

        A kept-alive one, or one silent since it came; never `newest`, just accepted, which has had no time to speak.
        """
        kept = self.keepalived_conns[0] if self.keepalived_conns else None
        silent = next((conn for conn in self.head_conns if not conn.head and conn is not newest), None)
        # A kept-alive connection went idle `keepalive` before its timeout; a silent one when it came.
        kept_since = kept.timeout - self.cfg.keepalive if kept is not None else None
        silent_since = silent.head_deadline - self.head_timeout_s if silent is not None else None
        if kept is not None and (silent is None or kept_since <= silent_since):
            self.keepalived_conns.remove(kept)
            self.poller.unregister(kept.sock)
            self._close(kept)
        elif silent is not None:
            self._drop_head(silent)
            self._close(silent)
        else:
            return  # every connection is busy or sending a head: gthread stops accepting until one ends
        self._cut("idle_at_cap")

    def _cap_keepalive(self, deadline: float) -> None:
        """Stopping: kept-alive and silent connections close by `deadline`; a head on its way keeps its time."""
        super()._cap_keepalive(deadline)
        for conn in self.head_conns:
            if not conn.head:
                conn.head_deadline = min(conn.head_deadline, deadline)
        self.head_conns = deque(sorted(self.head_conns, key=lambda conn: conn.head_deadline))

    def _report_cuts(self, now: float, force: bool = False) -> None:
        """Counts into the shared state at once (for /metrics); a log line at most once per interval."""
        if self.cuts_unshared and RUNTIME.shared is not None:
            RUNTIME.shared.count_cuts(dict(self.cuts_unshared))
        self.cuts_unshared.clear()
        if not self.cuts or (now < self.cuts_logged_at + CUT_LOG_INTERVAL_S and not force):
            return
        self.log.warning(
            "Closed %s connection(s) before a whole request head came: %s slow head(s) answered 408 after %s s "
            "(HEAD_TIMEOUT_S), %s silent since they connected, %s idle longest at the %s-connection cap. "
            "The next such line comes %.0f s from now at the soonest, with what is cut meanwhile",
            sum(self.cuts.values()),
            self.cuts["slow_head"],
            self.head_timeout_s,
            self.cuts["silent"],
            self.cuts["idle_at_cap"],
            self.worker_connections,
            CUT_LOG_INTERVAL_S,
        )
        self.cuts.clear()
        self.cuts_logged_at = now

    def run(self) -> None:
        buffered = hasattr(self.log, "buffer_access_lines")  # FitFlix's logger (gunicorn.conf.py's logger_class)
        if buffered:
            self.log.buffer_access_lines()  # this loop writes the access lines, once a turn
        try:
            super().run()
        finally:
            self._report_cuts(time.monotonic(), force=True)
            if buffered:
                self.log.flush_access_lines()

    def handle_error(self, req, client, addr, exc) -> None:
        """gunicorn's own decision (status, log line, access log), sent as JSON with the security headers."""
        captured = _CapturedSocket()
        super().handle_error(req, captured, addr, exc)
        response = json_from_gunicorn_error(captured.data)
        if response is None:
            return
        try:
            util.write_nonblock(client, response)
        except Exception:
            self.log.debug("Failed to send error message.")
