"""Part 8: spike sweep: one oversized request at a time, sized around FitFlix's hard cap, per limit and THREADS."""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from dataclasses import dataclass

import psutil

from bench import peers, plots
from bench.leak import granian_events, granian_method, settle_granian
from bench.load import run_clients
from bench.report import Part
from bench.scale import Scale
from bench.servers import Peer, Running, mb, peer_problem, serving
from bench.spike import first_fresh_answer
from harness.wait import Timeout, poll_until

log = logging.getLogger("bench")

APP = "harness.apps.leaky:app"
LIMITS_MB = (256, 512)
SPIKE_TIMEOUT_S = 20.0  # one spike's request, from send to the last byte of the answer
ANSWER_DEADLINE_S = 20.0  # after a spike, how long /health may take to answer 200 again
FULL_STRENGTH_S = 10.0  # after the sweep, how long the peer may take to run all its workers again
SETTLED_AGE_S = 0.5  # a worker this old has set up its signal handlers (uWSGI: see wait_for_full_strength)
SIZE_LABELS = ("0.9 x cap", "cap", "cap..limit", "limit", "1.5 x limit", "4 x limit")
PADDING = ["-"] * (len(SIZE_LABELS) + 2)  # the cells after the message on a row without figures

# What a client sees when the server drops the connection: the worker that read it was killed.
RESET_ERRORS = {"RemoteDisconnected", "ConnectionResetError", "BadStatusLine", "IncompleteRead", "BrokenPipeError"}
TIMEOUT_ERRORS = {"TimeoutError", "timeout"}


@dataclass(frozen=True)
class SpikeResult:
    size_mb: int
    outcome: str  # an HTTP status, "reset", "timeout", "refused" or an exception name
    oom_kills: int  # the cgroup's oom_kill count delta across this spike
    peak_bytes: int | None  # the cgroup's peak usage during this spike (since the run started on cgroup v2)
    answered_after_s: float | None  # first 200 from /health on a fresh connection; None: not within the deadline

    def cell(self) -> str:
        """'503', 'reset oom1', 'timeout oom1 down': the outcome, the OOM kills it caused, whether it stayed down."""
        marks = [self.outcome] + ([f"oom{self.oom_kills}"] if self.oom_kills else [])
        return " ".join(marks + ([] if self.answered_after_s is not None else ["down"]))


def spike_sizes_mb(limit_mb: int, threads: int) -> list[int]:
    """0.9 x hard cap, hard cap, midway to the limit, the limit, 1.5 x and 4 x the limit (FitFlix's plan here)."""
    cap_mb = peers.plan_for(limit_mb, threads=threads).worker_hard_cap_mb
    return [cap_mb * 9 // 10, cap_mb, (cap_mb + limit_mb) // 2, limit_mb, limit_mb * 3 // 2, limit_mb * 4]


def line_up(limit_mb: int, threads: int, with_uwsgi: bool, with_granian: bool = False) -> list[Peer]:
    """fitflix with THREADS, plain gunicorn -w 2 (sync at 1 thread, gthread beyond), uWSGI 2 processes,
    granian 2 workers with THREADS blocking threads each."""
    gthread = ("-k", "gthread", "--threads", str(threads)) if threads > 1 else ()
    line = [
        peers.fitflix(APP, {"THREADS": str(threads)}, limit_mb=limit_mb),
        peers.plain(APP, limit_mb=limit_mb, args=gthread, name="plain"),
    ]
    if with_uwsgi:
        budget_mb = peers.uwsgi_budget_mb(limit_mb)
        uwsgi_threads = ("--threads", str(threads)) if threads > 1 else ()
        line.append(peers.uwsgi(APP, limit_mb=limit_mb, args=("--reload-on-rss", str(budget_mb), *uwsgi_threads)))
    if with_granian:
        recycling = peers.granian(APP, limit_mb=limit_mb).args
        line.append(peers.granian(APP, limit_mb=limit_mb, args=(*recycling, "--blocking-threads", str(threads))))
    return line


def restart_peak(running: Running) -> None:
    """Start the cgroup's peak afresh (v1: write 0 to memory.max_usage_in_bytes); v2's memory.peak keeps on."""
    if running.cgroup is not None and running.cgroup.version == 1:
        (running.cgroup.directory / "memory.max_usage_in_bytes").write_text("0")


def spike_outcome(samples) -> str:
    if not samples:
        return "not sent"
    sample = samples[0]
    if sample.status is not None:
        return str(sample.status)
    if sample.error in RESET_ERRORS:
        return "reset"
    if sample.error in TIMEOUT_ERRORS:
        return "timeout"
    return "refused" if sample.error == "ConnectionRefusedError" else str(sample.error)


def one_spike(running: Running, size_mb: int) -> SpikeResult:
    """Send /spike?mb=size_mb once, then poll /health on fresh connections until it answers 200."""
    restart_peak(running)
    oom_before = running.oom_kills()
    samples = run_clients(running.port, f"/spike?mb={size_mb}", 1, 1, SPIKE_TIMEOUT_S, timeout_s=SPIKE_TIMEOUT_S)
    answered_after_s = first_fresh_answer(running.port, ANSWER_DEADLINE_S)
    return SpikeResult(
        size_mb, spike_outcome(samples), running.oom_kills() - oom_before, running.peak_bytes(), answered_after_s
    )


def settled_workers(running: Running) -> int:
    """Workers that run (not zombies waiting to be reaped) and have lived at least SETTLED_AGE_S."""
    count = 0
    for pid in running.worker_pids():
        try:
            process = psutil.Process(pid)
            count += process.status() != psutil.STATUS_ZOMBIE and time.time() - process.create_time() >= SETTLED_AGE_S
        except psutil.Error:  # gone between the listing and the look
            pass
    return count


def wait_for_full_strength(running: Running, workers: int) -> None:
    """Wait until `workers` settled workers run again before the server is stopped. uWSGI sleeps 2 s when it
    respawns "too fast" (back-to-back OOM kills), and a SIGTERM in the first moments of a respawned worker
    took 30 s and our SIGKILL to stop it: measured here, not part of what the table reports."""
    try:
        poll_until(lambda: settled_workers(running) >= workers, FULL_STRENGTH_S, f"{workers} settled workers")
    except Timeout:
        log.warning("part 8: %s runs %s of its %s workers", running.peer.name, settled_workers(running), workers)


def started_workers(peer: Peer, limit_mb: int, threads: int) -> int:
    if peer.kind == "fitflix":
        return peers.plan_for(limit_mb, threads=threads).workers
    return peer.workers


def sweep_one_peer(peer: Peer, limit_mb: int, threads: int, sizes_mb: list[int]) -> tuple[list[SpikeResult], str]:
    """A fresh server in a fresh cgroup; the spikes one after another, smallest first, until its main process
    exits (granian does when a worker dies): the spikes sent, and how the server ended ('' when it kept going)."""
    workers = started_workers(peer, limit_mb, threads)
    with serving(peer) as running:
        running.wait_for_workers(workers)
        results = []
        for size_mb in sizes_mb:
            results.append(one_spike(running, size_mb))
            settle_granian(running, workers)
            if running.exit_code() is not None:
                break
        ending = ""
        if running.exit_code() is not None:
            ending = f"exited (code {running.exit_code()}) after the {results[-1].size_mb} MB spike"
            # An answer from the surviving worker before the server left is no recovery.
            results[-1] = dataclasses.replace(results[-1], answered_after_s=None)
        else:
            wait_for_full_strength(running, workers)
        if peer.kind == "granian":
            ending = "; ".join(filter(None, [ending, granian_events(running.log(), running.exit_code())]))
        return results, ending


def peaks_text(results: list[SpikeResult]) -> str:
    return "/".join(mb(result.peak_bytes, 0) for result in results)


def run(scale: Scale) -> Part:
    sizes_text = "; ".join(
        f"{limit_mb} MB, THREADS={threads}: {', '.join(map(str, spike_sizes_mb(limit_mb, threads)))}"
        for limit_mb in LIMITS_MB
        for threads in scale.spike_sweep_threads
    )
    part = Part(
        8,
        "Spike sweep (one oversized request at a time, per limit and THREADS)",
        f"`{APP}` /spike?mb=N (allocates N MiB, writes every page, drops it), one request at a time, in this order: "
        "0.9 x FitFlix's worker hard cap, the hard cap, midway between the hard cap and the limit, the limit, "
        "1.5 x and 4 x the limit (the hard cap from `plan_for(limit, threads=THREADS)`; the same MB for every peer). "
        f"Sizes in MB: {sizes_text}. Each peer starts fresh for each limit and THREADS in a memory cgroup of that "
        "limit. fitflix = gunicorn.conf.py with THREADS (limit detected from the cgroup); plain = "
        f"`gunicorn -w {peers.PLAIN_WORKERS} -c /dev/null`, sync at THREADS=1 and `-k gthread --threads N` above; "
        f"uwsgi = {peers.PLAIN_WORKERS} processes (`--threads N` above 1), `--reload-on-rss` at FitFlix's budget "
        f"for {peers.PLAIN_WORKERS} workers in the limit. {granian_method()} "
        "granian runs `--blocking-threads` THREADS; once a peer's main "
        "process has exited, its larger spikes are not sent (`-`). "
        "After each spike /health is polled on fresh connections "
        f"until it answers 200 (at most {ANSWER_DEADLINE_S:g} s). A cell is what the spike's client saw (an HTTP "
        "status; reset = connection dropped or empty reply; timeout = no answer in "
        f"{SPIKE_TIMEOUT_S:g} s), then `oomN` if the cgroup's oom_kill count rose by N, then `down` if /health did "
        "not answer again in time or the server's main process exited after the spike. Peaks: the cgroup's peak "
        "usage during each spike, MB (cgroup v1 counter reset "
        "before each spike; on v2 the running peak).",
        ["peer", "limit MB", "THREADS", *SIZE_LABELS, "OOM kills", "answered after", "peak MB per spike"],
    )
    reason = peers.uwsgi_or_reason()
    if reason is not None:
        part.notes.append(f"uwsgi not run: {reason}")
    granian_reason = peer_problem("granian")
    if granian_reason is not None:
        part.notes.append(f"granian not run: {granian_reason}")
    totals: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    kills_by_size: dict[str, list[int]] = {}
    deadline = time.monotonic() + scale.spike_sweep_time_limit_s
    for limit_mb in LIMITS_MB:
        for threads in scale.spike_sweep_threads:
            sizes_mb = spike_sizes_mb(limit_mb, threads)
            for peer in line_up(limit_mb, threads, with_uwsgi=reason is None, with_granian=granian_reason is None):
                if time.monotonic() > deadline:
                    part.add(
                        peer.name,
                        limit_mb,
                        threads,
                        f"not run: the {scale.spike_sweep_time_limit_s:g} s bound",
                        *PADDING,
                    )
                    continue
                log.info("part 8: %s, %s MB, THREADS=%s", peer.name, limit_mb, threads)
                try:
                    results, ending = sweep_one_peer(peer, limit_mb, threads, sizes_mb)
                except Exception as error:
                    log.exception("part 8: %s failed", peer.name)
                    part.add(peer.name, limit_mb, threads, f"failed: {str(error).splitlines()[0]}", *PADDING)
                    continue
                answered = sum(result.answered_after_s is not None for result in results)
                oom_kills = sum(result.oom_kills for result in results)
                totals[peer.name].update(oom_kills=oom_kills, answered=answered, spikes=len(results))
                totals[peer.name].update(non_200=sum(result.outcome != "200" for result in results))
                totals[peer.name].update(not_sent=len(sizes_mb) - len(results))
                tally = kills_by_size.setdefault(peer.name, [0] * len(SIZE_LABELS))
                for index, result in enumerate(results):
                    tally[index] += result.oom_kills
                if ending:
                    part.notes.append(f"{peer.name}, {limit_mb} MB, THREADS={threads}: {ending}")
                part.add(
                    peer.name,
                    limit_mb,
                    threads,
                    *(result.cell() for result in results),
                    *["-"] * (len(sizes_mb) - len(results)),  # not sent: the server had exited
                    oom_kills,
                    f"{answered}/{len(results)}",
                    peaks_text(results),
                )
    if kills_by_size:
        cases = len(LIMITS_MB) * len(scale.spike_sweep_threads)
        finding = ", ".join(
            f"{name} {totals[name]['oom_kills']}"
            # Fewer kills from a server that had left is no better survival.
            + (f" (then exited: {totals[name]['not_sent']} spikes not sent)" if totals[name]["not_sent"] else "")
            for name in kills_by_size
        )
        part.pictures.append(
            plots.bars(
                "part8-spike-sweep",
                f"OOM kills by spike size, over {cases} combinations of limit and THREADS: {finding}",
                plots.Bars(
                    list(SIZE_LABELS), kills_by_size, "OOM kills (all limits and THREADS)", horizontal=False, digits=0
                ),
                alt=f"OOM kills for each spike size, summed over {cases} combinations of limit and THREADS, per peer: "
                f"{finding}.",
                xlabel="spike size (relative to FitFlix's worker hard cap and the container's limit)",
            )
        )
    for name, total in totals.items():
        part.notes.append(
            f"{name}: {total['oom_kills']} OOM kills over the sweep; answered again after {total['answered']} of "
            f"{total['spikes']} spikes; {total['non_200']} spikes did not get a 200"
            + (f"; {total['not_sent']} not sent (the server had exited)" if total["not_sent"] else "")
        )
    return part
