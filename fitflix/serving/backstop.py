"""The worker's backstop against one request that allocates without bound.

A data-segment rlimit (RLIMIT_DATA, set after fork) makes such an allocation
fail at once with MemoryError inside that request, instead of growing the
container into the kernel's OOM killer. Whoever catches the MemoryError (the
Flask error handler, or `guard_wsgi` around any other WSGI app) calls
`trip()`; the worker's post_request hook then recycles the worker.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import threading
from collections.abc import Callable, Iterable

from fitflix.memory.heap import malloc_trim

_tripped = threading.Event()

OUT_OF_MEMORY_MESSAGE = "This request needed more memory than a worker may use; the worker is being replaced."
OUT_OF_MEMORY_BODY = json.dumps(
    {"error": "Service Unavailable", "status": 503, "message": OUT_OF_MEMORY_MESSAGE}
).encode()


def trip() -> None:
    """Note the failed allocation and hand back what the request left behind."""
    _tripped.set()
    gc.collect()
    malloc_trim()


def tripped() -> bool:
    return _tripped.is_set()


def set_data_limit(limit_bytes: int) -> None:
    """Cap this process's data segment (soft limit only: the hard limit stays as it was)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, hard))


def guard_wsgi(app: Callable) -> Callable:
    """Wrap a WSGI app so a MemoryError becomes a JSON 503 and trips the backstop."""

    def guarded(environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            return app(environ, start_response)
        except MemoryError:
            trip()
            start_response(
                "503 Service Unavailable",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(OUT_OF_MEMORY_BODY))),
                    ("Retry-After", "1"),
                    ("Cache-Control", "no-store"),
                ],
                sys.exc_info(),
            )
            return [OUT_OF_MEMORY_BODY]

    return guarded
