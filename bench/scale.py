"""How big each part runs: the full run (about 30 minutes on 2 cores with parts 11-13) or --quick (about 4)."""

from __future__ import annotations

from dataclasses import dataclass

from fitflix.settings import Settings
from harness import leak_sweep


@dataclass(frozen=True)
class Scale:
    name: str
    footprint_requests: int
    footprint_time_limit_s: float
    overhead_rounds: int
    overhead_run_s: float
    leak_requests: int
    leak_time_limit_s: float
    spike_time_limit_s: float
    recycle_requests: int
    recycle_time_limit_s: float
    concurrency_rounds: int
    concurrency_run_s: float
    spike_sweep_threads: tuple[int, ...]  # THREADS values of the spike sweep (part 8)
    spike_sweep_time_limit_s: float  # the whole sweep; peers not reached by then are reported as not run
    neighbours_load_s: float  # light load on /health while a neighbour holds memory (part 9)
    slow_clients_probe_s: float  # probes of /health while slow and idle clients hold on (part 10)
    rolling_rounds: int  # rounds of rolling restarts behind HAProxy, every instance once a round (part 11)
    rolling_time_limit_s: float  # the bound on one peer's client load through HAProxy (part 11)
    leak_sweep_cells: tuple[leak_sweep.LeakCell, ...]  # FitFlix's cells of the leak sweep (part 20)
    idle_rounds: int = 3  # windows with no request, each server (part 21)
    idle_window_s: float = 15.0  # longer than the quiet monitor's 10 s look, so one falls in each


FULL = Scale(
    name="full",
    footprint_requests=50_000,
    footprint_time_limit_s=150,
    overhead_rounds=12,
    overhead_run_s=8,
    leak_requests=5_000,
    leak_time_limit_s=240,
    spike_time_limit_s=60,
    recycle_requests=2_500,
    recycle_time_limit_s=120,
    concurrency_rounds=3,
    concurrency_run_s=10,
    spike_sweep_threads=(1, 8, 32),
    spike_sweep_time_limit_s=300,
    neighbours_load_s=20,
    slow_clients_probe_s=30,
    rolling_rounds=2,
    rolling_time_limit_s=150,
    leak_sweep_cells=leak_sweep.FULL,
)

QUICK = Scale(
    name="quick",
    footprint_requests=3_000,
    footprint_time_limit_s=30,
    overhead_rounds=2,
    overhead_run_s=3,
    leak_requests=600,
    leak_time_limit_s=60,
    spike_time_limit_s=30,
    recycle_requests=400,
    recycle_time_limit_s=40,
    concurrency_rounds=1,
    concurrency_run_s=4,
    spike_sweep_threads=(8,),
    spike_sweep_time_limit_s=120,
    neighbours_load_s=8,
    slow_clients_probe_s=Settings.head_timeout_s + 2,  # past HEAD_TIMEOUT_S: the first cut heads and their reopens
    rolling_rounds=1,
    rolling_time_limit_s=90,
    leak_sweep_cells=leak_sweep.PAIRWISE,  # every pair of values in 12 cells, as the live tests run them
    idle_rounds=1,
    idle_window_s=11.0,
)
