"""What the master and its workers share, and what this process knows of its role.

`SharedState` is one page of shared memory made by the master before the
first fork, so every worker inherits it: recycle counts by reason, the pid of
the worker now recycling for memory (one at a time), the pid the guard asked
to leave, the worker count the budgets are planned for (it follows TTIN and
TTOU), the pids of the workers that booted, requests served, the
connections the workers cut (slow heads, silent and idle connections), and
whether the master is draining. Writers hold a POSIX record lock (per
process) and a thread lock (per thread); readers take a torn-free copy under
the same locks. The one write on every request, a worker's own request
count, goes to a slot only that worker writes, without a lock.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fitflix.memory.process import pid_alive

REASONS = ("memory", "max_requests", "backstop", "guard", "timeout")
# Why a worker closed a connection that had not sent a whole request head (fitflix.serving.worker).
CUT_REASONS = ("slow_head", "silent", "idle_at_cap")
# counts by reason, memory-recycling pid, guard target pid, requests of workers gone, planned workers,
# connections cut by reason, draining (1 from the master's SIGTERM on), the master's own memory report
_HEADER = struct.Struct("<" + "Q" * len(REASONS) + "qqQq" + "Q" * len(CUT_REASONS) + "q" + "QQ")
_RECYCLING, _GUARD_TARGET, _RETIRED, _PLANNED = (len(REASONS) + offset for offset in range(4))
_CUTS = _PLANNED + 1
_DRAINING = _CUTS + len(CUT_REASONS)
_MASTER_MEMORY = _DRAINING + 1
_DRAINING_OFFSET = _DRAINING * 8
_PLANNED_OFFSET = _PLANNED * 8
_PLANNED_FIELD = struct.Struct("<q")
# worker pid, requests it has served, and its own memory report (bytes, kind): only where the
# master cannot read a worker's memory itself (no /proc, no psutil)
_SLOT = struct.Struct("<qQQQ")
_MEMORY = struct.Struct("<QQ")
WORKER_SLOTS = 64
# What a published memory figure is (the second field of `_MEMORY`); 0 is nothing published.
MEMORY_KINDS = {1: "rss", 2: "peak"}


def _slot_offset(index: int) -> int:
    return _HEADER.size + index * _SLOT.size


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
        """The header fields, under both locks; changes to the list are written back."""
        with self._thread_lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                fields = list(_HEADER.unpack_from(self._map, 0))
                yield fields
                _HEADER.pack_into(self._map, 0, *fields)
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def recycle_counts(self) -> dict[str, int]:
        with self._locked() as fields:
            return dict(zip(REASONS, fields[: len(REASONS)], strict=True))

    def count_recycle(self, reason: str) -> None:
        index = REASONS.index(reason)
        with self._locked() as fields:
            fields[index] += 1

    def claim_memory_recycle(self, pid: int) -> bool:
        """Take the one memory-recycle slot; False while another live worker holds it."""
        with self._locked() as fields:
            holder = fields[_RECYCLING]
            if holder not in (0, pid) and pid_alive(holder):
                return False
            fields[_RECYCLING] = pid
            return True

    def memory_recycle_holder(self) -> int:
        with self._locked() as fields:
            holder = fields[_RECYCLING]
            return holder if holder and pid_alive(holder) else 0

    def mark_guard_target(self, pid: int) -> None:
        with self._locked() as fields:
            fields[_GUARD_TARGET] = pid

    def guard_target(self) -> int:
        with self._locked() as fields:
            return fields[_GUARD_TARGET]

    def claim_worker_slot(self, pid: int) -> int | None:
        """A request-count slot for a new worker; a slot of a dead worker is retired and reused."""
        with self._locked() as fields:
            for index in range(WORKER_SLOTS):
                holder, served, _bytes, _kind = _SLOT.unpack_from(self._map, _slot_offset(index))
                if holder == 0 or not pid_alive(holder):
                    fields[_RETIRED] += served
                    _SLOT.pack_into(self._map, _slot_offset(index), pid, 0, 0, 0)
                    return index
        return None

    def worker_pids(self) -> list[int]:
        """The live workers of this server: each claimed its slot after it booted, and only a worker does.

        A master re-executed by SIGUSR2 is a child of this one but never
        claims a slot, so it is never counted or signalled as a worker.
        """
        with self._locked():
            holders = [_SLOT.unpack_from(self._map, _slot_offset(index))[0] for index in range(WORKER_SLOTS)]
        return sorted(pid for pid in holders if pid and pid_alive(pid))

    def set_planned_workers(self, workers: int) -> None:
        with self._locked() as fields:
            fields[_PLANNED] = workers

    def planned_workers(self) -> int:
        """The worker count the budgets are planned for; 0 until the master sets it (no lock: read on every request)."""
        return _PLANNED_FIELD.unpack_from(self._map, _PLANNED_OFFSET)[0]

    def count_cuts(self, counts: dict[str, int]) -> None:
        """Add a worker's cut connections, by reason (`CUT_REASONS`)."""
        with self._locked() as fields:
            for reason, count in counts.items():
                fields[_CUTS + CUT_REASONS.index(reason)] += count

    def cut_counts(self) -> dict[str, int]:
        with self._locked() as fields:
            return dict(zip(CUT_REASONS, fields[_CUTS : _CUTS + len(CUT_REASONS)], strict=True))

    def set_draining(self) -> None:
        """The master got SIGTERM: every worker's /health/ready answers 503 from now on."""
        with self._locked() as fields:
            fields[_DRAINING] = 1

    def draining(self) -> bool:
        """No lock: read on every readiness probe; one aligned 8-byte load."""
        return _PLANNED_FIELD.unpack_from(self._map, _DRAINING_OFFSET)[0] == 1

    def set_requests(self, index: int, served: int) -> None:
        """The worker's own count, written by that worker alone (no lock: one aligned 8-byte store)."""
        self._map[_slot_offset(index) + 8 : _slot_offset(index) + 16] = served.to_bytes(8, "little")

    def publish_memory(self, index: int, memory_bytes: int, peak: bool) -> None:
        """A worker's own memory figure, for a master that cannot read it (written by that worker alone)."""
        _MEMORY.pack_into(self._map, _slot_offset(index) + 16, memory_bytes, 2 if peak else 1)

    def publish_master_memory(self, memory_bytes: int, peak: bool) -> None:
        with self._locked() as fields:
            fields[_MASTER_MEMORY : _MASTER_MEMORY + 2] = [memory_bytes, 2 if peak else 1]

    def published_memory(self, pid: int, master_pid: int = 0) -> tuple[int, str] | None:
        """(bytes, "rss" or "peak") that `pid` published about itself; None when it published nothing."""
        with self._locked() as fields:
            if pid == master_pid:
                memory_bytes, kind = fields[_MASTER_MEMORY : _MASTER_MEMORY + 2]
            else:
                for index in range(WORKER_SLOTS):
                    holder, _served, memory_bytes, kind = _SLOT.unpack_from(self._map, _slot_offset(index))
                    if holder == pid:
                        break
                else:
                    return None
        return (memory_bytes, MEMORY_KINDS[kind]) if kind in MEMORY_KINDS else None

    def requests_served(self) -> int:
        """Every request any worker of this server has served."""
        with self._locked() as fields:
            return fields[_RETIRED] + sum(
                _SLOT.unpack_from(self._map, _slot_offset(index))[1] for index in range(WORKER_SLOTS)
            )

    def release(self, pid: int) -> None:
        """The master reaped `pid`: free its slots and keep its request count."""
        with self._locked() as fields:
            for slot in (_RECYCLING, _GUARD_TARGET):
                if fields[slot] == pid:
                    fields[slot] = 0
            for index in range(WORKER_SLOTS):
                holder, served, _bytes, _kind = _SLOT.unpack_from(self._map, _slot_offset(index))
                if holder == pid:
                    fields[_RETIRED] += served
                    _SLOT.pack_into(self._map, _slot_offset(index), 0, 0, 0, 0)


@dataclass
class Runtime:
    """This process's place in the service; set by the gunicorn hooks."""

    role: str = "standalone"  # standalone (no gunicorn hooks), master or worker
    master_pid: int = field(default_factory=os.getpid)
    started_monotonic: float = field(default_factory=time.monotonic)
    plan: object | None = None  # fitflix.serving.sizing.Plan once gunicorn.conf.py made one
    shared: SharedState | None = None
    worker: object | None = None  # the gunicorn worker object, in a worker


RUNTIME = Runtime()
