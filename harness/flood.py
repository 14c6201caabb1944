"""Slow and idle clients for a server on 127.0.0.1, and probes from a fresh client while they hold on.

`Flood` keeps `idle` connections open that send nothing and `slow` ones that
send the start of a request head and then one header line every
`line_every_s`, never finishing it: what a crowd of stalled phones, or
someone with a small script, does to a server whose request threads read
heads. One background thread runs one `selectors` loop for all of them. When
the server closes a connection, what it sent first is read (an answer's
status line is counted) and a fresh connection takes its place.

Bounds: the loop stops by itself at `time_limit_s`; reopens (after a server
close or a failed connect) are capped at `max_reopens`; a connect that has
not completed within `CONNECT_TIMEOUT_S` counts as failed; connects go to a
loopback address only; failures are counted, never raised in the loop. On
exit every socket is closed and the thread joined.

`probe` and `probe_series` time GETs on fresh connections, each bounded by
its timeout and the series by a time limit.
"""

from __future__ import annotations

import dataclasses
import errno
import http.client
import ipaddress
import logging
import selectors
import socket
import threading
import time
from dataclasses import dataclass

from harness.wait import poll_until

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0  # a connect not completed by then counts as failed and is tried again
RETRY_PAUSE_S = 0.2  # after a failed connect, so a server that is down is not hammered
TICK_S = 0.1  # the loop wakes at least this often: timers, the time limit, a stop request
KEPT_ANSWER_BYTES = 4096  # of what the server sends on one connection: enough for a status line
JOIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class FloodStats:
    """What the flood did so far: a snapshot, safe to read from any thread."""

    idle_opened: int = 0  # connects completed, first ones and replacements
    idle_closed_by_server: int = 0
    slow_opened: int = 0
    slow_cut_by_server: int = 0  # slow heads the server closed (answered or not)
    answers_408: int = 0  # responses whose status line says 408, on either kind
    answers_other: int = 0  # any other response (or bytes that are not a status line)
    idle_answered: int = 0  # idle connections the server answered before closing (0 when it closes them silently)
    connect_failures: int = 0  # refused, reset or not completed within CONNECT_TIMEOUT_S
    slow_lines_sent: int = 0  # header lines sent after the request line and Host
    reopens: int = 0  # connects tried after a slot's first one
    reopens_capped: bool = False  # max_reopens reached: closed slots stay closed
    idle_open: int = 0  # connected now
    slow_open: int = 0
    running: bool = False  # the loop runs (False before enter, after the time limit and after exit)


@dataclass(eq=False)
class _Connection:
    slot: int
    kind: str  # "idle" or "slow"
    sock: socket.socket
    connect_deadline: float
    connected: bool = False
    next_line_at: float = 0.0
    lines: int = 0
    outbox: bytes = b""
    inbox: bytes = b""
    status_counted: bool = False


class Flood:
    """`idle` silent and `slow` dripping connections to `host`:`port`, kept open from one thread until exit."""

    def __init__(
        self,
        port: int,
        idle: int = 200,
        slow: int = 16,
        line_every_s: float = 2.0,
        time_limit_s: float = 120.0,
        host: str = "127.0.0.1",
        max_reopens: int | None = None,
    ) -> None:
        self.family = socket.AF_INET6 if _require_loopback(host).version == 6 else socket.AF_INET
        self.address = (host, port)
        self.idle = idle
        self.slow = slow
        self.line_every_s = line_every_s
        self.time_limit_s = time_limit_s
        self.max_reopens = 50 * (idle + slow) if max_reopens is None else max_reopens
        self.head_start = f"GET /health HTTP/1.1\r\nHost: {host}\r\n".encode()
        # Slow and idle slots interleaved, so the slow ones are spread through the connect order.
        places = [(index / idle, "idle") for index in range(idle)] + [(index / slow, "slow") for index in range(slow)]
        self._kinds = [kind for _place, kind in sorted(places)]
        self._ever_opened = [False] * len(self._kinds)
        self._reopen_at: list[float | None] = [0.0] * len(self._kinds)  # None: open or connecting now
        self._tried = [False] * len(self._kinds)
        self._connections: dict[int, _Connection] = {}
        self._lock = threading.Lock()
        self._stats = FloodStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the caller's side ---------------------------------------------------

    def __enter__(self) -> Flood:
        self._stats = FloodStats(running=True)
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the loop; it closes every socket on its way out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("the flood's loop did not stop within %s s", JOIN_TIMEOUT_S)

    def stats(self) -> FloodStats:
        with self._lock:
            return self._stats

    @property
    def is_up(self) -> bool:
        """Every wanted connection has been opened at least once."""
        with self._lock:
            return all(self._ever_opened)

    def wait_until_up(self, timeout_s: float = 30.0) -> FloodStats:
        """Return once every wanted connection has been opened at least once; raise Timeout at the deadline."""
        poll_until(lambda: self.is_up, timeout_s, f"{self.idle} idle and {self.slow} slow connections to open")
        return self.stats()

    # --- the loop's side -----------------------------------------------------

    def _count(self, **changes: int) -> None:
        with self._lock:
            self._stats = dataclasses.replace(
                self._stats, **{name: getattr(self._stats, name) + delta for name, delta in changes.items()}
            )

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        deadline = time.monotonic() + self.time_limit_s
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._open_due(selector)
                for key, mask in selector.select(TICK_S):
                    self._on_event(selector, key.data, mask)
                self._tick(selector)
        except Exception:  # a bug here must not leave sockets open: log it and close them
            log.exception("the flood's loop failed")
        finally:
            for connection in list(self._connections.values()):
                self._drop(selector, connection)
            selector.close()
            with self._lock:
                self._stats = dataclasses.replace(self._stats, running=False, idle_open=0, slow_open=0)

    def _open_due(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for slot, reopen_at in enumerate(self._reopen_at):
            if reopen_at is None or reopen_at > now:
                continue
            if self._tried[slot]:
                if self.stats().reopens >= self.max_reopens:
                    with self._lock:
                        self._stats = dataclasses.replace(self._stats, reopens_capped=True)
                    self._reopen_at[slot] = float("inf")
                    continue
                self._count(reopens=1)
            self._tried[slot] = True
            self._reopen_at[slot] = None
            self._connect(selector, slot, now)

    def _connect(self, selector: selectors.BaseSelector, slot: int, now: float) -> None:
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError:  # out of file descriptors: a failed connect like any other
            self._failed_connect(slot)
            return
        sock.setblocking(False)
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._failed_connect(slot)
            return
        connection = _Connection(slot, self._kinds[slot], sock, now + CONNECT_TIMEOUT_S)
        self._connections[slot] = connection
        selector.register(sock, selectors.EVENT_WRITE, connection)

    def _failed_connect(self, slot: int) -> None:
        self._count(connect_failures=1)
        self._reopen_at[slot] = time.monotonic() + RETRY_PAUSE_S

    def _on_event(self, selector: selectors.BaseSelector, connection: _Connection, mask: int) -> None:
        if not connection.connected:
            if connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._drop(selector, connection)
                self._failed_connect(connection.slot)
            else:
                self._on_connected(selector, connection)
            return
        if mask & selectors.EVENT_READ:
            self._receive(selector, connection)
        if mask & selectors.EVENT_WRITE and connection.slot in self._connections:
            self._flush(selector, connection)

    def _on_connected(self, selector: selectors.BaseSelector, connection: _Connection) -> None:
        connection.connected = True
        with self._lock:
            self._ever_opened[connection.slot] = True
        selector.modify(connection.sock, selectors.EVENT_READ, connection)
        if connection.kind == "idle":
            self._count(idle_opened=1, idle_open=1)
            return
        self._count(slow_opened=1, slow_open=1)
        connection.next_line_at = time.monotonic() + self.line_every_s
        connection.outbox = self.head_start
        self._flush(selector, connection)

    def _receive(self, selector: selectors.BaseSelector, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:  # reset by the server
            data = b""
        if data:
            connection.inbox = (connection.inbox + data)[:KEPT_ANSWER_BYTES]
            self._count_answer(connection)
            return
        self._count_answer(connection, at_close=True)
        if connection.kind == "idle":
            self._count(idle_closed_by_server=1)
        else:
            self._count(slow_cut_by_server=1)
        self._drop(selector, connection)
        self._reopen_at[connection.slot] = time.monotonic()

    def _count_answer(self, connection: _Connection, at_close: bool = False) -> None:
        """Count the response once its status line is in (or whatever came, when the server closes)."""
        if connection.status_counted or not connection.inbox:
            return
        line, found, _rest = connection.inbox.partition(b"\r\n")
        if not found and not at_close:
            return
        connection.status_counted = True
        parts = line.split()
        is_408 = len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1] == b"408"
        idle = connection.kind == "idle"
        self._count(answers_408=int(is_408), answers_other=int(not is_408), idle_answered=int(idle))

    def _flush(self, selector: selectors.BaseSelector, connection: _Connection) -> None:
        try:
            sent = connection.sock.send(connection.outbox) if connection.outbox else 0
        except BlockingIOError:
            sent = 0
        except OSError:  # the server closed it: the read side sees the close and counts it
            connection.outbox = b""
            sent = 0
        connection.outbox = connection.outbox[sent:]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if connection.outbox else 0)
        selector.modify(connection.sock, events, connection)

    def _tick(self, selector: selectors.BaseSelector) -> None:
        """Send the header lines that are due; give up on connects that take too long."""
        now = time.monotonic()
        for connection in list(self._connections.values()):
            if not connection.connected:
                if now > connection.connect_deadline:
                    self._drop(selector, connection)
                    self._failed_connect(connection.slot)
                continue
            if connection.kind == "slow" and now >= connection.next_line_at:
                connection.lines += 1
                connection.outbox += f"X-Slow-{connection.lines}: x\r\n".encode()
                connection.next_line_at = now + self.line_every_s
                self._count(slow_lines_sent=1)
                self._flush(selector, connection)

    def _drop(self, selector: selectors.BaseSelector, connection: _Connection) -> None:
        """Close one connection (ours or the server's close) and forget it."""
        self._connections.pop(connection.slot, None)
        try:
            selector.unregister(connection.sock)
        except (KeyError, ValueError):
            pass
        connection.sock.close()
        if connection.connected:
            self._count(**{f"{connection.kind}_open": -1})


def _require_loopback(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address of `host`; ValueError unless it is a loopback address (a name is refused too)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(f"host {host!r}: the flood and the probes go to a loopback address (127.0.0.1, ::1) only")
    return address


def probe(port: int, path: str = "/health", timeout_s: float = 5.0, host: str = "127.0.0.1") -> float | None:
    """Seconds one GET took on a fresh connection (Connection: close), or None: no 2xx within `timeout_s`."""
    _require_loopback(host)
    started = time.monotonic()
    deadline = started + timeout_s
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.connect()
        connection.sock.settimeout(max(0.001, deadline - time.monotonic()))
        connection.request("GET", path, headers={"Connection": "close"})
        connection.sock.settimeout(max(0.001, deadline - time.monotonic()))
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    elapsed_s = time.monotonic() - started
    return elapsed_s if 200 <= response.status < 300 and elapsed_s <= timeout_s else None


def probe_series(
    port: int,
    count: int,
    every_s: float,
    timeout_s: float = 5.0,
    path: str = "/health",
    host: str = "127.0.0.1",
    time_limit_s: float | None = None,
) -> list[float | None]:
    """Up to `count` probes, one every `every_s`; a slow probe delays the next, none overlap.

    Each probe gets its whole `timeout_s`, and none starts later than `time_limit_s - timeout_s`
    into the series (default limit: `count * every_s + timeout_s`, what `count` quick probes take
    plus one timeout): a server that makes probes time out gets fewer of them, never a longer run.
    """
    limit_s = count * every_s + timeout_s if time_limit_s is None else time_limit_s
    started = time.monotonic()
    last_start = started + limit_s - timeout_s
    latencies: list[float | None] = []
    for index in range(count):
        due = max(started + index * every_s, time.monotonic())
        if due > last_start:
            break
        time.sleep(max(0.0, due - time.monotonic()))  # pacing the series, not waiting for a state
        latencies.append(probe(port, path, timeout_s, host))
    return latencies
