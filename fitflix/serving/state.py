"""What the master and its workers share, and what this process knows of its role.

`SharedState` is one page of shared memory made by the master before the
first fork, so every worker inherits it: recycle counts by reason, the pid of
the worker now recycling for memory (one at a time), the pid the guard asked
to leave, the worker count the budgets are planned for (it follows TTIN and
TTOU), the pids of the workers that booted and what each held as it booted, requests served, the
connections the workers cut (slow heads, silent and idle connections),
whether the master is draining, the worker that asks to be replaced before it
leaves and the one being replaced now (`fitflix.serving.surge`), and the last
few reports of what grew in a worker recycled for memory. Writers hold a POSIX record lock (per
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
# connections cut by reason, draining (1 from the master's SIGTERM on), the master's own memory report,
# the worker asking to be replaced first, the worker being replaced now, reports of what grew (written, in all),
# how fast the asking worker grew (bytes a second, bytes a request), the worker the others hold for (the overlap
# watch: `hold_for`), the last boot of a worker (microseconds), the room below the critical level and the
# growth rate the master last saw while a replacement overlaps the old worker, and the last report of what
# grew (the worker's pid, microseconds it took)
_HEADER = struct.Struct(
    "<"
    + "Q" * len(REASONS)
    + "qqQq"
    + "Q" * len(CUT_REASONS)
    + "q"
    + "QQ"
    + "qq"
    + "Q"
    + "QQ"
    + "q"
    + "Q"
    + "qQ"
    + "qQ"
)
_RECYCLING, _GUARD_TARGET, _RETIRED, _PLANNED = (len(REASONS) + offset for offset in range(4))
_CUTS = _PLANNED + 1
_DRAINING = _CUTS + len(CUT_REASONS)
_MASTER_MEMORY = _DRAINING + 1
_SURGE_REQUEST = _MASTER_MEMORY + 2
_SURGE_OLD = _SURGE_REQUEST + 1
_GROWTH_WRITTEN = _SURGE_OLD + 1
_SURGE_GROWTH = _GROWTH_WRITTEN + 1
_HOLD_FOR = _SURGE_GROWTH + 2
_LAST_BOOT_US = _HOLD_FOR + 1
_OVERLAP = _LAST_BOOT_US + 1
_LAST_REPORT = _OVERLAP + 2
_HOLD_FOR_OFFSET = _HOLD_FOR * 8
_DRAINING_OFFSET = _DRAINING * 8
_SURGE_OLD_OFFSET = _SURGE_OLD * 8
_PLANNED_OFFSET = _PLANNED * 8
_PLANNED_FIELD = struct.Struct("<q")
# worker pid, requests it has served, its own memory report (bytes, kind): only where the master
# cannot read a worker's memory itself (no /proc, no psutil), and what it held when it booted (USS, or
# its bound: the guard's yardstick for a fresh worker, which the master then need not read from smaps)
_SLOT = struct.Struct("<qQQQQ")
_MEMORY = struct.Struct("<QQ")
WORKER_SLOTS = 64
# What a published memory figure is (the second field of `_MEMORY`); 0 is nothing published.
MEMORY_KINDS = {1: "rss", 2: "peak"}
# The last reports of what grew (fitflix.memory.growth), JSON, each in a slot of its own after the first page.
GROWTH_SLOTS = 3
GROWTH_SLOT_BYTES = 2048
_GROWTH_LENGTH = struct.Struct("<I")
_MAP_BYTES = mmap.PAGESIZE + -(-GROWTH_SLOTS * GROWTH_SLOT_BYTES // mmap.PAGESIZE) * mmap.PAGESIZE


def _slot_offset(index: int) -> int:
    return _HEADER.size + index * _SLOT.size


# The header and every worker's slot share the first page; the reports of what grew have the pages after it.
if _slot_offset(WORKER_SLOTS) > mmap.PAGESIZE:
    raise ImportError(f"the shared state's header and {WORKER_SLOTS} worker slots do not fit in one page")


class SharedState:
    def __init__(self, directory: str | None = None) -> None:
        fd, path = tempfile.mkstemp(prefix="fitflix-state-", dir=directory)
        os.unlink(path)  # nothing left behind, whatever way the master ends
        os.ftruncate(fd, _MAP_BYTES)
        self._fd = fd
        self._map = mmap.mmap(fd, _MAP_BYTES)
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

    def claim_worker_slot(self, pid: int, boot_bytes: int = 0) -> int | None:
        """A request-count slot for a new worker; a slot of a dead worker is retired and reused.

        `boot_bytes`: what the worker holds as it boots (0: not known), in the slot from the moment the
        master can see the worker booted (`boot_memory`).
        """
        with self._locked() as fields:
            for index in range(WORKER_SLOTS):
                holder, served, *_rest = _SLOT.unpack_from(self._map, _slot_offset(index))
                if holder == 0 or not pid_alive(holder):
                    fields[_RETIRED] += served
                    _SLOT.pack_into(self._map, _slot_offset(index), pid, 0, 0, 0, _count(boot_bytes))
                    return index
        return None

    def boot_memory(self, pids) -> dict[int, int]:
        """What each of these workers held when it booted, as it said when it claimed its slot; a worker that
        said nothing (0) is left out."""
        wanted = set(pids)
        with self._locked():
            slots = [_SLOT.unpack_from(self._map, _slot_offset(index)) for index in range(WORKER_SLOTS)]
        return {slot[0]: slot[4] for slot in slots if slot[0] in wanted and slot[4]}

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
                    holder, _served, memory_bytes, kind, _boot = _SLOT.unpack_from(self._map, _slot_offset(index))
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

    def request_surge(self, pid: int, rate_bytes_per_s: float = 0.0, per_request_bytes: float = 0.0) -> bool:
        """A worker asks to be replaced before it leaves, saying how fast it grew (the replacement will
        take its load, and grow as fast); False while another live worker's request waits."""
        with self._locked() as fields:
            holder = fields[_SURGE_REQUEST]
            if holder not in (0, pid) and pid_alive(holder):
                return False
            fields[_SURGE_REQUEST] = pid
            fields[_SURGE_GROWTH : _SURGE_GROWTH + 2] = [
                _count(rate_bytes_per_s),
                _count(per_request_bytes),
            ]
            return True

    def surge_growth(self) -> tuple[int, int]:
        """(bytes a second, bytes a request) the asking worker grew by, as it said with its request."""
        with self._locked() as fields:
            rate, per_request = fields[_SURGE_GROWTH : _SURGE_GROWTH + 2]
            return rate, per_request

    def surge_request(self) -> int:
        with self._locked() as fields:
            return fields[_SURGE_REQUEST]

    def clear_surge_request(self, pid: int) -> None:
        with self._locked() as fields:
            if fields[_SURGE_REQUEST] == pid:
                fields[_SURGE_REQUEST] = 0

    def set_surge_old(self, pid: int) -> None:
        """The master: `pid` is being replaced now (0: no replacement under way)."""
        with self._locked() as fields:
            fields[_SURGE_OLD] = pid

    def surge_old(self) -> int:
        """The worker being replaced now, 0 for none (no lock: read once by each booting worker)."""
        return _PLANNED_FIELD.unpack_from(self._map, _SURGE_OLD_OFFSET)[0]

    def set_hold_for(self, pid: int) -> None:
        """The master's overlap watch: every worker but `pid` holds new requests until it is gone (0: none)."""
        with self._locked() as fields:
            fields[_HOLD_FOR] = pid

    def hold_for(self) -> int:
        """The worker the others hold for, 0 for none (no lock: read before every request; one aligned load)."""
        return _PLANNED_FIELD.unpack_from(self._map, _HOLD_FOR_OFFSET)[0]

    def set_last_boot(self, boot_s: float) -> None:
        """A worker, booted: how long from its fork to ready (what the master expects of a replacement)."""
        with self._locked() as fields:
            fields[_LAST_BOOT_US] = _count(boot_s * 1e6)

    def last_boot_s(self) -> float | None:
        with self._locked() as fields:
            return fields[_LAST_BOOT_US] / 1e6 if fields[_LAST_BOOT_US] else None

    def set_overlap(self, room_bytes: int, rate_bytes_per_s: float) -> None:
        """The master, while a replacement overlaps the old worker: room below the critical level, and growth."""
        with self._locked() as fields:
            fields[_OVERLAP : _OVERLAP + 2] = [int(room_bytes), _count(rate_bytes_per_s)]

    def overlap(self) -> tuple[int, int]:
        """(room below the critical level, bytes a second) as the master last saw them during an overlap."""
        with self._locked() as fields:
            room, rate = fields[_OVERLAP : _OVERLAP + 2]
            return room, rate

    def set_report_time(self, pid: int, seconds: float) -> None:
        """A worker on its way out: how long its report of what grew took (the master leaves it out of handovers)."""
        with self._locked() as fields:
            fields[_LAST_REPORT : _LAST_REPORT + 2] = [pid, _count(seconds * 1e6)]

    def report_time_s(self, pid: int) -> float:
        """How long `pid`'s report of what grew took; 0 when it made none (or another worker's came after)."""
        with self._locked() as fields:
            holder, micros = fields[_LAST_REPORT : _LAST_REPORT + 2]
            return micros / 1e6 if holder == pid else 0.0

    def add_growth_report(self, report_json: bytes) -> None:
        """Keep one report of what grew (cut to its slot); the oldest of the last GROWTH_SLOTS goes."""
        body = report_json[: GROWTH_SLOT_BYTES - _GROWTH_LENGTH.size]
        with self._locked() as fields:
            offset = mmap.PAGESIZE + (fields[_GROWTH_WRITTEN] % GROWTH_SLOTS) * GROWTH_SLOT_BYTES
            _GROWTH_LENGTH.pack_into(self._map, offset, len(body))
            self._map[offset + _GROWTH_LENGTH.size : offset + _GROWTH_LENGTH.size + len(body)] = body
            fields[_GROWTH_WRITTEN] += 1

    def growth_reports(self) -> tuple[int, list[bytes]]:
        """(reports written since the start, the last GROWTH_SLOTS of them, newest first)."""
        with self._locked() as fields:
            written = fields[_GROWTH_WRITTEN]
            reports = []
            for back in range(min(written, GROWTH_SLOTS)):
                offset = mmap.PAGESIZE + ((written - 1 - back) % GROWTH_SLOTS) * GROWTH_SLOT_BYTES
                (length,) = _GROWTH_LENGTH.unpack_from(self._map, offset)
                reports.append(bytes(self._map[offset + _GROWTH_LENGTH.size : offset + _GROWTH_LENGTH.size + length]))
        return written, reports

    def release(self, pid: int) -> None:
        """The master reaped `pid`: free its slots and keep its request count."""
        with self._locked() as fields:
            for slot in (_RECYCLING, _GUARD_TARGET, _SURGE_REQUEST, _HOLD_FOR):
                if fields[slot] == pid:
                    fields[slot] = 0
            for index in range(WORKER_SLOTS):
                holder, served, *_rest = _SLOT.unpack_from(self._map, _slot_offset(index))
                if holder == pid:
                    fields[_RETIRED] += served
                    _SLOT.pack_into(self._map, _slot_offset(index), 0, 0, 0, 0, 0)


def _count(value: float) -> int:
    """A figure for an unsigned field: whole, and never below 0 or above what the field holds."""
    return min(max(int(value), 0), 2**63 - 1)


@dataclass
class Runtime:
    """This process's place in the service; set by the gunicorn hooks."""

    role: str = "standalone"  # standalone (no gunicorn hooks), master or worker
    master_pid: int = field(default_factory=os.getpid)
    started_monotonic: float = field(default_factory=time.monotonic)
    plan: object | None = None  # fitflix.serving.sizing.Plan once gunicorn.conf.py made one
    shared: SharedState | None = None
    worker: object | None = None  # the gunicorn worker object, in a worker
    forked_monotonic: float | None = None  # in a worker: when it was forked (its boot's length is measured from it)


RUNTIME = Runtime()
