"""The reliability suite: real gunicorn with gunicorn.conf.py in a real 512 MB cgroup.

Clients run in separate processes on 127.0.0.1; every load is bounded in
count and time. Figures are printed (run with -s to see them); assertions
are on behaviour, never on speed.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.load import collect, load_processes
from harness.wait import poll_until

pytestmark = [pytest.mark.cgroup, pytest.mark.reliability]

LEAKY = "harness.apps.leaky:app"


def test_sustained_load_fails_nothing_and_usage_stays_flat(live_server, memory_cgroup):
    cgroup = memory_cgroup(512)
    server = live_server(cgroup=cgroup)
    samples: list[tuple[float, int]] = []
    with load_processes(
        server.port, "/health/memory", requests=2_000_000, processes=2, clients_per_process=16, time_limit_s=60
    ) as clients:
        started = time.monotonic()
        while any(client.poll() is None for client in clients) and time.monotonic() - started < 90:
            samples.append((time.monotonic() - started, cgroup.working_set_bytes()))
            try:
                clients[0].wait(timeout=1)  # the load runs; sample the cgroup once a second meanwhile
            except subprocess.TimeoutExpired:
                pass
        result = collect(clients, timeout_s=60)

    warm = [usage for at, usage in samples if 10 <= at < 20]
    late = [usage for at, usage in samples if at >= 50]
    growth = statistics.median(late) / statistics.median(warm) - 1
    print(
        f"\nsustained: {sum(result.statuses.values())} requests, {result.failed} failed, "
        f"working set {statistics.median(warm) / 2**20:.1f} -> {statistics.median(late) / 2**20:.1f} MiB "
        f"({growth:+.1%}), p99 {statistics.quantiles(result.latencies_s, n=100)[98] * 1000:.1f} ms"
    )
    assert result.failed == 0, result.statuses
    assert cgroup.oom_kills() == 0
    assert growth < 0.05


def test_kill_9_of_a_worker_under_load_costs_at_most_its_in_flight_requests(live_server, memory_cgroup):
    server = live_server(cgroup=memory_cgroup(512))
    clients = 16

    def answers_from_a_new_worker() -> bool:
        try:
            return server.request("GET", "/health", timeout_s=1)[0] == 200 and victim not in server.worker_pids()
        except OSError:
            return False

    with load_processes(server.port, "/health", 20_000, processes=2, clients_per_process=8, time_limit_s=30) as load:
        poll_until(lambda: server.log().count('"GET /health') > 500, 10, "the load under way")
        [victim] = server.worker_pids()
        os.kill(victim, signal.SIGKILL)  # a worker of the server this test started
        killed_at = time.monotonic()
        poll_until(answers_from_a_new_worker, 5, "an answer from the replacement")
        recovery_s = time.monotonic() - killed_at
        result = collect(load, timeout_s=60)
    print(
        f"\nkill -9: answered again after {recovery_s * 1000:.0f} ms; {result.failed} of "
        f"{sum(result.statuses.values())} requests failed ({dict(result.statuses)})"
    )
    assert recovery_s < 1.0
    # Each keep-alive connection had at most one request in flight on the killed worker.
    assert result.failed <= clients


def test_a_request_hanging_past_timeout_replaces_the_worker_and_health_keeps_answering(live_server, memory_cgroup):
    server = live_server({"WORKER_TIMEOUT_S": "2"}, app=LEAKY, cgroup=memory_cgroup(512))
    [stuck_worker] = server.worker_pids()
    hanging = threading.Thread(target=lambda: _request_quietly(server, "/sleep?ms=30000"))
    hanging.start()
    worst_s = 0.0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:  # poll /health throughout the timeout and the replacement
        started = time.monotonic()
        assert server.request("GET", "/health", timeout_s=5)[0] == 200
        worst_s = max(worst_s, time.monotonic() - started)
    hanging.join(40)
    print(f"\nhang: worst /health latency {worst_s * 1000:.1f} ms while the worker was replaced")
    assert stuck_worker not in server.worker_pids()
    assert "reason=timeout" in server.log()
    assert worst_s < 1.0


def test_with_one_thread_a_hung_request_replaces_the_worker_and_what_waited_behind_it_is_answered(
    live_server, memory_cgroup
):
    """THREADS=1: the only thread hangs, and the /health asked meanwhile waits behind it in the worker. Once the
    request is past the timeout the worker is replaced and ends; what waited must be answered, not cut."""
    server = live_server({"WORKER_TIMEOUT_S": "2", "THREADS": "1"}, app=LEAKY, cgroup=memory_cgroup(512))
    [stuck_worker] = server.worker_pids()
    hanging = threading.Thread(target=lambda: _request_quietly(server, "/sleep?ms=30000"))
    hanging.start()
    poll_until(lambda: _accepted_connections(server.port) >= 1, 5, "the hanging request accepted")
    statuses: list = []
    waiting = [threading.Thread(target=lambda: statuses.append(_request_quietly(server, "/health"))) for _ in range(3)]
    for request in waiting:
        request.start()
    for request in waiting:
        request.join(25)  # under the 30 s graceful timeout, after which the old exit cut them
    print(f"\none thread, hung: /health behind it answered {statuses}")
    assert statuses == [200] * 3
    # Well before the 30 s graceful timeout: nothing is left for it to wait for but the stuck request.
    poll_until(lambda: stuck_worker not in server.worker_pids(), 10, "the stuck worker to end")
    assert "reason=timeout" in server.log()
    hanging.join(40)


def test_sigterm_lets_in_flight_requests_finish_within_graceful_timeout(live_server, memory_cgroup):
    server = live_server(app=LEAKY, cgroup=memory_cgroup(512))
    statuses: list = []
    requests = [
        threading.Thread(target=lambda: statuses.append(_request_quietly(server, "/sleep?ms=2000"))) for _ in range(6)
    ]
    for request in requests:
        request.start()
    poll_until(lambda: _accepted_connections(server.port) >= 6, 5, "six requests accepted")
    stopped_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=40)
    exit_s = time.monotonic() - stopped_at
    for request in requests:
        request.join(10)
    print(f"\nSIGTERM: master exited after {exit_s:.2f} s; in-flight answers {statuses}")
    assert statuses == [200] * 6
    assert server.process.returncode == 0
    assert exit_s < 25  # graceful_timeout


def _accepted_connections(port: int) -> int:
    """Connections the server has accepted, from /proc/net/tcp: established, local port ours, and an
    inode (a connection still in the accept queue has none yet)."""
    established = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "01" and fields[9] != "0":
                established += 1
    return established


def _request_quietly(server, path: str):
    try:
        return server.request("GET", path, timeout_s=40)[0]
    except OSError as error:
        return type(error).__name__


BAD_REQUEST_LINES = [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /health HTTP/9.9\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32) + b"\r\n\r\n",  # a TLS hello on plain HTTP
    b"GET /health\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
]


def _raw_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture
def fuzz_target(live_server, memory_cgroup):
    """One server for the whole fuzz test, in a 512 MB cgroup."""
    return live_server(cgroup=memory_cgroup(512))


def test_malformed_http_gets_4xx_and_no_worker_dies(fuzz_target):
    server = fuzz_target
    workers = server.worker_pids()
    for payload in BAD_REQUEST_LINES:
        answer = _raw_exchange(server.port, payload)
        status_line = answer.split(b"\r\n", 1)[0]
        assert not status_line.startswith(b"HTTP/1.1 5"), (payload[:60], status_line)
    assert server.worker_pids() == workers
    assert server.request("GET", "/health")[0] == 200


_header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"]),
    path=st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#?"), max_size=80),
    header=_header_values,
)
def test_fuzzed_requests_get_json_answers_and_never_a_5xx(fuzz_target, method, path, header):
    server = fuzz_target
    status, headers, body = server.request(method, "/" + path, headers={"X-Fuzz": header, "Accept": header})
    assert status < 500, (method, path, status, body[:200])
    if method == "HEAD":
        return
    media = headers.get("Content-Type", "").split(";")[0]
    if path == "metrics" and status == 200:  # Prometheus' text format, as the OpenAPI document says
        assert media == "text/plain", (method, path, status, headers)
    elif media in ("text/html", "application/health+json"):  # the health pages, only when Accept asks for them
        assert path.startswith("health") and media.split("/")[1] in header, (method, path, status, headers)
    else:
        assert media == "application/json", (method, path, status, headers)
