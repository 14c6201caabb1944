"""Part 7: what one health answer costs: /health against /health/memory, and an uncached report."""

from __future__ import annotations

import statistics
import time

from bench import peers, plots
from bench.load import throughput
from bench.report import Part
from bench.scale import Scale
from bench.servers import serving
from fitflix.memory.report import MemoryProbe

CONNECTIONS = 8
UNCACHED_REPORTS = 200


def run(scale: Scale) -> Part:
    part = Part(
        7,
        "Cost of a health answer",
        "FitFlix default in a 512 MB cgroup. Requests/s on /health (no smaps, no cgroup reads) and on "
        f"/health/memory (the report is cached for 1 s per worker), {CONNECTIONS} keep-alive connections, "
        f"{scale.overhead_run_s:g} s per run, interleaved. Then the time to build one report without the cache "
        "(smaps_rollup of master and worker, the cgroup files, the worker list), measured in this process "
        f"against the running server's tree, median of {UNCACHED_REPORTS}.",
        ["round", "/health req/s", "/health/memory req/s", "memory/health", "/health p99 ms", "/health/memory p99 ms"],
    )
    with serving(peers.fitflix()) as server:
        server.wait_for_workers(1)
        for path in ("/health", "/health/memory"):
            throughput(server.port, path, CONNECTIONS, 1, 100_000)  # warm-up
        health_rates, memory_rates = [], []
        for round_number in range(1, max(2, scale.overhead_rounds // 2) + 1):
            paths = ("/health", "/health/memory") if round_number % 2 else ("/health/memory", "/health")
            figures = {}
            for path in paths:
                figures[path] = throughput(
                    server.port, path, CONNECTIONS, scale.overhead_run_s, int(scale.overhead_run_s * 100_000)
                )
            health, memory = figures["/health"], figures["/health/memory"]
            health_rates.append(health.rps)
            memory_rates.append(memory.rps)
            part.add(
                round_number,
                f"{health.rps:.0f}",
                f"{memory.rps:.0f}",
                f"{memory.rps / health.rps:.3f}",
                f"{health.p99_ms:.1f}" if health.p99_ms else "-",
                f"{memory.p99_ms:.1f}" if memory.p99_ms else "-",
            )
        probe = MemoryProbe((512, "cgroup"), cache_s=0)
        durations = []
        for _ in range(UNCACHED_REPORTS):
            started = time.perf_counter()
            probe.report("worker", server.master_pid)
            durations.append(time.perf_counter() - started)
    ratio = statistics.median(memory_rates) / statistics.median(health_rates)
    part.add(
        "median",
        f"{statistics.median(health_rates):.0f}",
        f"{statistics.median(memory_rates):.0f}",
        f"{ratio:.3f}",
        "",
        "",
    )
    per_request_us = (1 / statistics.median(memory_rates) - 1 / statistics.median(health_rates)) * 1e6
    part.pictures.append(
        plots.bars(
            "part7-health-cost",
            f"/health/memory answers at {ratio:.2f} x the rate of /health (its report cached for 1 s per worker)",
            plots.Bars(
                [str(number) for number in range(1, len(health_rates) + 1)],
                {"/health": health_rates, "/health/memory": memory_rates},
                "requests/s (8 keep-alive connections)",
                horizontal=False,
                digits=0,
            ),
            alt=f"Requests per second on /health and on /health/memory in each round; /health/memory runs at "
            f"{ratio:.2f} times the rate of /health.",
            xlabel="round",
        )
    )
    part.notes.append(
        f"one /health/memory costs about {per_request_us:.0f} us more than one /health (from the medians)"
    )
    part.notes.append(
        f"one uncached report: median {statistics.median(durations) * 1000:.2f} ms, "
        f"p99 {statistics.quantiles(durations, n=100)[98] * 1000:.2f} ms"
    )
    return part
