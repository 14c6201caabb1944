"""Four hostile clients for a server on 127.0.0.1, each bounded in time and count, each returning what it saw.

1. `stalled_bodies`: connections that send a POST head announcing a body
   (`Content-Length: 100000`) and never send it, while a fresh client times
   `GET /health`; then how long each stalled connection stayed open and what
   it was answered.
2. `UnreadAnswers`: one connection with a small receive buffer (SO_RCVBUF set
   before connect) that pipelines many requests for a large answer and never
   reads a byte. Whether the server let go of it is read from the kernel, not
   from the socket (reading would end the attack): the client end's TCP state
   (TCP_INFO: a FIN or a reset came) and the server end's line in
   /proc/net/tcp (gone, no longer ESTABLISHED, or orphaned: inode 0, closed
   by its process with bytes still queued behind the closed window).
3. `trickle_head`: one request head of about 32 KB sent one byte per send()
   (TCP_NODELAY), paced over a few seconds, while the worker's CPU time
   (utime + stime in /proc/<pid>/stat) is read before and after.
4. `HeldHeads` + `probe_health`: many connections that each send one byte of
   a head and hold it (slowloris), up to the worker's connection cap, and
   probes from fresh connections meanwhile.

Bounds: connects go to 127.0.0.1 only; every socket has a timeout; every loop
has a count and a deadline; nothing here sleeps to wait for a state (the
waits poll against deadlines). Callers close what they open (the context
managers close every socket on exit).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 1000  # what any one client here opens at most
POLL_S = 0.02

# Linux's TCP states (include/net/tcp_states.h): TCP_INFO's first byte, /proc/net/tcp's `st` column.
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}


def connect(port: int, timeout_s: float = CONNECT_TIMEOUT_S, rcvbuf: int | None = None, nodelay: bool = False):
    """A TCP connection to 127.0.0.1:`port`; `rcvbuf` is set before connect, so the window is small from the SYN."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout_s)
        sock.connect((LOOPBACK, port))
    except BaseException:
        sock.close()
        raise
    return sock


def status_of(data: bytes) -> int | None:
    """The status code of the first response in `data`, or None."""
    if not data.startswith(b"HTTP/1."):
        return None
    parts = data.split(b"\r\n", 1)[0].split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def client_tcp_state(sock: socket.socket) -> str:
    """The client end's TCP state from TCP_INFO: ESTABLISHED, CLOSE_WAIT (a FIN came), CLOSE (a reset), ..."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return "CLOSED_LOCALLY"
    return TCP_STATES.get(info[0], str(info[0]))


def server_end(server_port: int, client_port: int) -> tuple[str, int, int] | None:
    """The server end of the connection from 127.0.0.1:`client_port`, from /proc/net/tcp: (state, inode, unread).

    None: the kernel holds no such socket any more. Inode 0: no process holds
    it (still in the listen backlog, or closed by its process and orphaned).
    `unread`: bytes in its receive queue that the server has not read.
    """
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    try:
        with open("/proc/net/tcp") as table:
            next(table, None)
            for line in table:
                fields = line.split()
                if len(fields) > 9 and fields[1] == local and fields[2] == remote:
                    unread = int(fields[4].split(":")[1], 16)
                    return TCP_STATES.get(int(fields[3], 16), fields[3]), int(fields[9]), unread
    except OSError:
        return None
    return None


def server_let_go(sock: socket.socket, server_port: int) -> str | None:
    """How the server let go of the connection `sock`, without reading from it; None while it still holds it.

    'reset' or 'fin' from the client end's state; 'gone', 'orphaned' or the
    server end's state (FIN_WAIT1 behind a closed window) from /proc/net/tcp.
    """
    state = client_tcp_state(sock)
    if state == "CLOSE":
        return "reset"
    if state == "CLOSE_WAIT":
        return "fin"
    end = server_end(server_port, sock.getsockname()[1])
    if end is None:
        return "gone"
    server_state, inode, _unread = end
    if server_state != "ESTABLISHED":
        return server_state.lower()
    if inode == 0:
        return "orphaned"
    return None


def in_backlog(sock: socket.socket, server_port: int) -> bool:
    """Whether the connection `sock` still waits in the server's listen backlog: its server end is
    ESTABLISHED and no process holds it (inode 0), and no FIN or reset came (an orphaned end is closed)."""
    end = server_end(server_port, sock.getsockname()[1])
    return end is not None and end[:2] == ("ESTABLISHED", 0) and client_tcp_state(sock) == "ESTABLISHED"


def read_by_server(sock: socket.socket, server_port: int) -> bool:
    """Whether a process accepted the connection `sock` and read all it was sent (or let go of it)."""
    end = server_end(server_port, sock.getsockname()[1])
    if end is None or end[0] != "ESTABLISHED" or client_tcp_state(sock) != "ESTABLISHED":
        return True
    return end[1] != 0 and end[2] == 0


def worker_cpu_s(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted from state (field 3)
    return ticks / os.sysconf("SC_CLK_TCK")


def probe_health(port: int, timeout_s: float = 5.0, path: str = "/health") -> tuple[float | None, int | None]:
    """(seconds to the whole answer, status) for one GET on a fresh connection; (None, None) when none came."""
    started = time.monotonic()
    try:
        sock = connect(port, timeout_s)
    except OSError:
        return None, None
    try:
        sock.settimeout(max(0.01, timeout_s - (time.monotonic() - started)))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        deadline = started + timeout_s
        for _ in range(10000):  # bounded: the answer is small, each recv bounded by the deadline
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, status_of(data)
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        status = status_of(data)
        return (time.monotonic() - started if status is not None else None), status
    except OSError:
        return None, None
    finally:
        sock.close()


@dataclass
class Watched:
    """One hostile connection's end, as `watch_until_closed` saw it."""

    sent_at: float  # monotonic time its last byte was sent
    closed_after_s: float | None = None  # from sent_at to EOF or reset; None: still open at the deadline
    how: str | None = None  # "eof" or "reset"
    received: bytes = b""  # what the server sent first (its first 4 KB)

    @property
    def status(self) -> int | None:
        return status_of(self.received)


def watch_until_closed(socks: list[socket.socket], watched: list[Watched], deadline_s: float) -> None:
    """Read every socket (they are ours to read) until the server closes each, or `deadline_s` from now."""
    deadline = time.monotonic() + deadline_s
    open_ = {sock: entry for sock, entry in zip(socks, watched, strict=True) if entry.closed_after_s is None}
    for _ in range(100_000):  # bounded: at most 0.1 s a turn until the deadline; one turn at least
        if not open_:
            return
        readable, _, _ = select.select(list(open_), [], [], min(0.1, max(0.0, deadline - time.monotonic())))
        for sock in readable:
            entry = open_[sock]
            try:
                chunk = sock.recv(65536)
                how = "eof" if not chunk else None
            except ConnectionResetError:
                chunk, how = b"", "reset"
            except OSError as error:
                if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    continue
                chunk, how = b"", "reset"
            if chunk and len(entry.received) < 4096:
                entry.received += chunk[: 4096 - len(entry.received)]
            if how is not None:
                entry.closed_after_s = time.monotonic() - entry.sent_at
                entry.how = how
                del open_[sock]
        if time.monotonic() >= deadline:
            return


# 1. A body that never comes -------------------------------------------------------------------------------------


@dataclass
class StalledBodiesResult:
    health_s: float | None  # the fresh client's /health, while the bodies stall; None: no answer in time
    health_status: int | None
    stalled: list[Watched] = field(default_factory=list)


def stalled_bodies(
    port: int,
    count: int = 2,
    content_length: int = 100_000,
    path: str = "/health/live",
    probe_timeout_s: float = 5.0,
    close_deadline_s: float = 15.0,
) -> StalledBodiesResult:
    """`count` POST heads announcing `content_length` bytes that never come; /health timed meanwhile.

    Then each stalled connection is read until the server closes it or
    `close_deadline_s` (from the probe's end) passes.
    """
    if not 1 <= count <= MAX_CONNECTIONS:
        raise ValueError(f"count={count}: 1 to {MAX_CONNECTIONS}")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode()
    socks: list[socket.socket] = []
    watched: list[Watched] = []
    try:
        for _ in range(count):
            sock = connect(port)
            sock.sendall(head)
            socks.append(sock)
            watched.append(Watched(sent_at=time.monotonic()))
        # The server has accepted the stalled connections before the probe connects (polled, a few ms).
        _poll(lambda: not any(in_backlog(sock, port) for sock in socks), 2.0)
        health_s, health_status = probe_health(port, probe_timeout_s)
        watch_until_closed(socks, watched, close_deadline_s)
    finally:
        for sock in socks:
            sock.close()
    return StalledBodiesResult(health_s, health_status, watched)


# 2. A client that never reads its answers -----------------------------------------------------------------------


class UnreadAnswers:
    """One connection with a `rcvbuf`-byte receive buffer that pipelines `count` GETs of `path` and never reads.

    `let_go()` says how the server let go of it (None while it holds it); the
    socket is closed on exit, unread.
    """

    def __init__(self, port: int, count: int = 400, path: str = "/openapi.json", rcvbuf: int = 4096) -> None:
        if not 1 <= count <= 10_000:
            raise ValueError(f"count={count}: 1 to 10000")
        self.port, self.count, self.path, self.rcvbuf = port, count, path, rcvbuf
        self.sock: socket.socket | None = None
        self.sent_at: float | None = None

    def __enter__(self) -> UnreadAnswers:
        self.sock = connect(self.port, rcvbuf=self.rcvbuf)
        request = f"GET {self.path} HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode()
        # 400 x 50 bytes: the server's receive buffer takes it all even if it reads none of it (the timeout bounds it).
        self.sock.settimeout(10.0)
        self.sock.sendall(request * self.count)
        self.sent_at = time.monotonic()
        return self

    def let_go(self) -> str | None:
        return server_let_go(self.sock, self.port)

    def client_state(self) -> str:
        return client_tcp_state(self.sock)

    def __exit__(self, *exc) -> None:
        if self.sock is not None:
            self.sock.close()


# 3. A head trickled byte by byte --------------------------------------------------------------------------------


def big_head(total_bytes: int = 32_000, path: str = "/health") -> bytes:
    """A whole GET head of about `total_bytes`: many headers, each well under gunicorn's limits (100 x 8190)."""
    start = f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n".encode()
    fields = 80
    per_field = max(16, (total_bytes - len(start) - 2) // fields)
    lines = []
    for number in range(fields):
        name = b"X-Trickle-%02d: " % number
        lines.append(name + b"v" * (per_field - len(name) - 2) + b"\r\n")
    return start + b"".join(lines) + b"\r\n"


@dataclass
class TrickleResult:
    bytes_sent: int
    sends: int  # send() calls: one per byte
    elapsed_s: float  # first byte to the answer (or the time limit)
    worker_cpu_s: float  # the worker's utime + stime over the same span
    status: int | None  # the answer to the whole head; None: none came

    @property
    def cpu_us_per_byte(self) -> float:
        return self.worker_cpu_s * 1e6 / max(1, self.bytes_sent)


def trickle_head(
    port: int, worker_pid: int, head: bytes | None = None, duration_s: float = 4.0, time_limit_s: float = 30.0
) -> TrickleResult:
    """Send `head` one byte per send(), paced evenly over about `duration_s`, and read the answer.

    The worker's CPU time is read just before the first byte and just after
    the answer (or the time limit). Each send is one byte; when the pacing
    falls behind (the client's own scheduling), the bytes that are due go out
    back to back, still one per send().
    """
    head = big_head() if head is None else head
    if not 1 <= len(head) <= 1024 * 1024:
        raise ValueError("a head of 1 byte to 1 MiB")
    sock = connect(port, nodelay=True)
    try:
        sock.settimeout(time_limit_s)
        cpu_before = worker_cpu_s(worker_pid)
        started = time.monotonic()
        deadline = started + time_limit_s
        per_byte_s = duration_s / len(head)
        sent = sends = 0
        while sent < len(head) and time.monotonic() < deadline:
            due = min(len(head), int((time.monotonic() - started) / per_byte_s) + 1)
            while sent < due:
                sent += sock.send(head[sent : sent + 1])
                sends += 1
            if sent < len(head):
                time.sleep(min(per_byte_s, 0.0005))  # the pacing of the sends, not a wait for a state
        data = b""
        for _ in range(1000):  # bounded: a small answer, each read bounded by the deadline
            remaining = deadline - time.monotonic()
            if remaining <= 0 or sent < len(head):
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        elapsed = time.monotonic() - started
        cpu = worker_cpu_s(worker_pid) - cpu_before
    finally:
        sock.close()
    return TrickleResult(sent, sends, elapsed, cpu, status_of(data))


# 4. Slowloris at the connection cap -----------------------------------------------------------------------------


class HeldHeads:
    """`count` connections that each send the first byte of a head (`first`) and hold it; all closed on exit.

    They are opened one at a time, and each is given up to `settle_s` to be
    accepted and its byte read before the next one opens: a server that
    accepts a connection before its byte arrives sees a silent connection,
    which is not what a slowloris holds. Once one is not taken within
    `settle_s` (the server stopped accepting: it is at its cap), the rest
    are opened without waiting.
    """

    def __init__(self, port: int, count: int, first: bytes = b"G", settle_s: float = 0.5) -> None:
        if not 1 <= count <= MAX_CONNECTIONS:
            raise ValueError(f"count={count}: 1 to {MAX_CONNECTIONS}")
        self.port, self.count, self.first, self.settle_s = port, count, first, settle_s
        self.socks: list[socket.socket] = []
        self.watched: list[Watched] = []
        self.not_taken_from: int | None = None  # the first one not taken within settle_s

    def __enter__(self) -> HeldHeads:
        try:
            for number in range(self.count):
                sock = connect(self.port)
                sock.sendall(self.first)
                self.socks.append(sock)
                self.watched.append(Watched(sent_at=time.monotonic()))
                if self.not_taken_from is None:
                    if not _poll(lambda s=sock: read_by_server(s, self.port), self.settle_s):
                        self.not_taken_from = number
        except BaseException:
            self.__exit__()
            raise
        return self

    def waiting(self) -> int:
        """How many still wait in the server's listen backlog (not accepted yet)."""
        return sum(1 for sock in self.socks if in_backlog(sock, self.port))

    def taken(self) -> int:
        """How many the server has accepted (and holds or closed)."""
        return len(self.socks) - self.waiting()

    def closed_by_server(self) -> list[Watched]:
        """Read what is there without waiting: which of them the server closed, and what it sent them."""
        watch_until_closed(self.socks, self.watched, 0.0)
        return [entry for entry in self.watched if entry.closed_after_s is not None]

    def __exit__(self, *exc) -> None:
        for sock in self.socks:
            sock.close()


def _poll(check, timeout_s: float) -> bool:
    """Poll `check` until true or `timeout_s` passes; whether it came true (never raises on the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)  # the poll interval, not a wait for a state
