"""Part 10: slow, idle and hostile clients: /health from a fresh client while they hold on.

The flood: silent connections and dripping heads, FitFlix against plain gunicorn gthread. The hostile clients:
each of the four of harness/hostile.py in turn, FitFlix's worker (the default) against WORKER=gthread.

At full scale about 3 minutes on 2 cores: the flood about 70 s (two peers, 30 s of probes each), the hostile
clients about 100 s, 8 runs (two workers x four clients) of about 12 s each (a 10 s probe window, a last probe's
timeout where probes fail, the server's start and stop). At quick scale about 80 s (12 s and 5 s windows).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import peers, plots
from bench.load import percentile
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import Peer, Running, serving
from harness import hostile
from harness.fitflix_log import parse_recycles
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


def counted_s(latencies_s: list[float | None], timeout_s: float = PROBE_TIMEOUT_S) -> list[float]:
    """Latencies with each failed probe counted as the whole timeout."""
    return [timeout_s if latency is None else latency for latency in latencies_s]


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


# --- the four hostile clients (harness/hostile.py, as tests/live/test_hostile_clients.py runs them) -------------

HOSTILE_THREADS = 2  # THREADS of every hostile run: two request threads, which two stalled bodies fill
HOSTILE_PROBE_TIMEOUT_S = 2.0  # a probe under a hostile client failed when no 2xx came by then
HOSTILE_MIN_WINDOW_S = 5.0
HOSTILE_CAP = 50  # --worker-connections of the slowloris run, and the heads it holds
STALLED_BODIES = 2  # = HOSTILE_THREADS
MAX_REARMS = 100  # connections a hostile client opens in place of those the server let go of, per run
SETUP_LIMIT_S = 5.0  # the held heads taken (or refused) by then, before the probes start
WORKERS = (("fitflix", "fitflix"), ("fitflix WORKER=gthread", "gthread"))  # (row name, WORKER)


@dataclass(frozen=True)
class HostileKind:
    key: str
    label: str  # what the client does, for the table and the targets
    env: dict[str, str]  # the server's settings beside THREADS, DRAIN_S, WEB_CONCURRENCY and WORKER
    how: str  # for the method paragraph


HOSTILE_KINDS = (
    HostileKind(
        "body",
        "a body that never comes",
        {"HEAD_TIMEOUT_S": "3"},
        f"HEAD_TIMEOUT_S=3: {STALLED_BODIES} connections each send a `POST /health/live` head with "
        "`Content-Length: 100000` and never the body",
    ),
    HostileKind(
        "unread",
        "answers never read",
        {"HEAD_TIMEOUT_S": "1", "WORKER_TIMEOUT_S": "3"},
        "HEAD_TIMEOUT_S=1, WORKER_TIMEOUT_S=3: one connection with a 4 KB receive buffer pipelines 400 "
        "`GET /openapi.json` and never reads",
    ),
    HostileKind(
        "trickle",
        "a head trickled byte by byte",
        {"HEAD_TIMEOUT_S": "30"},
        "HEAD_TIMEOUT_S=30: one head of about 32 KB (80 headers) sent one byte per send(), paced over the whole window",
    ),
    HostileKind(
        "slowloris",
        "slowloris at the connection cap",
        {"HEAD_TIMEOUT_S": "60", "GUNICORN_CMD_ARGS": f"--worker-connections {HOSTILE_CAP}"},
        f"HEAD_TIMEOUT_S=60, `--worker-connections {HOSTILE_CAP}` (GUNICORN_CMD_ARGS): {HOSTILE_CAP} connections "
        "each send `G` and hold it",
    ),
)


def hostile_window_s(scale: Scale) -> float:
    """How long /health is probed under each hostile client: a third of the flood's window, 5 s at least."""
    return max(HOSTILE_MIN_WINDOW_S, scale.slow_clients_probe_s / 3)


def hostile_env(worker: str, kind: HostileKind) -> dict[str, str]:
    return {
        "WORKER": worker,
        "THREADS": str(HOSTILE_THREADS),
        "WEB_CONCURRENCY": "1",
        "DRAIN_S": "0",  # the stop does not wait out a drain
        **kind.env,
    }


@dataclass(frozen=True)
class ProbeSummary:
    probes: int
    within_1_s: int
    within_2_s: int
    failed: int  # no 2xx within the timeout
    p50_s: float | None  # a failed probe counted as the whole timeout
    p99_s: float | None
    max_s: float | None


def summarize(results: list[tuple[float | None, int | None]], timeout_s: float) -> ProbeSummary:
    """(latency, status) of each probe: a probe answered only with a 2xx within `timeout_s`."""
    latencies_s = answered_latencies(results, timeout_s)
    answered_s = [latency for latency in latencies_s if latency is not None]
    values_s = counted_s(latencies_s, timeout_s)
    return ProbeSummary(
        probes=len(results),
        within_1_s=sum(latency <= 1.0 for latency in answered_s),
        within_2_s=sum(latency <= 2.0 for latency in answered_s),
        failed=len(results) - len(answered_s),
        p50_s=percentile(values_s, 0.50),
        p99_s=percentile(values_s, 0.99),
        max_s=max(values_s, default=None),
    )


def answered_latencies(results: list[tuple[float | None, int | None]], timeout_s: float) -> list[float | None]:
    """Each probe's latency, or None when no 2xx came within `timeout_s`."""
    return [
        latency if latency is not None and status is not None and 200 <= status < 300 and latency <= timeout_s else None
        for latency, status in results
    ]


def hostile_target(label: str, summary: ProbeSummary | None) -> Target:
    """fitflix under one hostile client: /health p99 < 1 s and no probe failed; not measured when it did not run."""
    text = f"fitflix under {label}: /health p99 from a fresh client < {TARGET_P99_S:g} s and no probe failed"
    if summary is None or not summary.probes:
        return Target(text, None, "fitflix did not run")
    met = summary.p99_s is not None and summary.p99_s < TARGET_P99_S and summary.failed == 0
    return Target(text, met, f"p99 {ms(summary.p99_s)} ms, {summary.failed} of {summary.probes} probes failed")


def probe_while(
    port: int, window_s: float, tick: Callable[[], None], every_s: float = PROBE_EVERY_S, timeout_s: float = 2.0
) -> list[tuple[float | None, int | None]]:
    """Probe /health from a fresh connection every `every_s` for `window_s` (one at a time: a slow probe delays
    the next; none starts after the window), calling `tick` after each: (latency, status) of each probe."""
    started = time.monotonic()
    results: list[tuple[float | None, int | None]] = []
    for index in range(int(window_s / every_s) + 1):  # bounded: at most one a tick, none after the window
        due = max(started + index * every_s, time.monotonic())
        if due - started >= window_s:
            break
        time.sleep(max(0.0, due - time.monotonic()))  # pacing the series, not waiting for a state
        results.append(hostile.probe_health(port, timeout_s))
        tick()
    return results


def seconds_text(values_s: list[float]) -> str:
    if not values_s:
        return "-"
    return f"{min(values_s):.1f}-{max(values_s):.1f} s" if len(values_s) > 1 else f"{values_s[0]:.1f} s"


def statuses_text(seen: Counter) -> str:
    """'408 x 3, none x 1': what the server sent each connection it closed (none: closed without an answer),
    or how it let go of each ('fin x 2')."""
    if not seen:
        return "nothing"
    ordered = sorted(seen.items(), key=lambda item: (item[0] is None, str(item[0])))
    return ", ".join(f"{'none' if value is None else value} x {count}" for value, count in ordered)


@dataclass
class StalledBodies:
    """`count` connections whose POST head announces a body that never comes; each the server closes is replaced."""

    port: int
    count: int = STALLED_BODIES
    socks: list = field(default_factory=list)
    watched: list[hostile.Watched] = field(default_factory=list)
    opened: int = 0
    connect_failures: list[str] = field(default_factory=list)

    HEAD = (
        f"POST /health/live HTTP/1.1\r\nHost: {hostile.LOOPBACK}\r\nContent-Type: application/octet-stream\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).encode()

    def __enter__(self) -> StalledBodies:
        try:
            for _ in range(self.count):
                self._open()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _open(self) -> None:
        sock = hostile.connect(self.port)
        self.socks.append(sock)
        sock.sendall(self.HEAD)
        self.watched.append(hostile.Watched(sent_at=time.monotonic()))
        self.opened += 1

    def tick(self) -> None:
        live = [(sock, entry) for sock, entry in zip(self.socks, self.watched, strict=True) if entry.how is None]
        if not live:
            return
        hostile.watch_until_closed([sock for sock, _ in live], [entry for _, entry in live], 0.0)
        for sock, entry in live:
            if entry.how is not None:
                sock.close()
                if self.opened - self.count < MAX_REARMS:
                    try:
                        self._open()
                    except OSError as error:  # a connect the server did not take: said in the note
                        self.connect_failures.append(f"{type(error).__name__}: {error}")

    def saw(self, _running: Running) -> str:
        closed = [entry for entry in self.watched if entry.closed_after_s is not None]
        return (
            f"{self.opened} stalled bodies opened; {len(closed)} closed by the server after "
            f"{seconds_text([entry.closed_after_s for entry in closed])}, answered: "
            f"{statuses_text(Counter(entry.status for entry in closed))}"
            + (f"; {len(self.connect_failures)} reopens failed" if self.connect_failures else "")
        )

    def __exit__(self, *_exc) -> None:
        for sock in self.socks:
            sock.close()


@dataclass
class UnreadClients:
    """One `hostile.UnreadAnswers` at a time: when the server lets go of it, another takes its place."""

    port: int
    clients: list[hostile.UnreadAnswers] = field(default_factory=list)
    let_go: list[tuple[str, float]] = field(default_factory=list)  # (how, seconds after its requests were sent)

    def __enter__(self) -> UnreadClients:
        self._open()
        return self

    def _open(self) -> None:
        client = hostile.UnreadAnswers(self.port, count=400, path="/openapi.json", rcvbuf=4096)
        self.clients.append(client)
        client.__enter__()

    def tick(self) -> None:
        current = self.clients[-1]
        how = current.let_go()
        if how is None:
            return
        self.let_go.append((how, time.monotonic() - current.sent_at))
        current.__exit__()
        if len(self.clients) <= MAX_REARMS:
            self._open()

    def saw(self, running: Running) -> str:
        timeouts = len(parse_recycles(running.log(), "timeout"))
        return (
            f"{len(self.clients)} unread connections; the server let go of {len(self.let_go)} after "
            f"{seconds_text([after for _how, after in self.let_go])} "
            f"(how: {statuses_text(Counter(how for how, _after in self.let_go))}); "
            f"workers replaced for reason=timeout: {timeouts}"
        )

    def __exit__(self, *_exc) -> None:
        for client in self.clients:
            client.__exit__()


class Trickle:
    """`hostile.trickle_head` on a thread of its own, over `duration_s`, while the probes run."""

    def __init__(self, port: int, worker_pid: int, duration_s: float) -> None:
        self.port, self.worker_pid, self.duration_s = port, worker_pid, duration_s
        self.result: hostile.TrickleResult | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="trickle-head", daemon=True)

    def _run(self) -> None:
        try:
            self.result = hostile.trickle_head(
                self.port, self.worker_pid, hostile.big_head(32_000), self.duration_s, self.duration_s + 10
            )
        except Exception as error:  # reported in the row's note
            self.error = f"{type(error).__name__}: {error}"

    def __enter__(self) -> Trickle:
        self.thread.start()
        return self

    def tick(self) -> None:
        pass

    def saw(self, _running: Running) -> str:
        self.thread.join(self.duration_s + 15)  # bounded: the trickle's own time limit is duration_s + 10
        if self.result is None:
            return f"the trickle did not finish ({self.error or 'still running at its time limit'})"
        result = self.result
        return (
            f"{result.bytes_sent} bytes in {result.sends} sends over {result.elapsed_s:.1f} s, answered "
            f"{result.status or 'nothing'}; worker CPU {result.worker_cpu_s:.2f} s, "
            f"{result.cpu_us_per_byte:.0f} us a byte (the probes' requests included)"
        )

    def __exit__(self, *_exc) -> None:
        self.thread.join(self.duration_s + 15)  # bounded: the trickle's own time limit is duration_s + 10


class HeldAtCap:
    """`hostile.HeldHeads` at the connection cap; each held head the server closes is replaced (bounded)."""

    def __init__(self, port: int, cap: int = HOSTILE_CAP) -> None:
        self.port, self.cap = port, cap
        self.groups: list[hostile.HeldHeads] = []
        self.taken_at_start = 0
        self.cut_seen = 0
        self.reopen_failures: list[str] = []

    def __enter__(self) -> HeldAtCap:
        try:
            self._open(self.cap, settle_s=0.5)
            held = self.groups[0]
            deadline = time.monotonic() + SETUP_LIMIT_S
            while held.waiting() and held.not_taken_from is None and time.monotonic() < deadline:
                time.sleep(hostile.POLL_S)  # polling against the deadline
            self.taken_at_start = held.taken()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _open(self, count: int, settle_s: float) -> None:
        group = hostile.HeldHeads(self.port, count, first=b"G", settle_s=settle_s)
        group.__enter__()
        self.groups.append(group)

    def cut(self) -> list[hostile.Watched]:
        return [entry for group in self.groups for entry in group.closed_by_server()]

    def tick(self) -> None:
        cut = len(self.cut())
        opened = sum(group.count for group in self.groups)
        fresh = min(cut - self.cut_seen, self.cap + MAX_REARMS - opened)
        self.cut_seen = cut
        if fresh > 0:
            try:
                self._open(fresh, settle_s=0.2)
            except OSError as error:  # HeldHeads closed what it opened
                self.reopen_failures.append(f"{type(error).__name__}: {error}")

    def saw(self, _running: Running) -> str:
        cut = self.cut()
        waiting = sum(group.waiting() for group in self.groups)
        return (
            f"{self.taken_at_start} of {self.cap} held heads taken by the server at the start; "
            f"{len(cut)} cut by it (answered: {statuses_text(Counter(entry.status for entry in cut))}), "
            f"{sum(group.count for group in self.groups) - self.cap} opened in their place; "
            f"{waiting} still in the listen backlog at the end"
            + (f"; {len(self.reopen_failures)} reopens failed" if self.reopen_failures else "")
        )

    def __exit__(self, *_exc) -> None:
        for group in self.groups:
            group.__exit__()


@dataclass(frozen=True)
class HostileRun:
    name: str  # the row's peer name
    kind: HostileKind
    results: list[tuple[float | None, int | None]]
    saw: str


def hostile_client(kind: HostileKind, running: Running, window_s: float):
    if kind.key == "body":
        return StalledBodies(running.port)
    if kind.key == "unread":
        return UnreadClients(running.port)
    if kind.key == "trickle":
        [worker_pid] = running.worker_pids()
        return Trickle(running.port, worker_pid, window_s)
    if kind.key == "slowloris":
        return HeldAtCap(running.port)
    raise ValueError(f"no hostile client {kind.key!r}")


def under_hostile(name: str, worker: str, kind: HostileKind, window_s: float) -> HostileRun:
    """A fresh server (WORKER=`worker`, the settings of `kind`), the hostile client, probes for `window_s`."""
    peer = peers.fitflix(APP, hostile_env(worker, kind), name=f"{name} ({kind.key})")
    with serving(peer) as running:
        running.wait_for_workers(1)
        with hostile_client(kind, running, window_s) as client:
            results = probe_while(running.port, window_s, client.tick, timeout_s=HOSTILE_PROBE_TIMEOUT_S)
            saw = client.saw(running)  # with its connections still open
        return HostileRun(name, kind, results, saw)


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
        "close." + hostile_method(scale),
        [
            "peer",
            "clients",
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
    flood_clients = f"{IDLE} idle + {slow} slow"
    p99_by_peer: dict[str, float] = {}
    probes_by_peer: dict[str, list[float | None]] = {}
    for peer, _command in commands:
        log.info("part 10: %s", peer.name)
        try:
            measured = under_flood(peer, slow, scale.slow_clients_probe_s)
        except Exception as error:
            log.exception("part 10: %s failed", peer.name)
            part.add(peer.name, flood_clients, f"failed: {str(error).splitlines()[0]}", *["-"] * 9)
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
            flood_clients,
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
    hostile_rows(part, hostile_window_s(scale))
    return part


def hostile_method(scale: Scale) -> str:
    window_s = hostile_window_s(scale)
    return (
        " Then the four hostile clients of harness/hostile.py (as tests/live/test_hostile_clients.py runs them), one "
        "at a time, each against a fresh server of its own: fitflix (its own worker, the default) and fitflix "
        f"WORKER=gthread, each `gunicorn -c gunicorn.conf.py {APP}` with THREADS={HOSTILE_THREADS}, "
        "WEB_CONCURRENCY=1, DRAIN_S=0 and: "
        + "; ".join(f"{number}. {kind.label}: {kind.how}" for number, kind in enumerate(HOSTILE_KINDS, 1))
        + f". A connection the server lets go of is replaced (at most {MAX_REARMS} a run), so the client holds on "
        f"for the whole window. Meanwhile /health is probed from a fresh connection every {PROBE_EVERY_S * 1000:.0f} "
        f"ms for {window_s:g} s, one at a time; a probe failed when no 2xx came within {HOSTILE_PROBE_TIMEOUT_S:g} s "
        "and counts as that long in p50, p99 and max. What each hostile client saw is in the notes."
    )


def hostile_rows(part: Part, window_s: float) -> None:
    """One row for each worker under each hostile client, a note of what the client saw, and fitflix's targets."""
    ours = WORKERS[0][0]
    summaries: dict[str, ProbeSummary] = {}
    for number, kind in enumerate(HOSTILE_KINDS, 1):
        clients = f"{number}. {kind.label}"
        for name, worker in WORKERS:
            log.info("part 10: %s under %s", name, kind.label)
            try:
                measured = under_hostile(name, worker, kind, window_s)
            except Exception as error:
                log.exception("part 10: %s under %s failed", name, kind.label)
                part.add(name, clients, f"failed: {str(error).splitlines()[0]}", *["-"] * 9)
                continue
            summary = summarize(measured.results, HOSTILE_PROBE_TIMEOUT_S)
            if name == ours:
                summaries[kind.key] = summary
            part.add(
                name,
                clients,
                summary.probes,
                summary.within_1_s,
                summary.within_2_s,
                summary.failed,
                ms(summary.p50_s),
                ms(summary.p99_s),
                ms(summary.max_s),
                "-",
                "-",
                "-",
            )
            part.notes.append(f"{name} under {kind.label}: {measured.saw}")
    for kind in HOSTILE_KINDS:
        part.targets.append(hostile_target(kind.label, summaries.get(kind.key)))
