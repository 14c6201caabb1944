"""Part 14: CPU per request: what each server costs per answer, over what the app alone costs.

On a 0.1-CPU instance (Render's free one) the CPU a request costs is the
service's capacity. Each server runs `bench.apps:app` with one worker process,
pinned to CPU 0, in a 512 MB cgroup that counts its CPU (exited workers
included); `wrk -t1`, pinned to CPU 1, loads one route at a time, with 8
keep-alive connections and again with 1 (one client at a time: no batching of
ready connections, every wake-up paid by one answer). CPU per request is the
cgroup's CPU over the run divided by the answers wrk counted. FitFlix runs
with its default worker (`WORKER=fitflix`, fitflix.serving.h1worker) and with
the older one (`WORKER=gthread`, fitflix.serving.worker).
The floor is the WSGI callable called in a loop with no server
(bench/floor.py), also pinned to CPU 0, in the same rounds. A run bounded by
wrk's own -d (no count bound: that needs wrk's Lua response() hook, a Lua
call per answer on the client); the rounds stop at the part's time limit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench import peers, plots
from bench.load import HOST, wrk_path
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import Peer, Running, peer_problem, serving, uwsgi_problem
from harness.server import PROJECT, server_env
from harness.wait import poll_until

log = logging.getLogger("bench")

APP = "bench.apps:app"
SERVER_CPU = "0"
LOAD_CPU = "1"
CONNECTIONS = 8  # FitFlix's default thread count: every thread busy, none queued twice
SINGLE = 1  # one client at a time: what each answer costs when nothing is batched
CONNECTION_COUNTS = (CONNECTIONS, SINGLE)
HEALTH, JSON_API, WAIT = "/health", "/api/workouts", "/bench/wait?ms=1"
ROUTES = (HEALTH, JSON_API, WAIT)
FLOOR = "the app alone (floor)"
PLAIN_LOGGED = "plain sync + access log"
FITFLIX = "fitflix"
FITFLIX_GTHREAD = "fitflix (WORKER=gthread)"
GRANIAN = "granian"
WRK_TIMEOUT_S = 10
SETTLE_S = 0.2  # after wrk exits: the server closing its last connections is this run's CPU too
IDLE_S = 2.0  # each server's idle CPU, all of them idle at once
FLOOR_TIMEOUT_S = 120.0

# Targets.
ADDED_VS_PLAIN_LOGGED = 0.5  # FitFlix adds at most half of what plain gunicorn with its access log adds
ADDED_VS_GRANIAN = 1.0  # at 8 connections FitFlix adds at most what granian adds
ADDED_VS_GRANIAN_SINGLE = 1.25  # at 1 connection, at most 1.25x granian's
HEALTH_BEFORE_US = 352.0  # /health's own cost measured on 2026-11-29, before this work
HEALTH_FLOOR_SHARE = 0.5


@dataclass(frozen=True)
class Knobs:
    rounds: int
    run_s: int  # wrk -d, whole seconds
    warm_up_s: int  # one wrk run per server and route before the first round, not counted
    floor_calls: int  # calls per floor batch on /health and the JSON route
    floor_wait_calls: int  # calls per floor batch on the wait route (each sleeps 1 ms)
    floor_batches: int
    time_limit_s: float  # the rounds: a run not started by then is noted as not run


# Every server runs every route at both connection counts: 3 s a run (5 s before the run at 1 connection came)
# keeps three rounds of ten servers under 10 minutes.
KNOBS = {
    "full": Knobs(rounds=3, run_s=3, warm_up_s=1, floor_calls=2000, floor_wait_calls=300, floor_batches=5,
                  time_limit_s=600),
    "quick": Knobs(rounds=1, run_s=2, warm_up_s=1, floor_calls=500, floor_wait_calls=100, floor_batches=3,
                   time_limit_s=240),
}  # fmt: skip


# -- wrk's own output ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int  # answers wrk read, whatever their status
    duration_s: float
    non_2xx: int  # answers with a status >= 400 (wrk's "Non-2xx or 3xx responses")
    socket_errors: int  # connect, read, write and timeout errors

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


SUMMARY_LINE = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.MULTILINE)
SOCKET_ERRORS_LINE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE)
NON_2XX_LINE = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_TIME_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(text: str) -> WrkResult:
    """wrk's printed summary (no Lua script); ValueError when it has no `N requests in T` line."""
    summary = SUMMARY_LINE.search(text)
    if summary is None:
        raise ValueError("no 'N requests in T' line in wrk's output")
    socket_errors = SOCKET_ERRORS_LINE.search(text)
    non_2xx = NON_2XX_LINE.search(text)
    return WrkResult(
        requests=int(summary.group(1)),
        duration_s=float(summary.group(2)) * WRK_TIME_UNITS_S[summary.group(3)],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, socket_errors.groups())) if socket_errors else 0,
    )


def wrk_command(wrk: str, port: int, path: str, run_s: int, connections: int = CONNECTIONS) -> list[str]:
    """One wrk run on CPU 1: one thread, `connections` keep-alive connections, `run_s` seconds."""
    return [
        "taskset", "-c", LOAD_CPU, wrk, "-t1", f"-c{connections}", f"-d{run_s}s",
        "--timeout", f"{WRK_TIMEOUT_S}s", f"http://{HOST}:{port}{path}",
    ]  # fmt: skip


def run_wrk(wrk: str, port: int, path: str, run_s: int, connections: int = CONNECTIONS) -> WrkResult:
    command = wrk_command(wrk, port, path, run_s, connections)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=run_s + WRK_TIMEOUT_S + 30)
    try:
        return parse_wrk(completed.stdout)
    except ValueError:
        raise RuntimeError(
            f"wrk gave no summary (exit {completed.returncode}): {completed.stdout}\n{completed.stderr}"
        ) from None


# -- the arithmetic -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One wrk run against one server on one route: wrk's figures and the server cgroup's CPU over it."""

    result: WrkResult
    cpu_ns: int

    @property
    def broken(self) -> bool:
        """An error answer, a socket error or no answer at all: its figure is not the route's cost."""
        return self.result.errors > 0 or self.result.requests == 0

    @property
    def cpu_per_request_us(self) -> float | None:
        return cpu_per_request_us(self.cpu_ns, self.result.requests)


def cpu_per_request_us(cpu_ns: int, requests: int) -> float | None:
    """The CPU one answer cost, in us; None without answers."""
    return cpu_ns / requests / 1000 if requests > 0 else None


@dataclass(frozen=True)
class Cell:
    """One server on one route over the rounds: medians of its clean runs."""

    rps: float | None
    cpu_us: float | None
    low_us: float | None  # the lowest and highest clean run, for the spread across rounds
    high_us: float | None
    runs: int
    broken: int


def summarize(runs: Sequence[Run]) -> Cell:
    """Medians of the clean runs; a broken run is counted, never averaged in."""
    clean = [run for run in runs if not run.broken]
    figures = [run.cpu_per_request_us for run in clean]
    return Cell(
        rps=statistics.median(run.result.rps for run in clean) if clean else None,
        cpu_us=statistics.median(figures) if figures else None,
        low_us=min(figures) if figures else None,
        high_us=max(figures) if figures else None,
        runs=len(runs),
        broken=len(runs) - len(clean),
    )


def floor_cell(per_round_us: Sequence[float]) -> Cell:
    """The floor: each round's figure is already a median of batches."""
    figures = list(per_round_us)
    if not figures:
        return Cell(None, None, None, None, 0, 0)
    return Cell(None, statistics.median(figures), min(figures), max(figures), len(figures), 0)


def added_us(server_us: float | None, floor_us: float | None) -> float | None:
    """What the server adds to the app's own cost, per request."""
    return None if server_us is None or floor_us is None else server_us - floor_us


def ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def added_ratio(value: float | None, reference: float | None) -> float | None:
    """What one server adds over what another adds; None when the other adds nothing (at or under the floor:
    noise, no yardstick, as in `within`)."""
    return None if value is None or reference is None or reference <= 0 else value / reference


def within(value: float | None, reference: float | None, factor: float) -> bool | None:
    """value <= factor x reference; None when either is missing or the reference is no cost at all
    (at or under the floor: noise, nothing to compare against)."""
    if value is None or reference is None or reference <= 0:
        return None
    return value <= factor * reference


def capacity_rps(cpu_us: float | None, cpus: float) -> float | None:
    """Answers per second that `cpus` CPUs pay for at `cpu_us` each."""
    return cpus * 1e6 / cpu_us if cpu_us else None


def rotated(items: Sequence, round_index: int) -> list:
    """Round r starts r places further along, so no server always goes first or last."""
    if not items:
        return []
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


# -- the floor ----------------------------------------------------------------------------------------------------


def floor_command(calls: int, batches: int, paths: Sequence[str]) -> list[str]:
    return ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "bench.floor", str(calls), str(batches), *paths]


def parse_floor(stdout: str) -> dict[str, tuple[str, list[float]]]:
    """bench/floor.py's JSON line: {path: (status line, per-call us of each batch)}."""
    line = next((text for text in reversed(stdout.splitlines()) if text.startswith("{")), None)
    if line is None:
        raise ValueError("bench.floor printed no JSON line")
    return {path: (figures["status"], figures["per_call_us"]) for path, figures in json.loads(line).items()}


def run_floor(calls: int, batches: int, paths: Sequence[str]) -> dict[str, tuple[str, list[float]]]:
    """The app alone, in a fresh process pinned to the servers' CPU."""
    completed = subprocess.run(
        floor_command(calls, batches, paths),
        cwd=PROJECT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=FLOOR_TIMEOUT_S,
        check=False,
    )
    try:
        return parse_floor(completed.stdout)
    except ValueError:
        raise RuntimeError(
            f"bench.floor failed (exit {completed.returncode}): {completed.stdout}\n{completed.stderr}"
        ) from None


def floor_round(knobs: Knobs) -> dict[str, float]:
    """Each route's floor this round: the median of its batches, in us per call; a non-200 is an error."""
    figures = run_floor(knobs.floor_calls, knobs.floor_batches, [HEALTH, JSON_API])
    figures |= run_floor(knobs.floor_wait_calls, knobs.floor_batches, [WAIT])
    for path, (status, _batches) in figures.items():
        if not status.startswith("200"):
            raise RuntimeError(f"the app alone answers {status} on {path}")
    return {path: statistics.median(batches) for path, (_status, batches) in figures.items()}


# -- the peers ----------------------------------------------------------------------------------------------------


def line_up() -> tuple[list[Peer], list[str]]:
    """Every server of the comparison, one worker process each, pinned to CPU 0; and why any is missing."""
    wanted = [
        peers.plain(APP, workers=1, name="plain sync"),
        peers.plain(APP, workers=1, name=PLAIN_LOGGED, args=("--access-logfile", "-")),
        peers.plain(APP, workers=1, name="plain gthread x8", args=("--worker-class", "gthread", "--threads", "8")),
    ]
    missing = []
    problem = uwsgi_problem()
    if problem is None:
        wanted.append(peers.uwsgi(APP, workers=1, args=(), name="uwsgi"))
    else:
        missing.append(f"uwsgi not run: {problem}")
    for kind, peer in (
        ("granian", lambda: peers.granian(APP, workers=1, args=(), name=GRANIAN)),
        ("waitress", lambda: peers.waitress(APP, threads=8, name="waitress x8")),
    ):
        problem = peer_problem(kind)
        if problem is None:
            wanted.append(peer())
        else:
            missing.append(f"{kind} not run: {problem}")
    # FitFlix sizes itself from the 512 MB cgroup: no WEB_CONCURRENCY (checked once it is up).
    wanted.append(peers.fitflix(app=APP, name=FITFLIX))
    wanted.append(peers.fitflix(app=APP, env={"ACCESS_LOG_HEALTH": "false"}, name="fitflix ACCESS_LOG_HEALTH=false"))
    wanted.append(peers.fitflix(app=APP, env={"WORKER": "gthread"}, name=FITFLIX_GTHREAD))
    return [dataclasses.replace(peer, cpu_list=SERVER_CPU) for peer in wanted], missing


def measure(running: Running, wrk: str, path: str, run_s: int, connections: int = CONNECTIONS) -> Run:
    before_ns = running.cgroup.cpu_usage_ns()
    result = run_wrk(wrk, running.port, path, run_s, connections)
    time.sleep(SETTLE_S)  # the tail of this run, not a wait for a state
    run = Run(result, running.cgroup.cpu_usage_ns() - before_ns)
    if running.exit_code() is not None:
        raise RuntimeError(f"{running.peer.name} exited (code {running.exit_code()}) during {path}")
    return run


def idle_cpu_ms_per_s(servers: Sequence[Running]) -> dict[str, float]:
    """Each server's CPU while nobody asks anything (timers, heartbeats, monitor threads), all at once."""
    before = {running.peer.name: running.cgroup.cpu_usage_ns() for running in servers}
    started = time.monotonic()
    time.sleep(IDLE_S)  # the measurement window itself
    elapsed_s = time.monotonic() - started
    return {
        running.peer.name: (running.cgroup.cpu_usage_ns() - before[running.peer.name]) / 1e6 / elapsed_s
        for running in servers
    }


def worker_boots(running: Running) -> int | None:
    """Workers gunicorn booted so far (max_requests recycles included), from its log; None for other servers."""
    if running.peer.kind not in ("plain", "fitflix"):
        return None
    return running.log().count("Booting worker with pid")


USING_WORKER = re.compile(r"Using worker: (\S+)")


def worker_class(log_text: str) -> str | None:
    """The worker class gunicorn says it uses (its `Using worker:` line), the last one; None without it."""
    found = USING_WORKER.findall(log_text)
    return found[-1] if found else None


# -- the part -----------------------------------------------------------------------------------------------------


def _us(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _connections(count: int) -> str:
    return f"{count} connection{'s' if count != 1 else ''}"


Key = tuple[str, str, int]  # (server, route, connections)


def columns() -> list[str]:
    """route and server; then, at each connection count, its figures; then the ones at 8 connections alone."""
    per_count = [
        heading.format(c=count)
        for count in CONNECTION_COUNTS
        for heading in ("c={c} req/s", "c={c} CPU us/req", "c={c} rounds low-high us", "c={c} adds us",
                        "c={c} adds vs granian")
    ]  # fmt: skip
    return [
        "route",
        "server",
        *per_count,
        f"c={CONNECTIONS} adds vs plain sync + log",
        f"c={CONNECTIONS} req/s at 0.1 CPU",
        "broken runs " + ", ".join(f"c={count}" for count in CONNECTION_COUNTS),
    ]


def table_rows(floor: dict[str, Cell], cells: dict[Key, Cell], names: Sequence[str]) -> list[list[str]]:
    """A row per route and server (the app alone first), both connection counts side by side."""
    rows = []
    for path in ROUTES:
        floor_us = floor[path].cpu_us
        rows.append(
            [path, FLOOR]
            + ["-", _us(floor_us), f"{_us(floor[path].low_us)}-{_us(floor[path].high_us)}", "-", "-"]
            * len(CONNECTION_COUNTS)
            + ["-", _us(capacity_rps(floor_us, 0.1), 0), "-"]
        )
        for name in names:
            row = [path, name]
            for count in CONNECTION_COUNTS:
                cell = cells[(name, path, count)]
                granian = added_on(cells, floor, GRANIAN, path, count)
                row += [
                    _us(cell.rps, 0),
                    _us(cell.cpu_us),
                    f"{_us(cell.low_us)}-{_us(cell.high_us)}",
                    _us(added_us(cell.cpu_us, floor_us)),
                    _times(added_ratio(added_us(cell.cpu_us, floor_us), granian)),
                ]
            main = cells[(name, path, CONNECTIONS)]
            row += [
                _times(added_ratio(added_on(cells, floor, name, path), added_on(cells, floor, PLAIN_LOGGED, path))),
                _us(capacity_rps(main.cpu_us, 0.1), 0),
                ", ".join(f"{cells[(name, path, count)].broken}/{cells[(name, path, count)].runs}"
                          for count in CONNECTION_COUNTS),
            ]  # fmt: skip
            rows.append(row)
    return rows


def run(scale: Scale) -> Part:
    knobs = KNOBS[scale.name]
    part = Part(
        14,
        "CPU per request",
        f"Each server runs `{APP}` (wsgi:app plus bench routes) with 1 worker process, pinned to CPU 0 "
        "(`taskset -c 0`), in a 512 MB cgroup that counts its CPU, exited workers included (v1 `cpuacct.usage`, "
        f"v2 `cpu.stat`). The load: `taskset -c 1 wrk -t1 -c{CONNECTIONS} -d{knobs.run_s}s` and the same with "
        f"`-c{SINGLE}` (one client at a time), one route at a time: "
        f"{HEALTH}, the examples' workouts blueprint ({JSON_API}) and a 1 ms I/O wait ({WAIT}). CPU per request "
        "= the cgroup's CPU over the run / the answers wrk counted; a run with an error answer or a socket error "
        "is broken and left out of the medians. The floor, the app alone: `python -m bench.floor`, pinned to "
        "CPU 0, calls the WSGI callable with a werkzeug-built environ in a loop (no server, no socket), "
        "`time.process_time()` per call, median of its batches; it is the same at either connection count. "
        f"`{FITFLIX}` is FitFlix's default worker (`WORKER=fitflix`: httptools, an epoll loop and app threads), "
        f"`{FITFLIX_GTHREAD}` the older one (gunicorn's gthread with heads read on its loop). "
        f"{knobs.rounds} interleaved round(s) (every server, at both connection counts, and the floor once a "
        "round, the order rotated), every server up throughout; medians over the rounds. `c=N` is N connections; "
        "`adds` is CPU per request less the floor; `adds vs granian` and `adds vs plain sync + log` divide what "
        "the server adds by what that one adds at the same connection count; `at 0.1 CPU` is the answers per "
        "second a 0.1-CPU instance pays for at that cost.",
        columns(),
    )
    wrk = wrk_when_installed()
    wanted, missing = line_up()
    part.notes += missing
    runs: dict[Key, list[Run]] = {}
    floors: dict[str, list[float]] = {path: [] for path in ROUTES}
    with contextlib.ExitStack() as stack:
        servers: list[Running] = []
        for peer in wanted:
            log.info("part 14: starting %s", peer.name)
            try:
                servers.append(stack.enter_context(serving(peer)))
            except Exception as error:  # one server that will not start leaves the rest to compare
                log.exception("part 14: %s did not start", peer.name)
                part.notes.append(f"{peer.name} did not start: {str(error).splitlines()[0]}")
        for running in servers:
            if running.peer.kind in ("plain", "uwsgi", "fitflix"):
                running.wait_for_workers(1)
            if running.peer.kind == "fitflix":
                count = len(running.worker_pids())
                part.notes.append(
                    f"{running.peer.name} sized itself to {count} worker(s) in its 512 MB cgroup, "
                    f"with no WEB_CONCURRENCY; its worker: {worker_class(running.log()) or 'not in its log'}"
                )
        for running in servers:
            for path in ROUTES:
                run_wrk(wrk, running.port, path, knobs.warm_up_s)
        idle = idle_cpu_ms_per_s(servers)
        not_run = rounds(knobs, wrk, servers, runs, floors, part.notes)
        boots = {running.peer.name: worker_boots(running) for running in servers}
        names = [running.peer.name for running in servers]
    if not_run:
        part.notes.append(f"the part's time limit ({knobs.time_limit_s:g} s) left {not_run} turn(s) not run")

    floor = {path: floor_cell(floors[path]) for path in ROUTES}
    cells = {
        (name, path, count): summarize(runs.get((name, path, count), []))
        for name in names
        for path in ROUTES
        for count in CONNECTION_COUNTS
    }
    part.rows += table_rows(floor, cells, names)
    part.notes.append(
        "idle CPU (ms per s, all servers idle at once): "
        + ", ".join(f"{name} {value:.2f}" for name, value in idle.items())
    )
    recycled = {name: count - 1 for name, count in boots.items() if count and count > 1}
    if recycled:
        part.notes.append(
            "workers replaced during the part (their boots are in the CPU figures): "
            + ", ".join(f"{name} {count}" for name, count in recycled.items())
        )
    part.notes.append(
        "uWSGI's --http-socket answers `Connection: close` (bench/servers.py): a new connection per request, "
        "its accept and close in its figure; plain gunicorn sync closes after every answer as well"
    )
    under = under_the_floor(floor, cells)
    if under:
        why = (
            f"; the floor calls the app one call at a time, so on {WAIT} each 1 ms sleep is the only one, while "
            f"with {CONNECTIONS} connections a server's sleeps overlap"
            if any(f" on {WAIT} " in text for text in under)
            else ""
        )
        part.notes.append(
            "under the floor (CPU per request below the app alone's: `adds` is negative and no ratio to it is "
            "taken): " + ", ".join(under) + why
        )
    add_targets(part, floor, cells)
    part.pictures += figures(floor, cells, names)
    return part


def under_the_floor(floor: dict[str, Cell], cells: dict[Key, Cell]) -> list[str]:
    """'server on route at N connection(s)' for each cell that costs less than the app alone."""
    return [
        f"{name} on {path} at {_connections(count)}"
        for (name, path, count), cell in cells.items()
        if (added := added_us(cell.cpu_us, floor[path].cpu_us)) is not None and added < 0
    ]


def rounds(
    knobs: Knobs,
    wrk: str,
    servers: Sequence[Running],
    runs: dict[Key, list[Run]],
    floors: dict[str, list[float]],
    notes: list[str],
) -> int:
    """Every server on every route at each connection count, and the floor, once a round, in a rotated order;
    the turns not run (a turn: the floor, or one server on every route)."""
    deadline = time.monotonic() + knobs.time_limit_s
    not_run = 0
    failed: set[str] = set()
    participants: list[Running | None] = [None, *servers]  # None: the floor
    for round_index in range(knobs.rounds):
        for running in rotated(participants, round_index):
            if time.monotonic() > deadline:
                not_run += 1
                continue
            if running is None:
                for path, figure_us in floor_round(knobs).items():
                    floors[path].append(figure_us)
                log.info(
                    "part 14: round %d: the app alone: %s",
                    round_index + 1,
                    ", ".join(f"{path} {floors[path][-1]:.1f} us" for path in ROUTES),
                )
                continue
            if running.peer.name in failed:
                continue
            turns = [
                (path, count)
                for path in rotated(ROUTES, round_index)
                for count in rotated(CONNECTION_COUNTS, round_index)
            ]
            for path, count in turns:
                try:
                    measured = measure(running, wrk, path, knobs.run_s, count)
                except RuntimeError as error:  # it exited, or wrk could not reach it: no later turns for it
                    log.error("part 14: %s on %s at c=%d: %s", running.peer.name, path, count, error)
                    notes.append(f"{running.peer.name} failed in round {round_index + 1} on {path} at "
                                 f"{_connections(count)}: {str(error).splitlines()[0]}")  # fmt: skip
                    failed.add(running.peer.name)
                    break
                runs.setdefault((running.peer.name, path, count), []).append(measured)
                log.info(
                    "part 14: round %d: %s %s c=%d: %.0f req/s, %s us/req, %d errors",
                    round_index + 1,
                    running.peer.name,
                    path,
                    count,
                    measured.result.rps,
                    _us(measured.cpu_per_request_us),
                    measured.result.errors,
                )
                if measured.broken:
                    notes.append(
                        f"broken run: round {round_index + 1}, {running.peer.name} on {path} at "
                        f"{_connections(count)}: {measured.result.requests} answers, {measured.result.non_2xx} "
                        f"non-2xx, {measured.result.socket_errors} socket errors"
                    )
    return not_run


def wrk_when_installed(timeout_s: float = 600) -> str:
    """wrk's path, once an apt-get install that may be running has put it there."""
    poll_until(lambda: shutil.which("wrk"), timeout_s, "wrk (an apt-get install of it may be running)", 5)
    path = wrk_path()
    if path is None:
        raise RuntimeError("wrk is not installed: part 14 needs it (apt-get install wrk)")
    return path


def added_on(
    cells: dict[Key, Cell], floor: dict[str, Cell], name: str, path: str, connections: int = CONNECTIONS
) -> float | None:
    cell = cells.get((name, path, connections))
    return added_us(cell.cpu_us, floor[path].cpu_us) if cell else None


def add_targets(part: Part, floor: dict[str, Cell], cells: dict[Key, Cell]) -> None:
    for path in (HEALTH, JSON_API):
        fitflix, plain = added_on(cells, floor, FITFLIX, path), added_on(cells, floor, PLAIN_LOGGED, path)
        part.targets.append(
            Target(
                f"on {path}, at {_connections(CONNECTIONS)}, what FitFlix (default) adds over the app alone is at "
                f"most {ADDED_VS_PLAIN_LOGGED:g}x what plain gunicorn sync adds with its access log on",
                within(fitflix, plain, ADDED_VS_PLAIN_LOGGED),
                f"fitflix adds {_us(fitflix)} us, plain sync + access log {_us(plain)} us: "
                f"{_times(added_ratio(fitflix, plain))}",
            )
        )
    for count, factor in ((CONNECTIONS, ADDED_VS_GRANIAN), (SINGLE, ADDED_VS_GRANIAN_SINGLE)):
        for path in ROUTES:
            fitflix = added_on(cells, floor, FITFLIX, path, count)
            granian = added_on(cells, floor, GRANIAN, path, count)
            bound = "what granian adds" if factor == 1 else f"{factor:g}x what granian adds"
            part.targets.append(
                Target(
                    f"on {path}, at {_connections(count)}, what FitFlix (default) adds over the app alone is at "
                    f"most {bound}",
                    within(fitflix, granian, factor),
                    f"fitflix adds {_us(fitflix)} us, granian {_us(granian)} us: "
                    f"{_times(added_ratio(fitflix, granian))}",
                )
            )
    health_floor = floor[HEALTH].cpu_us
    part.targets.append(
        Target(
            f"{HEALTH}'s own cost (the app alone) is at most {HEALTH_FLOOR_SHARE:g}x {HEALTH_BEFORE_US:g} us, "
            "the figure measured on 2026-11-29 before this work",
            within(health_floor, HEALTH_BEFORE_US, HEALTH_FLOOR_SHARE),
            f"{_us(health_floor)} us: {_times(ratio(health_floor, HEALTH_BEFORE_US))} of {HEALTH_BEFORE_US:g} us",
        )
    )


def figure_name(connections: int) -> str:
    """8 connections keep the name the figure had before the run at 1 connection came."""
    suffix = "" if connections == CONNECTIONS else "-" + _connections(connections).replace(" ", "-")
    return "part14-cpu-per-request" + suffix


def figures(floor: dict[str, Cell], cells: dict[Key, Cell], names: Sequence[str]) -> list[plots.Picture]:
    """A picture per connection count: each server's CPU per request on /health and the JSON route."""
    return [figure(floor, cells, names, count) for count in CONNECTION_COUNTS]


def figure(
    floor: dict[str, Cell], cells: dict[Key, Cell], names: Sequence[str], connections: int = CONNECTIONS
) -> plots.Picture:
    shown = (HEALTH, JSON_API)
    at = _connections(connections)
    fitflix = added_on(cells, floor, FITFLIX, HEALTH, connections)
    granian = added_on(cells, floor, GRANIAN, HEALTH, connections)
    plain = added_on(cells, floor, PLAIN_LOGGED, HEALTH, connections)
    if fitflix is not None and granian is not None and granian > 0:
        title = (
            f"At {at}, per /health answer FitFlix adds {fitflix:.0f} us of CPU to the app's own "
            f"{floor[HEALTH].cpu_us:.0f}; granian adds {granian:.0f} us ({fitflix / granian:.2f}x granian's)"
        )
        if plain is not None and plain > 0:
            title += f", plain gunicorn with its access log {plain:.0f} us"
    else:
        title = f"CPU per request at {at}, per server: the app's own cost (lines) and what each server adds"
    groups = [FLOOR, *names]
    series = {
        # None: no clean run, "n/a"
        path: [floor[path].cpu_us] + [cells[(name, path, connections)].cpu_us for name in names]
        for path in shown
    }
    return plots.bars(
        figure_name(connections),
        title,
        plots.Bars(
            groups,
            series,
            f"CPU per request, us (the server's cgroup CPU / answers; 1 worker on 1 CPU; wrk with {at})",
            references=[(floor[path].cpu_us, f"the app alone, {path}") for path in shown if floor[path].cpu_us],
            digits=0,
        ),
        alt=f"CPU time per request of each server at {at} on /health and on the JSON route "
        f"{JSON_API}, with the app's own cost (no server) as lines: the part of each bar past its line is what the "
        "server adds. " + title + ".",
    )
