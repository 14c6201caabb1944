"""Part 6: requests/s per MB of container usage on an I/O-bound endpoint, 32 clients."""

from __future__ import annotations

import logging
import statistics
import time

from bench import peers, plots
from bench.load import throughput
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import mb, serving

log = logging.getLogger("bench")

APP = "bench.apps:app"
PATH = "/bench/wait?ms=50"
CONNECTIONS = 32
TARGET_RATIO = 4.0
MIB = 1024 * 1024


def run(scale: Scale) -> Part:
    part = Part(
        6,
        "Concurrency per megabyte (I/O-bound endpoint)",
        f"`{APP}` {PATH} (the Flask app waits 50 ms), {CONNECTIONS} closed-loop connections, "
        f"{scale.concurrency_run_s:g} s per run, interleaved rounds; each peer in its own {peers.LIMIT_MB} MB cgroup. "
        "fitflix = default (1 gthread worker x 8 threads); sync = `gunicorn -w 1 -c /dev/null` (one sync worker). "
        "Usage and working set are read right after each run, with the workers still holding what the load made them "
        "allocate; req/s per MB uses container usage (working set in brackets).",
        ["round", "peer", "req/s", "usage MB", "working set MB", "tree PSS MB", "req/s per MB", "errors", "p99 ms"],
    )
    ours = peers.fitflix(APP, name="fitflix (gthread 1x8)")
    sync = peers.plain(APP, workers=1, name="sync (gunicorn -w 1)")
    per_mb: dict[str, list[float]] = {ours.name: [], sync.name: []}
    per_mb_ws: dict[str, list[float]] = {ours.name: [], sync.name: []}
    with serving(ours) as a, serving(sync) as b:
        a.wait_for_workers(1)
        b.wait_for_workers(1)
        for server in (a, b):
            throughput(server.port, PATH, CONNECTIONS, 1, 100_000, threads=2, timeout_s=15)
        for round_number in range(1, scale.concurrency_rounds + 1):
            for server in (a, b) if round_number % 2 else (b, a):
                result = throughput(
                    server.port,
                    PATH,
                    CONNECTIONS,
                    scale.concurrency_run_s,
                    int(scale.concurrency_run_s * 10_000),
                    threads=2,
                    timeout_s=15,
                )
                figures = server.footprint()
                usage_mb = figures.usage_bytes / MIB
                ws_mb = figures.working_set_bytes / MIB
                per_mb[server.peer.name].append(result.rps / usage_mb)
                per_mb_ws[server.peer.name].append(result.rps / ws_mb)
                part.add(
                    round_number,
                    server.peer.name,
                    f"{result.rps:.0f}",
                    f"{usage_mb:.1f}",
                    f"{ws_mb:.1f}",
                    mb(figures.tree_pss_bytes),
                    f"{result.rps / usage_mb:.2f} ({result.rps / ws_mb:.2f})",
                    result.errors,
                    f"{result.p99_ms:.0f}" if result.p99_ms else "-",
                )
                log.info(
                    "part 6: round %s %s: %.0f req/s, %.1f MB", round_number, server.peer.name, result.rps, usage_mb
                )
                time.sleep(0.5)  # a breath between runs
    ours_median, sync_median = statistics.median(per_mb[ours.name]), statistics.median(per_mb[sync.name])
    ratio = ours_median / sync_median
    ws_ratio = statistics.median(per_mb_ws[ours.name]) / statistics.median(per_mb_ws[sync.name])
    part.add("median", ours.name, "", "", "", "", f"{ours_median:.2f}", "", "")
    part.add("median", sync.name, "", "", "", "", f"{sync_median:.2f}", "", "")
    part.notes.append(
        f"ratio fitflix / sync of req/s per MB: {ratio:.1f}x on container usage, {ws_ratio:.1f}x on working set"
    )
    rounds = len(per_mb[ours.name])
    part.pictures.append(
        plots.bars(
            "part6-concurrency",
            f"I/O-bound requests/s per MB of container memory: fitflix {ratio:.1f} x one sync worker",
            plots.Bars(
                [str(number) for number in range(1, rounds + 1)],
                {name: values for name, values in per_mb.items()},
                "requests/s per MB of container usage",
                horizontal=False,
                digits=2,
            ),
            alt=f"Requests per second per megabyte of container usage on an endpoint that waits 50 ms, per round: "
            f"fitflix's gthread worker gives {ratio:.1f} times what one sync worker gives.",
            xlabel="round",
        )
    )
    part.targets.append(
        Target(
            f"req/s per MB of container usage, fitflix / one sync worker >= {TARGET_RATIO:g}x",
            ratio >= TARGET_RATIO,
            f"{ratio:.1f}x (working set: {ws_ratio:.1f}x)",
        )
    )
    return part
