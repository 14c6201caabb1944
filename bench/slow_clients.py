"""Part 10: slow and idle clients: /health from a fresh client while silent connections and dripping heads hold on."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bench import peers, plots
from bench.load import percentile
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import Peer, serving
from harness.flood import Flood, FloodStats, probe_series

log = logging.getLogger("bench")

APP = "wsgi:app"
IDLE = 200  # connections that send nothing
LINE_EVERY_S = 2.0  # each slow connection sends one more header line this often, never ending its head
PROBE_EVERY_S = 0.25
PROBE_TIMEOUT_S = 5.0  # a probe without a 2xx by then failed; it counts as this long in the percentiles
FLOOD_UP_S = 30.0  # how long every flood connection may take to open once
TARGET_P99_S = 1.0


@dataclass(frozen=True)
class Measured:
    latencies_s: list[float | None]  # one per probe; None: no 2xx within PROBE_TIMEOUT_S
    during: FloodStats  # right after the last probe, with the flood still open
    final: FloodStats  # after the flood closed


def fitflix_threads() -> int:
    """THREADS FitFlix runs with by default in the reference container: plain gunicorn gets the same."""
    return peers.plan_for(peers.LIMIT_MB).threads


def line_up(threads: int) -> list[tuple[Peer, str]]:
    """(peer, the command it runs) for fitflix's defaults and plain gunicorn's gthread of the same shape."""
    gthread = ("-k", "gthread", "--threads", str(threads))
    return [
        (peers.fitflix(APP), f"`gunicorn -c gunicorn.conf.py {APP}` with no settings (1 worker, THREADS={threads})"),
        (
            peers.plain(APP, workers=1, args=gthread, name="plain gthread"),
            f"`gunicorn -w 1 {' '.join(gthread)} -c /dev/null {APP}`",
        ),
    ]


def under_flood(peer: Peer, slow: int, probe_s: float) -> Measured:
    """Start `peer`, open the flood, probe /health from fresh connections for `probe_s`, then close it all."""
    with serving(peer) as running:
        running.wait_for_workers(1)
        flood_limit_s = FLOOD_UP_S + probe_s + PROBE_TIMEOUT_S + 10  # the flood ends by itself after this
        with Flood(running.port, IDLE, slow, LINE_EVERY_S, flood_limit_s) as flood:
            flood.wait_until_up(FLOOD_UP_S)
            latencies_s = probe_series(running.port, round(probe_s / PROBE_EVERY_S), PROBE_EVERY_S, PROBE_TIMEOUT_S)
            during = flood.stats()
        return Measured(latencies_s, during, flood.stats())


def counted_s(latencies_s: list[float | None]) -> list[float]:
    """Latencies with each failed probe counted as the whole timeout."""
    return [PROBE_TIMEOUT_S if latency is None else latency for latency in latencies_s]


def ms(value_s: float | None) -> str:
    return "-" if value_s is None else f"{value_s * 1000:.0f}"


def flood_text(measured: Measured) -> str:
    during, final = measured.during, measured.final
    return (
        f"open after the probes {during.idle_open} idle + {during.slow_open} slow; "
        f"{final.idle_opened} idle and {final.slow_opened} slow connects in all ({final.reopens} reopens"
        f"{', cap reached' if final.reopens_capped else ''}), {final.connect_failures} connect failures, "
        f"{final.slow_lines_sent} header lines dripped, {final.answers_other} answers other than 408, "
        f"{final.idle_answered} idle connections answered before their close"
    )


def run(scale: Scale) -> Part:
    threads = fitflix_threads()
    slow = 2 * threads
    probes = round(scale.slow_clients_probe_s / PROBE_EVERY_S)
    commands = line_up(threads)
    part = Part(
        10,
        "Slow and idle clients",
        f"`{APP}`, each peer in its own {peers.LIMIT_MB} MB memory cgroup: "
        + "; ".join(f"{peer.name} = {command}" for peer, command in commands)
        + f". Once it answers, one client thread of ours opens {IDLE} connections that send nothing and {slow} "
        f"(2 x THREADS) that send `GET /health HTTP/1.1` and `Host`, then one header line every {LINE_EVERY_S:g} s "
        "and never end the head; a connection the server closes is replaced at once (in all at most 50 reopens per "
        "wanted connection). When every one has opened, /health is probed from a fresh connection (Connection: close) "
        f"every {PROBE_EVERY_S * 1000:.0f} ms for {scale.slow_clients_probe_s:g} s ({probes} probes when each is "
        f"quick): one at a time, so a slow probe delays the next, and none starts after the window. A probe failed "
        f"when no 2xx came within {PROBE_TIMEOUT_S:g} s; it counts as {PROBE_TIMEOUT_S:g} s in p50, p99 and max. "
        "'slow heads cut', '408s' and 'idle closed' are what the flood saw from the server, from its start to its "
        "close.",
        [
            "peer",
            "probes",
            "answered <= 1 s",
            "<= 2 s",
            "failed",
            "p50 ms",
            "p99 ms",
            "max ms",
            "slow heads cut",
            "408s",
            "idle closed",
        ],
    )
    p99_by_peer: dict[str, float] = {}
    probes_by_peer: dict[str, list[float | None]] = {}
    for peer, _command in commands:
        log.info("part 10: %s", peer.name)
        try:
            measured = under_flood(peer, slow, scale.slow_clients_probe_s)
        except Exception as error:
            log.exception("part 10: %s failed", peer.name)
            part.add(peer.name, f"failed: {str(error).splitlines()[0]}", *["-"] * 9)
            continue
        latencies_s = measured.latencies_s
        probes_by_peer[peer.name] = latencies_s
        values_s = counted_s(latencies_s)
        answered_s = [latency for latency in latencies_s if latency is not None]
        p99_s = percentile(values_s, 0.99)
        if p99_s is not None:
            p99_by_peer[peer.name] = p99_s
        part.add(
            peer.name,
            len(latencies_s),
            sum(latency <= 1.0 for latency in answered_s),
            sum(latency <= 2.0 for latency in answered_s),
            len(latencies_s) - len(answered_s),
            ms(percentile(values_s, 0.50)),
            ms(p99_s),
            ms(max(values_s, default=None)),
            measured.final.slow_cut_by_server,
            measured.final.answers_408,
            measured.final.idle_closed_by_server,
        )
        part.notes.append(f"{peer.name}: {flood_text(measured)}")
    ours, theirs = (peer.name for peer, _command in commands)
    if probes_by_peer:
        finding = "; ".join(
            f"{name}: {sum(value is None for value in values)} of {len(values)} probes unanswered"
            + (f", p99 {ms(p99_by_peer[name])} ms" if name in p99_by_peer else "")
            for name, values in probes_by_peer.items()
        )
        part.pictures.append(
            plots.probe_latency(
                "part10-slow-clients",
                f"/health from a fresh client with {IDLE} idle and {slow} slow connections open: {finding}",
                probes_by_peer,
                PROBE_TIMEOUT_S,
                TARGET_P99_S,
                PROBE_EVERY_S,
                alt=f"Each /health probe's latency in turn, log scale, while {IDLE} idle and {slow} slow connections "
                f"hold on; a probe with no answer in {PROBE_TIMEOUT_S:g} s is a cross. {finding}.",
            )
        )
    if ours in p99_by_peer and theirs in p99_by_peer:
        part.notes.append(
            f"p99 {ours} / {theirs}: {p99_by_peer[ours] / p99_by_peer[theirs]:.3g} "
            f"({ms(p99_by_peer[ours])} ms / {ms(p99_by_peer[theirs])} ms)"
        )
    target = (
        f"fitflix: /health p99 from a fresh client < {TARGET_P99_S:g} s with {IDLE} idle and {slow} slow "
        "connections open"
    )
    if ours in p99_by_peer:
        part.targets.append(Target(target, p99_by_peer[ours] < TARGET_P99_S, f"p99 {ms(p99_by_peer[ours])} ms"))
    else:
        part.targets.append(Target(target, None, "fitflix did not run"))
    return part
