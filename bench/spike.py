"""Part 4: one request that allocates 1.5 x the limit, under light background load on /health."""

from __future__ import annotations

import http.client
import logging
import threading
import time

from bench import peers, plots
from bench.footprint import expected_workers
from bench.leak import (
    SAMPLE_EVERY_S,
    granian_events,
    granian_method,
    memory_figure,
    outcome_counts,
    sampling_note,
    settle_granian,
)
from bench.load import run_clients
from bench.report import Part
from bench.scale import Scale
from bench.servers import MemorySampler, mb, peer_problem, serving

log = logging.getLogger("bench")

APP = "harness.apps.leaky:app"
BACKGROUND_CLIENTS = 2
BACKGROUND_PACE_S = 0.02
BEFORE_S = 1.0  # background load alone before the spike
AFTER_S = 2.0  # and after the service answers again


def first_fresh_answer(port: int, time_limit_s: float) -> float | None:
    """Seconds until /health answers 200 on a fresh connection (polled every 10 ms), None if never."""
    started = time.monotonic()
    while time.monotonic() - started < time_limit_s:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return time.monotonic() - started
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(0.01)  # the poll interval
    return None


def longest_gap_s(samples, since_s: float) -> float:
    """Longest stretch after `since_s` with no successful background answer."""
    ends = [since_s] + sorted(sample.end_s for sample in samples if sample.ok and sample.end_s >= since_s)
    last = max((sample.end_s for sample in samples), default=since_s)
    ends.append(max(last, ends[-1]))
    return max(later - earlier for earlier, later in zip(ends, ends[1:], strict=False))


def run(scale: Scale) -> Part:
    part = Part(
        4,
        "One oversized request (spike)",
        f"`{APP}` /spike?mb=1.5 x limit (768 in {peers.LIMIT_MB} MB, 1536 in {peers.CLUSTER_LIMIT_MB} MB for "
        f"fitflix-cluster), sent once {BEFORE_S:g} s into a background load of {BACKGROUND_CLIENTS} clients on /health "
        f"(one request every {BACKGROUND_PACE_S * 1000:.0f} ms each). 'answers again' = from the spike's response "
        "(or error) to the first 200 from /health on a fresh connection; 'longest gap' = the longest time without a "
        "successful background answer from the moment the spike was sent. "
        f"{granian_method(peers.uwsgi_budget_mb())}",
        [
            "peer",
            "OOM kills",
            "spike saw",
            "spike ms",
            "background saw",
            "longest gap ms",
            "answers again ms",
            "peak MB",
        ],
    )
    line_up, reason = peers.all_four(APP)
    if reason is not None:
        part.add("uwsgi", "-", f"not run: {reason}", *["-"] * 5)
    granian_reason = peer_problem("granian")
    if granian_reason is None:
        line_up.append(peers.granian(APP))
    else:
        part.add("granian", "-", f"not run: {granian_reason}", *["-"] * 5)

    traces: list[plots.Trace] = []
    notes: dict[str, str] = {}
    for peer in line_up:
        log.info("part 4: %s", peer.name)
        spike_mb = peer.limit_mb * 3 // 2
        try:
            with serving(peer) as running:
                running.wait_for_workers(expected_workers(peer))  # a worker still booting is no new worker
                with MemorySampler(running.cgroup, SAMPLE_EVERY_S) as sampler:
                    stop = threading.Event()
                    background: list = []
                    thread = threading.Thread(
                        target=lambda background=background, stop=stop, port=running.port: background.extend(
                            run_clients(
                                port,
                                "/health",
                                100_000,
                                BACKGROUND_CLIENTS,
                                scale.spike_time_limit_s,
                                pace_s=BACKGROUND_PACE_S,
                                timeout_s=10,
                                stop=stop,
                            )
                        ),
                        daemon=True,
                    )
                    thread.start()
                    time.sleep(BEFORE_S)  # background alone first: the load the spike lands in
                    spike_sent = time.monotonic()
                    spike = run_clients(
                        running.port,
                        f"/spike?mb={spike_mb}",
                        1,
                        1,
                        scale.spike_time_limit_s / 2,
                        timeout_s=scale.spike_time_limit_s / 2,
                    )
                    answers_again = first_fresh_answer(running.port, scale.spike_time_limit_s / 4)
                    time.sleep(AFTER_S)
                    stop.set()
                    thread.join(15)
                    sampler.stop()
                    settle_granian(running, expected_workers(peer))
                    oom_kills, peak = running.oom_kills(), running.peak_bytes()
                    granian_note = granian_events(running.log(), running.exit_code())
                    exit_code = running.exit_code()
        except Exception as error:
            log.exception("part 4: %s failed", peer.name)
            part.add(peer.name, "-", f"failed: {str(error).splitlines()[0]}", *["-"] * 5)
            continue
        spike_sample = spike[0] if spike else None
        trace = sampler.trace(peer.name, peer.limit_mb)
        # The spike's own moment on each panel: every peer's timeline starts with its background load.
        shift = BEFORE_S - sampler.since(spike_sent)
        traces.append(
            plots.Trace(
                trace.peer,
                trace.limit_mb,
                [t + shift for t in trace.t_s],
                trace.usage_mb,
                [t + shift for t in trace.oom_kill_s],
                [t + shift for t in trace.new_worker_s],
            )
        )
        notes[peer.name] = f"the {spike_mb} MB request got {outcome_counts(spike) if spike else 'nothing'}"
        if peer.kind == "granian":
            part.notes.append(f"{peer.name}: {oom_kills} OOM kills in the cgroup; its log: {granian_note}")
        part.add(
            f"{peer.name} ({spike_mb} MB in {peer.limit_mb} MB)",
            oom_kills,
            outcome_counts(spike) if spike else "-",
            f"{spike_sample.latency_s * 1000:.0f}" if spike_sample else "-",
            outcome_counts(background),
            f"{longest_gap_s(background, spike_sent) * 1000:.0f}",
            # An answer from the worker that survived, before the server itself left, is not "up again".
            (f"{answers_again * 1000:.0f}" if answers_again is not None else "never")
            + (f", then exited (code {exit_code})" if exit_code is not None else ""),
            mb(peak, 0),
        )
    if traces:
        killed = [trace.peer for trace in traces if trace.oom_kill_s]
        finding = f"one request of 1.5 x the limit OOM-kills {', '.join(killed) or 'no peer'}"
        part.pictures.append(
            memory_figure(
                "part4-spike",
                f"The spike: {finding}",
                traces,
                "Each peer's cgroup memory around one request that asks for 1.5 times the limit, as a share of the "
                f"limit, with OOM kills and new workers marked: {finding}.",
                events=[(BEFORE_S, "spike sent")],
                xlabel="seconds since the background load started (the spike at 1 s)",
                notes=notes,
            )
        )
        part.notes.append(sampling_note(traces))
    return part
