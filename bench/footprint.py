"""Part 1: footprint at idle and after N requests (container usage, working set, tree PSS, worker USS)."""

from __future__ import annotations

import logging
import time

from bench import peers, plots
from bench.load import requests_until
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import Footprint, Peer, mb, peer_problem, serving
from fitflix.memory.container import MIB

log = logging.getLogger("bench")

SETTLE_S = 1.5  # after start and after load: let workers finish booting and the last responses go out
TARGET_PSS_RATIO = 0.75
TARGET_FLAT_PERCENT = 5.0


def expected_workers(peer: Peer) -> int:
    if peer.kind == "waitress":
        return 0  # one process serving on its threads: nothing forked
    if peer.kind != "fitflix":
        return peer.workers
    if peer.env.get("WEB_CONCURRENCY"):
        return int(peer.env["WEB_CONCURRENCY"])
    clustering = peer.env.get("ENABLE_CLUSTERING") == "true"
    return peers.plan_for(peer.limit_mb, enable_clustering=clustering).workers


def measure(peer: Peer, scale: Scale) -> tuple[Footprint, Footprint, str]:
    with serving(peer) as running:
        running.wait_for_workers(expected_workers(peer))
        time.sleep(SETTLE_S)  # a measurement protocol, not a wait for a state
        idle = running.footprint()
        sent = requests_until(running.port, "/health", scale.footprint_requests, 4, scale.footprint_time_limit_s)
        running.wait_for_workers(expected_workers(peer))
        time.sleep(SETTLE_S)
        after = running.footprint()
    load_note = f"{sent.requests} requests in {sent.duration_s:.0f} s, {sent.errors} errors ({sent.tool})"
    return idle, after, load_note


def run(scale: Scale) -> Part:
    k = peers.cluster_workers()
    part = Part(
        1,
        "Footprint at idle and under load",
        "Each peer in its own memory cgroup (512 MB; the cluster pair 1024 MB), serving `wsgi:app`. "
        f"`idle` is {SETTLE_S} s after the first 200 from /health; `after N` follows N requests to /health "
        "(4 keep-alive connections). Container usage = `memory.usage_in_bytes`, working set = usage - "
        "`total_inactive_file`; tree PSS/RSS summed over master and workers from `/proc/PID/smaps_rollup`; "
        "worker USS = Private_Clean + Private_Dirty, mean over workers. "
        "Note: file pages already in the page cache before a peer started stay charged to the cgroup "
        "that read them first, so container usage undercounts shared libraries; tree PSS does not. "
        f"granian = {peers.PLAIN_WORKERS} workers with its memory recycling on (`--workers-max-rss "
        f"{peers.uwsgi_budget_mb()} --rss-sample-interval 1`: its main process reads each worker's RSS every second "
        "and replaces a worker over the limit); waitress = one process on its 4 threads, no master and no workers "
        "(its one process is in the master USS column).",
        [
            "peer",
            "workers",
            "phase",
            "usage MB",
            "working set MB",
            "tree PSS MB",
            "tree RSS MB",
            "worker USS MB",
            "master USS MB",
            "PSS / plain",
            "PSS vs idle",
        ],
    )
    line_up: list[Peer] = [peers.plain()]
    uwsgi_reason = peers.uwsgi_or_reason()
    if uwsgi_reason is None:
        line_up.append(peers.uwsgi())
    else:
        part.notes.append(f"uwsgi: not run: {uwsgi_reason}")
    for kind, make in (("granian", peers.granian), ("waitress", peers.waitress)):
        reason = peer_problem(kind)
        if reason is None:
            line_up.append(make())
        else:
            part.notes.append(f"{kind}: not run: {reason}")
    line_up += [
        peers.fitflix(),
        peers.fitflix(
            env={"WEB_CONCURRENCY": str(peers.PLAIN_WORKERS)}, name=f"fitflix WEB_CONCURRENCY={peers.PLAIN_WORKERS}"
        ),
        peers.fitflix_cluster(),
        peers.plain(workers=k, limit_mb=peers.CLUSTER_LIMIT_MB, name=f"plain -w {k}"),
    ]
    results: dict[str, tuple[Footprint, Footprint]] = {}
    for peer in line_up:
        log.info("part 1: %s", peer.name)
        try:
            idle, after, load_note = measure(peer, scale)
        except Exception as error:  # one broken peer must not end the run
            log.exception("part 1: %s failed", peer.name)
            part.notes.append(f"{peer.name}: failed: {str(error).splitlines()[0]}")
            continue
        results[peer.name] = (idle, after)
        part.notes.append(f"{peer.name}: {load_note}")

    plain_fp = results.get("plain")
    n = scale.footprint_requests
    single_process = {peer.name for peer in line_up if peer.kind == "waitress"}
    for name, (idle, after) in results.items():
        for phase, figures in (("idle", idle), (f"after {n:,}", after)):
            base = None if plain_fp is None else (plain_fp[0] if phase == "idle" else plain_fp[1])
            ratio = f"{figures.tree_pss_bytes / base.tree_pss_bytes:.2f}" if base else "-"
            change = "" if phase == "idle" else f"{100 * (after.tree_pss_bytes / idle.tree_pss_bytes - 1):+.1f}%"
            uss = sum(figures.worker_uss_bytes) / len(figures.worker_uss_bytes) if figures.worker_uss_bytes else None
            part.add(
                name,
                "1 process" if name in single_process else figures.workers,
                phase,
                mb(figures.usage_bytes),
                mb(figures.working_set_bytes),
                mb(figures.tree_pss_bytes),
                mb(figures.tree_rss_bytes),
                mb(uss),
                mb(figures.master_uss_bytes),
                ratio,
                change,
            )

    equal = [
        (f"fitflix WEB_CONCURRENCY={peers.PLAIN_WORKERS}", "plain"),
        ("granian", "plain"),
        ("fitflix-cluster", f"plain -w {k}"),
    ]
    for ours, theirs in equal:
        if ours in results and theirs in results:
            part.notes.append(
                f"equal worker counts: {ours} / {theirs} tree PSS after {n:,} = "
                f"{results[ours][1].tree_pss_bytes / results[theirs][1].tree_pss_bytes:.2f}"
            )

    fitflix_fp = results.get("fitflix")
    if results:
        finding = (
            f"fitflix's whole tree {fitflix_fp[1].tree_pss_bytes / plain_fp[1].tree_pss_bytes:.2f} x plain gunicorn's"
            if fitflix_fp and plain_fp
            else "each peer's whole process tree"
        )
        part.pictures.append(
            plots.bars(
                "part1-footprint",
                f"Memory the service really holds (tree PSS), idle and after {n:,} requests: {finding}",
                plots.Bars(
                    [
                        f"{name} (1 process)"
                        if name in single_process
                        else f"{name} ({after.workers} worker{'s' if after.workers != 1 else ''})"
                        for name, (_idle, after) in results.items()
                    ],
                    {
                        "idle": [idle.tree_pss_bytes / MIB for idle, _after in results.values()],
                        f"after {n:,} requests": [after.tree_pss_bytes / MIB for _idle, after in results.values()],
                    },
                    "tree PSS (master + workers), MB",
                ),
                alt=f"Tree PSS per peer and worker count, idle and after {n:,} requests to /health: {finding}.",
                series_colours={"idle": plots.LIGHT_GREY, f"after {n:,} requests": plots.DARK_GREY},
            )
        )
    if fitflix_fp and plain_fp:
        ratio = fitflix_fp[1].tree_pss_bytes / plain_fp[1].tree_pss_bytes
        idle_ratio = fitflix_fp[0].tree_pss_bytes / plain_fp[0].tree_pss_bytes
        part.targets.append(
            Target(
                f"fitflix tree PSS <= {TARGET_PSS_RATIO} x plain's",
                ratio <= TARGET_PSS_RATIO and idle_ratio <= TARGET_PSS_RATIO,
                f"{ratio:.2f} after {n:,} requests, {idle_ratio:.2f} idle "
                f"({mb(fitflix_fp[1].tree_pss_bytes)} vs {mb(plain_fp[1].tree_pss_bytes)} MB)",
            )
        )
    else:
        part.targets.append(Target(f"fitflix tree PSS <= {TARGET_PSS_RATIO} x plain's", None, "a peer failed"))
    if fitflix_fp:
        change = 100 * (fitflix_fp[1].tree_pss_bytes / fitflix_fp[0].tree_pss_bytes - 1)
        part.targets.append(
            Target(
                f"fitflix tree PSS flat (within {TARGET_FLAT_PERCENT:g}%) from idle to {n:,} requests",
                abs(change) <= TARGET_FLAT_PERCENT,
                f"{change:+.1f}% ({mb(fitflix_fp[0].tree_pss_bytes)} -> {mb(fitflix_fp[1].tree_pss_bytes)} MB)",
            )
        )
    return part
