"""The backstop's thread accounting: every request thread starts before the data limit is measured."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from fitflix.memory.container import MIB
from fitflix.memory.process import StatmReader
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
