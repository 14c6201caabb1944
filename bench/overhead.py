"""Part 2: throughput of FitFlix default against the same config with MEMORY_RECYCLING=false."""

from __future__ import annotations

import logging
import statistics
import time

from bench import peers
from bench.load import throughput
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import serving

log = logging.getLogger("bench")

CONNECTIONS = 8  # the default thread count: every thread busy, none queued twice
TARGET_RATIO = 0.98


def run(scale: Scale) -> Part:
    part = Part(
        2,
        "Overhead of memory recycling",
        "FitFlix default (A) and the same config with MEMORY_RECYCLING=false (B: no post_request check, no "
        "backstop, no monitor thread), both up at once, each in its own 512 MB cgroup, serving `wsgi:app`. "
        f"Closed-loop load on /health with {CONNECTIONS} keep-alive connections, {scale.overhead_run_s:g} s per run, "
        "interleaved A B / B A round by round (so drift hits both). Figures are requests/s; the ratio is A/B.",
        ["round", "order", "A req/s (recycling on)", "B req/s (recycling off)", "A/B", "A p99 ms", "B p99 ms"],
    )
    a_peer = peers.fitflix(name="fitflix")
    b_peer = peers.fitflix(env={"MEMORY_RECYCLING": "false"}, name="fitflix MEMORY_RECYCLING=false")
    with serving(a_peer) as a, serving(b_peer) as b:
        a.wait_for_workers(1)
        b.wait_for_workers(1)
        for server in (a, b):  # warm-up: first requests pay for lazy imports and route compilation
            throughput(server.port, "/health", CONNECTIONS, 1, 100_000)
        a_rates, b_rates, ratios, tool = [], [], [], ""
        for round_number in range(1, scale.overhead_rounds + 1):
            order = (a, b) if round_number % 2 else (b, a)
            figures = {}
            for server in order:
                result = throughput(server.port, "/health", CONNECTIONS, scale.overhead_run_s,
                                    int(scale.overhead_run_s * 100_000))
                figures[server.peer.name] = result
                tool = result.tool
                time.sleep(0.5)  # a breath between runs, so one run's tail does not overlap the next
            fa, fb = figures[a_peer.name], figures[b_peer.name]
            a_rates.append(fa.rps)
            b_rates.append(fb.rps)
            ratios.append(fa.rps / fb.rps)
            part.add(round_number, "A B" if round_number % 2 else "B A", f"{fa.rps:.0f}", f"{fb.rps:.0f}",
                     f"{fa.rps / fb.rps:.3f}", f"{fa.p99_ms:.1f}" if fa.p99_ms else "-",
                     f"{fb.p99_ms:.1f}" if fb.p99_ms else "-")
            log.info("part 2: round %s: A %.0f req/s, B %.0f req/s", round_number, fa.rps, fb.rps)
            if fa.errors or fb.errors:
                part.notes.append(f"round {round_number}: errors A={fa.errors} B={fb.errors}")
    median_a, median_b = statistics.median(a_rates), statistics.median(b_rates)
    ratio = median_a / median_b
    part.add("median", "", f"{median_a:.0f}", f"{median_b:.0f}", f"{ratio:.3f}", "", "")
    part.notes.append(f"median of the per-round ratios: {statistics.median(ratios):.3f}; load generator: {tool}")
    part.targets.append(Target(f"requests/s ratio (recycling on / off) >= {TARGET_RATIO}", ratio >= TARGET_RATIO,
                               f"median {median_a:.0f} / {median_b:.0f} = {ratio:.3f}"))
    return part
