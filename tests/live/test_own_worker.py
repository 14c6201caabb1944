"""FitFlix's own worker (fitflix/serving/h1worker.py) on the wire: HTTP as gunicorn speaks it, over raw sockets.

Real gunicorn with `WORKER=fitflix` (the default) serving harness/apps/http_edges.py; every client is a
socket on 127.0.0.1 that says exactly what it sends. gunicorn's request corpus is replayed against the
parser in tests/live/test_request_corpus.py; the hostile clients are in tests/live/test_hostile_clients.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time

import pytest

from harness.server import LiveServer
from harness.wait import poll_until

APP = "harness.apps.http_edges:app"
OWN = {"WORKER": "fitflix"}


def connect(server, timeout_s: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, head: bytes) -> None:
        self.status, self.headers, self.body, self.head = status, headers, body, head

    def json(self):
        return json.loads(self.body)


def read_answer(sock: socket.socket, buffer: bytearray, method: str = "GET") -> Answer:
    """One answer off `sock` (what follows it stays in `buffer`): by Content-Length, chunks, or the close."""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a whole head: {bytes(buffer)!r}")
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    del buffer[:end]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"{name} twice in {head!r}"
            headers[name.lower()] = value.strip()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Answer(status, headers, b"", head)
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(buffer) < length:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed mid-body")
            buffer += data
        body = bytes(buffer[:length])
        del buffer[:length]
        return Answer(status, headers, body, head)
    if headers.get("transfer-encoding") == "chunked":
        body = bytearray()
        while True:
            while b"\r\n" not in buffer:
                buffer += sock.recv(65536)
            line_end = buffer.index(b"\r\n")
            size = int(buffer[:line_end], 16)
            while len(buffer) < line_end + 2 + size + 2:
                buffer += sock.recv(65536)
            body += buffer[line_end + 2 : line_end + 2 + size]
            del buffer[: line_end + 2 + size + 2]
            if size == 0:
                return Answer(status, headers, bytes(body), head)
    body = bytearray(buffer)
    buffer.clear()
    while data := sock.recv(65536):
        body += data
    return Answer(status, headers, bytes(body), head)


def exchange(server, data: bytes, method: str = "GET") -> Answer:
    with connect(server) as sock:
        sock.sendall(data)
        return read_answer(sock, bytearray(), method)


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


@pytest.fixture(scope="module")
def server():
    """One server for the module: `WORKER=fitflix`, THREADS=4, HEAD_TIMEOUT_S=2; stopped at the end."""
    running = LiveServer({**OWN, "THREADS": "4", "HEAD_TIMEOUT_S": "2"}, app=APP)
    try:
        running.start()
    except AssertionError as error:
        running.close()
        pytest.fail(str(error))
    yield running
    running.close()


@pytest.mark.timeout(30)
def test_the_plan_and_the_banner_name_the_worker(server):
    assert "Using worker: fitflix.serving.h1worker.FitflixWorker" in server.log()


@pytest.mark.timeout(30)
def test_pipelined_requests_are_answered_in_order_on_one_connection(server):
    requests = b"".join(b"GET /environ?n=%d HTTP/1.1\r\nHost: h\r\n\r\n" % index for index in range(20))
    with connect(server) as sock:
        sock.sendall(requests)
        buffer = bytearray()
        queries = [read_answer(sock, buffer).json()["QUERY_STRING"] for _ in range(20)]

    assert queries == [f"n={index}" for index in range(20)]


@pytest.mark.timeout(30)
def test_the_environ_is_what_gunicorn_gives(server):
    answer = exchange(
        server,
        b"POST /environ/a%20b?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nX-A: 1\r\nX-A: 2\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 0\r\nX-Forwarded-Proto: https\r\n\r\n",
    )
    environ = answer.json()

    assert environ == {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/environ/a b",
        "QUERY_STRING": "x=1",
        "RAW_URI": "/environ/a%20b?x=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(server.port),
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "0",
        "HTTP_HOST": "example.com:8080",
        "HTTP_X_A": "1,2",
        "wsgi.url_scheme": "https",  # 127.0.0.1 is in forwarded_allow_ips
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("piece", [1, 1000, 65536])
def test_a_large_upload_streams_to_the_app_as_it_reads(server, piece):
    body = bytes(range(256)) * 4096 * 4  # 4 MiB
    if piece == 1:
        body = body[:300_000]
    answer = exchange(server, b"POST /echo?piece=%d HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (piece, len(body)) + body)

    assert answer.status == 200
    assert answer.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(), "largest": piece}


@pytest.mark.timeout(60)
def test_a_chunked_upload_with_trailers_reaches_the_app_whole(server):
    pieces = [b"a" * 10, b"b" * 70_000, b"c\n" * 5]
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\nX-Sum: 1\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
        buffer = bytearray()
        first = read_answer(sock, buffer)
        sock.sendall(b"GET /environ HTTP/1.1\r\n\r\n")  # the connection goes on after the trailers
        second = read_answer(sock, buffer)

    whole = b"".join(pieces)
    assert first.json()["length"] == len(whole) and first.json()["sha256"] == hashlib.sha256(whole).hexdigest()
    assert second.status == 200


@pytest.mark.timeout(30)
def test_readline_reads_a_body_a_line_at_a_time(server):
    body = b"".join(b"line %d\n" % index for index in range(1000))
    answer = exchange(server, b"POST /echo?lines=1 HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    assert answer.json()["length"] == len(body) and answer.json()["largest"] == len(b"line 999\n")


@pytest.mark.timeout(30)
def test_expect_100_continue_gets_its_interim_answer_before_the_body_is_sent(server):
    with connect(server) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        answer = read_answer(sock, bytearray())

    assert answer.json()["length"] == 5


@pytest.mark.timeout(30)
def test_a_streamed_answer_without_a_length_is_chunked_on_1_1_and_closed_on_1_0(server):
    chunked = exchange(server, b"GET /stream?n=5 HTTP/1.1\r\n\r\n")
    with connect(server) as sock:
        sock.sendall(b"GET /stream?n=5 HTTP/1.0\r\n\r\n")
        old = read_answer(sock, bytearray())

    expected = b"".join(b"piece %d\n" % index for index in range(5))
    assert chunked.headers["transfer-encoding"] == "chunked" and chunked.body == expected
    assert "transfer-encoding" not in old.headers and old.body == expected
    assert old.headers["connection"] == "close" and old.head.startswith(b"HTTP/1.0 200")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("method", "path"), [("HEAD", "/status?code=200"), ("GET", "/status?code=204"), ("GET", "/status?code=304")]
)
def test_head_204_and_304_carry_no_body_and_the_connection_goes_on(server, method, path):
    with connect(server) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\n\r\nGET /environ HTTP/1.1\r\n\r\n".encode())
        buffer = bytearray()
        first = read_answer(sock, buffer, method)
        second = read_answer(sock, buffer)

    assert first.body == b"" and second.status == 200  # a body after the empty answer would be read here
    if path.endswith("204"):
        assert "content-length" not in first.headers
    else:
        assert first.headers["content-length"] == "4"


@pytest.mark.timeout(30)
def test_the_file_wrapper_sends_the_whole_file(server):
    answer = exchange(server, b"GET /file?kb=300 HTTP/1.1\r\n\r\n")

    assert answer.body == b"f" * 300 * 1024


@pytest.mark.timeout(30)
def test_connection_close_and_http_1_0_end_the_connection(server):
    for request in (b"GET /environ HTTP/1.1\r\nConnection: close\r\n\r\n", b"GET /environ HTTP/1.0\r\n\r\n"):
        with connect(server) as sock:
            sock.sendall(request)
            answer = read_answer(sock, bytearray())
            assert answer.headers["connection"] == "close"
            assert closed_by_server(sock)


@pytest.mark.timeout(30)
def test_http_1_0_keep_alive_is_kept(server):
    with connect(server) as sock:
        sock.sendall(b"GET /environ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        buffer = bytearray()
        first = read_answer(sock, buffer)
        sock.sendall(b"GET /environ HTTP/1.0\r\n\r\n")
        second = read_answer(sock, buffer)

    assert first.headers["connection"] == "keep-alive" and second.status == 200


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "smuggled",
    [
        b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /raise HTTP/1.1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4x\r\nabcd\r\n0\r\n\r\n",
        b"GET /environ HTTP/1.1\r\nX-A: 1\r\n b\r\n\r\n",
        b"GET /environ HTTP/1.1\nHost: h\n\n",
        b"GET /environ HTTP/1.1\r\nHost : h\r\n\r\n",
        b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
)
def test_request_smuggling_is_a_400_as_json_and_the_connection_closes(server, smuggled):
    with connect(server) as sock:
        sock.sendall(smuggled)
        answer = read_answer(sock, bytearray())
        assert closed_by_server(sock)

    assert answer.status == 400 and answer.headers["connection"] == "close"
    assert answer.json()["status"] == 400 and answer.headers["x-content-type-options"] == "nosniff"


@pytest.mark.timeout(30)
def test_a_response_header_that_would_split_the_answer_is_a_500(server):
    answer = exchange(server, b"GET /bad-header HTTP/1.1\r\n\r\n")

    assert answer.status == 500 and b"stolen" not in answer.head
    assert "the app failed" not in answer.body.decode() and answer.json()["status"] == 500


@pytest.mark.timeout(30)
def test_an_app_exception_is_a_json_500_and_the_worker_serves_on(server):
    pids = server.worker_pids()
    answer = exchange(server, b"GET /raise HTTP/1.1\r\n\r\n")

    assert answer.status == 500 and answer.json()["status"] == 500 and b"Traceback" not in answer.body
    assert exchange(server, b"GET /environ HTTP/1.1\r\n\r\n").status == 200
    assert server.worker_pids() == pids


@pytest.mark.timeout(30)
def test_a_body_the_app_left_unread_is_drained_and_the_connection_goes_on(server):
    with connect(server) as sock:
        sock.sendall(
            b"POST /unread HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000 + b"GET /environ HTTP/1.1\r\n\r\n"
        )
        buffer = bytearray()
        first = read_answer(sock, buffer)
        second = read_answer(sock, buffer)

    assert (first.status, second.status) == (200, 200)


@pytest.mark.timeout(30)
def test_a_body_that_stops_coming_is_a_408_at_head_timeout_and_holds_no_thread(server):
    stalled = []
    try:
        for _ in range(6):  # more than THREADS=4
            sock = connect(server)
            sock.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc")
            stalled.append(sock)
        started = time.monotonic()
        assert exchange(server, b"GET /health HTTP/1.1\r\n\r\n").status == 200
        assert time.monotonic() - started < 1.0
        answer = read_answer(stalled[0], bytearray())
        assert answer.status == 408 and "HEAD_TIMEOUT_S" in answer.json()["message"]
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.timeout(60)
def test_a_client_that_stalls_in_a_large_body_is_cut_after_head_timeout_and_the_worker_stays(server):
    pids = server.worker_pids()
    with connect(server) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 200_000)
        started = time.monotonic()
        poll_until(lambda: closed_by_server(sock), 10, "the server closes a connection whose body stalled")
        took = time.monotonic() - started

    assert 1.5 < took < 6  # HEAD_TIMEOUT_S=2 without progress
    assert exchange(server, b"GET /health HTTP/1.1\r\n\r\n").status == 200
    assert server.worker_pids() == pids


@pytest.mark.timeout(60)
def test_what_the_worker_does_not_speak_falls_back_to_gthread_and_says_so(live_server):
    """The PROXY protocol: FitFlix's worker reads plain HTTP/1 only, so gthread serves, said in the log."""
    server = live_server({**OWN}, extra_args=("--proxy-protocol", "auto"), app=APP)

    line = "serving with fitflix.serving.worker.HeadFirstWorker"
    poll_until(lambda: line in server.log(), 10, "the fallback's log line")
    assert "proxy_protocol=auto is on" in server.log()
    assert "Using worker: fitflix.serving.worker.HeadFirstWorker" in server.log()
    with connect(server) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\nGET /environ HTTP/1.1\r\nHost: h\r\n\r\n")
        answer = read_answer(sock, bytearray())
    assert answer.status == 200 and answer.json()["REMOTE_ADDR"] == "203.0.113.9"


@pytest.mark.timeout(60)
def test_script_name_from_the_environment_mounts_the_app_under_it_as_gunicorn_does(live_server):
    server = live_server({**OWN, "SCRIPT_NAME": "/app"}, app=APP, ready_path="/app/health")

    environ = exchange(server, b"GET /app/environ/x?q=1 HTTP/1.1\r\n\r\n").json()
    outside = exchange(server, b"GET /elsewhere HTTP/1.1\r\n\r\n")

    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"], environ["QUERY_STRING"]) == ("/app", "/environ/x", "q=1")
    assert outside.status == 400 and "SCRIPT_NAME" in outside.json()["message"]


@pytest.mark.timeout(60)
def test_every_request_thread_is_up_at_boot_and_serves_at_once(live_server):
    """THREADS=3: the worker starts its three request threads before it serves, and each takes a request."""
    server = live_server({**OWN, "THREADS": "3"}, app="harness.apps.leaky:app")
    worker = server.worker_pids()[0]
    # Its main thread, the three request threads, the recycler's timeout watch: nothing started later.
    assert len(os.listdir(f"/proc/{worker}/task")) == 5

    answers: list[dict] = []

    def sleep() -> None:
        with connect(server, timeout_s=20) as sock:
            sock.sendall(b"GET /sleep?ms=2000 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            answers.append(read_answer(sock, bytearray()).json())

    clients = [threading.Thread(target=sleep) for _ in range(3)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    # Each answer says how many other sleeps were in flight as it ended: 2 for the first, so 3 at once.
    assert len(answers) == 3 and max(answer["sleeping"] for answer in answers) == 2, answers
    assert {answer["pid"] for answer in answers} == {worker}
