"""Part 12: hosts without /proc: psutil's cost, and the figures the service reports there.

Three peers of `wsgi:app`, up side by side, each in its own memory cgroup:
a. with /proc (Linux: psutil is never imported);
b. without /proc (harness.noproc.NO_PROC), psutil blocked by a
   `psutil.py` on PYTHONPATH that raises ImportError, so the service falls
   back to sysconf and getrusage;
c. without /proc, psutil importable: the master imports it, as on a Mac.
psutil's cost is c - b. Memory is read from outside the namespace (the host's
/proc), and beside it what the service itself reports there. Then a short leak
without /proc under MAX_MEMORY_MB=256.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench import peers, plots
from bench.footprint import SETTLE_S
from bench.load import Throughput, requests_until, run_clients
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import Peer, Running, mb, serving
from fitflix.memory.container import MIB
from fitflix.memory.process import ProcessMemory, read_smaps_rollup
from harness.fitflix_log import parse_recycles
from harness.noproc import NO_PROC, no_proc_problem

log = logging.getLogger("bench")

LIMIT_MB = peers.LIMIT_MB
WORKER_COUNTS = (1, 2)
CONNECTIONS = 4  # keep-alive connections on /health, as part 1
# psutil's C extension: mapped into every process that imported psutil (forked workers inherit it).
PSUTIL_LIBRARY = "_psutil_linux"
BLOCKER = 'raise ImportError("psutil is blocked for this benchmark peer (bench/portable.py)")\n'

LEAK_APP = "harness.apps.service_with_leaks:app"
LEAK_PATH = "/leak?mb=2"
LEAK_MB_PER_REQUEST = 2
LEAK_LIMIT_MB = 256  # MAX_MEMORY_MB and the cgroup's limit alike: the service cannot see the cgroup without /proc
LEAK_REQUESTS = 250  # 500 MB kept through a 256 MB limit: the workers must be recycled
LEAK_CLIENTS = 2

# Nothing here measures the drain: without it each peer stops at once, not DRAIN_S (5 s) later.
STOP_AT_ONCE = {"DRAIN_S": "0"}

A, B, C = "a: /proc", "b: no /proc, psutil blocked", "c: no /proc, psutil"


@dataclass(frozen=True)
class Bounds:
    health_requests: int  # N requests to /health per peer between the idle and the `after N` readings
    health_time_limit_s: float
    leak_time_limit_s: float


BOUNDS = {"full": Bounds(5_000, 30, 60), "quick": Bounds(1_000, 10, 40)}


@dataclass(frozen=True)
class Snapshot:
    """One peer at one moment: smaps of master and workers read from outside, /health/memory from inside."""

    master: ProcessMemory
    workers: tuple[ProcessMemory, ...]
    psutil_loaded_in: int  # processes of the tree with psutil's C extension mapped
    reported_bytes: int | None  # /health/memory container.usedBytes
    reported_source: str  # and its usedSource
    memory_recycles: int | None  # /health/memory recycles.memory
    oom_kills: int

    @property
    def processes(self) -> int:
        return 1 + len(self.workers)

    @property
    def tree_pss_bytes(self) -> int:
        return self.master.pss_bytes + sum(worker.pss_bytes for worker in self.workers)

    def worker_mean_bytes(self, figure: Callable[[ProcessMemory], int]) -> float | None:
        return statistics.mean(map(figure, self.workers)) if self.workers else None


# name -> (idle, after N, the N requests' load), per worker count
PeerResults = dict[str, tuple[Snapshot, Snapshot, Throughput]]
Results = dict[int, PeerResults]

# (column, how to read it from a snapshot) for the memory columns, in table order.
FIGURES: tuple[tuple[str, Callable[[Snapshot], float | None]], ...] = (
    ("tree PSS MB", lambda shot: shot.tree_pss_bytes),
    ("master PSS MB", lambda shot: shot.master.pss_bytes),
    ("master USS MB", lambda shot: shot.master.uss_bytes),
    ("worker PSS MB", lambda shot: shot.worker_mean_bytes(lambda memory: memory.pss_bytes)),
    ("worker USS MB", lambda shot: shot.worker_mean_bytes(lambda memory: memory.uss_bytes)),
)


def psutil_mapped(pid: int) -> bool:
    """Whether `pid` has psutil's C extension mapped, from the host's /proc (outside any namespace)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return any(PSUTIL_LIBRARY in line for line in maps)
    except OSError:  # it ended: nothing mapped
        return False


def take_snapshot(running: Running) -> Snapshot:
    master = read_smaps_rollup(running.master_pid)
    if master is None:
        raise RuntimeError(f"{running.peer.name}: its master {running.master_pid} is gone\n{running.log()}")
    worker_pids = running.worker_pids()
    outside = set([running.master_pid, *worker_pids]) - set(running.cgroup.pids() if running.cgroup else ())
    if outside:  # the prefix went before the cgroup's wrap, or a process escaped: its OOM count would lie
        raise RuntimeError(f"{running.peer.name}: pids {sorted(outside)} are not in the peer's cgroup")
    workers = tuple(memory for memory in map(read_smaps_rollup, worker_pids) if memory is not None)
    loaded = sum(map(psutil_mapped, [running.master_pid, *worker_pids]))
    _status, body = running.server.get_json("/health/memory")
    container = body.get("container") or {}
    return Snapshot(
        master=master,
        workers=workers,
        psutil_loaded_in=loaded,
        reported_bytes=container.get("usedBytes"),
        reported_source=container.get("usedSource") or "-",
        memory_recycles=(body.get("recycles") or {}).get("memory"),
        oom_kills=running.oom_kills(),
    )


def line_up(workers: int, blocker: Path, no_proc: bool, psutil_installed: bool) -> list[Peer]:
    env = {"WEB_CONCURRENCY": str(workers), "MAX_MEMORY_MB": str(LIMIT_MB), **STOP_AT_ONCE}
    chosen = [peers.fitflix(env=env, name=A)]
    if no_proc:
        chosen.append(peers.fitflix(env={**env, "PYTHONPATH": str(blocker)}, name=B, prefix=NO_PROC))
        if psutil_installed:
            chosen.append(peers.fitflix(env=env, name=C, prefix=NO_PROC))
    return chosen


def measure_side_by_side(chosen: list[Peer], workers: int, bounds: Bounds, part: Part) -> PeerResults:
    """Every peer up at once, read at the same moments: idle, then after N requests to each in turn."""
    results: PeerResults = {}
    with ExitStack() as stack:
        running: dict[str, Running] = {}
        for peer in chosen:
            try:
                running[peer.name] = stack.enter_context(serving(peer))
            except Exception as error:  # one broken peer must not end the part
                log.exception("part 12: %s failed to start", peer.name)
                part.notes.append(f"{peer.name}, {workers} worker(s): did not start: {str(error).splitlines()[0]}")
        for server in running.values():
            server.wait_for_workers(workers)
        time.sleep(SETTLE_S)  # a measurement protocol, not a wait for a state
        idle = {name: take_snapshot(server) for name, server in running.items()}
        sent = {
            name: requests_until(
                server.port, "/health", bounds.health_requests, CONNECTIONS, bounds.health_time_limit_s
            )
            for name, server in running.items()
        }
        for server in running.values():
            server.wait_for_workers(workers)
        time.sleep(SETTLE_S)
        for name, server in running.items():
            results[name] = (idle[name], take_snapshot(server), sent[name])
    return results


@dataclass(frozen=True)
class LeakResult:
    after: Snapshot
    sent: int
    failed: int
    seen: Counter
    recycle_lines: int
    peak_bytes: int | None


def leak_without_proc(bounds: Bounds) -> LeakResult:
    env = {"MAX_MEMORY_MB": str(LEAK_LIMIT_MB), **STOP_AT_ONCE}
    peer = peers.fitflix(LEAK_APP, env, limit_mb=LEAK_LIMIT_MB, name="c leak", prefix=NO_PROC)
    with serving(peer) as running:
        samples = run_clients(running.port, LEAK_PATH, LEAK_REQUESTS, LEAK_CLIENTS, bounds.leak_time_limit_s)
        running.wait_for_workers(1)
        time.sleep(SETTLE_S)
        after = take_snapshot(running)
        seen = Counter(str(sample.status) if sample.status is not None else sample.error for sample in samples)
        return LeakResult(
            after=after,
            sent=len(samples),
            failed=sum(not sample.ok for sample in samples),
            seen=seen,
            recycle_lines=len(parse_recycles(running.log(), "memory")),
            peak_bytes=running.peak_bytes(),
        )


def loaded_cell(shot: Snapshot) -> str:
    return f"{'yes' if shot.psutil_loaded_in else 'no'} ({shot.psutil_loaded_in} of {shot.processes})"


def reported_cells(shot: Snapshot) -> list[str]:
    ratio = f"{shot.reported_bytes / shot.tree_pss_bytes:.2f}" if shot.reported_bytes else "-"
    return [mb(shot.reported_bytes), shot.reported_source, ratio]


def snapshot_row(name: str, workers: int, phase: str, shot: Snapshot, failed: str) -> list[object]:
    memory = [mb(read(shot)) for _column, read in FIGURES]
    recycles = "-" if shot.memory_recycles is None else shot.memory_recycles
    return [name, workers, phase, loaded_cell(shot), *memory, *reported_cells(shot), recycles, failed, shot.oom_kills]


def cost_cell(with_psutil: float | None, without: float | None, unit: str = "") -> str:
    """What psutil adds: `+0.80 (x1.023)`, MB (then `unit`) and the ratio."""
    if with_psutil is None or without is None or not without:
        return "-"
    return f"{(with_psutil - without) / MIB:+.2f}{unit} (x{with_psutil / without:.3f})"


def cost_row(workers: int, phase: str, with_psutil: Snapshot, without: Snapshot) -> list[object]:
    cells = [cost_cell(read(with_psutil), read(without)) for _column, read in FIGURES]
    return ["psutil's cost = c - b", workers, phase, "-", *cells, "-", "-", "-", "-", "-", "-"]


def run(scale: Scale) -> Part:
    bounds = BOUNDS[scale.name]
    n = bounds.health_requests
    part = Part(
        12,
        "Hosts without /proc: psutil's cost, and the figures the service reports there",
        f"`wsgi:app` with gunicorn.conf.py, MAX_MEMORY_MB={LIMIT_MB} and DRAIN_S=0 (so each peer stops at once), "
        f"at WEB_CONCURRENCY={' and '.join(map(str, WORKER_COUNTS))}; "
        f"at each worker count three peers up side by side, each in its own {LIMIT_MB} MB memory cgroup: "
        f"(a) on Linux with /proc, where the service never imports psutil; (b) without /proc "
        "(`harness.noproc.NO_PROC`: a private mount namespace with empty tmpfs over /proc and /sys, "
        "what a Mac offers the service) with psutil blocked (a `psutil.py` on PYTHONPATH that raises "
        "ImportError), so the service falls back to sysconf and getrusage's peak; (c) without /proc with psutil "
        "importable: the master imports it once before forking, as on a Mac (on Linux psutil then fails at every "
        "call without /proc and the service falls back as in b, so c - b is psutil's import cost alone). "
        f"`idle` is {SETTLE_S} s after the workers are up; `after N` follows N requests to /health on each peer in "
        f"turn ({CONNECTIONS} keep-alive connections), then {SETTLE_S} s. Memory is read from outside the namespace "
        "(the host's /proc/PID/smaps_rollup): tree PSS = master + workers; USS = Private_Clean + Private_Dirty; "
        f"worker figures are the mean over workers. 'psutil loaded' = processes with `{PSUTIL_LIBRARY}` in "
        "/proc/PID/maps. psutil's cost rows: MB added by c over b (and c / b). 'reported' = what /health/memory "
        "says the service uses (`container.usedBytes`, `usedSource`) beside the tree PSS measured from outside. "
        f"Last row: a leak without /proc ({LEAK_APP}, `{LEAK_PATH}`, {LEAK_REQUESTS} requests over "
        f"{LEAK_CLIENTS} Python clients, at most {bounds.leak_time_limit_s:g} s) under MAX_MEMORY_MB={LEAK_LIMIT_MB} "
        f"in a {LEAK_LIMIT_MB} MB cgroup, psutil importable; memory recycles from /health/memory "
        "`recycles.memory`; failed = no HTTP answer or a status >= 400; OOM kills of the peer's cgroup.",
        [
            "peer",
            "workers",
            "phase",
            "psutil loaded",
            *(column for column, _read in FIGURES),
            "reported MB",
            "usedSource",
            "reported / tree PSS",
            "memory recycles",
            "failed",
            "OOM kills",
        ],
    )
    no_proc_reason = no_proc_problem()
    if no_proc_reason:
        part.notes.append(f"b, c and the leak: not run: {no_proc_reason}")
    psutil_installed = importlib.util.find_spec("psutil") is not None
    if psutil_installed:
        part.notes.append(
            f"psutil {importlib.metadata.version('psutil')} (requirements.txt). In c it imports, then fails at every "
            "call (psutil on Linux reads /proc too), so c's figures come from getrusage's peak as b's do; on a Mac "
            "psutil gives RSS and, where macOS allows, USS"
        )
    else:
        part.notes.append("c: not run: psutil is not installed in this environment (pip install -r requirements.txt)")

    blocker = Path(tempfile.mkdtemp(prefix="fitflix-bench-no-psutil-"))
    results: Results = {}
    leak: LeakResult | None = None
    try:
        (blocker / "psutil.py").write_text(BLOCKER)
        for workers in WORKER_COUNTS:
            log.info("part 12: %s worker(s), peers side by side", workers)
            chosen = line_up(workers, blocker, no_proc_reason is None, psutil_installed)
            try:
                results[workers] = measure_side_by_side(chosen, workers, bounds, part)
            except Exception as error:  # the other worker count still runs
                log.exception("part 12: %s worker(s) failed", workers)
                part.notes.append(f"{workers} worker(s): failed: {str(error).splitlines()[0]}")
        if no_proc_reason is None:
            log.info("part 12: leak without /proc")
            try:
                leak = leak_without_proc(bounds)
            except Exception as error:
                log.exception("part 12: the leak failed")
                part.notes.append(f"leak: failed: {str(error).splitlines()[0]}")
    finally:
        shutil.rmtree(blocker, ignore_errors=True)

    for workers, measured in results.items():
        for phase_index, phase in enumerate(("idle", f"after {n:,}")):
            for name, (idle, after, sent) in measured.items():
                shot = (idle, after)[phase_index]
                failed = "-" if phase_index == 0 else f"{sent.errors} of {sent.requests:,}"
                part.add(*snapshot_row(name, workers, phase, shot, failed))
            if B in measured and C in measured:
                part.add(*cost_row(workers, phase, measured[C][phase_index], measured[B][phase_index]))
        for name, (_idle, _after, sent) in measured.items():
            part.notes.append(
                f"{name}, {workers} worker(s): {sent.requests} requests to /health in {sent.duration_s:.0f} s, "
                f"{sent.errors} errors ({sent.tool})"
            )
    if leak is not None:
        shot, name = leak.after, f"c leak, MAX_MEMORY_MB={LEAK_LIMIT_MB}"
        phase, failed = f"after {leak.sent} x {LEAK_PATH}", f"{leak.failed} of {leak.sent}"
        part.add(*snapshot_row(name, len(shot.workers), phase, shot, failed))
        seen = ", ".join(f"{key} x{count}" for key, count in leak.seen.most_common())
        peak = "-"
        if leak.peak_bytes is not None:
            peak = f"{mb(leak.peak_bytes, 0)} MB ({100 * leak.peak_bytes / (LEAK_LIMIT_MB * MIB):.0f}%)"
        part.notes.append(
            f"leak: clients saw {seen or 'nothing'}; {leak.recycle_lines} 'Recycling worker ... reason=memory' "
            f"log lines; cgroup peak {peak} of {LEAK_LIMIT_MB} MB"
        )

    add_cost_notes(part, results)
    add_targets(part, results, leak, no_proc_reason)
    if results:
        part.pictures.append(tree_figure(results, n))
    return part


def tree_figure(results: Results, n: int) -> plots.Picture:
    """Tree PSS of a, b and c at each worker count, idle and after N: c - b is psutil's cost."""
    groups, series = [], {name: [] for name in (A, B, C)}
    for workers, measured in results.items():
        for phase_index, phase in enumerate(("idle", f"after {n:,}")):
            groups.append(f"{workers} worker{'s' if workers != 1 else ''}, {phase}")
            for name in series:
                shot = measured[name][phase_index] if name in measured else None
                series[name].append(None if shot is None else shot.tree_pss_bytes / MIB)
    costs = [
        f"{(measured[C][1].tree_pss_bytes - measured[B][1].tree_pss_bytes) / MIB:+.2f} MB with {workers}"
        for workers, measured in results.items()
        if B in measured and C in measured
    ]
    cost = f"psutil costs {', '.join(costs)} worker(s) (c - b, after {n:,})" if costs else "psutil's cost not measured"
    return plots.bars(
        "part12-no-proc",
        f"Whole-service memory (tree PSS) with /proc, and without it with psutil blocked or loaded: {cost}",
        plots.Bars(groups, {name: values for name, values in series.items() if any(values)}, "tree PSS, MB"),
        alt=f"Tree PSS of the service with /proc (a), without /proc with psutil blocked (b) and with psutil (c), "
        f"per worker count, idle and after {n:,} requests; psutil's cost is c - b: {cost}.",
        series_colours={A: plots.BLUE, B: plots.LIGHT_GREY, C: plots.GREEN},
    )


def psutil_cost_summary(results: Results, marginal: bool = True) -> str | None:
    """psutil's cost after N (c - b): whole service and per worker, MB and ratio; None where b or c is missing.

    `marginal`: also what each worker beyond the first adds (a difference of differences: the noisiest figure).
    """
    afters = {
        workers: (measured[C][1], measured[B][1])
        for workers, measured in results.items()
        if B in measured and C in measured
    }
    if not afters:
        return None
    parts = []
    for workers, (with_psutil, without) in afters.items():
        worker_uss = [shot.worker_mean_bytes(lambda memory: memory.uss_bytes) for shot in (with_psutil, without)]
        parts.append(
            f"{workers} worker(s): tree PSS {cost_cell(with_psutil.tree_pss_bytes, without.tree_pss_bytes, ' MB')}, "
            f"each worker's USS {cost_cell(*worker_uss, ' MB')}"
        )
    summary = "without /proc psutil costs, after N: " + "; ".join(parts)
    if marginal and len(afters) > 1:
        (first, (c1, b1)), (last, (c2, b2)) = min(afters.items()), max(afters.items())
        per_added = ((c2.tree_pss_bytes - b2.tree_pss_bytes) - (c1.tree_pss_bytes - b1.tree_pss_bytes)) / (last - first)
        summary += f"; each worker beyond the first adds {per_added / MIB:+.2f} MB of tree PSS"
    return summary


def add_cost_notes(part: Part, results: Results) -> None:
    summary = psutil_cost_summary(results)
    if summary:
        part.notes.append(f"psutil's cost (c - b): {summary}")
    for workers, measured in results.items():
        ratios = [
            f"{name[0]} {after.reported_bytes / after.tree_pss_bytes:.2f}"
            for name, (_idle, after, _sent) in measured.items()
            if after.reported_bytes
        ]
        if ratios:
            part.notes.append(f"reported / tree PSS after N at {workers} worker(s): {', '.join(ratios)}")


def add_targets(
    part: Part,
    results: Results,
    leak: LeakResult | None,
    no_proc_reason: str | None,
) -> None:
    text = "psutil costs Linux nothing: not loaded in any process of fitflix with /proc"
    shots = {
        name: [shot for measured in results.values() if name in measured for shot in measured[name][:2]]
        for name in (A, C)
    }
    in_a = sum(shot.psutil_loaded_in for shot in shots[A])
    in_c = sum(shot.psutil_loaded_in for shot in shots[C])
    counted = f"{in_a} of {sum(shot.processes for shot in shots[A])} process readings of a"
    if not shots[A]:
        part.targets.append(Target(text, None, "a did not run"))
    elif not in_c:
        # The probe must see psutil where it is loaded, or its "no" in a proves nothing.
        part.targets.append(Target(text, None, f"{counted}; but c (psutil loaded) was not seen either"))
    else:
        seen = f"{in_c} of {sum(shot.processes for shot in shots[C])} in c"
        # psutil's cost has no threshold of its own: its figures ride along here, in the targets table.
        cost = psutil_cost_summary(results, marginal=False)
        measured = f"{counted} had {PSUTIL_LIBRARY} mapped ({seen})" + (f"; {cost}" if cost else "")
        part.targets.append(Target(text, in_a == 0, measured))

    text = (
        f"fitflix without /proc, MAX_MEMORY_MB={LEAK_LIMIT_MB} + leak {LEAK_MB_PER_REQUEST} MB/req: "
        "memory recycles, 0 failed, 0 OOM kills"
    )
    if leak is None:
        part.targets.append(Target(text, None, no_proc_reason or "the leak did not run"))
        return
    recycles = leak.after.memory_recycles or 0
    part.targets.append(
        Target(
            text,
            recycles > 0 and leak.failed == 0 and leak.after.oom_kills == 0 and leak.sent == LEAK_REQUESTS,
            f"{recycles} memory recycles, {leak.failed} failed of {leak.sent} sent ({LEAK_REQUESTS} asked), "
            f"{leak.after.oom_kills} OOM kills",
        )
    )
