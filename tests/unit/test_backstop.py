"""The backstop: every request thread starts before the data limit is measured; who tripped it; what it watches."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from fitflix.memory.container import MIB
from fitflix.memory.process import StatmReader
from fitflix.serving import backstop
from fitflix.serving.backstop import start_pool_threads


def data_bytes(statm: StatmReader) -> int:
    return statm.read()[1]


def run_at_once(pool: ThreadPoolExecutor, count: int) -> int:
    """Run `count` tasks that wait for each other; return how many distinct threads ran them."""
    barrier = threading.Barrier(count + 1, timeout=5)

    def task() -> int:
        barrier.wait()
        return threading.get_ident()

    tasks = [pool.submit(task) for _ in range(count)]
    barrier.wait()
    return len({future.result(timeout=5) for future in tasks})


def test_every_thread_of_the_pool_starts_and_its_stack_is_in_the_data_segment_at_once():
    statm = StatmReader()
    with ThreadPoolExecutor(max_workers=8) as pool:
        before = data_bytes(statm)
        assert start_pool_threads(pool, 8) == 8
        started = data_bytes(statm)
        # eight thread stacks (8 MiB each by default) are private writable memory: data
        assert started - before >= 8 * MIB

        # eight requests at once now start no thread: the data segment does not grow by a stack
        assert run_at_once(pool, 8) == 8
        assert data_bytes(statm) - started < 4 * MIB
    statm.close()


def test_a_pool_smaller_than_asked_reports_the_threads_that_started():
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert start_pool_threads(pool, 4, timeout_s=0.5) == 2


def test_only_the_frameworks_the_app_loaded_are_watched(monkeypatch):
    # A Django service never loads Flask for its backstop, nor a Flask one Django.
    monkeypatch.delitem(sys.modules, "flask", raising=False)
    monkeypatch.delitem(sys.modules, "django", raising=False)
    assert backstop.watch_framework_errors() == []
    assert "flask" not in sys.modules and "django" not in sys.modules


def test_the_backstop_knows_which_thread_tripped_it(monkeypatch):
    monkeypatch.setattr(backstop, "_tripped", threading.Event())
    monkeypatch.setattr(backstop, "_here", threading.local())
    other = threading.Thread(target=backstop.trip)
    other.start()
    other.join()
    assert backstop.tripped() and not backstop.tripped_here()
    backstop.trip()
    assert backstop.tripped_here()
    backstop.forget_here()
    assert not backstop.tripped_here() and backstop.tripped()
