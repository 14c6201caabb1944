"""The front door against real gunicorn: slow, silent, idle and lingering clients, and bad request heads.

gunicorn's gthread reads a request head on a request thread, so THREADS
clients that drip their heads silence the worker; both of FitFlix's workers read heads
on an event loop: its own (fitflix/serving/h1worker.py, WORKER=fitflix, the default) and
gthread's with heads read first (fitflix/serving/worker.py, WORKER=gthread, the fallback
for what the first does not speak). Every test runs against each. Every client is on
127.0.0.1, every socket has a timeout, every wait polls against a deadline.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

from fitflix.errors import SECURITY_HEADERS
from harness.flood import Flood, probe_series
from harness.server import LiveServer, plain_gunicorn_command
from harness.wait import poll_until

CUT_LINE = re.compile(r"Closed (\d+) connection\(s\) before a whole request head came: (\d+) slow head")


@pytest.fixture(params=["fitflix", "gthread"])
def live_server(live_server, request):
    """The conftest's live_server with each of FitFlix's workers in turn (WORKER)."""

    def start(env: dict[str, str] | None = None, **options):
        return live_server({"WORKER": request.param, **(env or {})}, **options)

    return start


def connect(server, timeout_s: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout_s)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (the socket's timeout bounds each read)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    return int(status_line.split()[1]), dict(line.split(": ", 1) for line in lines), body


def cut_counts(server) -> dict[str, float]:
    status, _headers, body = server.request("GET", "/metrics")
    assert status == 200
    found = re.findall(rb'fitflix_connections_cut_total\{reason="(\w+)"\} ([\d.]+)', body)
    return {reason.decode(): float(count) for reason, count in found}


def probe_s(server, timeout_s: float = 10.0) -> float | None:
    """Seconds to a 200 from /health on a fresh connection; None when none came in `timeout_s`."""
    started = time.monotonic()
    try:
        status = server.request("GET", "/health", timeout_s=timeout_s)[0]
    except OSError:
        return None
    return time.monotonic() - started if status == 200 else None


@pytest.mark.parametrize("threads", [1, 8])
def test_200_idle_and_2x_threads_slow_clients_never_silence_health(live_server, threads):
    """The issue's flood: 23 of 24 probes from a fresh client answered within 2 s (gthread: 0 of 24)."""
    server = live_server({"THREADS": str(threads)})
    with Flood(server.port, idle=200, slow=2 * threads, line_every_s=2.0, time_limit_s=90) as flood:
        flood.wait_until_up(timeout_s=30)
        # 24 probes over ~14 s: past the 10 s head deadline, so cut heads come back as fresh ones meanwhile.
        latencies = probe_series(server.port, count=24, every_s=0.6, timeout_s=5.0)
        stats = flood.stats()

    answered = [latency for latency in latencies if latency is not None and latency < 2.0]
    assert len(answered) >= 23, latencies
    assert stats.slow_cut_by_server >= 2 * threads and stats.answers_408 >= 2 * threads, stats
    assert stats.idle_answered == 0, stats  # silent connections are closed without an answer
    counts = cut_counts(server)
    assert counts["slow_head"] >= 2 * threads and counts["silent"] >= 200, counts


def test_a_slow_head_gets_a_json_408_and_is_counted_and_logged_once_per_interval(live_server):
    server = live_server({"HEAD_TIMEOUT_S": "1"})
    first = connect(server)
    first.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line

    status, headers, body = parse(read_all(first))

    assert status == 408
    assert json.loads(body) == {
        "error": "Request Timeout",
        "status": 408,
        "message": "The request head was not complete within 1 s (HEAD_TIMEOUT_S).",
    }
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value
    poll_until(lambda: CUT_LINE.search(server.log()), 10, "the log line of the first cut")

    second = connect(server)
    second.sendall(b"GET /health HTTP/1.1\r\n")
    assert parse(read_all(second))[0] == 408
    poll_until(lambda: cut_counts(server).get("slow_head") == 2, 10, "two slow heads in /metrics")
    assert len(CUT_LINE.findall(server.log())) == 1  # the second waits for the interval (or the exit)

    server.stop()
    assert [(int(total), int(slow)) for total, slow in CUT_LINE.findall(server.log())] == [(1, 1), (1, 1)]
    first.close()
    second.close()


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(live_server):
    server = live_server({"HEAD_TIMEOUT_S": "1"})
    silent = connect(server)

    assert read_all(silent) == b""  # EOF, no 408: a browser's preconnect is not an error
    poll_until(lambda: cut_counts(server).get("silent") == 1, 10, "one silent connection in /metrics")
    silent.close()


def test_at_the_connection_cap_the_longest_idle_go_first_and_health_still_answers(live_server):
    # 24 connections per worker: after each accept the worker keeps at most 23 open.
    server = live_server({"HEAD_TIMEOUT_S": "60"}, extra_args=("--worker-connections", "24"))
    idle = [connect(server) for _ in range(30)]
    poll_until(lambda: cut_counts(server).get("idle_at_cap", 0) >= 7, 10, "7 idle connections cut at the cap")

    assert probe_s(server) is not None
    closed = []
    for sock in idle:
        sock.settimeout(0.0)
        try:
            closed.append(sock.recv(1) == b"")
        except BlockingIOError:
            closed.append(False)  # still open, nothing sent: as it should be
        sock.close()
    # The oldest went first, the newest are still open.
    assert closed[:7] == [True] * 7
    assert closed[-10:] == [False] * 10


def test_clients_that_never_close_do_not_stall_the_worker(live_server):
    """gthread lingers up to 2 s for each closing client's FIN on its event loop; here it lingers on the selector."""
    server = live_server()
    held = []
    for _ in range(4):
        sock = connect(server)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        held.append(sock)
    for sock in held:
        assert parse(read_all(sock))[0] == 200  # answered and FIN sent; the client keeps its end open

    # With the linger on the event loop, four held clients stall every other connection for ~8 s.
    latency = probe_s(server)
    assert latency is not None and latency < 2.0, latency
    for sock in held:
        sock.close()


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(101)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"GET / HTTP/1.0\n\n", 400),  # bare LF
        # answered now, not at the deadline: the parser refuses these from what has come
        (b"GET / HTTP/1.1\nHost: x\n", 400),  # bare LF, no blank line yet
        (b"GET /" + b"a" * 9000, 414),  # a request line past the limit, no end yet
        # past the 32 KiB a head may take while it is read on the loop (within gunicorn's own limits)
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (n, b"v" * 800) for n in range(50)), 431),
    ],
)
def test_gunicorns_own_errors_are_json_with_the_security_headers(live_server, request_head, status):
    server = live_server({"HEAD_TIMEOUT_S": "60"})
    sock = connect(server)
    sock.sendall(request_head)

    answered, headers, body = parse(read_all(sock))

    assert answered == status
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == status
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value
    assert probe_s(server) is not None  # the worker lives on
    assert "Traceback" not in server.log()
    sock.close()


def read_response(reader) -> tuple[int, bytes]:
    """One response from a socket's file: status and body (by Content-Length, as the service sends it)."""
    status = int(reader.readline().split()[1])
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, reader.read(length)


def test_pipelined_and_dripped_requests_on_one_connection_are_all_served(live_server):
    server = live_server()
    sock = connect(server)
    reader = sock.makefile("rb")
    # A POST with its body, then a GET, in one write: the body must not be taken for a head.
    sock.sendall(
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert read_response(reader)[0] == 405
    assert read_response(reader)[0] == 200

    # The next head dripped a line at a time on the same kept-alive connection.
    for line in (b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n", b"\r\n"):
        sock.sendall(line)
    status, body = read_response(reader)
    assert status == 200 and json.loads(body)["status"] == "OK", body
    assert reader.read() == b""  # and the connection closed, as asked
    reader.close()
    sock.close()


def test_drips_slower_than_the_deadline_do_not_hold_threads(live_server):
    """Three times THREADS clients each holding a partial head, fresh or pipelined: /health still answers."""
    server = live_server({"THREADS": "2", "HEAD_TIMEOUT_S": "60"})
    dripping = []
    for number in range(6):  # three times the threads
        sock = connect(server)
        sock.sendall(b"GET /health HTTP/1.1\r\nX-Drip-%d: 1\r\n" % number)
        dripping.append(sock)
    for number in range(6):  # and as many that pipeline half a head behind a whole request
        sock = connect(server)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nX-Drip-%d: 1\r\n" % number)
        dripping.append(sock)
    stop = threading.Event()

    def drip() -> None:
        for _ in range(40):  # bounded: at most 40 lines each
            if stop.wait(0.25):
                return
            for sock in dripping:
                sock.sendall(b"X-More: 1\r\n")

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        latencies = [probe_s(server, timeout_s=5) for _ in range(5)]
    finally:
        stop.set()
        dripper.join(10)
    assert all(latency is not None and latency < 2.0 for latency in latencies), latencies
    for sock in dripping:
        sock.close()


class PlainGthread(LiveServer):
    """Plain gunicorn's gthread worker on the same app, no config file: what the early answers are compared with."""

    def server_command(self) -> list[str]:
        return plain_gunicorn_command("127.0.0.1:0", 1, "wsgi:app", ("--worker-class", "gthread", "--threads", "2"))


@pytest.fixture
def plain_gthread(tmp_path):
    """Plain gunicorn gthread on 127.0.0.1 (its control socket under a HOME of its own); stopped at teardown."""
    server = PlainGthread({"HOME": str(tmp_path)})
    try:
        server.start()
    except AssertionError as error:
        pytest.fail(str(error))
    yield server
    server.close()


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"GET /v HTTP/9.9\r\nHost: x\r\n", id="invalid-line-in-a-head-that-never-ends"),
        pytest.param(b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n", id="proxy-line-with-the-protocol-off"),
        pytest.param(b"\r\nGET /" + b"a" * 9000, id="long-line-after-a-leading-crlf"),
    ],
)
def test_a_head_the_parser_refuses_early_is_answered_at_once_as_plain_gunicorn_answers_it(
    live_server, plain_gthread, head
):
    """RFC 9112 section 3: an invalid request line is answered when it is read, not when the head ends."""
    fitflix = live_server({"HEAD_TIMEOUT_S": "60"})
    answers = {}
    for name, server in (("plain", plain_gthread), ("fitflix", fitflix)):
        sock = connect(server, timeout_s=10.0)  # the head never ends: only an early answer comes within 10 s
        try:
            sock.sendall(head)
            answers[name] = parse(read_all(sock))
        finally:
            sock.close()

    assert answers["fitflix"][0] == answers["plain"][0], answers
    assert answers["plain"][0] in (400, 414)
    assert json.loads(answers["fitflix"][2])["status"] == answers["plain"][0]
    assert probe_s(fitflix) is not None and "Traceback" not in fitflix.log()
