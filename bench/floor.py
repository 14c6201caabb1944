"""The floor of part 14: what the app alone costs, its WSGI callable called in a loop with no server.

`taskset -c 0 python -m bench.floor CALLS BATCHES PATH [PATH ...]` loads `bench.apps:app`, builds one
environ per path as a server would for wrk's request (GET, HTTP/1.1, a Host header and nothing else),
calls `app(environ, start_response)` CALLS times per batch after a warm-up, reading the whole body, and
prints one JSON line: per path, the status and the CPU (`time.process_time()`) per call of each batch, in us.
"""

from __future__ import annotations

import io
import json
import sys
import time

from werkzeug.test import EnvironBuilder

WARM_UP_CALLS = 200  # the first calls pay for lazy imports, route compilation and the health plan


def environ_for(path: str) -> dict:
    """The environ a server builds for `GET path` from wrk (whose only header is Host)."""
    builder = EnvironBuilder(path=path, base_url="http://127.0.0.1:8000", headers={"Host": "127.0.0.1:8000"})
    try:
        return builder.get_environ()
    finally:
        builder.close()


def call_cost_us(app, path: str, calls: int, batches: int) -> dict:
    """{"status": the last answer's status line, "per_call_us": [one figure per batch]}."""
    base = environ_for(path)
    statuses: list[str] = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    def call() -> None:
        environ = dict(base)  # a server builds a fresh environ per request; the app may write into it
        environ["wsgi.input"] = io.BytesIO(b"")
        body = app(environ, start_response)
        try:
            for _chunk in body:
                pass
        finally:
            if hasattr(body, "close"):
                body.close()

    for _ in range(WARM_UP_CALLS):
        call()
    per_call_us = []
    for _ in range(batches):
        started_s = time.process_time()
        for _ in range(calls):
            call()
        per_call_us.append((time.process_time() - started_s) / calls * 1e6)
    return {"status": statuses[-1], "per_call_us": per_call_us}


def main(argv: list[str]) -> int:
    calls, batches, *paths = argv
    from bench.apps import app  # after the arguments: a usage error costs no app import

    figures = {path: call_cost_us(app, path, int(calls), int(batches)) for path in paths}
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
