"""Part 20: the leak sweep: FitFlix in every cell of leak shape x speed x THREADS x workers, and the peers' leaks.

Issue 32: replace-then-retire once met the OOM killer under a leak of small Python objects (three kills a
run at 512 MB), where a leak of bytearrays never did. The sweep (`harness.leak_sweep`) runs FitFlix,
each cell in a fresh 512 MB cgroup, under four leak shapes (bytearrays, small objects, C malloc, a
per-thread cache), two speeds, THREADS 1, 8 and 32, and 1 or 3 workers, and judges each cell with the
live tests' own `run_cell`. Then plain gunicorn, uWSGI and granian, set up as part 3 sets them up, and
FitFlix at its defaults, each under the four shapes at the fast speed, side by side.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bench import leak, peers, plots
from bench.footprint import expected_workers
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import Peer, peer_problem, serving, uwsgi_problem
from fitflix.settings import Settings
from harness import leak_sweep as sweep
from harness.fitflix_log import SurgeCounts

log = logging.getLogger("bench")

PEER_SPEED = "fast"  # the peers' runs: 4 clients, 1,200 requests, 1 MB a request
DEFAULTS = "fitflix (defaults)"  # FitFlix in the side-by-side: gunicorn.conf.py, nothing set
COLUMNS = [
    "peer",
    "shape",
    "speed",
    "THREADS",
    "workers",
    "OOM kills",
    "failed",
    "peak % of limit",
    "recycles",
    "replaced first",
    "retired first",
    "retired early",
    "held",
    "time s",
]
CELL_TIME_LIMIT_S = 120.0  # run_cell's own bound, as the live tests run a cell
LOG_TAIL_CHARS = 4000  # of a FitFlix server's log, to the bench's own log, when a run broke the promise


@dataclass(frozen=True)
class Run:
    """One server under one leak: FitFlix in a sweep cell, or a peer (FitFlix at its defaults among them) under
    a shape at the fast speed. `threads` and `workers` as the peer runs them; `recycles` None: no recycling."""

    peer: str
    kind: str  # fitflix, plain, uwsgi or granian
    threads: str
    workers: str
    result: sweep.CellResult
    recycles: int | None

    @property
    def fitflix(self) -> bool:
        return self.kind == "fitflix"

    @property
    def label(self) -> str:
        """How the targets and notes name the run: the cell's name, with the peer's unless it is a sweep cell."""
        return self.result.cell.name if self.peer == "fitflix" else f"{self.peer} {self.result.cell.shape}"


def peak_text(percent: float | None) -> str:
    return "-" if percent is None else f"{percent:.0f}%"


def run_row(run: Run) -> list[str]:
    """The table's row: FitFlix's surge figures from its master's lines, '-' for a peer that has none."""
    result, counts = run.result, run.result.counts
    surge = [counts.replaced, counts.without, counts.retired_early, counts.held] if run.fitflix else ["-"] * 4
    return [
        run.peer,
        result.cell.shape,
        result.cell.speed,
        run.threads,
        run.workers,
        str(result.oom_kills),
        str(result.failed),
        peak_text(result.peak_percent),
        leak.count_or_dash(run.recycles),
        *map(str, surge),
        f"{result.seconds:.0f}",
    ]


def failure(error: Exception) -> str:
    """'failed: ' and the first line of what went wrong (a server that would not start says why there)."""
    return f"failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"


def missing_row(peer: str, shape: str, speed: str, threads: str, workers: str, why: str) -> list[str]:
    """A run that did not happen: why, in the OOM kills column, and '-' for every figure."""
    return [peer, shape, speed, threads, workers, why, *["-"] * (len(COLUMNS) - 6)]


def replaced_first_share(counts: Iterable[SurgeCounts]) -> tuple[int, int]:
    """(replaced first, recycles that asked for a replacement).

    Every ask ends in one master line: 'Replacing worker N: its replacement boots first' (`asked`) or
    'Retiring worker N without a replacement first' (`without`); a worker that leaves at once (past its
    hard cap, or near its data limit) never asks, so it is in neither.
    """
    replaced = asked = 0
    for count in counts:
        replaced += count.replaced
        asked += count.asked + count.without
    return replaced, asked


def share_text(replaced: int, asked: int) -> str:
    """'41 of 48 (85%)'."""
    if not asked:
        return "no recycle asked for a replacement"
    return f"{replaced} of {asked} ({100 * replaced / asked:.0f}%)"


def listed(items: Sequence[str], most: int = 6) -> str:
    """The first `most` items, then how many more."""
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def _count_target(text: str, runs: Sequence[Run], planned: int, value: Callable[[sweep.CellResult], int]) -> Target:
    hit = [f"{run.label} ({value(run.result)})" for run in runs if value(run.result)]
    measured = f"{len(hit)} of {len(runs)} runs: {listed(hit)}" if hit else f"0 in each of {len(runs)} runs"
    if len(runs) < planned:
        measured += f"; {planned - len(runs)} of {planned} did not run"
    return Target(text, len(runs) == planned and not hit, measured)


def _peak_target(text: str, runs: Sequence[Run], planned: int) -> Target:
    over = [
        f"{run.label} ({peak_text(run.result.peak_percent)})"
        for run in runs
        if run.result.peak_percent is None or run.result.peak_percent > sweep.PEAK_TARGET_PERCENT
    ]
    known = [(run.result.peak_percent, run.label) for run in runs if run.result.peak_percent is not None]
    worst = max(known, default=None)
    measured = f"worst {worst[0]:.0f}% ({worst[1]})" if worst else "no peak figure"
    if over:
        measured += f"; {len(over)} over {sweep.PEAK_TARGET_PERCENT}% or unread: {listed(over)}"
    if len(runs) < planned:
        measured += f"; {planned - len(runs)} of {planned} did not run"
    return Target(text, len(runs) == planned and not over, measured)


def sweep_targets(runs: Sequence[Run], planned: int, scope: str) -> list[Target]:
    """FitFlix's targets over its runs among `runs` (the sweep's cells and its defaults' runs), `planned` of them
    due; `scope` says which ('48 cells and its defaults under the 4 shapes'). A run that did not happen (its
    server would not start) leaves a target unmet, never met by default."""
    fitflix = [run for run in runs if run.fitflix]
    counts = [run.result.counts for run in fitflix]
    replaced, asked = replaced_first_share(counts)
    recycles = sum(run.recycles or 0 for run in fitflix)
    without, timed_out = sum(count.without for count in counts), sum(count.timed_out for count in counts)
    early, held = sum(count.retired_early for count in counts), sum(count.held for count in counts)
    return [
        _count_target(f"fitflix: 0 OOM kills in every run ({scope})", fitflix, planned, lambda r: r.oom_kills),
        _count_target(f"fitflix: 0 failed requests in every run ({scope})", fitflix, planned, lambda r: r.failed),
        _peak_target(
            f"fitflix: peak <= {sweep.PEAK_TARGET_PERCENT}% of the limit in every run ({scope})", fitflix, planned
        ),
        # Stated, not judged: a recycle retired first is the forecast saying the overlap would not fit under the
        # critical level, the fix at work, so a higher share is not better for its own sake.
        Target(
            f"fitflix: the replaced-first share, replaced first / recycles that asked for a replacement ({scope}), "
            "stated, not judged",
            None,
            f"{share_text(replaced, asked)}; {asked} of {recycles} recycles asked for a replacement (the others left "
            f"at once); {without} retired without a replacement first, {timed_out} replacement boots timed out; the "
            f"overlap watch retired {early} early and held {held}",
        ),
    ]


def share_by_shape(runs: Sequence[Run]) -> str:
    """'bytes 40 of 45 (89%), objects 12 of 30 (40%), ...': FitFlix's replaced-first share for each leak shape."""
    parts = []
    for shape in sweep.SHAPES:
        counts = [run.result.counts for run in runs if run.fitflix and run.result.cell.shape == shape]
        if counts:
            parts.append(f"{shape} {share_text(*replaced_first_share(counts))}")
    return ", ".join(parts)


def never_asked(runs: Sequence[Run]) -> list[str]:
    """FitFlix's runs that recycled without one recycle asking for a replacement: each left at once (the hard
    cap, or the data limit, fitflix.serving.recycle's URGENT rules)."""
    return [
        run.label for run in runs if run.fitflix and run.recycles and not replaced_first_share([run.result.counts])[1]
    ]


def peers_finding(runs: Sequence[Run], names: Sequence[str]) -> str:
    """'OOM kills over the four leaks: plain 40, uwsgi 31, granian 4, fitflix (defaults) 0'."""
    totals = [
        f"{name} {sum(run.result.oom_kills for run in runs if run.peer == name)}"
        for name in names
        if any(run.peer == name for run in runs)
    ]
    return "OOM kills over the four leaks: " + ", ".join(totals)


def peers_figure(runs: Sequence[Run], names: Sequence[str]) -> plots.Picture:
    """Each peer's cgroup peak per shape against the 90% line; the title gives their OOM kills."""
    shapes = list(sweep.SHAPES)
    series = {}
    for name in names:
        by_shape = {run.result.cell.shape: run.result.peak_percent for run in runs if run.peer == name}
        if by_shape:
            series[name] = [by_shape.get(shape) for shape in shapes]
    said = peers_finding(runs, names)
    return plots.bars(
        "part20-leak-sweep-peers",
        f"Four leak shapes, 1 MB a request, {sweep.LIMIT_MB} MB: each peer's cgroup peak. {said}",
        plots.Bars(
            shapes,
            series,
            "the cgroup's peak, % of its limit",
            references=((sweep.PEAK_TARGET_PERCENT, f"{sweep.PEAK_TARGET_PERCENT}%: FitFlix's target"),),
            digits=0,
        ),
        alt=f"Each peer's cgroup peak as a share of its {sweep.LIMIT_MB} MB limit under each of the four leak "
        f"shapes (bytearrays, small objects, C malloc, a per-thread cache), 4 clients, 1,200 requests. {said}.",
    )


def run_one(
    peer: Peer, cell: sweep.LeakCell, time_limit_s: float = CELL_TIME_LIMIT_S
) -> tuple[sweep.CellResult, int | None]:
    """`peer` in a fresh cgroup of its limit under `cell`'s leak, judged by `run_cell`; and its recycles."""
    with serving(peer) as running:
        workers = expected_workers(peer)
        running.wait_for_workers(workers)
        result = sweep.run_cell(cell, running.cgroup, running.server, time_limit_s)
        if peer.kind == "granian":
            # Mid-respawn, or on its way out after an OOM kill: read the cgroup once granian is done.
            leak.settle_granian(running, workers)
            result = dataclasses.replace(
                result,
                oom_kills=running.oom_kills(),
                peak_bytes=running.peak_bytes(),
                master_alive=running.exit_code() is None,
            )
        text = running.log()
        if peer.kind == "fitflix" and result.problems():
            log.warning("part 20: %s\n--- server log (end) ---\n%s", result.row(), text[-LOG_TAIL_CHARS:])
        return result, leak.peer_recycles(peer.kind, text)


def peer_threads(peer: Peer) -> str:
    """THREADS as the peer runs: FitFlix's setting, 1 for the sync servers, granian's own default pool."""
    if peer.kind == "fitflix":
        return peer.env.get("THREADS", str(Settings().threads))
    return "default pool" if peer.kind == "granian" else "1"


def side_by_side(app: str) -> tuple[list[Peer], list[tuple[str, str]]]:
    """plain, uwsgi and granian as part 3 sets them up, and FitFlix at its defaults, on `app`; and, for each
    peer that cannot run here, why."""
    line_up, missing = [peers.plain(app)], []
    for name, reason, make in (
        ("uwsgi", uwsgi_problem(), peers.uwsgi),
        ("granian", peer_problem("granian"), peers.granian),
    ):
        if reason is None:
            line_up.append(make(app))
        else:
            missing.append((name, reason))
    line_up.append(peers.fitflix(app, limit_mb=sweep.LIMIT_MB, name=DEFAULTS))
    return line_up, missing


def run_cells(part: Part, cells: Sequence[sweep.LeakCell]) -> list[Run]:
    """FitFlix (gunicorn.conf.py with the cell's THREADS and WEB_CONCURRENCY) in each cell, a row each."""
    runs = []
    for index, cell in enumerate(cells, 1):
        log.info("part 20: cell %d of %d: %s", index, len(cells), cell.name)
        peer = peers.fitflix(sweep.APP, env=cell.env(), limit_mb=sweep.LIMIT_MB)
        try:
            result, recycles = run_one(peer, cell)
        except Exception as error:
            log.exception("part 20: cell %s failed", cell.name)
            why = failure(error)
            part.rows.append(missing_row("fitflix", cell.shape, cell.speed, str(cell.threads), str(cell.workers), why))
            continue
        run = Run("fitflix", "fitflix", str(cell.threads), str(cell.workers), result, recycles)
        runs.append(run)
        part.rows.append(run_row(run))
        if result.problems():
            part.notes.append(f"{run.label}: {'; '.join(result.problems())}")
        log.info("part 20: %s", result.row())
    return runs


def run_peers(part: Part, line_up: Sequence[Peer]) -> list[Run]:
    """Each peer under each shape at the fast speed, a fresh server and cgroup each time; rows by shape."""
    runs, rows = [], {shape: [] for shape in sweep.SHAPES}
    for peer in line_up:
        workers = expected_workers(peer)
        for shape in sweep.SHAPES:
            log.info("part 20: %s, %s", peer.name, shape)
            # The cell gives the path, the clients and the request count; a peer's threads are its own.
            cell = sweep.LeakCell(shape, PEER_SPEED, 1, workers)
            try:
                result, recycles = run_one(peer, cell)
            except Exception as error:
                log.exception("part 20: %s under %s failed", peer.name, shape)
                why = failure(error)
                rows[shape].append(missing_row(peer.name, shape, PEER_SPEED, peer_threads(peer), str(workers), why))
                continue
            run = Run(peer.name, peer.kind, peer_threads(peer), str(workers), result, recycles)
            runs.append(run)
            rows[shape].append(run_row(run))
            if run.fitflix and result.problems():
                part.notes.append(f"{run.label}: {'; '.join(result.problems())}")
    part.rows += [row for shape in sweep.SHAPES for row in rows[shape]]
    return runs


def cells_said(cells: Sequence[sweep.LeakCell]) -> str:
    """Which cells a run covers, for the method: all of them, the pairwise twelve, or a list."""
    if tuple(cells) == sweep.FULL:
        return f"all {len(cells)} cells (`harness.leak_sweep.FULL`)"
    if tuple(cells) == sweep.PAIRWISE:
        return (
            f"{len(cells)} cells (`harness.leak_sweep.PAIRWISE`: every pair of values, as the live tests run them; "
            f"a full run has all {len(sweep.FULL)})"
        )
    return f"{len(cells)} cells ({', '.join(cell.name for cell in cells)})"


def method(cells: Sequence[sweep.LeakCell], missing: Sequence[tuple[str, str]]) -> str:
    budget = peers.uwsgi_budget_mb()
    which = cells_said(cells)
    speeds = "; ".join(
        f"{speed}: {clients} clients, {requests:,} requests"
        + (f", each request {pause_ms} ms longer" if pause_ms else "")
        for speed, (clients, requests, pause_ms) in sweep.SPEEDS.items()
    )
    shapes = ", ".join(f"{shape} `{path}`" for shape, path in sweep.SHAPES.items())
    not_run = "".join(f" {name} did not run: {reason}." for name, reason in missing)
    return (
        f"`{sweep.APP}`, each run a fresh server in a fresh {sweep.LIMIT_MB} MB memory cgroup. The sweep: FitFlix "
        f"(gunicorn.conf.py, every setting at its default but the cell's THREADS and WEB_CONCURRENCY) in "
        f"{which}: the shapes {shapes} (1 MB a request: bytearrays, small dicts kept in pymalloc's arenas, C "
        f"malloc, a cache of the serving thread's own); the speeds {speeds}; THREADS "
        f"{', '.join(map(str, sweep.THREAD_COUNTS))}; workers {', '.join(map(str, sweep.WORKER_COUNTS))}. Each "
        "cell judged by the live tests' `harness.leak_sweep.run_cell` (tests/live/test_leak_sweep.py): failed = "
        "any answer but 200, no answer, or a request not sent in its 120 s; peak = the cgroup's "
        "(`memory.max_usage_in_bytes`; v2 `memory.peak`). Then the side-by-side, each peer under each shape at "
        f"the {PEER_SPEED} speed, once: plain = `gunicorn -w {peers.PLAIN_WORKERS} -c /dev/null`; uwsgi = "
        f"{peers.PLAIN_WORKERS} processes, `--reload-on-rss {budget}`; {leak.granian_method(budget)} "
        f"{DEFAULTS} = gunicorn.conf.py with nothing set. Recycles: what each peer's log says it recycled for "
        f"memory (FitFlix's 'Recycling worker', uWSGI's '{leak.UWSGI_RECYCLED}', granian's "
        f"'{leak.GRANIAN_RECYCLED}'; plain has none: -). FitFlix's master says how each recycle went: replaced "
        "first (its replacement served before the old worker left), retired first (the forecast found no room for "
        "the overlap: 'Retiring worker N without a replacement first'), retired early and held (the overlap "
        "watch: the old worker retired before its replacement served, or the other workers holding new "
        "requests). The replaced-first share: replaced first / the recycles that asked for a replacement (the "
        f"master's 'Replacing worker N' lines and its 'Retiring worker N without a replacement first' lines).{not_run}"
    )


def run(scale: Scale) -> Part:
    cells = scale.leak_sweep_cells
    line_up, missing = side_by_side(sweep.APP)
    part = Part(20, "Leak sweep (leak shape x speed x THREADS x workers, and the peers)", "", COLUMNS)
    part.method = method(cells, missing)

    started = time.monotonic()
    cell_runs = run_cells(part, cells)
    cells_s = time.monotonic() - started

    for name, reason in missing:
        part.rows.append(missing_row(name, "all four", PEER_SPEED, "-", "-", "not run"))
        part.notes.append(f"{name}: not run: {reason}")
    started = time.monotonic()
    peer_runs = run_peers(part, line_up)
    peers_s = time.monotonic() - started

    names = [peer.name for peer in line_up]
    if peer_runs:
        part.pictures.append(peers_figure(peer_runs, names))
        part.notes.append(peers_finding(peer_runs, names))
    fitflix_runs = cell_runs + [run for run in peer_runs if run.fitflix]
    if fitflix_runs:
        part.notes.append(f"fitflix's replaced-first share by shape: {share_by_shape(fitflix_runs)}")
        alone = never_asked(fitflix_runs)
        if alone:
            part.notes.append(
                f"fitflix: in {len(alone)} runs no recycle asked for a replacement, every worker left at once "
                f"(past its hard cap or near its data limit, the rules that do not wait): {listed(alone, 12)}"
            )
    part.notes.append(f"the sweep's {len(cells)} cells took {cells_s:.0f} s, the side-by-side {peers_s:.0f} s")
    scope = f"the sweep's {len(cells)} cells and {DEFAULTS} under the {len(sweep.SHAPES)} shapes"
    part.targets += sweep_targets(fitflix_runs, len(cells) + len(sweep.SHAPES), scope)
    return part


def part3_row(result: sweep.CellResult, recycles: int | None) -> list[str]:
    """A cell as a row of part 3's table (part 18, in the guest): the figures a cell has, '-' for the others."""
    # As part 3's 'what clients saw': the most common first.
    ordered = sorted(result.statuses.items(), key=lambda item: -item[1])
    statuses = ", ".join(f"{status} x{count}" for status, count in ordered)
    if result.unsent:
        statuses += f", not sent x{result.unsent}"
    return [
        f"fitflix {result.cell.name}",
        str(result.limit_bytes // (1024 * 1024)),
        str(result.oom_kills),
        str(result.failed),
        statuses,
        f"{result.peak_bytes / (1024 * 1024):.0f}" if result.peak_bytes is not None else "-",
        peak_text(result.peak_percent),
        "-",
        "-",
        "-",
        "-",
        f"{result.seconds:.0f}",
        leak.count_or_dash(recycles),
        str(result.counts.replaced),
    ]


def cells_target(results: Sequence[sweep.CellResult], planned: Sequence[sweep.LeakCell]) -> Target:
    """Every cell kept the whole promise (`CellResult.problems`: no OOM kill or group kill, nothing failed, the
    peak at most 90%, the master alive); a cell that did not run is a miss."""
    names = ", ".join(cell.name for cell in planned)
    text = f"fitflix in the sweep's cells {names}: 0 OOM kills (and group kills), 0 failed, peak <= " + (
        f"{sweep.PEAK_TARGET_PERCENT}% of the limit, the master alive"
    )
    broken = [f"{result.cell.name}: {'; '.join(result.problems())}" for result in results if result.problems()]
    ran = {result.cell for result in results}
    missing = [cell.name for cell in planned if cell not in ran]
    measured = "; ".join(broken) if broken else f"each of {len(results)} cells kept it"
    if missing:
        measured += f"; did not run: {', '.join(missing)}"
    return Target(text, not broken and not missing, measured)


def cells_into_part3(part: Part, cells: Sequence[sweep.LeakCell], time_limit_s: float) -> None:
    """Part 18: FitFlix in `cells` after part 3's peers, a row each in part 3's table, a note each, one target."""
    results = []
    for cell in cells:
        log.info("part 3 (guest): cell %s", cell.name)
        peer = peers.fitflix(sweep.APP, env=cell.env(), limit_mb=sweep.LIMIT_MB, name=f"fitflix {cell.name}")
        try:
            result, recycles = run_one(peer, cell, time_limit_s)
        except Exception as error:
            log.exception("cell %s failed", cell.name)
            why = failure(error)
            part.add(peer.name, sweep.LIMIT_MB, "-", "-", why, *["-"] * (len(leak.COLUMNS) - 5))
            continue
        results.append(result)
        part.rows.append(part3_row(result, recycles))
        group = f"; {result.oom_group_kills} OOM group kills" if result.oom_group_kills is not None else ""
        part.notes.append(result.row() + group)
    part.targets.append(cells_target(results, cells))
