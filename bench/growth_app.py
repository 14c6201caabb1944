"""The FitFlix app with part 17's known leaks in front: `/grow/*` leak, every other path is `wsgi:app`.

Each leak keeps what it makes for the life of the worker, in a module-level
container made at import (in the gunicorn master, before fork, as an app's own
caches are), and each request then sleeps `ms` so a leak goes at a pace
(tracing, from 90% of the threshold, then sees several requests):

- /grow/list?kb=K&n=N: N bytes of K KiB each appended to a list, at the line
  marked `leak: list`;
- /grow/cache?entries=E&chars=C: E str(uuid4()) keys, each to a C-character str
  (made at the line marked `leak: cache`), in a dict;
- /grow/native?mb=M: M MiB through C's malloc, touched with memset: no Python
  object holds it;
- /grow/fragment?objects=N&every=E: N small bytes at once, one pymalloc size
  class a request (rotating through 28 of them), keeping only every E-th: the
  pools the dropped ones used stay held by the few kept, and nothing else grows;
- /grow/library?items=N&chars=C: a JSON list of N C-character strings parsed
  with json.loads and kept: its strings are made inside the standard library
  (json/decoder.py), so tracemalloc's one frame is that line, not ours.

The bench finds each marked line in this file's source (bench/growth.py `marked_line`), never by number.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import time
import uuid
from collections.abc import Callable
from urllib.parse import parse_qs

from wsgi import app as service

KIB = 1024
MIB = 1024 * KIB
# Objects of 64-496 bytes: 28 pymalloc size classes (16-byte steps), all under its 512-byte limit.
FRAGMENT_CLASSES = 28
BYTES_HEADER = 33  # sys.getsizeof(b"") on 64-bit CPython

_kept_bytes: list[bytes] = []
_cache: dict[str, str] = {}
_native: list[int] = []
_scattered: list[bytes] = []
_parsed: list[list[str]] = []
_fragment_rounds = itertools.count()
_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]


def keep_bytes(kb: int, count: int) -> None:
    for _ in range(count):
        _kept_bytes.append(b"\x01" * (kb * KIB))  # leak: list


def cache_strings(entries: int, chars: int) -> None:
    for _ in range(entries):
        key = str(uuid.uuid4())
        _cache[key] = key * max(1, chars // len(key))  # leak: cache


def keep_native(mb: int) -> None:
    size = mb * MIB
    address = _libc.malloc(size)
    if not address:
        raise MemoryError(f"malloc({size}) failed")
    _libc.memset(address, 1, size)  # touched: resident, and private to this worker
    _native.append(address)


def scatter(objects: int, keep_every: int) -> None:
    size_class = next(_fragment_rounds) % FRAGMENT_CLASSES
    length = 16 * (size_class + 4) - BYTES_HEADER  # an object of exactly 16 * (size_class + 4) bytes
    fresh = [b"\x02" * length for _ in range(objects)]  # leak: fragment
    _scattered.extend(fresh[::keep_every])
    del fresh


def parse_strings(items: int, chars: int) -> None:
    text = json.dumps([f"{index:08d}" + "y" * chars for index in range(items)])
    _parsed.append(json.loads(text))  # the kept strings are made in json/decoder.py


LEAKS: dict[str, tuple[Callable[..., None], dict[str, int]]] = {
    "/grow/list": (keep_bytes, {"kb": 64, "n": 16}),
    "/grow/cache": (cache_strings, {"entries": 250, "chars": 4000}),
    "/grow/native": (keep_native, {"mb": 1}),
    "/grow/fragment": (scatter, {"objects": 30_000, "every": 64}),
    "/grow/library": (parse_strings, {"items": 1000, "chars": 1000}),
}


def _numbers(environ, defaults: dict[str, int]) -> list[int]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    return [int(query[name][0]) if name in query else default for name, default in defaults.items()]


def app(environ, start_response):
    leak = LEAKS.get(environ.get("PATH_INFO", ""))
    if leak is None:
        return service(environ, start_response)
    function, defaults = leak
    function(*_numbers(environ, defaults))
    time.sleep(_numbers(environ, {"ms": 0})[0] / 1000)
    body = json.dumps({"pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
