"""SIGTERM drains: /health/ready fails at once, the service serves on for DRAIN_S, the listen backlog is served.

Real signals to real gunicorn; the kernel's listen queue read from /proc/net/tcp."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading

import pytest

from harness.wait import poll_until


def ready(server, accept: str = "application/json") -> tuple[int, dict]:
    status, _headers, body = server.request("GET", "/health/ready", headers={"Accept": accept}, timeout_s=5)
    return status, json.loads(body)


def health_ok(server) -> bool:
    try:
        return server.request("GET", "/health", timeout_s=5)[0] == 200
    except OSError:
        return False


def test_sigterm_fails_readiness_at_once_and_serves_through_the_drain(live_server):
    server = live_server({"DRAIN_S": "3"})
    assert ready(server) == (200, {"status": "READY"})

    server.process.send_signal(signal.SIGTERM)

    poll_until(lambda: ready(server)[0] == 503, 2, "/health/ready answering 503")
    assert ready(server) == (503, {"status": "NOT_READY", "reason": "draining"})
    status, document = ready(server, "application/health+json")
    assert status == 503 and document["status"] == "fail" and document["output"] == "draining"
    server.process.send_signal(signal.SIGTERM)  # a second one changes nothing
    assert health_ok(server)  # still serving
    assert server.process.wait(timeout=30) == 0
    log = server.log()
    assert "Draining: /health/ready answers 503" in log and "Already draining" in log


@pytest.mark.parametrize("fast", [signal.SIGINT, signal.SIGQUIT])
def test_sigint_and_sigquit_stay_fast_whatever_the_drain(live_server, fast):
    server = live_server({"DRAIN_S": "20"})
    server.process.send_signal(fast)
    assert server.process.wait(timeout=10) == 0  # far less than the 20 s drain
    assert "Draining" not in server.log()


def tcp_rx_queue(local_port: int, remote_port: int = 0, state: str = "01") -> int | None:
    """rx_queue of a 127.0.0.1 socket in /proc/net/tcp: unread bytes, or for a listener (state 0A) the accept queue."""
    local, remote = f"0100007F:{local_port:04X}", f"{'0100007F' if remote_port else '00000000'}:{remote_port:04X}"
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote and fields[3] == state:
                return int(fields[4].split(":")[1], 16)
    return None


def listen_queue(port: int) -> int:
    """Connections the kernel holds for the listening socket on 127.0.0.1:`port`, not yet accepted."""
    return tcp_rx_queue(port, state="0A") or 0


def get_health(port: int, results: list, index: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/health")
        results[index] = connection.getresponse().status
    except (OSError, http.client.HTTPException) as error:
        results[index] = type(error).__name__
    finally:
        connection.close()


@pytest.mark.parametrize("worker", ["fitflix", "gthread"])
def test_connections_waiting_in_the_listen_backlog_at_the_stop_are_served(live_server, worker):
    # Two connections per worker, each holding it: the worker is full, and the next connections wait in the
    # listen queue. gthread: both send a head they have not finished (a head on its way is not idle, so it is
    # not cut). FitFlix's own worker lets the oldest unfinished head give way at the cap (a slowloris must not
    # fill it): there, both are requests in flight (a 3 s sleep in the app).
    server = live_server(
        {"DRAIN_S": "0", "HEAD_TIMEOUT_S": "60", "WORKER": worker},
        app="harness.apps.service_with_leaks:app",
        extra_args=("--worker-connections", "2"),
    )
    started = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\n" if worker == "gthread" else b"GET /sleep?ms=3000 HTTP/1.1\r\n\r\n"
        )
        client_port = sock.getsockname()[1]
        # Read by the worker (the server side holds no unread byte): a head on its way, or a request in flight.
        poll_until(lambda port=client_port: tcp_rx_queue(server.port, port) == 0, 10, "the worker reading the head")
        started.append(sock)
    results: list = [None] * 5
    queued = [threading.Thread(target=get_health, args=(server.port, results, index)) for index in range(5)]
    for client in queued:
        client.start()
    poll_until(lambda: listen_queue(server.port) == 5, 10, "five connections in the listen queue")

    server.process.send_signal(signal.SIGTERM)
    for client in queued:
        client.join(30)
    for sock in started:  # the two heads end now (or the sleeps end): they are served too
        if worker == "gthread":
            sock.sendall(b"\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 "), (results, server.log())
        sock.close()

    assert results == [200] * 5, server.log()  # gthread: the queued ones are reset when the listener closes
    assert server.process.wait(timeout=30) == 0
