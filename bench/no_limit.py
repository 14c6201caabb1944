"""Part 16: a leak where no limit exists: the relative budget (on by default there) against the absolute one alone.

Each peer runs in a memory cgroup of its own with no limit (v1 `-1`, v2 `max`;
bench/servers.py `unlimited_cgroup`): the service sees no limit, as on a VM or
a laptop, and sizes itself from the host's memory, while the kernel still
counts the tree's usage, its peak and any OOM kill. MAX_MEMORY_MB is unset.
Without the relative budget a worker's budget is a share of the whole host
(19 GB on 24 GB): that run is ended by the bench, never by the kernel, once
the cgroup's usage passes STOP_AT_MB (and the request count alone bounds what
the leak can keep to REQUESTS x LEAK_MB). The default runs twice: its clients
at full speed (hundreds of MB a second), and paced to a slow leak.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from dataclasses import dataclass

from bench import plots
from bench.leak import outcome_counts
from bench.load import Sample, run_clients
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import MemorySampler, Peer, mb, serving
from harness.cgroups import MemoryCgroup
from harness.fitflix_log import (
    Budget,
    Recycle,
    parse_budget,
    parse_hard_cap_mb,
    parse_recycles,
    recycle_summary,
    surge_counts,
)

log = logging.getLogger("bench")

APP = "harness.apps.leaky:app"
LEAK_MB = 2
CLIENTS = 4
REQUESTS = 700  # 1,400 MB at most for the leak to keep, whatever the service does
# The slow leak: each client pauses this long between requests (about 10 a second in all, 20 MB/s), so a worker
# reaches the relative budget after MIN_WORKER_LIFETIME_S (2 s: younger, it is recycled only past its hard cap).
SLOW_PACE_S = 0.4
SLOW_REQUESTS = 250
STOP_AT_MB = 1024  # the bench ends a run once its cgroup's usage passes this
TIME_LIMIT_S = 120.0
WATCH_EVERY_S = 0.01  # the stop's own reads: 2 MB a request at a few hundred a second is a few MB between them
SAMPLE_EVERY_S = 0.02  # the figure's
TARGET_MULTIPLE = 4  # the leak recycled at most this many times the app's size at start
TARGET_PEAK_MB = 256


class UsageStop:
    """A thread that sets `stop` once the cgroup's usage passes `stop_at_bytes` (bounded by `time_limit_s`)."""

    def __init__(self, cgroup: MemoryCgroup, stop_at_bytes: int, time_limit_s: float) -> None:
        self.cgroup = cgroup
        self.stop_at_bytes = stop_at_bytes
        self.time_limit_s = time_limit_s
        self.stop = threading.Event()
        self.fired_at_bytes: int | None = None  # the usage that set `stop`; None: it never did
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usage-stop", daemon=True)

    def __enter__(self) -> UsageStop:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._done.set()
        self._thread.join(5)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._done.wait(WATCH_EVERY_S) and time.monotonic() - started < self.time_limit_s:
            try:
                usage = self.cgroup.usage_bytes()
            except OSError:  # the cgroup is going away: the run is over
                return
            if usage > self.stop_at_bytes:
                self.fired_at_bytes = usage
                self.stop.set()
                return


@dataclass(frozen=True)
class Leg:
    """One run of the part: a peer and how fast its clients leak."""

    peer: Peer
    pace_s: float = 0.0
    requests: int = REQUESTS
    relative_targets: bool = False  # the relative budget's targets are judged on this run


@dataclass(frozen=True)
class LeakRun:
    samples: list[Sample]
    elapsed_s: float
    stopped_at_bytes: int | None  # the usage at which the bench stopped the clients; None: it did not
    peak_bytes: int | None
    oom_kills: int
    log_text: str


def leak_mb_per_s(run: LeakRun) -> float | None:
    """What the clients made the service keep, MB a second (answered requests x LEAK_MB over the run)."""
    served = sum(1 for sample in run.samples if sample.ok)
    return served * LEAK_MB / run.elapsed_s if run.elapsed_s else None


def stopped_by(run: LeakRun, requests: int) -> str:
    """Which bound ended the run: the bench's stop at STOP_AT_MB, the request count, or the time bound."""
    if run.stopped_at_bytes is not None:
        return f"the bench, at {mb(run.stopped_at_bytes, 0)} MB (past {STOP_AT_MB:,})"
    if len(run.samples) >= requests:
        return f"the request count ({requests:,})"
    return f"the time bound ({TIME_LIMIT_S:g} s)"


def recycled_at(recycles: list[Recycle], figure: str) -> str:
    """'97 (99)': the median and the largest USS (or RSS) at which workers were recycled for memory, MB."""
    memory = [recycle for recycle in recycles if recycle.reason == "memory"]
    values = [recycle.uss_mb if figure == "uss" else recycle.rss_mb for recycle in memory]
    return f"{statistics.median(values):.0f} ({max(values):.0f})" if values else "-"


def relative_targets(name: str, budget: Budget | None, run: LeakRun | None) -> list[Target]:
    """With the relative budget: the leak recycled at <= TARGET_MULTIPLE x the app's size, the peak < TARGET_PEAK_MB."""
    recycle_text = f"{name}: the leak is recycled at <= {TARGET_MULTIPLE} x the app's size at start (USS)"
    peak_text = f"{name}: the tree's peak (the cgroup's) stays under {TARGET_PEAK_MB} MB"
    if run is None:
        return [Target(recycle_text, None, "did not run"), Target(peak_text, None, "did not run")]
    memory = [recycle for recycle in parse_recycles(run.log_text) if recycle.reason == "memory"]
    if budget is None or budget.app_mb is None:
        recycle_target = Target(recycle_text, None, "no app size in the banner's 'Worker budget:' line")
    else:
        limit = TARGET_MULTIPLE * budget.app_mb
        sizes = f"{TARGET_MULTIPLE} x the app's {budget.app_mb} MB = {limit} MB; budget {budget.worker_budget_mb} MB"
        cap = parse_hard_cap_mb(run.log_text)
        ending = f"; hard cap {cap:,} MB" if cap is not None else ""
        if run.stopped_at_bytes is not None:
            ending += f"; stopped by the bench at {mb(run.stopped_at_bytes, 0)} MB after {run.elapsed_s:.1f} s"
        if not memory:
            recycle_target = Target(
                recycle_text, False, f"no memory recycle in {len(run.samples):,} requests; {sizes}{ending}"
            )
        else:
            largest = max(recycle.uss_mb for recycle in memory)
            recycle_target = Target(
                recycle_text,
                largest <= limit,
                f"largest USS at a recycle {largest:.0f} MB of {len(memory)} recycles; {sizes}{ending}",
            )
    if run.peak_bytes is None:
        peak_target = Target(peak_text, None, "the cgroup has no peak figure")
    else:
        peak_target = Target(
            peak_text, run.peak_bytes < TARGET_PEAK_MB * 1024 * 1024, f"peak {mb(run.peak_bytes, 0)} MB"
        )
    return [recycle_target, peak_target]


def absolute_target(name: str, run: LeakRun | None) -> Target:
    """Without it: the leak grows until the bench stops it (no memory recycle, no OOM kill)."""
    text = f"{name}: without the relative budget the leak grows until the bench stops it (past {STOP_AT_MB:,} MB)"
    if run is None:
        return Target(text, None, "did not run")
    memory = [recycle for recycle in parse_recycles(run.log_text) if recycle.reason == "memory"]
    met = run.stopped_at_bytes is not None and not memory and run.oom_kills == 0
    return Target(
        text,
        met,
        f"stopped by {stopped_by(run, REQUESTS)}; {len(memory)} memory recycles, {run.oom_kills} OOM kills, peak "
        f"{mb(run.peak_bytes, 0)} MB",
    )


def leak_under(leg: Leg) -> tuple[LeakRun, plots.Trace]:
    peer = leg.peer
    with serving(peer) as running:
        running.wait_for_workers(1)
        with MemorySampler(running.cgroup, SAMPLE_EVERY_S, TIME_LIMIT_S + 30) as sampler:
            with UsageStop(running.cgroup, STOP_AT_MB * 1024 * 1024, TIME_LIMIT_S + 30) as stop:
                started = time.monotonic()
                samples = run_clients(
                    running.port,
                    f"/leak?mb={LEAK_MB}",
                    leg.requests,
                    CLIENTS,
                    TIME_LIMIT_S,
                    pace_s=leg.pace_s,
                    timeout_s=30,
                    read_pid=True,
                    stop=stop.stop,
                )
                elapsed_s = time.monotonic() - started
            sampler.stop()
        run = LeakRun(samples, elapsed_s, stop.fired_at_bytes, running.peak_bytes(), running.oom_kills(), running.log())
    return run, sampler.trace(peer.name, 0.0)


def run(scale: Scale) -> Part:
    del scale  # one size: the count and the stop bound it, and it takes well under a minute
    part = Part(
        16,
        "A leak where no limit exists",
        f"`{APP}` /leak?mb={LEAK_MB} (each request keeps {LEAK_MB} MiB for the life of its worker), {CLIENTS} "
        f"keep-alive Python clients, at full speed (at most {REQUESTS:,} requests) or, 'slow leak', each pausing "
        f"{SLOW_PACE_S * 1000:.0f} ms between requests (at most {SLOW_REQUESTS:,}); {TIME_LIMIT_S:g} s at most. "
        "A worker born far below its threshold is recycled as soon as it passes it (the 2 s minimum lifetime holds "
        "back only a worker born near it); the hard cap stays at the absolute level. Each peer runs in a "
        "memory cgroup of its own with no limit (v1 `memory.limit_in_bytes` = -1): the service sees no limit "
        "(as on a VM or a laptop) and sizes itself from the host's memory, MAX_MEMORY_MB unset, while the kernel "
        "still counts the tree's usage, its peak (`memory.max_usage_in_bytes`) and any OOM kill. fitflix = no "
        "settings: the relative budget is on by default where no limit exists (WORKER_MEMORY_MULTIPLE 3 x the "
        "app's size at start, the master's USS after preloading); WORKER_MEMORY_MULTIPLE=0 = the absolute budget "
        f"alone, a share of the whole host. The bench stops a run once the cgroup's usage passes {STOP_AT_MB:,} MB "
        f"(read every {WATCH_EVERY_S * 1000:.0f} ms), so the kernel never has to. 'budget' = the banner's 'Worker "
        "budget:' line (the one that applies); 'recycled at' = the 'Recycling worker ... rss= uss=' lines of the "
        "memory recycles, median (max); failed = no HTTP answer or a status >= 500.",
        [
            "peer",
            "budget (banner)",
            "requests",
            "leak MB/s",
            "failed",
            "what clients saw",
            "recycles (log)",
            "recycled at USS MB",
            "recycled at RSS MB",
            "replacements (log)",
            "peak MB",
            "OOM kills",
            "stopped by",
            "time s",
        ],
    )
    relative = Peer("fitflix", "fitflix", APP, no_memory_limit=True)
    slow = Peer("fitflix, slow leak", "fitflix", APP, no_memory_limit=True)
    absolute = Peer(
        "fitflix WORKER_MEMORY_MULTIPLE=0",
        "fitflix",
        APP,
        env={"WORKER_MEMORY_MULTIPLE": "0"},
        no_memory_limit=True,
    )
    runs: dict[str, LeakRun] = {}
    budgets: dict[str, Budget | None] = {}
    traces: list[plots.Trace] = []
    legs = [
        Leg(relative, relative_targets=True),
        Leg(slow, SLOW_PACE_S, SLOW_REQUESTS, relative_targets=True),
        Leg(absolute),
    ]
    for leg in legs:
        peer = leg.peer
        log.info("part 16: %s", peer.name)
        try:
            leak_run, trace = leak_under(leg)
        except Exception as error:
            log.exception("part 16: %s failed", peer.name)
            part.add(peer.name, "-", "-", "-", "-", f"failed: {str(error).splitlines()[0]}", *["-"] * 8)
            continue
        runs[peer.name], traces = leak_run, traces + [trace]
        budget = budgets[peer.name] = parse_budget(leak_run.log_text)
        recycles = parse_recycles(leak_run.log_text)
        failed = [sample for sample in leak_run.samples if sample.status is None or sample.status >= 500]
        reasons: dict[str, int] = {}
        for recycle in recycles:
            reasons[recycle.reason] = reasons.get(recycle.reason, 0) + 1
        part.add(
            peer.name,
            budget.short() if budget else "no banner line",
            f"{len(leak_run.samples):,}",
            f"{leak_mb_per_s(leak_run):,.0f}" if leak_mb_per_s(leak_run) is not None else "-",
            len(failed),
            outcome_counts(leak_run.samples),
            ", ".join(f"{reason} x{count}" for reason, count in reasons.items()) or "0",
            recycled_at(recycles, "uss"),
            recycled_at(recycles, "rss"),
            surge_counts(leak_run.log_text).text(),
            mb(leak_run.peak_bytes, 0),
            leak_run.oom_kills,
            stopped_by(leak_run, leg.requests),
            f"{leak_run.elapsed_s:.1f}",
        )
        cap = parse_hard_cap_mb(leak_run.log_text)
        part.notes.append(
            f"{peer.name}: 'Worker budget: {budget.text if budget else '(none)'}'; hard cap "
            f"{f'{cap:,} MB' if cap is not None else 'not in the log'} (the 'Memory profile:' line); "
            f"{recycle_summary(recycles)}"
        )
    if traces:
        finding = "; ".join(
            f"{name} peak {mb(leak_run.peak_bytes, 0)} MB"
            + (", stopped by the bench" if leak_run.stopped_at_bytes is not None else "")
            for name, leak_run in runs.items()
        )
        part.pictures.append(
            plots.memory_mb_over_time(
                "part16-no-limit",
                f"The same {LEAK_MB} MB-a-request leak with no memory limit anywhere: {finding}",
                traces,
                [(TARGET_PEAK_MB, f"{TARGET_PEAK_MB} MB"), (STOP_AT_MB, f"the bench stops at {STOP_AT_MB:,} MB")],
                alt=f"Each peer's cgroup memory in MB over time under a {LEAK_MB} MB-a-request leak, in a cgroup with "
                f"no limit, each new worker marked: {finding}.",
            )
        )
    for leg in legs:
        name = leg.peer.name
        if leg.relative_targets:
            part.targets += relative_targets(name, budgets.get(name), runs.get(name))
    part.targets.append(absolute_target(absolute.name, runs.get(absolute.name)))
    return part
