"""fitflix.serving.h1worker without a socket: start_response's checks, and the answer's head.

The worker on the wire (keep-alive, pipelining, bodies, hostile clients) is in tests/live/test_own_worker.py
and tests/live/test_hostile_clients.py.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from fitflix.serving import h1worker as h1worker_module
from fitflix.serving.h1 import HeadRules, parse_all
from fitflix.serving.h1worker import _LINES, BOOT_THREADS, FitflixWorker, Response
from harness.wait import poll_until


class Worker:
    io_timeout_s = 1.0

    def date_lines(self) -> str:
        return "Server: gunicorn\r\nDate: Mon, 07 Dec 2026 00:00:00 GMT\r\n"


def response(request_bytes: bytes = b"GET / HTTP/1.1\r\n\r\n", must_close: bool = False) -> Response:
    [request] = parse_all(request_bytes, HeadRules())
    return Response(Worker(), None, request, must_close)


@pytest.mark.parametrize(
    "header",
    [
        ("X-Split", "a\r\nSet-Cookie: stolen=1"),
        ("X-Split", "a\nb"),
        ("X-Split", "a\rb"),
        ("X-Nul", "a\x00b"),
        ("X-Del", "a\x7fb"),
        ("X-Bell", "a\x07b"),
        ("Bad Name", "1"),
        ("Bad:Name", "1"),
    ],
)
def test_what_would_split_or_break_the_answer_is_refused_and_never_remembered(header):
    with pytest.raises(ValueError):
        response().start_response("200 OK", [("Content-Type", "text/plain"), header])
    assert header not in _LINES
    with pytest.raises(ValueError):  # the second time too: nothing of it was kept as good
        response().start_response("200 OK", [header])


@pytest.mark.parametrize("status", ["200\r\nX: y", "2000 OK", "OK 200", "20 OK"])
def test_a_bad_status_is_refused(status):
    with pytest.raises(ValueError):
        response().start_response(status, [])


def test_names_and_values_must_be_strings():
    with pytest.raises(TypeError):
        response().start_response("200 OK", [(b"X-A", "1")])
    with pytest.raises(TypeError):
        response().start_response("200 OK", [("X-A", 1)])


def test_the_head_carries_the_apps_headers_a_tab_and_text_beyond_ascii_and_the_framing():
    answer = response()
    answer.start_response("200 OK", [("X-Tab", "a\tb"), ("X-Latin", "caf\xe9"), ("Content-Length", "3")])

    head = answer.head().decode("latin-1")
    assert head == (
        "HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Mon, 07 Dec 2026 00:00:00 GMT\r\nConnection: keep-alive\r\n"
        "X-Tab: a\tb\r\nX-Latin: caf\xe9\r\nContent-Length: 3\r\n\r\n"
    )


def test_hop_by_hop_fields_are_the_servers_and_no_length_means_chunked_on_1_1():
    answer = response()
    answer.start_response("200 OK", [("Connection", "close"), ("Transfer-Encoding", "gzip"), ("Keep-Alive", "5")])

    head = answer.head().decode()
    assert "Transfer-Encoding: chunked\r\n" in head and "gzip" not in head and "Keep-Alive" not in head
    assert answer.chunked and not answer.should_close()


def test_http_1_0_without_a_length_closes_and_a_204_drops_its_length():
    old = response(b"GET / HTTP/1.0\r\n\r\n")
    old.start_response("200 OK", [])
    assert old.should_close() and not old.chunked and old.head().startswith(b"HTTP/1.0 200 OK\r\n")

    empty = response()
    empty.start_response("204 No Content", [("Content-Length", "4")])
    assert b"Content-Length" not in empty.head() and empty.omits_body and not empty.should_close()


@pytest.fixture
def own_worker():
    """FitFlix's worker as gunicorn makes it, before its loop runs (its temp file closed after the test)."""
    made = []

    def make(threads: int) -> FitflixWorker:
        cfg = Config()
        cfg.set("threads", threads)
        worker = FitflixWorker(0, 1, [], None, 30, cfg, logging.getLogger("test-h1worker"))
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.tmp.close()


def test_request_threads_start_as_jobs_wait_for_them_with_room_made_for_each_stack_and_never_past_threads(own_worker):
    worker = own_worker(threads=3)
    rooms: list[int] = []
    worker.make_room_for_thread = rooms.append
    release = threading.Event()
    served: list[int] = []

    def serve(conn) -> None:
        served.append(conn.n)
        release.wait(10)

    worker._serve = serve
    try:
        for _ in range(BOOT_THREADS):
            worker._start_thread()
        poll_until(lambda: worker.idle_threads == BOOT_THREADS, 5, "the boot thread waiting for a job")
        assert len(worker.threads) == 1 and rooms == [1]

        worker._to_thread(SimpleNamespace(n=1, state=0, gen=0))  # a thread waits for it: none more starts
        poll_until(lambda: served == [1], 5, "the first job taken")
        assert len(worker.threads) == 1

        for n in (2, 3, 4, 5):  # every thread is busy: one starts per waiting job, up to THREADS (3)
            worker._to_thread(SimpleNamespace(n=n, state=0, gen=0))
        poll_until(lambda: len(served) == 3, 5, "three jobs taken")
        assert len(worker.threads) == 3 and rooms == [1, 1, 1]
    finally:
        release.set()
        for _ in worker.threads:
            worker.jobs.put(None)
        for thread in worker.threads:
            thread.join(5)
    assert sorted(served) == [1, 2, 3, 4, 5]  # the jobs that waited were served by the threads there were


def test_a_thread_that_cannot_start_gives_its_room_back_and_the_worker_serves_with_those_it_has(
    own_worker, monkeypatch
):
    worker = own_worker(threads=4)
    worker.pid = 1234
    rooms: list[int] = []
    worker.make_room_for_thread = rooms.append
    worker.threads.append(object())  # one already serves

    class NoThread:
        def __init__(self, *_args, **_kwargs) -> None:
            pass

        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(h1worker_module.threading, "Thread", NoThread)
    worker._start_thread()
    assert rooms == [1, -1] and worker.request_threads == 1
    worker.threads.clear()
    with pytest.raises(RuntimeError):  # not one thread to serve with: the worker cannot boot
        worker._start_thread()
