"""A bounded load generator for 127.0.0.1: a fixed number of requests, a time limit, then it stops."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoadResult:
    statuses: Counter = field(default_factory=Counter)  # HTTP status, or the exception's class name
    latencies_s: list[float] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    unsent: int = 0  # requests not sent because the time limit came first

    @property
    def failed(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != 200)


def run_load(
    port: int,
    path: str,
    requests: int,
    clients: int,
    time_limit_s: float,
    keep_alive: bool = True,
    keep_bodies: bool = False,
) -> LoadResult:
    """Send `requests` GETs from `clients` threads to 127.0.0.1:`port`, stopping at `time_limit_s` regardless."""
    result = LoadResult()
    lock = threading.Lock()
    remaining = [requests]
    deadline = time.monotonic() + time_limit_s

    def take() -> bool:
        with lock:
            if remaining[0] <= 0 or time.monotonic() > deadline:
                return False
            remaining[0] -= 1
            return True

    def client() -> None:
        connection = None
        while take():
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            started = time.monotonic()
            try:
                connection.request("GET", path, headers={} if keep_alive else {"Connection": "close"})
                response = connection.getresponse()
                body = response.read()
                status: object = response.status
                if response.will_close or not keep_alive:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as error:
                status, body = type(error).__name__, b""
                connection.close()
                connection = None
            elapsed = time.monotonic() - started
            with lock:
                result.statuses[status] += 1
                result.latencies_s.append(elapsed)
                if keep_bodies:
                    result.bodies.append(body)
        if connection is not None:
            connection.close()

    threads = [threading.Thread(target=client, name=f"load-client-{index}") for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(time_limit_s + 60)
    result.unsent = remaining[0]
    return result


def run_load_processes(
    port: int,
    path: str,
    requests: int,
    processes: int,
    clients_per_process: int,
    time_limit_s: float,
    keep_alive: bool = True,
) -> list:
    """Start `processes` separate client processes (so the test's own GIL is not the bottleneck).

    Use it as `with load_processes(...) as clients:`, so a test that fails before `collect` leaves no
    client running and no pipe open (an unclosed pipe's ResourceWarning fails a later test).
    """
    command = [
        sys.executable,
        "-m",
        "harness.load",
        str(port),
        path,
        str(requests // processes),
        str(clients_per_process),
        str(time_limit_s),
        "1" if keep_alive else "0",
    ]
    return [
        subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]


@contextmanager
def load_processes(*args, **options) -> Iterator[list]:
    """`run_load_processes`, and on the way out every client still running is ended (by its pid) and reaped."""
    popens = run_load_processes(*args, **options)
    try:
        yield popens
    finally:
        for popen in popens:
            if popen.poll() is None:
                popen.kill()
            popen.communicate()


def collect(popens: list, timeout_s: float) -> LoadResult:
    """Wait for the client processes and merge what they saw."""
    merged = LoadResult()
    for popen in popens:
        out, _err = popen.communicate(timeout=timeout_s)
        part = json.loads(out)
        for status, count in part["statuses"].items():
            merged.statuses[int(status) if status.isdigit() else status] += count
        merged.latencies_s.extend(part["latencies_s"])
        merged.unsent += part["unsent"]
    return merged


if __name__ == "__main__":
    port, path, requests, clients, time_limit_s, keep_alive = sys.argv[1:7]
    outcome = run_load(int(port), path, int(requests), int(clients), float(time_limit_s), keep_alive == "1")
    json.dump(
        {
            "statuses": {str(k): v for k, v in outcome.statuses.items()},
            "latencies_s": outcome.latencies_s,
            "unsent": outcome.unsent,
        },
        sys.stdout,
    )
