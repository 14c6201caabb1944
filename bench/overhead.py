"""Part 2: throughput of FitFlix default against the same config with MEMORY_RECYCLING=false."""

from __future__ import annotations

import logging
import os
import statistics
import time

from bench import peers, plots
from bench.load import throughput
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import serving

log = logging.getLogger("bench")

CONNECTIONS = 8  # the default thread count: every thread busy, none queued twice
TARGET_RATIO = 0.98
TARGET_CPU_RATIO = 1.05  # worker CPU per request, recycling on / off: the recycle checks cost at most 5 %


def run(scale: Scale) -> Part:
    part = Part(
        2,
        "Overhead of memory recycling",
        "FitFlix default (A) and the same config with MEMORY_RECYCLING=false (B: no post_request check, no "
        "backstop, no monitor thread), both up at once, each in its own 512 MB cgroup, serving `wsgi:app`. "
        f"Closed-loop load on /health with {CONNECTIONS} keep-alive connections, {scale.overhead_run_s:g} s per run, "
        "interleaved A B / B A round by round (so drift hits both). Figures are requests/s; the ratio is A/B.",
        [
            "round",
            "order",
            "A req/s (recycling on)",
            "B req/s (recycling off)",
            "A/B",
            "A p99 ms",
            "B p99 ms",
            "A worker CPU us/req",
            "B worker CPU us/req",
        ],
    )
    part.method += (
        " Worker CPU per request (utime + stime of the worker from /proc/PID/stat over the run, divided by the "
        "requests) is the steadier figure on a shared machine: it does not depend on what else had the cores. "
        "Its target compares the medians over the rounds, A / B."
    )
    # MAX_REQUESTS=0 in both: a max_requests recycle mid-run would cost both the same and hide the worker's CPU.
    a_peer = peers.fitflix(env={"MAX_REQUESTS": "0"}, name="fitflix")
    b_peer = peers.fitflix(
        env={"MEMORY_RECYCLING": "false", "MAX_REQUESTS": "0"}, name="fitflix MEMORY_RECYCLING=false"
    )
    with serving(a_peer) as a, serving(b_peer) as b:
        a.wait_for_workers(1)
        b.wait_for_workers(1)
        for server in (a, b):  # warm-up: first requests pay for lazy imports and route compilation
            throughput(server.port, "/health", CONNECTIONS, 1, 100_000)
        a_rates, b_rates, ratios, tool = [], [], [], ""
        cpu_per_request: dict[str, list[float]] = {a_peer.name: [], b_peer.name: []}
        for round_number in range(1, scale.overhead_rounds + 1):
            order = (a, b) if round_number % 2 else (b, a)
            figures = {}
            for server in order:
                [worker] = server.worker_pids()
                cpu_before = worker_cpu_s(worker)
                result = throughput(
                    server.port, "/health", CONNECTIONS, scale.overhead_run_s, int(scale.overhead_run_s * 100_000)
                )
                if worker in server.worker_pids() and result.requests:
                    cpu_per_request[server.peer.name].append(
                        (worker_cpu_s(worker) - cpu_before) / result.requests * 1e6
                    )
                figures[server.peer.name] = result
                tool = result.tool
                time.sleep(0.5)  # a breath between runs, so one run's tail does not overlap the next
            fa, fb = figures[a_peer.name], figures[b_peer.name]
            a_rates.append(fa.rps)
            b_rates.append(fb.rps)
            ratios.append(fa.rps / fb.rps)
            part.add(
                round_number,
                "A B" if round_number % 2 else "B A",
                f"{fa.rps:.0f}",
                f"{fb.rps:.0f}",
                f"{fa.rps / fb.rps:.3f}",
                f"{fa.p99_ms:.1f}" if fa.p99_ms else "-",
                f"{fb.p99_ms:.1f}" if fb.p99_ms else "-",
                _last(cpu_per_request[a_peer.name]),
                _last(cpu_per_request[b_peer.name]),
            )
            log.info("part 2: round %s: A %.0f req/s, B %.0f req/s", round_number, fa.rps, fb.rps)
            if fa.errors or fb.errors:
                part.notes.append(f"round {round_number}: errors A={fa.errors} B={fb.errors}")
    median_a, median_b = statistics.median(a_rates), statistics.median(b_rates)
    ratio = median_a / median_b
    cpu_target = cpu_ratio_target(cpu_per_request[a_peer.name], cpu_per_request[b_peer.name])
    cpu_a, cpu_b = (statistics.median(cpu_per_request[peer.name] or [0.0]) for peer in (a_peer, b_peer))
    part.add("median", "", f"{median_a:.0f}", f"{median_b:.0f}", f"{ratio:.3f}", "", "", f"{cpu_a:.1f}", f"{cpu_b:.1f}")
    if cpu_a:
        part.notes.append(
            f"worker CPU per request: {cpu_a:.1f} us with recycling, {cpu_b:.1f} us without: "
            f"{cpu_a - cpu_b:+.1f} us, a throughput ratio of {cpu_b / cpu_a:.3f} for a CPU-bound worker"
        )
    part.notes.append(f"median of the per-round ratios: {statistics.median(ratios):.3f}; load generator: {tool}")
    part.pictures.append(
        plots.bars(
            "part2-overhead",
            f"/health requests/s with memory recycling on / off, round by round: median {median_a:.0f} / "
            f"{median_b:.0f} = {ratio:.3f}",
            plots.Bars(
                [str(number) for number in range(1, len(ratios) + 1)],
                {"A / B (recycling on / off)": ratios},
                "requests/s, A / B",
                references=[(1.0, "1.0: no cost"), (TARGET_RATIO, f"target >= {TARGET_RATIO:g}")],
                horizontal=False,
                digits=3,
                dots=True,
            ),
            alt=f"The ratio of /health requests per second with memory recycling on (A) to off (B) in each round; "
            f"the medians are {median_a:.0f} and {median_b:.0f} requests/s, a ratio of {ratio:.3f}.",
            xlabel="round (A B and B A in turn)",
        )
    )
    part.targets.append(
        Target(
            f"requests/s ratio (recycling on / off) >= {TARGET_RATIO}",
            ratio >= TARGET_RATIO,
            f"median {median_a:.0f} / {median_b:.0f} = {ratio:.3f}",
        )
    )
    part.targets.append(cpu_target)
    return part


def cpu_ratio_target(a_us: list[float], b_us: list[float]) -> Target:
    """Median worker CPU per request with recycling on (`a_us`, one per round) over off (`b_us`) <= 1.05;
    not measured when either side has no round (its worker was replaced mid-run, or no request was served)."""
    text = f"worker CPU per request ratio (recycling on / off) <= {TARGET_CPU_RATIO}"
    if not a_us or not b_us or statistics.median(b_us) <= 0:
        return Target(text, None, f"rounds measured: A {len(a_us)}, B {len(b_us)}")
    cpu_a, cpu_b = statistics.median(a_us), statistics.median(b_us)
    ratio = cpu_a / cpu_b
    return Target(
        text,
        ratio <= TARGET_CPU_RATIO,
        f"median {cpu_a:.1f} / {cpu_b:.1f} us = {ratio:.3f} over {len(a_us)} / {len(b_us)} rounds",
    )


def worker_cpu_s(pid: int) -> float:
    """utime + stime of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _last(values: list[float]) -> str:
    return f"{values[-1]:.1f}" if values else "-"
