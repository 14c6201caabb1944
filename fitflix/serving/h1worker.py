"""FitFlix's own gunicorn worker: an epoll loop reads requests, a few threads run the app.

gunicorn's gthread costs a request 5-10 times what the app itself costs
(BENCHMARKS.md, part 14): a thread-pool future, a wake-up pipe, five
blocking-mode switches, two sends, a Python HTTP parser, 18 Config lookups.
This worker keeps gunicorn's `base.Worker` (the arbiter, its signals, the
heartbeat, `max_requests`, every hook) and does the rest itself:

- One loop thread owns every connection that is reading a head or idle. It
  reads with one `recv`, parses with `httptools` (`fitflix.serving.h1`: only
  the new bytes are scanned, so a head trickled byte by byte costs what its
  bytes cost), and hands a connection to an app thread only once its request
  is ready: its head whole and its body whole, or 64 KiB of it, or the client
  waiting for `100 Continue`. A head, or a body that never comes, holds no
  app thread: the loop answers 408 at HEAD_TIMEOUT_S.
- An app thread serves the connection's requests one at a time (pipelined
  ones in order: nothing past the one being answered is read, so a client
  that never reads its answers holds one answer's worth), sends each small
  answer with one `send`, and gives the connection back to the loop with one
  `epoll_ctl` (EPOLLONESHOT). Writes, and reads of a large body, wait at
  most HEAD_TIMEOUT_S for the client to move; then the connection is closed,
  the app thread is free, and the worker is not recycled.
- Sockets stay non-blocking for life; the environ is a prepared dict copied
  and filled; `Date` is formatted once a second; gunicorn's settings are
  read once at start.
- At the connection cap (`worker_connections`) the connection idle or mid-head
  longest gives way to the new one, so a slowloris cannot fill the worker.

What it does not speak (TLS, the PROXY protocol, HTTP/2, the uwsgi protocol,
a host without epoll) is served by `fitflix.serving.worker.HeadFirstWorker`:
`fitflix.serving.sizing.worker_class_for` chooses, and the plan says which.
"""

from __future__ import annotations

import _thread
import errno
import os
import re
import select
import socket
import sys
import threading
import time
from collections import Counter, deque
from datetime import timedelta
from email.utils import formatdate
from queue import SimpleQueue

from gunicorn import util
from gunicorn.http.wsgi import SERVER, FileWrapper
from gunicorn.workers import base

from fitflix.errors import error_response
from fitflix.serving.h1 import TOKEN_RE, BadRequest, HeadRules, Request, RequestReader
from fitflix.serving.sizing import idle_wait_s
from fitflix.serving.state import RUNTIME
from fitflix.settings import Settings, wsgi_script_name

READ_SIZE = 65536
# The body the loop reads before an app thread takes the request: a form or a JSON document comes whole,
# so a client that stalls mid-body holds no thread; a larger upload streams to the app as it reads.
BODY_BUFFER_BYTES = 65536
# What an app thread drains of a body the app left unread, so the connection can serve its next request.
DRAIN_MAX_BYTES = 65536
CUT_LOG_INTERVAL_S = 60.0
LOOP_TICK_S = 1.0
LINGER_S = 2.0
# How long a stopping worker keeps its kept-alive connections (gunicorn's gthread: STOP_KEEPALIVE_LINGER).
STOP_KEEPALIVE_LINGER_S = 2.0

EPOLLIN = select.EPOLLIN
ONESHOT = select.EPOLLIN | select.EPOLLONESHOT
# Several workers wait on one listener: the kernel wakes one of them per connection, not all.
EXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)

# A connection's state: whose it is.
HEAD = 0  # the loop's, reading a request (head, or the first 64 KiB of body)
IDLE = 1  # the loop's, kept alive between requests
BUSY = 2  # an app thread's
CLOSED = 3


class ClientGone(Exception):
    """The client closed, reset, or did not move within the deadline."""


class Connection:
    __slots__ = ("sock", "fd", "peer", "environ", "reader", "state", "gen", "deadline", "since", "server", "turn")

    def __init__(self, sock: socket.socket, peer, environ: dict, reader: RequestReader, server) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.environ = environ
        self.reader = reader
        self.state = HEAD
        self.gen = 0
        self.deadline = 0.0
        self.since = 0.0
        self.server = server
        self.turn = 0  # the loop's turn it was accepted in


def wait_for(sock: socket.socket, events: int, deadline: float) -> None:
    """Wait until `sock` is ready for `events`, or raise ClientGone at `deadline`."""
    poller = select.poll()
    poller.register(sock, events | select.POLLERR | select.POLLHUP)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ClientGone("deadline")
        if poller.poll(left * 1000):
            return


def send_all(sock: socket.socket, data, timeout_s: float) -> None:
    """Send all of `data` on a non-blocking socket; the client must take some within `timeout_s` each time."""
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError as error:
        raise ClientGone(str(error)) from None
    if sent == len(data):
        return
    view = memoryview(data)[sent:]
    while view:
        wait_for(sock, select.POLLOUT, time.monotonic() + timeout_s)
        try:
            sent = sock.send(view)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as error:
            raise ClientGone(str(error)) from None
        view = view[sent:]


class Input:
    """wsgi.input: the body as the app reads it; what is not here yet is read from the socket, with a deadline."""

    __slots__ = ("conn", "request", "timeout_s", "continue_sent", "buffer")

    def __init__(self, conn: Connection, request: Request, timeout_s: float) -> None:
        self.conn = conn
        self.request = request
        self.timeout_s = timeout_s
        self.continue_sent = not request.expect_continue
        self.buffer = bytearray()

    def _more(self) -> bool:
        """Bring more body into the request's chunks; False at its end."""
        request = self.request
        if request.chunks:
            return True
        if request.complete:
            return False
        conn = self.conn
        if not self.continue_sent:
            self.continue_sent = True
            send_all(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n", self.timeout_s)
        while not request.chunks and not request.complete:
            try:
                data = conn.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                wait_for(conn.sock, select.POLLIN, time.monotonic() + self.timeout_s)
                continue
            except OSError as error:
                raise ClientGone(str(error)) from None
            if not data:
                raise ClientGone("closed mid-body")
            conn.reader.feed(data)  # may also queue the next pipelined request: it waits its turn
        return bool(request.chunks)

    def _fill(self) -> None:
        """Move what has come of the body into the buffer."""
        request, buffer = self.request, self.buffer
        while request.chunks:
            chunk = request.chunks.popleft()
            request.buffered -= len(chunk)
            buffer += chunk

    def read(self, size: int | None = -1) -> bytes:
        buffer = self.buffer
        if size is None or size < 0:
            while self._more():
                self._fill()
            data = bytes(buffer)
            buffer.clear()
            return data
        while len(buffer) < size and self._more():
            self._fill()
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                end += 1
                break
            if 0 <= limit <= len(self.buffer) or not self._more():
                end = len(self.buffer)
                break
            self._fill()
        if 0 <= limit < end:
            end = limit
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    def readlines(self, hint: int | None = None) -> list[bytes]:
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def discard(self, max_bytes: int) -> bool:
        """Drop what the app left unread, up to `max_bytes`; True if the body ended."""
        self.buffer.clear()
        dropped = 0
        request = self.request
        while dropped <= max_bytes:
            while request.chunks:
                dropped += len(request.chunks.popleft())
            if request.complete:
                request.buffered = 0
                return True
            if not self._more():
                return request.complete
        return False


class Response:
    """start_response and the writes of one answer; `status`, `headers` and `sent` for the access line."""

    __slots__ = (
        "worker",
        "conn",
        "request",
        "status",
        "status_code",
        "headers",
        "headers_sent",
        "sent",
        "length",
        "chunked",
        "must_close",
        "omits_body",
        "upgrade",
        "block",
    )

    def __init__(self, worker: FitflixWorker, conn: Connection, request: Request, must_close: bool) -> None:
        self.worker = worker
        self.conn = conn
        self.request = request
        self.status: str | None = None
        self.status_code = 0
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.sent = 0
        self.length: int | None = None
        self.chunked = False
        self.must_close = must_close
        self.omits_body = False
        self.upgrade = False
        self.block = ""

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.status and self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("Response headers already set!")
        if type(status) is not str:
            raise TypeError(f"{status!r} is not a string")
        code = status[:3]
        if not (code.isdigit() and code.isascii() and status[3:4] in (" ", "") and status.isprintable()):
            raise ValueError(f"Invalid status {status!r}")
        self.status = status
        self.status_code = code_int = int(code)
        lines = []
        length = None
        names = _NAMES_CHECKED
        known = _LINES
        for header in headers:
            line = known.get(header) if type(header) is tuple else None
            if line is not None:  # a header sent before (the security headers, a content type): one lookup
                lines.append(line)
                continue
            name, value = header
            lower = names.get(name) if type(name) is str else None
            if lower is None:
                lower = _checked_name(name)
            if type(value) is not str:
                raise TypeError(f"{value!r}: the value of response header {name!r} is not a string")
            if lower in _FRAMING:
                if lower == "content-length":
                    length = int(value.strip(" \t"))
                elif lower == "connection":
                    self.upgrade = self.upgrade or value.strip(" \t").lower() == "upgrade"
                elif lower == "upgrade" and value.strip(" \t").lower() == "websocket":
                    lines.append(f"{name}: {value}\r\n")
                continue  # the other hop-by-hop fields are the server's own
            line = f"{name}: {value.strip(' ')}\r\n"
            lines.append(line)
            if len(known) < _LINES_MAX and type(header) is tuple and len(line) < 256:
                known[header] = line  # checked below with the rest: a bad one raises before the next answer
        block = "".join(lines)
        # One pass over the whole block, in C, for what would split the answer: a CR or LF inside a value (each
        # line has exactly one of each) or any other control character, as gunicorn refuses them.
        # What would split the answer, in C passes over the whole block: one LF per line and no more (an injected
        # CRLF adds one), and once the line ends are out, nothing unprintable but a tab (a lone CR or LF, NUL, ...).
        flat = block.replace("\r\n", "")
        if block.count("\n") != len(lines) or (
            not flat.isprintable() and ("\r" in flat or "\n" in flat or _CONTROL.search(flat))
        ):
            for header in headers:  # none of them may stay known as good
                if type(header) is tuple:
                    known.pop(header, None)
            raise ValueError("Invalid response header: a control character in a value")
        request = self.request
        self.omits_body = omits = request.method == "HEAD" or code_int in (204, 304) or 100 <= code_int < 200
        if omits and (code_int == 204 or 100 <= code_int < 200):
            length = None
        if length is not None:
            block += f"Content-Length: {length}\r\n"
        self.headers = headers
        self.block = block
        self.length = length
        self.chunked = length is None and request.version > (1, 0) and not omits
        return self.write

    def should_close(self) -> bool:
        if self.must_close or self.request.should_close():
            return True
        if self.length is not None or self.chunked or self.omits_body:
            return False
        return True

    def head(self) -> bytes:
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        version = "HTTP/1.1" if self.request.version == (1, 1) else "HTTP/1.0"
        chunked = "Transfer-Encoding: chunked\r\n" if self.chunked else ""
        date = self.worker.date_lines()
        return f"{version} {self.status}\r\n{date}Connection: {connection}\r\n{chunked}{self.block}\r\n".encode(
            "latin-1"
        )

    def write(self, data: bytes) -> None:
        """The body, a piece at a time; the head goes with the first piece, in one send."""
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"{data!r} is not a byte string")
            data = bytes(data)
        if self.omits_body:
            data = b""
        elif self.length is not None:
            room = self.length - self.sent
            if room <= 0:
                data = b""
            elif len(data) > room:
                data = data[:room]
        if self.headers_sent and not data:
            return
        self.sent += len(data)
        if self.chunked and data:
            data = b"%X\r\n%b\r\n" % (len(data), data)
        if not self.headers_sent:
            self.headers_sent = True
            data = self.head() + data
        send_all(self.conn.sock, data, self.worker.io_timeout_s)

    def finish(self) -> None:
        if not self.headers_sent:
            self.write(b"")
        if self.chunked:
            send_all(self.conn.sock, b"0\r\n\r\n", self.worker.io_timeout_s)


# What the server frames itself: a length (checked), and the hop-by-hop fields (RFC 9110 section 7.6.1), of which
# only a WebSocket `Upgrade` goes out as the app gave it, as gunicorn sends them.
_FRAMING = frozenset(
    (
        "content-length",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    )
)
# Control characters other than HTAB, CR and LF (a CR or LF left once the line ends are taken out is refused too).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NAMES_CHECKED: dict[str, str] = {}
# Whole header lines already sent, by the app's (name, value) tuple: bounded, and only what passed the checks.
_LINES: dict[tuple, str] = {}
_LINES_MAX = 1024


def _checked_name(name) -> str:
    """`name` lower-cased, once it is known to be a token (a name seen before is not checked again)."""
    if type(name) is not str:
        raise TypeError(f"{name!r}: a response header name is a string")
    lower = _NAMES_CHECKED.get(name)
    if lower is None:
        if not TOKEN_RE.fullmatch(name):
            raise ValueError(f"Invalid response header name {name!r}")
        lower = name.lower()
        if len(_NAMES_CHECKED) < 512:
            _NAMES_CHECKED[name] = lower
    return lower


class _Wake:
    """What the recycler calls `method_queue.defer` on (gthread's name): wake the loop now."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def defer(self, _callback=None, *_args) -> None:
        try:
            os.write(self.fd, b"!")
        except OSError:
            pass


def _nothing_pending() -> bool:
    return False


class FitflixWorker(base.Worker):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        plan = RUNTIME.plan
        # Without the FitFlix plan (a gunicorn.conf.py that made none), HEAD_TIMEOUT_S's default.
        self.head_timeout_s = float(getattr(plan, "head_timeout_s", Settings.head_timeout_s))
        # A write the client does not take, or a body it stopped sending, waits this long at most: a slow
        # client's time (HEAD_TIMEOUT_S), and under half the request timeout, which would replace the worker.
        self.io_timeout_s = min(self.head_timeout_s, float(getattr(plan, "timeout_s", cfg.timeout)) / 2)
        self.request_threads = max(1, cfg.threads)
        self.worker_connections = max(1, cfg.worker_connections)
        self.keepalive_s = float(cfg.keepalive)
        self.rules = HeadRules.from_cfg(cfg)
        self.conns: dict[int, Connection] = {}
        self.head_timers: deque[tuple[float, Connection, int]] = deque()
        self.idle_timers: deque[tuple[float, Connection, int]] = deque()
        self.jobs: SimpleQueue = SimpleQueue()
        self.threads: list[int] = []  # the request threads' idents
        self.busy = 0
        self._busy_lock = threading.Lock()
        self.cuts: Counter[str] = Counter()
        self.lines_pending = _nothing_pending  # the logger's, once the loop runs
        self.idle_tick_s = LOOP_TICK_S  # the settings', once the loop runs
        self.cuts_unshared: Counter[str] = Counter()
        self.cuts_logged_at = -CUT_LOG_INTERVAL_S
        self._date = (0, "")
        self.lingering: deque[tuple[float, socket.socket]] = deque()
        self.accepting = True
        self.listeners_closed = threading.Event()  # set once _stop closed them: no connection comes after
        self.epoll: select.epoll | None = None
        self.turn = 0  # the loop's turns: a connection accepted in this one is never cut to make room

    # gunicorn's Worker protocol.

    @property
    def nr_conns(self) -> int:
        """Open connections (the recycler's timeout watch counts them, as it counts gthread's)."""
        return len(self.conns)

    def init_process(self) -> None:
        # Every app thread starts before post_worker_init (base.init_process), where the backstop
        # measures the data segment: their stacks are inside the limit, not room left beside it.
        # _thread's own start, not threading.Thread's, which waits for each thread to run (an Event, a
        # switch there and back): 8 threads cost 1.3 ms of CPU in a fork's child, against 1.9. Nothing joins
        # them (the worker ends each with a None), and they go unnamed: naming one makes threading's
        # stand-in for it (a _DummyThread), which costs what the start saved.
        for _ in range(self.request_threads):
            self.start_request_thread()
        super().init_process()

    def start_request_thread(self) -> None:
        """At boot, and one more when every request thread is stuck past the timeout (the recycler's watch)."""
        self.threads.append(_thread.start_new_thread(self._serve_forever, ()))

    def init_signals(self) -> None:
        super().init_signals()
        self.method_queue = _Wake(self.PIPE[1])

    def handle_exit(self, sig, frame) -> None:
        self.alive = False  # the wake-up fd (base.init_signals) wakes the loop

    def date_lines(self) -> str:
        """`Server` and `Date` as every answer carries them, formatted once a second."""
        second = int(time.time())
        if second != self._date[0]:
            self._date = (second, f"Server: {SERVER}\r\nDate: {formatdate(second, usegmt=True)}\r\n")
        return self._date[1]

    # The loop.

    def run(self) -> None:
        self.epoll = epoll = select.epoll()
        self._settle_config()
        listeners = {}
        for listener in self.sockets:
            listener.setblocking(False)
            listeners[listener.fileno()] = listener
            epoll.register(listener.fileno(), EPOLLIN | EXCLUSIVE)
        wake_fd = self.PIPE[0]
        epoll.register(wake_fd, EPOLLIN)
        conns = self.conns
        buffered = hasattr(self.log, "buffer_access_lines")
        if buffered:
            self.log.buffer_access_lines()
        flush = getattr(self.log, "flush_access_lines", None)
        self.lines_pending = getattr(self.log, "access_lines_pending", _nothing_pending)
        notified = 0.0
        try:
            while self.alive:
                now = time.monotonic()
                if now - notified >= LOOP_TICK_S / 2:
                    self.notify()
                    notified = now
                    if self.ppid != os.getppid():
                        self.log.info("Parent changed, shutting down: %s", self)
                        break
                self.turn += 1
                accept_from = None
                for fd, _events in epoll.poll(self._poll_timeout(now)):
                    conn = conns.get(fd)
                    if conn is not None:
                        if conn.state != BUSY:  # an app thread's: a stray event of a reused fd
                            self._on_readable(conn)
                    elif fd in listeners:
                        accept_from = listeners[fd]
                    elif fd == wake_fd:
                        self._drain_wake(wake_fd)
                if accept_from is not None:  # after this turn's reads: a connection read now is not idle
                    self._accept(accept_from)
                now = time.monotonic()
                self._expire(now)
                if not self.accepting and len(conns) < self.worker_connections and self.alive:
                    self._set_accepting(listeners, True)
                if flush is not None:
                    flush(now)
                self._report_cuts(now)
            self._stop(listeners)
        finally:
            self._report_cuts(time.monotonic(), force=True)
            for _ in self.threads:
                self.jobs.put(None)
            if buffered:
                self.log.flush_access_lines()

    def _settle_config(self) -> None:
        """gunicorn's settings, read once: each is a property lookup on every access."""
        cfg = self.cfg
        self.pre_request = cfg.pre_request
        self.post_request = cfg.post_request
        self.keepalive_on = cfg.keepalive > 0
        self.idle_tick_s = idle_wait_s(cfg.timeout)  # no connection, no line or cut report pending
        self.script_name = wsgi_script_name()
        self.base_environ = {
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": cfg.workers > 1,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "wsgi.errors": _ErrorsToLog(self.log),
            "SERVER_SOFTWARE": SERVER,
            "SCRIPT_NAME": self.script_name,
        }

    def _poll_timeout(self, now: float) -> float:
        """Until the soonest timer; with nothing to time, a second while lines or cuts wait to be written,
        else the idle tick (the heartbeat's, and the parent check's)."""
        soonest = now + self.idle_tick_s
        for timers in (self.head_timers, self.idle_timers):
            if timers:
                soonest = min(soonest, timers[0][0])
        if self.lingering:
            soonest = min(soonest, self.lingering[0][0])
        if soonest > now + LOOP_TICK_S and (self.cuts or self.lines_pending()):
            soonest = now + LOOP_TICK_S
        return max(0.0, soonest - now)

    def _drain_wake(self, fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass

    def _accept(self, listener: socket.socket) -> None:
        """Take what waits in the backlog (a few at a time, so the loop stays fair)."""
        for index in range(64):
            if len(self.conns) >= self.worker_connections:
                if index:  # at the cap, a connection is cut only for one known to wait: the listener's next event
                    return
                if not self._give_way():
                    self._set_accepting({listener.fileno(): listener}, False)
                    return
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.warning("accept() failed: %s", error)
                    return
                raise
            self._open(sock, peer, listener)

    def _open(self, sock: socket.socket, peer, listener: socket.socket) -> None:
        sock.setblocking(False)  # once, for the connection's life (TCP_NODELAY comes from gunicorn's listener)
        server = listener.getsockname()
        environ = {**self.base_environ, "gunicorn.socket": sock}  # the connection's base: one copy a request
        if isinstance(peer, tuple):
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer[0], str(peer[1])
        else:
            environ["REMOTE_ADDR"] = peer.decode() if isinstance(peer, bytes) else (peer or "")
        if isinstance(server, tuple):
            environ["SERVER_NAME"], environ["SERVER_PORT"] = server[0], str(server[1])
            server = None  # fixed for the connection
        reader = RequestReader(self.rules, self.rules.trusted(peer))
        conn = Connection(sock, peer, environ, reader, server)
        conn.turn = self.turn
        now = time.monotonic()
        conn.since = now
        conn.deadline = now + self.head_timeout_s
        self.conns[conn.fd] = conn
        self.head_timers.append((conn.deadline, conn, conn.gen))
        self.epoll.register(conn.fd, ONESHOT)

    def _set_accepting(self, listeners: dict, enabled: bool) -> None:
        """Watch the listeners or not (an EPOLLEXCLUSIVE registration cannot be modified: it is redone)."""
        if enabled == self.accepting:
            return
        self.accepting = enabled
        for fd in listeners:
            try:
                if enabled:
                    self.epoll.register(fd, EPOLLIN | EXCLUSIVE)
                else:
                    self.epoll.unregister(fd)
            except OSError:
                pass

    def _give_way(self) -> bool:
        """At the connection cap: close the connection idle or mid-head longest, if any; False if all are busy."""
        oldest = None
        for timers in (self.head_timers, self.idle_timers):
            while timers and timers[0][1].gen != timers[0][2]:  # stale: the connection moved on
                timers.popleft()
            # The oldest of each kind, if it has had a turn of the loop to be read: never one just accepted.
            if timers and timers[0][1].turn < self.turn:
                conn = timers[0][1]
                if oldest is None or conn.since < oldest.since:
                    oldest = conn
        if oldest is None:
            return False
        self._cut("idle_at_cap" if oldest.state == IDLE or not oldest.reader.in_head else "head_at_cap")
        self.close(oldest)
        return True

    def _on_readable(self, conn: Connection) -> None:
        """The loop's: bytes (or the end) on a connection reading a request, or idle."""
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            self._rearm(conn)
            return
        except OSError:
            data = b""
        if not data:
            self.close(conn)
            return
        if conn.state == IDLE:
            now = time.monotonic()
            conn.state, conn.gen, conn.since = HEAD, conn.gen + 1, now
            conn.deadline = now + self.head_timeout_s
            self.head_timers.append((conn.deadline, conn, conn.gen))
        reader = conn.reader
        try:
            reader.feed(data)
        except BadRequest as error:
            self.refuse(conn, error)
            return
        if reader.ready and self._ready(reader.ready[0]):
            self._to_thread(conn)
        else:
            self._rearm(conn)

    @staticmethod
    def _ready(request: Request) -> bool:
        return request.complete or request.expect_continue or request.buffered >= BODY_BUFFER_BYTES

    def _to_thread(self, conn: Connection) -> None:
        conn.state, conn.gen = BUSY, conn.gen + 1
        self.jobs.put(conn)

    def _rearm(self, conn: Connection) -> None:
        try:
            self.epoll.modify(conn.fd, ONESHOT)
        except OSError:  # closed meanwhile
            self.close(conn)

    def _expire(self, now: float) -> None:
        for timers, idle in ((self.head_timers, False), (self.idle_timers, True)):
            while timers:
                deadline, conn, gen = timers[0]
                if conn.gen != gen or conn.state == CLOSED:
                    timers.popleft()
                    continue
                if deadline > now:
                    break
                timers.popleft()
                if conn.state == BUSY:
                    continue
                if idle:
                    self.close(conn)
                elif conn.reader.in_head or conn.reader.ready:
                    message = self._timeout_message("head" if conn.reader.in_head else "body")
                    self._answer_and_close(conn, error_response(408, "Request Timeout", message))
                    self._cut("slow_head")
                else:
                    self._cut("silent")
                    self.close(conn)
        while self.lingering and self.lingering[0][0] <= now:
            util.close(self.lingering.popleft()[1])

    def _timeout_message(self, part: str) -> str:
        return f"The request {part} was not complete within {self.head_timeout_s:g} s (HEAD_TIMEOUT_S)."

    def refuse(self, conn: Connection, error: BadRequest) -> None:
        """A request gunicorn would refuse: its status as JSON, then close (loop or app thread)."""
        peer = conn.peer[0] if isinstance(conn.peer, tuple) else ""
        self.log.warning("Invalid request from ip=%s: %s", peer, error.message)
        self._answer_and_close(conn, error_response(error.status, error.reason, error.message))

    def _answer_and_close(self, conn: Connection, response: bytes) -> None:
        """Best effort, never blocking: a slow client gets its answer if its socket takes it now."""
        try:
            for _ in range(16):  # unread bytes at close() would reset the connection, answer and all
                if not conn.sock.recv(READ_SIZE):
                    break
        except OSError:
            pass
        try:
            conn.sock.send(response)
        except OSError:
            pass
        self.close(conn, linger=True)

    def close(self, conn: Connection, linger: bool = False) -> None:
        """Close `conn` from any thread; its fd leaves the table before it is closed (no reuse race)."""
        if conn.state == CLOSED:
            return
        conn.state, conn.gen = CLOSED, conn.gen + 1
        self.conns.pop(conn.fd, None)
        sock = conn.sock
        if linger:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            else:
                self.lingering.append((time.monotonic() + LINGER_S, sock))
                return
        util.close(sock)

    # The app threads.

    def _serve_forever(self) -> None:
        jobs = self.jobs
        while True:
            conn = jobs.get()
            if conn is None:
                return
            with self._busy_lock:
                self.busy += 1
            try:
                self._serve(conn)
            except Exception:
                self.log.exception("Error serving a connection")
                self.close(conn)
            finally:
                with self._busy_lock:
                    self.busy -= 1

    def _serve(self, conn: Connection) -> None:
        reader = conn.reader
        ready = reader.ready
        while True:
            request = ready.popleft()
            if not self.handle(conn, request):
                self.close(conn)
                return
            if not ready or not self._ready(ready[0]):
                break
        now = time.monotonic()
        if reader.in_head or ready:  # part of the next request came with this one: it gets a head's time
            conn.state, conn.gen, conn.since = HEAD, conn.gen + 1, now
            conn.deadline = now + self.head_timeout_s
            self.head_timers.append((conn.deadline, conn, conn.gen))
        else:
            conn.state, conn.gen, conn.since = IDLE, conn.gen + 1, now
            # A stopping worker keeps it STOP_KEEPALIVE_LINGER_S at most, for a request already on its way.
            conn.deadline = now + (self.keepalive_s if self.alive else min(self.keepalive_s, STOP_KEEPALIVE_LINGER_S))
            self.idle_timers.append((conn.deadline, conn, conn.gen))
        self._rearm(conn)

    def handle(self, conn: Connection, request: Request) -> bool:
        """Serve one request on an app thread; False when the connection must close after it."""
        self.pre_request(self, request)
        started = time.monotonic()
        environ = conn.environ.copy()
        environ.update(request.environ_headers)
        path = request.path
        script_name = request.environ_headers.get("HTTP_SCRIPT_NAME") or self.script_name
        if script_name:  # SCRIPT_NAME from the environment, or a trusted proxy's header (forwarder_headers)
            if not path.startswith(script_name):
                message = f"The request path does not start with SCRIPT_NAME {script_name!r}"
                self.refuse(conn, BadRequest(400, "Bad Request", message))
                return False
            environ["SCRIPT_NAME"] = script_name
            path = path[len(script_name) :]
        environ["REQUEST_METHOD"] = request.method
        environ["QUERY_STRING"] = request.query
        environ["RAW_URI"] = request.uri
        environ["SERVER_PROTOCOL"] = "HTTP/1.1" if request.version == (1, 1) else "HTTP/1.0"
        environ["PATH_INFO"] = util.unquote_to_wsgi_str(path) if "%" in path else path
        environ["wsgi.url_scheme"] = request.scheme
        if conn.server is not None:  # a unix socket: SERVER_* from the Host header, as gunicorn does
            host = request.environ_headers.get("HTTP_HOST", "")
            name, _, port = host.partition(":")
            environ["SERVER_NAME"], environ["SERVER_PORT"] = (
                (name, port or ("443" if request.scheme == "https" else "80")) if host else (conn.server, "")
            )
        body = Input(conn, request, self.io_timeout_s)
        environ["wsgi.input"] = body
        self.nr += 1
        if self.nr >= self.max_requests and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
            self.method_queue.defer()
        response = Response(self, conn, request, not self.alive or not self.keepalive_on)
        result = None
        try:
            result = self.wsgi(environ, response.start_response)
            if isinstance(result, (list, tuple)) and len(result) == 1 and not response.headers_sent:
                response.write(result[0])  # the common answer: head and body in one send
            else:
                for piece in result:
                    response.write(piece)
            response.finish()
        except ClientGone:
            self._after(conn, request, environ, response, started, result)
            return False
        except BadRequest as error:  # a bad chunk in a body read by the app
            if not response.headers_sent:
                self.refuse(conn, error)
            self._after(conn, request, environ, response, started, result)
            return False
        except Exception:
            self.log.exception("Error handling request %s", request.uri)
            if not response.headers_sent:
                try:
                    send_all(
                        conn.sock,
                        error_response(500, "Internal Server Error", "The server could not answer this request."),
                        self.io_timeout_s,
                    )
                except ClientGone:
                    pass
            self._after(conn, request, environ, response, started, result)
            return False
        self._after(conn, request, environ, response, started, result)
        if response.should_close():
            return False  # a worker that stopped meanwhile (post_request recycles) still keeps what it announced
        if not request.complete:
            try:
                return body.discard(DRAIN_MAX_BYTES)
            except (ClientGone, BadRequest):
                return False
        return True

    def _after(self, conn, request, environ, response, started, result) -> None:
        """The access line, the app's close(), post_request: whatever happened to the answer."""
        try:
            # Not hasattr() on the usual list: a missing attribute costs an AttributeError and its message.
            if result is not None and type(result) is not list and hasattr(result, "close"):
                result.close()
        except Exception:
            self.log.exception("Error closing the response")
        try:
            self.log.access(response, request, environ, timedelta(seconds=time.monotonic() - started))
        except Exception:
            self.log.exception("Error writing the access line")
        try:
            self.post_request(self, request, environ, response)
        except Exception:
            self.log.exception("Exception in post_request hook")

    # Stopping.

    def _stop(self, listeners: dict) -> None:
        """No new connections; idle ones close; requests in flight, and heads on their way, finish by the timeout."""
        if RUNTIME.shared is not None and RUNTIME.shared.draining():
            # The service stops: take what waits in the backlog (the master closed its copies), then close
            # the listeners, so the kernel resets nothing queued (see fitflix.serving.drain).
            for listener in listeners.values():
                for _ in range(max(self.cfg.backlog, 1)):
                    try:
                        sock, peer = listener.accept()
                    except OSError:
                        break
                    self._open(sock, peer, listener)
        for fd, listener in listeners.items():
            try:
                self.epoll.unregister(fd)
            except OSError:
                pass
            listener.close()
        self.listeners_closed.set()
        # Kept-alive connections stay open STOP_KEEPALIVE_LINGER at most (gthread's rule): a request a client
        # is already sending on one is answered, with "Connection: close", rather than reset.
        now = time.monotonic()
        linger_until = now + STOP_KEEPALIVE_LINGER_S
        for timers in (self.head_timers, self.idle_timers):
            kept = []
            for deadline, conn, gen in timers:
                if conn.gen == gen and conn.state in (HEAD, IDLE):
                    silent = conn.state == IDLE or not (conn.reader.in_head or conn.reader.ready)
                    kept.append((min(deadline, linger_until) if silent else deadline, conn, gen))
            kept.sort(key=lambda entry: entry[0])
            timers.clear()
            timers.extend(kept)
        deadline = now + self.cfg.graceful_timeout
        conns = self.conns
        while conns and time.monotonic() < deadline:
            self.notify()
            now = time.monotonic()
            for fd, _events in self.epoll.poll(min(0.1, self._poll_timeout(now), max(0.0, deadline - now))):
                conn = conns.get(fd)
                if conn is not None and conn.state != BUSY:
                    self._on_readable(conn)
            self._expire(time.monotonic())
        while self.lingering:
            util.close(self.lingering.popleft()[1])

    # What was cut, counted and logged as today's worker does.

    def _cut(self, reason: str) -> None:
        self.cuts[reason] += 1
        self.cuts_unshared[reason] += 1

    def _report_cuts(self, now: float, force: bool = False) -> None:
        if self.cuts_unshared and RUNTIME.shared is not None:
            RUNTIME.shared.count_cuts(
                {("idle_at_cap" if key == "head_at_cap" else key): value for key, value in self.cuts_unshared.items()}
            )
        self.cuts_unshared.clear()
        if not self.cuts or (now < self.cuts_logged_at + CUT_LOG_INTERVAL_S and not force):
            return
        self.log.warning(
            "Closed %s connection(s) before a whole request head came: %s slow head(s) (or bodies) answered 408 "
            "after %s s (HEAD_TIMEOUT_S), %s silent since they connected, %s idle or mid-head longest at the "
            "%s-connection cap. The next such line comes %.0f s from now at the soonest, with what is cut meanwhile",
            sum(self.cuts.values()),
            self.cuts["slow_head"],
            self.head_timeout_s,
            self.cuts["silent"],
            self.cuts["idle_at_cap"] + self.cuts["head_at_cap"],
            self.worker_connections,
            CUT_LOG_INTERVAL_S,
        )
        self.cuts.clear()
        self.cuts_logged_at = now


class _ErrorsToLog:
    """wsgi.errors: what the app writes there goes to gunicorn's error log, as gunicorn's own wrapper sends it."""

    def __init__(self, log) -> None:
        self.log = log

    def write(self, data: str) -> None:
        for handler in self.log.error_log.handlers:
            stream = getattr(handler, "stream", None)
            if stream is not None:
                try:
                    stream.write(data)
                    stream.flush()
                except Exception:
                    pass
                return
        sys.stderr.write(data)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass
