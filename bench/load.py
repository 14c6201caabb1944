"""Load generators, every one bounded in request count and in time, aimed at 127.0.0.1 only.

- `run_clients`: Python threads with http.client and keep-alive; one `Sample`
  per request (status, latency, the answering pid), for the parts that need
  per-request detail (leak, spike, recycle).
- `throughput`: wrk when it is installed (installed with apt-get on first use
  if possible) for the ratio comparisons, so the client is not the
  bottleneck; else Python client processes, and the result says which.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import math
import multiprocessing
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("bench")

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Sample:
    start_s: float  # time.monotonic() when the request was sent
    end_s: float  # when the response was read, or the error seen
    status: int | None  # None: no HTTP response at all
    error: str | None  # exception name when status is None
    reused: bool  # sent on a keep-alive connection that had carried an earlier request
    pid: int | None  # the answering worker, when the body says

    @property
    def latency_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 400


def run_clients(
    port: int,
    path: str | Callable[[int], str],
    total: int,
    clients: int,
    time_limit_s: float,
    pace_s: float = 0.0,
    timeout_s: float = 30.0,
    read_pid: bool = False,
    stop: threading.Event | None = None,
    retry_pause_s: float = 0.0,
) -> list[Sample]:
    """`clients` threads share `total` requests; each stops at the count, the time limit or `stop`.

    `retry_pause_s`: after a request that got no HTTP answer, that client waits this long, as a real
    client would; a server whose listener is gone (granian replacing its worker) then costs a failure
    each pause, not thousands a second that would spend the count bound in a moment.
    """
    path_for = path if callable(path) else (lambda _index: path)
    counter = itertools.count()
    counter_lock = threading.Lock()
    deadline = time.monotonic() + time_limit_s
    results: list[list[Sample]] = [[] for _ in range(clients)]

    def client(slot: int) -> None:
        connection: http.client.HTTPConnection | None = None
        used = False
        samples = results[slot]
        while True:
            with counter_lock:
                index = next(counter)
            if index >= total or time.monotonic() > deadline or (stop is not None and stop.is_set()):
                break
            if connection is None:
                connection, used = http.client.HTTPConnection(HOST, port, timeout=timeout_s), False
            reused = used and connection.sock is not None
            started = time.monotonic()
            try:
                connection.request("GET", path_for(index))
                response = connection.getresponse()
                body = response.read()
                status, error = response.status, None
                used = True
                if response.will_close:
                    connection.close()
                    used = False
            except (OSError, http.client.HTTPException) as exc:
                status, error, body = None, type(exc).__name__, b""
                connection.close()
                connection = None
            pid = _pid_of(body) if read_pid and status == 200 else None
            samples.append(Sample(started, time.monotonic(), status, error, reused, pid))
            if status is None and retry_pause_s:
                (stop or threading.Event()).wait(retry_pause_s)  # a client's pause, not a wait for a state
            if pace_s:
                time.sleep(pace_s)  # light load: a pause between one client's requests
        if connection is not None:
            connection.close()

    threads = [threading.Thread(target=client, args=(slot,), daemon=True) for slot in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(time_limit_s + timeout_s + 5)
    return sorted((sample for samples in results for sample in samples), key=lambda sample: sample.end_s)


def _pid_of(body: bytes) -> int | None:
    try:
        return int(json.loads(body)["pid"])
    except (ValueError, KeyError, TypeError):
        return None


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --- throughput -----------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    requests: int
    duration_s: float
    errors: int  # socket errors, timeouts and HTTP statuses >= 400
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    tool: str
    detail: dict = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


# Counts responses per wrk thread and stops the thread at its share of the
# request count; wrk's -d bounds the time. done() prints one JSON line.
WRK_SCRIPT = r"""
local count = 0
local limit = 0
function init(args)
  limit = tonumber(args[1]) or 0
end
function response(status, headers, body)
  count = count + 1
  if limit > 0 and count >= limit then
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0), latency.max))
end
"""

_wrk_state: dict[str, str | None] = {}


def wrk_path() -> str | None:
    """wrk's path; installs it from Debian once if it is missing and this is root; None when unavailable."""
    if "path" in _wrk_state:
        return _wrk_state["path"]
    path = shutil.which("wrk")
    if path is None and shutil.which("apt-get"):
        log.info("wrk is not installed: trying apt-get install -y wrk (falls back to the Python client)")
        try:
            subprocess.run(["apt-get", "install", "-y", "wrk"], capture_output=True, timeout=180, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass
        path = shutil.which("wrk")
    _wrk_state["path"] = path
    return path


def throughput(
    port: int,
    path: str,
    connections: int,
    duration_s: float,
    max_requests: int,
    threads: int = 1,
    timeout_s: float = 10.0,
    python_only: bool = False,
) -> Throughput:
    """Closed-loop load: `connections` keep-alive clients for `duration_s` or `max_requests`, whichever first.

    The rate is right only when the time bound ends the run (a wrk run stopped by
    its count still reports its whole -d): for a rate, pass a `max_requests` the
    duration cannot reach; it is then only a safety bound.
    """
    wrk = None if python_only else wrk_path()
    if wrk is not None:
        return _wrk_throughput(wrk, port, path, connections, duration_s, max_requests, threads, timeout_s)
    return _python_throughput(port, path, connections, duration_s, max_requests, timeout_s)


def requests_until(
    port: int, path: str, total: int, connections: int, time_limit_s: float, chunk_s: float = 2.0
) -> Throughput:
    """Send about `total` requests (no rate figure): wrk in short chunks, since a wrk run
    stopped early by its count still lasts its whole -d."""
    sent = errors = 0
    started = time.monotonic()
    deadline = started + time_limit_s
    tool = "python"
    while sent < total and time.monotonic() < deadline:
        chunk = throughput(port, path, connections, min(chunk_s, max(1.0, deadline - time.monotonic())), total - sent)
        sent, errors, tool = sent + chunk.requests, errors + chunk.errors, chunk.tool
    return Throughput(sent, time.monotonic() - started, errors, None, None, None, tool)


def _wrk_throughput(wrk, port, path, connections, duration_s, max_requests, threads, timeout_s) -> Throughput:
    threads = max(1, min(threads, connections))
    per_thread = max(1, math.ceil(max_requests / threads))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        command = [
            wrk,
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(duration_s))}s",
            "--timeout",
            f"{max(1, round(timeout_s))}s",
            "-s",
            script.name,
            f"http://{HOST}:{port}{path}",
            "--",
            str(per_thread),
        ]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((text for text in completed.stdout.splitlines() if text.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(
            f"wrk printed no result (exit {completed.returncode}): {completed.stdout}\n{completed.stderr}"
        )
    figures = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(figures[key] for key in ("connect", "read", "write", "status", "timeout"))
    return Throughput(
        requests=figures["requests"],
        duration_s=figures["duration_us"] / 1e6,
        errors=errors,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
        tool="wrk",
        detail=figures,
    )


def _python_worker(args) -> tuple[int, float, int, list[float]]:
    port, path, clients, duration_s, max_requests, timeout_s = args
    started = time.monotonic()
    samples = run_clients(port, path, max_requests, clients, duration_s, timeout_s=timeout_s)
    elapsed = time.monotonic() - started
    ok = [sample for sample in samples if sample.ok]
    return len(ok), elapsed, len(samples) - len(ok), [sample.latency_s for sample in ok]


def _python_throughput(port, path, connections, duration_s, max_requests, timeout_s) -> Throughput:
    # Processes, not just threads, so one GIL does not cap the client.
    processes = max(1, min(connections, multiprocessing.cpu_count()))
    shares = [connections // processes + (1 if index < connections % processes else 0) for index in range(processes)]
    jobs = [
        (port, path, share, duration_s, math.ceil(max_requests / processes), timeout_s) for share in shares if share
    ]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        parts = pool.map(_python_worker, jobs)
    latencies = [latency for part in parts for latency in part[3]]
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    return Throughput(
        requests=sum(part[0] for part in parts),
        duration_s=max(part[1] for part in parts),
        errors=sum(part[2] for part in parts),
        p50_ms=p50 * 1000 if p50 is not None else None,
        p99_ms=p99 * 1000 if p99 is not None else None,
        max_ms=max(latencies) * 1000 if latencies else None,
        tool=f"python ({len(jobs)} processes)",
    )
