"""The leak sweep (issue 32): leak shapes x speeds x THREADS x workers, each cell judged on a real cgroup.

A cell is one service (a fresh 512 MB cgroup, `harness.apps.service_with_leaks`) under one leak:

- shapes: `bytes` (1 MB `bytearray`s: glibc hands them back at once), `objects` (about 1 MB of small
  dicts, lists and strings a request: pymalloc keeps its arenas until the process exits), `native`
  (1 MB of C `malloc`, which no Python figure sees), `thread_cache` (small objects in a cache of the
  serving thread's own: it grows only as fast as requests spread over threads);
- speeds: `fast`, 4 clients as fast as they go (a recycle every second or two at 512 MB), and `slow`,
  2 clients whose every request waits 15 ms (a recycle every few seconds);
- THREADS 1, 8, 32; 1 worker and 3.

The promise, per cell: 0 OOM kills (and on v2 0 group kills), 0 failed requests, the cgroup's peak at
most 90% of the limit, the master still the one that started. `PAIRWISE` covers every pair of values
in 12 cells (the live tests: `tests/live/test_leak_sweep.py`); `FULL` is all 48 (the benchmark).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from harness.fitflix_log import SurgeCounts, parse_recycles, surge_counts
from harness.load import run_load

APP = "harness.apps.service_with_leaks:app"
LIMIT_MB = 512
PEAK_TARGET_PERCENT = 90

SHAPES = {
    "bytes": "/leak?mb=1",
    "objects": "/objects?n=3000",
    "native": "/native?mb=1",
    "thread_cache": "/thread_cache?n=3000",
}
# (clients, requests, pause in each request in ms)
SPEEDS = {"fast": (4, 1200, 0), "slow": (2, 800, 15)}
THREAD_COUNTS = (1, 8, 32)
WORKER_COUNTS = (1, 3)


@dataclass(frozen=True)
class LeakCell:
    shape: str
    speed: str
    threads: int
    workers: int

    @property
    def name(self) -> str:
        return f"{self.shape}-{self.speed}-t{self.threads}-w{self.workers}"

    @property
    def path(self) -> str:
        pause_ms = SPEEDS[self.speed][2]
        return SHAPES[self.shape] + (f"&ms={pause_ms}" if pause_ms else "")

    @property
    def clients(self) -> int:
        return SPEEDS[self.speed][0]

    @property
    def requests(self) -> int:
        return SPEEDS[self.speed][1]

    def env(self) -> dict[str, str]:
        """The service's environment: the cell's THREADS and WEB_CONCURRENCY, all else its defaults."""
        return {"THREADS": str(self.threads), "WEB_CONCURRENCY": str(self.workers)}


FULL = tuple(
    LeakCell(shape, speed, threads, workers)
    for shape, speed, threads, workers in itertools.product(SHAPES, SPEEDS, THREAD_COUNTS, WORKER_COUNTS)
)

# Every pair of values (shape and speed, shape and THREADS, ..., speed and workers) in at least one cell.
PAIRWISE = tuple(
    LeakCell(shape, speed, threads, workers)
    for shape, threads, speed, workers in (
        ("bytes", 1, "fast", 1),
        ("bytes", 8, "slow", 3),
        ("bytes", 32, "fast", 3),
        ("objects", 1, "slow", 3),
        ("objects", 8, "fast", 1),
        ("objects", 32, "slow", 1),
        ("native", 1, "fast", 3),
        ("native", 8, "slow", 1),
        ("native", 32, "fast", 1),
        ("thread_cache", 1, "slow", 1),
        ("thread_cache", 8, "fast", 3),
        ("thread_cache", 32, "slow", 3),
    )
)

# What the cgroup v2 guest runs (software emulation: about 13 times slower than here): the issue's own
# leak, the concurrency-only leak with the most workers and threads, and a native one.
V2 = (
    LeakCell("objects", "fast", 8, 1),
    LeakCell("thread_cache", "fast", 32, 3),
    LeakCell("native", "fast", 1, 1),
)


@dataclass
class CellResult:
    cell: LeakCell
    statuses: dict
    oom_kills: int
    oom_group_kills: int | None  # v2 only
    peak_bytes: int | None
    limit_bytes: int
    recycles: int
    counts: SurgeCounts
    master_alive: bool
    seconds: float
    unsent: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != 200) + self.unsent

    @property
    def peak_percent(self) -> float | None:
        return None if self.peak_bytes is None else 100.0 * self.peak_bytes / self.limit_bytes

    def problems(self) -> list[str]:
        """What broke the promise in this cell (empty: kept)."""
        found = []
        if self.oom_kills:
            found.append(f"{self.oom_kills} OOM kill(s)")
        if self.oom_group_kills:
            found.append(f"{self.oom_group_kills} OOM group kill(s)")
        if self.failed:
            found.append(f"{self.failed} failed request(s): {self.statuses}, {self.unsent} unsent")
        if self.peak_percent is None:
            found.append("no peak figure from the cgroup")
        elif self.peak_percent > PEAK_TARGET_PERCENT:
            found.append(f"peak {self.peak_percent:.1f}% of the limit, over {PEAK_TARGET_PERCENT}%")
        if not self.master_alive:
            found.append("the master is gone")
        return found

    def row(self) -> str:
        peak = "?" if self.peak_percent is None else f"{self.peak_percent:.0f}%"
        return (
            f"{self.cell.name}: {self.oom_kills} OOM kills, {self.failed} failed, peak {peak}, "
            f"{self.recycles} recycles ({self.counts.text()}), {self.seconds:.1f} s"
        )


def run_cell(cell: LeakCell, cgroup, server, time_limit_s: float = 120.0) -> CellResult:
    """Send the cell's leak to `server` (a started `LiveServer` in `cgroup`) and judge what the cgroup saw."""
    events_before = cgroup.events() if cgroup.version == 2 else {}
    started = time.monotonic()
    load = run_load(server.port, cell.path, requests=cell.requests, clients=cell.clients, time_limit_s=time_limit_s)
    seconds = time.monotonic() - started
    master_alive = server.process.poll() is None
    log = server.log()
    group_kills = None
    if cgroup.version == 2:
        group_kills = cgroup.events().get("oom_group_kill", 0) - events_before.get("oom_group_kill", 0)
    return CellResult(
        cell=cell,
        statuses=dict(load.statuses),
        oom_kills=cgroup.oom_kills(),
        oom_group_kills=group_kills,
        peak_bytes=cgroup.peak_bytes(),
        limit_bytes=LIMIT_MB * 1024 * 1024,
        recycles=len(parse_recycles(log)),
        counts=surge_counts(log),
        master_alive=master_alive,
        seconds=seconds,
        unsent=load.unsent,
    )
