"""What the master and its workers share, and what this process knows of its role.

`SharedState` is one page of shared memory made by the master before the
first fork, so every worker inherits it: recycle counts by reason, the pid of
the worker now recycling for memory (one at a time) and the pid the guard
asked to leave. Writers hold a POSIX record lock (per process) and a thread
lock (per thread); readers take a torn-free copy under the same locks.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Iterator
from dataclasses import dataclass, field

REASONS = ("memory", "max_requests", "backstop", "guard", "timeout")
_LAYOUT = struct.Struct("<" + "Q" * len(REASONS) + "qq")  # counts..., recycling pid, guard pid


class SharedState:
    def __init__(self, directory: str | None = None) -> None:
        fd, path = tempfile.mkstemp(prefix="fitflix-state-", dir=directory)
        os.unlink(path)  # nothing left behind, whatever way the master ends
        os.ftruncate(fd, mmap.PAGESIZE)
        self._fd = fd
        self._map = mmap.mmap(fd, mmap.PAGESIZE)
        self._thread_lock = threading.Lock()
        # The master's monitor thread may hold the lock at the moment of a fork.
        os.register_at_fork(after_in_child=self._new_thread_lock)

    def _new_thread_lock(self) -> None:
        self._thread_lock = threading.Lock()

    @contextmanager
    def _locked(self) -> Iterator[list[int]]:
        with self._thread_lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                yield list(_LAYOUT.unpack_from(self._map, 0))
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _update(self, change) -> object:
        with self._locked() as fields:
            result = change(fields)
            _LAYOUT.pack_into(self._map, 0, *fields)
            return result

    def recycle_counts(self) -> dict[str, int]:
        with self._locked() as fields:
            return dict(zip(REASONS, fields[: len(REASONS)]))

    def count_recycle(self, reason: str) -> None:
        index = REASONS.index(reason)

        def change(fields):
            fields[index] += 1

        self._update(change)

    def claim_memory_recycle(self, pid: int) -> bool:
        """Take the one memory-recycle slot; False while another live worker holds it."""
        slot = len(REASONS)

        def change(fields):
            holder = fields[slot]
            if holder not in (0, pid) and _alive(holder):
                return False
            fields[slot] = pid
            return True

        return bool(self._update(change))

    def release(self, pid: int) -> None:
        """Forget `pid` in both slots (the master calls it when the worker is reaped)."""

        def change(fields):
            for slot in (len(REASONS), len(REASONS) + 1):
                if fields[slot] == pid:
                    fields[slot] = 0

        self._update(change)

    def mark_guard_target(self, pid: int) -> None:
        def change(fields):
            fields[len(REASONS) + 1] = pid

        self._update(change)

    def guard_target(self) -> int:
        with self._locked() as fields:
            return fields[len(REASONS) + 1]

    def memory_recycle_holder(self) -> int:
        with self._locked() as fields:
            holder = fields[len(REASONS)]
            return holder if holder and _alive(holder) else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Runtime:
    """This process's place in the service; set by the gunicorn hooks."""

    role: str = "standalone"  # standalone (no gunicorn hooks), master or worker
    master_pid: int = field(default_factory=os.getpid)
    started_monotonic: float = field(default_factory=time.monotonic)
    plan: object | None = None  # fitflix.serving.sizing.Plan once gunicorn.conf.py made one
    shared: SharedState | None = None
    worker_pids: tuple[int, ...] = ()


RUNTIME = Runtime()
