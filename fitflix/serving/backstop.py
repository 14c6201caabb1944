"""The worker's backstop against one request that allocates without bound.

A data-segment rlimit (RLIMIT_DATA, set after fork) makes such an allocation
fail at once with MemoryError inside that request, instead of growing the
container into the kernel's OOM killer. Thread stacks count as data too (8 MiB
each by default): `start_pool_threads` starts every request thread before the
limit is measured, so their stacks are inside it rather than room left beside
it (room for 32 unstarted stacks let one request grow 256 MiB past the cap). Whoever catches the MemoryError (the
Flask error handler, or `guard_wsgi` around any other WSGI app) calls
`trip()`; the worker's post_request hook then recycles the worker.
"""

from __future__ import annotations

import gc
import resource
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor

from fitflix.errors import error_body
from fitflix.memory.heap import malloc_trim

_tripped = threading.Event()
_here = threading.local()  # `tripped` in the thread whose request tripped it

OUT_OF_MEMORY_MESSAGE = "This request needed more memory than a worker may use; the worker is being replaced."
OUT_OF_MEMORY_BODY = error_body(503, "Service Unavailable", OUT_OF_MEMORY_MESSAGE)
OUT_OF_MEMORY_STATUS = "503 Service Unavailable"
OUT_OF_MEMORY_HEADERS = [
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(OUT_OF_MEMORY_BODY))),
    ("Retry-After", "1"),
    ("Cache-Control", "no-store"),
]


def trip() -> None:
    """Note the failed allocation and hand back what the request left behind."""
    _tripped.set()
    _here.tripped = True
    gc.collect()
    malloc_trim()


def tripped() -> bool:
    return _tripped.is_set()


def forget_here() -> None:
    """A new request in this thread: what an earlier one tripped is not its doing."""
    _here.tripped = False


def tripped_here() -> bool:
    """Whether `trip()` ran in this thread since its last `forget_here()`."""
    return getattr(_here, "tripped", False)


def start_pool_threads(executor: Executor, count: int, timeout_s: float = 5.0) -> int:
    """Make `executor` start `count` threads now; return how many distinct threads ran (at most `count`).

    A ThreadPoolExecutor starts a thread per submit while none is idle: tasks
    that wait for each other at a barrier keep every thread busy until all
    `count` exist. Should the barrier break (a pool smaller than asked), the
    caller leaves room for the threads that did not start.
    """
    barrier = threading.Barrier(count + 1, timeout=timeout_s)
    started: set[int] = set()

    def wait_for_the_others() -> None:
        started.add(threading.get_ident())
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass

    tasks = [executor.submit(wait_for_the_others) for _ in range(count)]
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for task in tasks:
        task.result(timeout=timeout_s * 2)
    return len(started)


def set_data_limit(limit_bytes: int) -> None:
    """Cap this process's data segment (soft limit only: the hard limit stays as it was)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, hard))


def _trip_on_memory_error(_sender, exception: BaseException | None = None, **_extra) -> None:
    if isinstance(exception, MemoryError):
        trip()


def _trip_on_django_memory_error(sender=None, **_extra) -> None:
    # Django sends no exception (django/core/handlers/exception.py, response_for_exception): the
    # signal is sent inside its `except`, so the exception is this thread's current one.
    if isinstance(sys.exc_info()[1], MemoryError):
        trip()


def watch_framework_errors() -> list[str]:
    """Trip on a MemoryError a framework turns into its own 500 page; return the frameworks watched.

    Flask and Django both answer an unhandled exception with a 500 before
    `guard_wsgi` can see it: an app without `fitflix.init_app` (whose handler
    trips) would keep a worker that just ran out of its data limit. Both send
    `got_request_exception` for exactly those. Only a framework the app has
    imported is watched: a Django service never loads Flask for this, nor the
    other way round. Strong references, since this runs once per worker.
    """
    watched = []
    if "flask" in sys.modules:
        from flask import got_request_exception

        got_request_exception.connect(_trip_on_memory_error, weak=False)
        watched.append("flask")
    if "django" in sys.modules:
        from django.core.signals import got_request_exception as django_request_exception

        django_request_exception.connect(
            _trip_on_django_memory_error, weak=False, dispatch_uid="fitflix.serving.backstop"
        )
        watched.append("django")
    return watched


def guard_wsgi(app: Callable) -> Callable:
    """Wrap a WSGI app so a MemoryError becomes a JSON 503 and trips the backstop."""

    def guarded(environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            return app(environ, start_response)
        except MemoryError:
            trip()
            start_response(OUT_OF_MEMORY_STATUS, OUT_OF_MEMORY_HEADERS, sys.exc_info())
            return [OUT_OF_MEMORY_BODY]

    return guarded
