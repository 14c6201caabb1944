"""Part 5: what one worker replacement costs a client, single worker, light load."""

from __future__ import annotations

import collections
import logging
import re
import statistics

from bench import peers, plots
from bench.leak import outcome_counts
from bench.load import Sample, percentile, run_clients
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import Peer, serving

log = logging.getLogger("bench")

APP = "bench.apps:app"
MAX_REQUESTS = 50
CLIENTS = 2
PACE_S = 0.01
AFTER_WINDOW_S = 0.25  # requests ending this soon after the new worker's first answer still count as "around"
TARGET_ADDED_MS = 50.0
BEFORE_MS, AFTER_MS = 100.0, 150.0  # the figure: requests this close to a recycle, by their end
FIGURE_RECYCLES = 20  # the first this many of each peer (every request near them): the SVG stays small
REASON = re.compile(r"Recycling worker pid=\d+ reason=(\w+)")


def recycle_events(samples: list[Sample]) -> list[tuple[float, float]]:
    """(last answer of the old worker, first answer of the new one) for each change of the answering pid."""
    events, seen, current, last_end = [], set(), None, None
    for sample in samples:  # sorted by end time
        if sample.pid is None:
            continue
        if current is not None and sample.pid != current and sample.pid not in seen:
            events.append((last_end, sample.end_s))
        if sample.pid != current:
            seen.add(sample.pid)
            current = sample.pid
        last_end = sample.end_s
    return events


def around_recycles(samples: list[Sample], events: list[tuple[float, float]]) -> list[tuple[int, float, float]]:
    """(recycle index, ms from the old worker's last answer, latency ms) for each request that ends from
    BEFORE_MS before a recycle's last old answer to AFTER_MS after its replacement's first answer."""
    points = []
    for sample in samples:
        for index, (old, new) in enumerate(events):
            if old - BEFORE_MS / 1000 <= sample.end_s <= new + AFTER_MS / 1000:
                points.append((index, (sample.end_s - old) * 1000, sample.latency_s * 1000))
                break
    return points


def run(scale: Scale) -> Part:
    part = Part(
        5,
        "Recycle cost (one worker, light load)",
        f"`{APP}` (the real Flask app plus /bench/pid and /bench/leak, each answering its pid), one worker, "
        f"{CLIENTS} keep-alive clients each pausing {PACE_S * 1000:.0f} ms between requests, "
        f"{scale.recycle_requests:,} requests. A recycle is a change of the answering pid. "
        "'gap' = last answer from the old worker to the first "
        "from its replacement, as the client sees it (the recycle decision is taken right after the old worker's "
        "last response, so this is decision -> first request served, plus one loopback round trip). 'worst around' = "
        "the worst latency of requests ending in "
        f"[last old answer, first new answer + {AFTER_WINDOW_S * 1000:.0f} ms]. "
        "'added' = worst around - median latency, median over recycles (max in brackets).",
        [
            "peer",
            "recycles",
            "failed",
            "what clients saw",
            "median ms",
            "p99 ms",
            "gap ms median (max)",
            "worst around ms median (max)",
            "added ms median (max)",
            "recycle reasons (log)",
        ],
    )
    fitflix_limits = {"MAX_REQUESTS": str(MAX_REQUESTS), "MAX_REQUESTS_JITTER": "0"}
    line_up: list[tuple[Peer, str]] = [
        (
            peers.plain(
                APP,
                workers=1,
                args=("--max-requests", str(MAX_REQUESTS)),
                name=f"plain -w 1 --max-requests {MAX_REQUESTS}",
            ),
            "/bench/pid",
        ),
    ]
    reason = peers.uwsgi_or_reason()
    if reason is None:
        # uWSGI ignores max-requests for a worker younger than --min-worker-lifetime (10 s by default).
        line_up.append(
            (
                peers.uwsgi(
                    APP,
                    workers=1,
                    args=("--max-requests", str(MAX_REQUESTS), "--min-worker-lifetime", "0"),
                    name=f"uwsgi 1 process --max-requests {MAX_REQUESTS}",
                ),
                "/bench/pid",
            )
        )
    else:
        part.add("uwsgi", "-", "-", f"not run: {reason}", *["-"] * 6)
    line_up += [
        (peers.fitflix(APP, fitflix_limits, name=f"fitflix MAX_REQUESTS={MAX_REQUESTS}"), "/bench/pid"),
        (
            peers.fitflix(
                APP,
                {**fitflix_limits, "MEMORY_RECYCLING": "false"},
                name=f"fitflix MAX_REQUESTS={MAX_REQUESTS} MEMORY_RECYCLING=false",
            ),
            "/bench/pid",
        ),
        (
            peers.fitflix(APP, {"WORKER_MAX_MEMORY_MB": "80"}, name="fitflix WORKER_MAX_MEMORY_MB=80 + leak 2 MB/req"),
            "/bench/leak?mb=2",
        ),
    ]
    added_by_peer: dict[str, float] = {}
    figure: list[plots.AroundRecycles] = []
    gap_by_peer: dict[str, float] = {}
    for peer, path in line_up:
        log.info("part 5: %s", peer.name)
        try:
            with serving(peer) as running:
                running.wait_for_workers(1)
                samples = run_clients(
                    running.port,
                    path,
                    scale.recycle_requests,
                    CLIENTS,
                    scale.recycle_time_limit_s,
                    pace_s=PACE_S,
                    timeout_s=30,
                    read_pid=True,
                )
                reasons = collections.Counter(REASON.findall(running.log()))
        except Exception as error:
            log.exception("part 5: %s failed", peer.name)
            part.add(peer.name, "-", "-", f"failed: {str(error).splitlines()[0]}", *["-"] * 6)
            continue
        latencies_ms = [sample.latency_s * 1000 for sample in samples]
        median_ms = statistics.median(latencies_ms)
        events = recycle_events(samples)
        gaps_ms = [(new - old) * 1000 for old, new in events]
        worst_ms = []
        for old, new in events:
            around = [sample.latency_s * 1000 for sample in samples if old <= sample.end_s <= new + AFTER_WINDOW_S]
            worst_ms.append(max(around))
        added_ms = [worst - median_ms for worst in worst_ms]
        failed = [sample for sample in samples if not sample.ok]

        def spread(values: list[float]) -> str:
            return f"{statistics.median(values):.0f} ({max(values):.0f})" if values else "-"

        if added_ms:
            added_by_peer[peer.name] = statistics.median(added_ms)
        if gaps_ms:
            gap_by_peer[peer.name] = statistics.median(gaps_ms)
        figure.append(
            plots.AroundRecycles(
                peer.name,
                len(events),
                around_recycles(samples, events[:FIGURE_RECYCLES]),
                f"the first {min(len(events), FIGURE_RECYCLES)} drawn; gap median {statistics.median(gaps_ms):.0f} ms"
                if gaps_ms
                else "",
            )
        )
        part.add(
            peer.name,
            len(events),
            len(failed),
            outcome_counts(samples),
            f"{median_ms:.1f}",
            f"{percentile(latencies_ms, 0.99):.1f}",
            spread(gaps_ms),
            spread(worst_ms),
            spread(added_ms),
            ", ".join(f"{key} x{count}" for key, count in reasons.items()) or "-",
        )
    if figure:
        worst = ", ".join(f"{name.split(' ')[0]} {gap:,.0f} ms" for name, gap in list(gap_by_peer.items())[:3])
        part.pictures.append(
            plots.recycle_latency(
                "part5-recycle",
                f"A worker recycle as its clients see it: no answer for a median of {worst}",
                figure,
                alt=f"The latency of every request near each peer's first {FIGURE_RECYCLES} worker recycles, log "
                f"scale, from {BEFORE_MS:.0f} ms before the old worker's last answer to {AFTER_MS:.0f} ms after "
                f"its replacement's first; the median gap without an answer: {worst}.",
            )
        )

    for name in (f"fitflix MAX_REQUESTS={MAX_REQUESTS}", "fitflix WORKER_MAX_MEMORY_MB=80 + leak 2 MB/req"):
        text = f"{name}: at most {TARGET_ADDED_MS:g} ms added to the worst latency around a recycle"
        if name in added_by_peer:
            part.targets.append(
                Target(
                    text, added_by_peer[name] <= TARGET_ADDED_MS, f"median over recycles {added_by_peer[name]:.0f} ms"
                )
            )
        else:
            part.targets.append(Target(text, None, "no recycle observed"))
    return part
