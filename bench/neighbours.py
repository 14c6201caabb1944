"""Part 9: memory that is not ours: another process holds memory inside the service's own cgroup."""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bench import peers, plots
from bench.leak import outcome_counts
from bench.load import run_clients
from bench.report import Part
from bench.scale import Scale
from bench.servers import Peer, Running, mb, serving
from fitflix.memory.container import MIB
from harness.cgroups import MemoryCgroup
from harness.holder import MemoryHolder

log = logging.getLogger("bench")

APP = "wsgi:app"  # the real app: fitflix's own /health/memory
LOAD_CLIENTS = 2
LOAD_PACE_S = 0.02  # each client pauses this long between requests: light load
HOLDER_READY_S = 30.0  # how long the neighbour may take to allocate and touch its memory
# A worker started: gunicorn (plain and fitflix) and uWSGI (after a reload or a kill) say so in their logs.
WORKER_STARTED = re.compile(r"Booting worker with pid|Respawned uWSGI worker")


@dataclass(frozen=True)
class Case:
    number: int
    cgroup_mb: int
    neighbour_mb: int
    max_memory_mb: int | None  # fitflix's MAX_MEMORY_MB; None: the cgroup's limit is detected

    @property
    def budget_limit_mb(self) -> int:
        """The limit fitflix sizes itself for, so the peers' nearest setting matches it."""
        return self.max_memory_mb or self.cgroup_mb

    def describe(self) -> str:
        setting = f"MAX_MEMORY_MB={self.max_memory_mb}" if self.max_memory_mb else "no MAX_MEMORY_MB"
        return f"({self.number}) a {self.cgroup_mb} MB cgroup, {setting}, a {self.neighbour_mb} MB neighbour"


CASES = (Case(1, 1024, 400, 256), Case(2, 512, 440, None))


@dataclass(frozen=True)
class Measured:
    before: dict  # fitflix's /health/memory once the neighbour holds its memory ({} for the peers)
    after: dict  # and after the load
    samples: list
    workers_started: int  # workers booted or respawned during the load, from the server's log
    oom_kills: int  # since the cgroup was created: the neighbour's allocation included
    neighbour_at_end: str


def line_up(case: Case, with_uwsgi: bool) -> list[tuple[Peer, str]]:
    """(peer, its memory setting as shown in the table) for one case."""
    env = {"MAX_MEMORY_MB": str(case.max_memory_mb)} if case.max_memory_mb else {}
    fitflix_setting = f"MAX_MEMORY_MB={case.max_memory_mb}" if case.max_memory_mb else "limit from the cgroup"
    line = [
        (peers.fitflix(APP, env, limit_mb=case.cgroup_mb), fitflix_setting),
        (peers.plain(APP, limit_mb=case.cgroup_mb), "n/a (no memory setting)"),
    ]
    if with_uwsgi:
        budget_mb = peers.uwsgi_budget_mb(case.budget_limit_mb)
        uwsgi = peers.uwsgi(APP, limit_mb=case.cgroup_mb, args=("--reload-on-rss", str(budget_mb)))
        line.append((uwsgi, f"--reload-on-rss {budget_mb}"))
    return line


@contextmanager
def neighbour_holding(cgroup: MemoryCgroup, megabytes: int) -> Iterator[subprocess.Popen]:
    """A process of ours (not the service) in `cgroup` holding `megabytes` MiB; ended by its pid on the way out."""
    holder = MemoryHolder(cgroup, megabytes)
    try:
        yield holder.start(HOLDER_READY_S).process
    finally:
        holder.stop()


def neighbour_state(process: subprocess.Popen) -> str:
    code = process.poll()
    if code is None:
        return "held to the end"
    return f"killed by signal {-code}" if code < 0 else f"exited {code}"


def memory_report(running: Running) -> dict:
    """fitflix's /health/memory on a fresh connection; {} if it does not answer JSON."""
    try:
        return running.server.get_json("/health/memory", timeout_s=10)[1]
    except Exception as error:  # a figure we could not read shows as "-"
        log.warning("part 9: /health/memory of %s: %s", running.peer.name, error)
        return {}


def field(report: dict, *keys: str):
    """report[key1][key2]..., None where a key is missing (a field this version of fitflix does not serve)."""
    for key in keys:
        report = report.get(key) if isinstance(report, dict) else None
    return report


def under_neighbour(peer: Peer, case: Case, load_s: float) -> Measured:
    """Start `peer`, put the neighbour in its cgroup, then light load on /health for `load_s`."""
    with serving(peer) as running:
        running.wait_for_workers(1)
        with neighbour_holding(running.cgroup, case.neighbour_mb) as neighbour:
            is_fitflix = peer.kind == "fitflix"
            before = memory_report(running) if is_fitflix else {}
            log_offset = len(running.log())
            samples = run_clients(
                running.port,
                "/health",
                int(load_s / LOAD_PACE_S) * LOAD_CLIENTS,
                LOAD_CLIENTS,
                load_s,
                pace_s=LOAD_PACE_S,
                timeout_s=10,
            )
            after = memory_report(running) if is_fitflix else {}
            workers_started = len(WORKER_STARTED.findall(running.log()[log_offset:]))
            return Measured(before, after, samples, workers_started, running.oom_kills(), neighbour_state(neighbour))


def guard_recycles(measured: Measured) -> str:
    """Guard recycles during the load; the count since the start in brackets when the guard acted before it."""
    before, after = field(measured.before, "recycles", "guard"), field(measured.after, "recycles", "guard")
    if before is None or after is None:
        return "-"
    return f"{after - before}" + (f" ({after} since start)" if before else "")


def recycles_text(report: dict) -> str | None:
    """'guard x3, memory x1': fitflix's recycles by reason since the start, None when it has none to show."""
    counts = field(report, "recycles")
    if not isinstance(counts, dict):
        return None
    return ", ".join(f"{reason} x{count}" for reason, count in counts.items() if count) or "none"


def shown(value, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def run(scale: Scale) -> Part:
    part = Part(
        9,
        "Memory that is not ours (a neighbour in the service's cgroup)",
        f"`{APP}`; each peer in a fresh memory cgroup of its own, with a second process of ours (not the service's) "
        "started inside the same cgroup once the server answers: it allocates N MiB, writes every page and holds "
        "them until we kill it by its pid. Cases: "
        + "; ".join(case.describe() for case in CASES)
        + f". Then {LOAD_CLIENTS} clients on /health (each pausing {LOAD_PACE_S * 1000:.0f} ms) for "
        f"{scale.neighbours_load_s:g} s. fitflix's columns come from its /health/memory read after the load "
        "(guard recycles: the `recycles.guard` count after the load less the count once the neighbour held its "
        "memory); '-' where a field is missing or the peer has no such figure. plain = "
        f"`gunicorn -w {peers.PLAIN_WORKERS} -c /dev/null` (no memory setting); uwsgi = {peers.PLAIN_WORKERS} "
        "processes with `--reload-on-rss` at FitFlix's per-worker budget for that many workers in the limit fitflix "
        "sizes for (256 MB in case 1). 'workers started' = `Booting worker` (gunicorn) or `Respawned uWSGI worker` "
        "log lines during the load; OOM kills since the cgroup was created; failed = no HTTP response or a status "
        ">= 500.",
        [
            "case",
            "peer",
            "memory setting",
            "status",
            "usage %",
            "usedSource",
            "used MB",
            "neighbours MB",
            "guard recycles",
            "workers started",
            "OOM kills",
            "failed",
            "what clients saw",
            "neighbour",
        ],
    )
    reason = peers.uwsgi_or_reason()
    if reason is not None:
        part.notes.append(f"uwsgi not run: {reason}")
    split: dict[str, tuple[float | None, float | None, str]] = {}  # fitflix per case: service, neighbours, guard
    for case in CASES:
        for peer, setting in line_up(case, with_uwsgi=reason is None):
            log.info("part 9: case %s, %s", case.number, peer.name)
            try:
                measured = under_neighbour(peer, case, scale.neighbours_load_s)
            except Exception as error:
                log.exception("part 9: case %s, %s failed", case.number, peer.name)
                part.add(case.number, peer.name, setting, f"failed: {str(error).splitlines()[0]}", *["-"] * 10)
                continue
            failed = [sample for sample in measured.samples if sample.status is None or sample.status >= 500]
            after = measured.after
            part.add(
                case.number,
                peer.name,
                setting,
                shown(field(after, "status")),
                shown(field(after, "memory", "usage"), "%"),
                shown(field(after, "container", "usedSource")),
                mb(field(after, "container", "usedBytes"), 0),
                mb(field(after, "container", "neighboursBytes"), 0),
                guard_recycles(measured),
                measured.workers_started,
                measured.oom_kills,
                f"{len(failed)} of {len(measured.samples)}",
                outcome_counts(measured.samples) or "-",
                measured.neighbour_at_end,
            )
            if peer.kind == "fitflix":
                service, neighbours = field(after, "servicePssBytes"), field(after, "container", "neighboursBytes")
                split[f"case {case.number}: {case.cgroup_mb} MB cgroup, {setting}"] = (
                    None if service is None else service / MIB,
                    None if neighbours is None else neighbours / MIB,
                    guard_recycles(measured),
                )
            recycles = recycles_text(measured.after)
            if recycles is not None:
                part.notes.append(f"case {case.number}, {peer.name}: recycles by reason since the start: {recycles}")
    if split:
        guards = ", ".join(
            f"{guard} in {label.split(':')[0]}" for label, (_service, _neighbours, guard) in split.items()
        )
        part.pictures.append(
            plots.bars(
                "part9-neighbours",
                f"What FitFlix reports with a neighbour in its cgroup: its own PSS apart from the neighbour's memory; "
                f"workers recycled for it: {guards}",
                plots.Bars(
                    list(split),
                    {
                        "the service (its PSS)": [service for service, _n, _g in split.values()],
                        "neighbours": [neighbours for _s, neighbours, _g in split.values()],
                    },
                    "MB, from fitflix's /health/memory after the load",
                    digits=0,
                ),
                alt="FitFlix's own memory (tree PSS) and the neighbours' memory it reports, per case, from its "
                f"/health/memory; workers the guard recycled for memory that was not the service's: {guards}.",
                series_colours={
                    "the service (its PSS)": plots.BLUE,
                    "neighbours": plots.LIGHT_GREY,
                },
            )
        )
    return part
