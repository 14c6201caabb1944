"""A small WSGI app of the tests' own that leaks on purpose.

GET /leak?mb=N keeps N MiB (touched, so resident) for the life of the worker
(and with &ms=M takes M ms more, so a test can leak at a pace);
GET /native?mb=N does the same with C's malloc, which no Python figure sees;
GET /objects?n=N keeps N small dicts (about 1 MB per 3,000: the shape pymalloc never hands back
before the process exits); GET /thread_cache?n=N keeps them in a cache of the serving thread's own;
GET /spike?mb=N allocates N MiB at once and drops it; GET /sleep?ms=N waits;
GET /health (and /pid) answers 200 so the live-server fixture can see it is up. Every
answer says which pid gave it, what it keeps and how many sleeps are in flight.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
import time
from urllib.parse import parse_qs

MIB = 1024 * 1024
_kept: list[bytearray] = []
_native_kept: list[int] = []
_objects_kept: list[list[dict]] = []
_per_thread = threading.local()
_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
_sleeping = [0]
_sleeping_lock = threading.Lock()


def _number(environ, name: str, default: int) -> int:
    values = parse_qs(environ.get("QUERY_STRING", "")).get(name)
    return int(values[0]) if values else default


def _touched(megabytes: int) -> bytearray:
    block = bytearray(megabytes * MIB)  # the leak's line: a report of what grew names it
    block[::4096] = b"x" * (len(block) // 4096)  # one write per page: resident, not just reserved
    return block


def _workouts(count: int) -> list[dict]:
    """Small objects, as an app's cache of rows would keep them: about 330 bytes each."""
    return [{"id": i, "title": f"workout {i}", "tags": ["hiit", "core"]} for i in range(count)]


def leak_site() -> str:
    """ "harness/apps/leaky.py:N", N the line that allocates each kept block: what a report of what grew names."""
    import inspect

    source, first = inspect.getsourcelines(_touched)
    offset = next(index for index, text in enumerate(source) if "bytearray(megabytes" in text)
    return f"harness/apps/leaky.py:{first + offset}"


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/leak":
        _kept.append(_touched(_number(environ, "mb", 2)))
        time.sleep(_number(environ, "ms", 0) / 1000)
    elif path == "/native":
        size = _number(environ, "mb", 2) * MIB
        address = _libc.malloc(size)
        _libc.memset(address, 1, size)  # touched: resident, and private to this worker
        _native_kept.append(address)
        time.sleep(_number(environ, "ms", 0) / 1000)
    elif path == "/objects":
        _objects_kept.append(_workouts(_number(environ, "n", 3000)))
        time.sleep(_number(environ, "ms", 0) / 1000)
    elif path == "/thread_cache":
        cache = getattr(_per_thread, "cache", None)
        if cache is None:
            cache = _per_thread.cache = []
        cache.append(_workouts(_number(environ, "n", 3000)))
        time.sleep(_number(environ, "ms", 0) / 1000)
    elif path == "/spike":
        block = _touched(_number(environ, "mb", 700))
        del block
    elif path == "/sleep":
        with _sleeping_lock:
            _sleeping[0] += 1
        try:
            time.sleep(_number(environ, "ms", 50) / 1000)
        finally:
            with _sleeping_lock:
                _sleeping[0] -= 1
    elif path not in ("/health", "/pid"):
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error": "Not Found"}']
    kept_mb = sum(len(block) for block in _kept) // MIB
    body = json.dumps({"pid": os.getpid(), "kept_mb": kept_mb, "sleeping": _sleeping[0]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
