"""Part 15: a small instance: 512 MB at 0.1 and 0.5 CPU (Render's free instance and its Starter).

Each peer runs in a 512 MB memory cgroup with a CPU quota (cgroup v1
`cpu.cfs_quota_us` per 100 ms, v2 `cpu.max`). Per peer and CPU level: the
time from the Popen to the first 200 from /health, the boot's CPU time (the
cgroup's), then 2 clients on a 2 MB-a-request leak with /health probed every
250 ms, and what each recycle costs the leak's clients. FitFlix's and plain
gunicorn's boots are also run under bench/boot_conf.py, which stamps each step
of the boot in the log, and the imports behind them are listed with
`python -X importtime`.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from bench import peers, plots, servers
from bench.leak import outcome_counts
from bench.load import Sample, percentile, run_clients
from bench.recycle import AFTER_WINDOW_S, recycle_events
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import Granian, Peer, PlainGunicorn, Running, peer_problem, pinned
from harness.cgroups import MemoryCgroup
from harness.flood import probe_series
from harness.server import PROJECT, LiveServer, server_env
from harness.wait import poll_until

log = logging.getLogger("bench")

APP = "bench.apps:app"
CPU_LEVELS = (0.1, 0.5)  # Render's free instance, its Starter
TARGET_CPUS = 0.1
TARGET_WORKER_INIT_EXTRA_MS = 1.0  # issue 34: a worker boots for almost nothing, as plain gunicorn's does
LEAK_PATH = "/bench/leak?mb=2"  # each request keeps 2 MB for the life of its worker
LEAK_CLIENTS = 2
LEAK_MAX_RATE = 200  # requests/s: the count bound is this times the time bound (the time bound is the one that acts)
LEAK_TIMEOUT_S = 30.0  # a leak request with no answer by then failed
RETRY_PAUSE_S = 0.05  # a leak client's pause after a request with no HTTP answer
PROBE_EVERY_S = 0.25
PROBE_TIMEOUT_S = 5.0  # Render's health check waits 5 s; a probe without a 2xx by then counts as 5 s in p99
READY_TIMEOUT_S = 90.0  # from the Popen to the first 200, at 0.1 CPU
READY_REQUEST_TIMEOUT_S = 20.0  # one readiness request may wait this long for its answer
STAMPS_TIMEOUT_S = 10.0  # the worker's last boot-step line reaches the log this soon after its answer
IMPORTTIME_TIMEOUT_S = 120.0
BOOT_CONF = PROJECT / "bench" / "boot_conf.py"
BOOT_BASE_VARIABLE = "FITFLIX_BENCH_BOOT_BASE"  # bench/boot_conf.py's BASE_VARIABLE: "none" = no base config
# What gunicorn -c gunicorn.conf.py imports in the master before it serves: gunicorn, the config's imports, the app.
IMPORTS = (
    "import gunicorn.app.wsgiapp, gunicorn.arbiter; "
    "import fitflix.serving.hooks, fitflix.serving.logs, fitflix.serving.worker; "
    "import wsgi"
)
TOP_IMPORTS = 15


@dataclass(frozen=True)
class Knobs:
    leak_s: float  # the leak's time bound per peer and CPU level
    boots: dict[float, int]  # boots per peer at each CPU level, the leak run's own included
    importtime_runs: int  # unconstrained `-X importtime` runs (one more runs under the 0.1 CPU quota)


KNOBS = {"full": Knobs(45.0, {0.1: 3, 0.5: 2}, 5), "quick": Knobs(12.0, {0.1: 2, 0.5: 1}, 2)}


# -- boot steps: bench/boot_conf.py's log lines ------------------------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    step: str
    pid: int | None
    cpu_s: float | None  # time.process_time() of that process (None: the bench's own "answered")
    monotonic_s: float


@dataclass(frozen=True)
class StepCost:
    process: str  # master, worker or client
    cpu_ms: float
    wall_ms: float


STAMP_LINE = re.compile(r"boot-step step=([\w-]+) pid=(\d+) cpu_s=([\d.]+) monotonic_s=([\d.]+)")

# The boot's steps, in order: (key, what it is).
STEPS = (
    ("start", "python start, gunicorn's imports and arguments (to the config's first line)"),
    ("import-fitflix", "import fitflix: gunicorn.conf.py's imports (the hooks, the logger; Flask comes with the app)"),
    ("plan", "plan: the rest of gunicorn.conf.py (settings, container, plan)"),
    ("setup", "gunicorn setup: logger, worker class"),
    ("import-app", "import the app (bench.apps:app -> wsgi:app)"),
    ("on-starting", "on_starting without the warm-up"),
    ("warm-up", "warm-up (the service's read-only endpoints, in the master)"),
    ("bind", "bind, when_ready, spawn"),
    ("freeze", "pre_fork: gc.collect + gc.freeze"),
    ("fork", "fork (to post_fork in the worker)"),
    ("worker-init", "worker init: gunicorn's init_process, post_worker_init"),
    ("first-request", "first request: accept, /health, its answer at the bench"),
    ("other", "between stamps in an order not listed"),
)
STEP_TEXT = dict(STEPS)

# Which step the span between two consecutive stamps of the timeline belongs to.
SPAN_STEPS = {
    ("start", "config-top"): "start",
    ("config-top", "fitflix-imported"): "import-fitflix",
    ("fitflix-imported", "config-done"): "plan",
    ("config-done", "app-import-start"): "setup",
    ("config-top", "on-starting-start"): "setup",  # plain: no base config, no preload
    ("app-import-start", "app-import-end"): "import-app",  # the master (preload) or the worker (plain)
    ("app-import-end", "on-starting-start"): "on-starting",
    ("on-starting-start", "warm-up-start"): "on-starting",
    ("warm-up-start", "warm-up-end"): "warm-up",
    ("warm-up-end", "on-starting-end"): "on-starting",
    ("on-starting-start", "on-starting-end"): "on-starting",
    ("on-starting-end", "when-ready-start"): "bind",
    ("when-ready-start", "when-ready-end"): "bind",
    ("when-ready-end", "pre-fork-start"): "bind",
    ("pre-fork-start", "pre-fork-end"): "freeze",
    ("pre-fork-end", "post-fork"): "fork",
    ("post-fork", "app-import-start"): "worker-init",
    ("app-import-end", "post-worker-init-start"): "worker-init",
    ("post-fork", "post-worker-init-start"): "worker-init",
    ("post-worker-init-start", "post-worker-init-end"): "worker-init",
    ("post-worker-init-end", "first-request-done"): "first-request",
    # post_request runs after the answer is sent: the bench may read it first, so the two spans are one step.
    ("first-request-done", "answered"): "first-request",
}


def parse_stamps(log_text: str) -> list[Stamp]:
    """Every boot-step line of a server log, in log order."""
    return [
        Stamp(match.group(1), int(match.group(2)), float(match.group(3)), float(match.group(4)))
        for match in STAMP_LINE.finditer(log_text)
    ]


def boot_steps(stamps: Sequence[Stamp], started_s: float, answered_s: float) -> dict[str, StepCost]:
    """CPU and wall time per step, from the Popen (`started_s`) to the first 200 at the bench (`answered_s`).

    The timeline is the master's stamps, then its first worker's (a worker's CPU time starts from 0 at the
    fork); each span between consecutive stamps goes to the step SPAN_STEPS names, so the walls add up to
    `answered_s - started_s`.
    """
    master_pid = next((stamp.pid for stamp in stamps if stamp.step == "config-top"), None)
    if master_pid is None:
        return {}
    master = sorted((stamp for stamp in stamps if stamp.pid == master_pid), key=lambda stamp: stamp.monotonic_s)
    others = [stamp for stamp in stamps if stamp.pid != master_pid]
    first_worker = min(others, key=lambda stamp: stamp.monotonic_s).pid if others else None
    worker = sorted((stamp for stamp in others if stamp.pid == first_worker), key=lambda stamp: stamp.monotonic_s)
    timeline = [*master, *worker, Stamp("answered", None, None, answered_s)]
    totals: dict[str, list[float]] = {}
    processes: dict[str, str] = {}
    previous = Stamp("start", master_pid, 0.0, started_s)
    for stamp in timeline:
        key = SPAN_STEPS.get((previous.step, stamp.step), "other")
        if stamp.cpu_s is None:
            cpu_s = 0.0  # the bench's own clock: no CPU of the server's
        else:
            cpu_s = stamp.cpu_s - (previous.cpu_s if stamp.pid == previous.pid and previous.cpu_s is not None else 0.0)
        cpu_total, wall_total = totals.get(key, [0.0, 0.0])
        totals[key] = [cpu_total + cpu_s, wall_total + stamp.monotonic_s - previous.monotonic_s]
        if stamp.pid is not None:
            processes.setdefault(key, "master" if stamp.pid == master_pid else "worker")
        previous = stamp
    return {
        key: StepCost(processes.get(key, "client"), totals[key][0] * 1000, totals[key][1] * 1000)
        for key, _text in STEPS
        if key in totals
    }


def median_steps(runs: Sequence[dict[str, StepCost]]) -> dict[str, StepCost]:
    """Per step, the median CPU and the median wall over the runs that have it (each median on its own)."""
    medians = {}
    for key, _text in STEPS:
        costs = [run[key] for run in runs if key in run]
        if costs:
            medians[key] = StepCost(
                costs[0].process,
                statistics.median(cost.cpu_ms for cost in costs),
                statistics.median(cost.wall_ms for cost in costs),
            )
    return medians


# -- the recycle gap as the leak's clients see it ----------------------------------------------------------------


def recycle_extra_ms(samples: Sequence[Sample], after_window_s: float = AFTER_WINDOW_S) -> list[float]:
    """Per recycle (a new answering pid), the worst latency of the requests ending from the old worker's last
    answer to `after_window_s` after the new one's first, less the median latency of all requests (ms).

    The same window as part 5; `samples` sorted by their end.
    """
    if not samples:
        return []
    median_ms = statistics.median(sample.latency_s * 1000 for sample in samples)
    extra = []
    for old_s, new_s in recycle_events(list(samples)):
        around = [sample.latency_s * 1000 for sample in samples if old_s <= sample.end_s <= new_s + after_window_s]
        extra.append(max(around) - median_ms)
    return extra


def probe_p99_ms(latencies_s: Sequence[float | None], timeout_s: float = PROBE_TIMEOUT_S) -> float | None:
    """p99 of the probes' latencies (ms), a failed probe counted as the whole timeout."""
    value = percentile([timeout_s if latency is None else latency for latency in latencies_s], 0.99)
    return None if value is None else value * 1000


# -- imports: python -X importtime ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportTime:
    module: str
    self_us: int
    cumulative_us: int
    depth: int  # 0: imported by the command itself (or by Python's startup)
    importer: str  # the nearest module up the chain, itself included, that is not the standard library's

    @property
    def owner(self) -> str:
        """The importer's top-level package: whose choice this module's import was."""
        return self.importer.split(".")[0] if self.importer != STARTUP else STARTUP


IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)\s*$", re.MULTILINE)
STARTUP = "python's startup"


def parse_importtime(text: str, stdlib: frozenset[str] = frozenset(sys.stdlib_module_names)) -> list[ImportTime]:
    """`-X importtime` lines (a child is printed before its parent, two spaces deeper), each with its importer."""
    rows = [
        (match.group(4), int(match.group(1)), int(match.group(2)), (len(match.group(3)) - 1) // 2)
        for match in IMPORT_LINE.finditer(text)
    ]
    # A parent is printed after its children: read backwards, keeping the chain of importers of each line.
    importers: list[str] = [""] * len(rows)
    chain: list[tuple[int, str]] = []  # (depth, importer) of the lines above the one being read
    for index in range(len(rows) - 1, -1, -1):
        module, _self_us, _cumulative_us, depth = rows[index]
        while chain and chain[-1][0] >= depth:
            chain.pop()
        if module.split(".")[0] not in stdlib:
            importers[index] = module
        else:
            importers[index] = chain[-1][1] if chain else STARTUP
        chain.append((depth, importers[index]))
    return [
        ImportTime(module, self_us, cumulative_us, depth, importer)
        for (module, self_us, cumulative_us, depth), importer in zip(rows, importers, strict=True)
    ]


def heaviest_imports(runs: Sequence[Sequence[ImportTime]], count: int = TOP_IMPORTS) -> list[tuple[str, float, float]]:
    """(module, least cumulative ms, least self ms) of the `count` heaviest by cumulative time over the runs.

    The least, not the median: these are wall times, and on a shared machine interference only ever adds.
    """
    by_module: dict[str, list[ImportTime]] = {}
    for imports in runs:
        for item in imports:
            by_module.setdefault(item.module, []).append(item)
    rows = [
        (
            module,
            min(item.cumulative_us for item in items) / 1000,
            min(item.self_us for item in items) / 1000,
        )
        for module, items in by_module.items()
    ]
    return sorted(rows, key=lambda row: row[1], reverse=True)[:count]


def self_ms_by(runs: Sequence[Sequence[ImportTime]], key: Callable[[ImportTime], str]) -> dict[str, float]:
    """The least over the runs of the self time (ms) summed by `key` (owner, importer), heaviest first
    (a run without a name counts 0 for it)."""
    sums: dict[str, list[float]] = {}
    for imports in runs:
        run_sums: dict[str, float] = {}
        for item in imports:
            run_sums[key(item)] = run_sums.get(key(item), 0.0) + item.self_us / 1000
        for name, value in run_sums.items():
            sums.setdefault(name, []).append(value)
    least = {name: min(values + [0.0] * (len(runs) - len(values))) for name, values in sums.items()}
    return dict(sorted(least.items(), key=lambda item: item[1], reverse=True))


def import_run(cpus: float | None) -> tuple[list[ImportTime], float]:
    """One `python -X importtime -c IMPORTS` in a fresh interpreter (in a 512 MB cgroup with a CPU quota when
    `cpus`), and its wall time in seconds."""
    command = [sys.executable, "-X", "importtime", "-c", IMPORTS]
    cgroup = MemoryCgroup.create(peers.LIMIT_MB, prefix="fitflix-bench", cpus=cpus) if cpus is not None else None
    try:
        started = time.monotonic()
        completed = subprocess.run(
            cgroup.wrap(command) if cgroup else command,
            cwd=PROJECT,
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=IMPORTTIME_TIMEOUT_S,
            check=True,
        )
        wall_s = time.monotonic() - started
    finally:
        if cgroup is not None:
            cgroup.remove()
    return parse_importtime(completed.stderr), wall_s


# -- the peers, timed from their Popen ---------------------------------------------------------------------------


class TimedStart:
    """For a LiveServer: when its Popen ran and when the first 200 from its ready path came back."""

    started_s: float | None = None
    answered_s: float | None = None

    def start(self, ready_timeout_s: float = READY_TIMEOUT_S):
        self.started_s = time.monotonic()  # the Popen follows at once (granian picks a port first: microseconds)
        return super().start(ready_timeout_s)

    def _answers(self) -> bool:
        # One request waits for its answer: LiveServer's 2 s would give up on a worker still booting at 0.1 CPU,
        # and each abandoned request would wait in the backlog and cost that worker CPU when it comes up.
        self.ensure_running()
        try:
            status = self.request("GET", self.ready_path, timeout_s=READY_REQUEST_TIMEOUT_S)[0]
        except (OSError, http.client.HTTPException):
            return False
        if status == 200:
            self.answered_s = time.monotonic()
        return status == 200


class TimedFitflix(TimedStart, LiveServer):
    """`gunicorn -c gunicorn.conf.py` (or `-c bench/boot_conf.py`, the same with each boot step stamped)."""

    def __init__(self, peer: Peer, cgroup: MemoryCgroup, stamped: bool) -> None:
        super().__init__(peer.env, app=peer.app, cgroup=cgroup, prefix=pinned(peer) + peer.prefix)
        self.stamped = stamped

    def server_command(self) -> list[str]:
        command = super().server_command()
        if self.stamped:
            command[command.index("-c") + 1] = str(BOOT_CONF)
        return command


class TimedPlain(TimedStart, PlainGunicorn):
    """`gunicorn -c /dev/null` (or `-c bench/boot_conf.py` with no base config: the same with stamps)."""

    def __init__(self, peer: Peer, cgroup: MemoryCgroup, stamped: bool) -> None:
        super().__init__(peer, cgroup)
        self.stamped = stamped
        if stamped:
            self.env[BOOT_BASE_VARIABLE] = "none"

    def server_command(self) -> list[str]:
        command = super().server_command()
        if self.stamped:
            command[command.index("-c") + 1] = str(BOOT_CONF)
        return command


class TimedGranian(TimedStart, Granian):
    """granian as bench/servers.py starts it (no stamps: it runs no gunicorn config)."""

    def __init__(self, peer: Peer, cgroup: MemoryCgroup, stamped: bool) -> None:
        super().__init__(peer, cgroup)
        self.stamped = False


TIMED = {"fitflix": TimedFitflix, "plain": TimedPlain, "granian": TimedGranian}


@contextmanager
def timed_serving(peer: Peer, stamped: bool = False) -> Iterator[Running]:
    """`servers.serving` for a timed server: its own cgroup (CPU counted), registered so Ctrl-C ends it too."""
    cgroup = MemoryCgroup.create(peer.limit_mb, prefix="fitflix-bench", cpus=peer.cpus, cpu_accounting=True)
    try:
        server = TIMED[peer.kind](peer, cgroup, stamped)
    except BaseException:
        cgroup.remove()
        raise
    running = Running(peer, server, cgroup)
    servers._running.append(running)  # as servers.start does: stop_everything() ends it on Ctrl-C
    try:
        server.start()
        yield running
    finally:
        servers._stop(running)


@dataclass(frozen=True)
class Boot:
    first_health_s: float  # the Popen to the first 200 from /health, at the bench
    cpu_ms: float  # the cgroup's CPU time then: every process of the peer
    throttled_ms: float  # how long the quota held them back by then
    steps: dict[str, StepCost]  # {} without stamps


def boot_of(running: Running) -> Boot:
    server = running.server
    cpu_ms, throttled_ms = running.cgroup.cpu_usage_ns() / 1e6, running.cgroup.cpu_throttled_ns() / 1e6
    steps: dict[str, StepCost] = {}
    if getattr(server, "stamped", False):
        poll_until(lambda: "step=first-request-done" in running.log(), STAMPS_TIMEOUT_S, "the first request's stamp")
        steps = boot_steps(parse_stamps(running.log()), server.started_s, server.answered_s)
    return Boot(server.answered_s - server.started_s, cpu_ms, throttled_ms, steps)


@dataclass(frozen=True)
class LeakRun:
    samples: list[Sample]
    elapsed_s: float  # the clients' run: `leak_s`, or less when the server exited
    probes_s: list[float | None]  # one per /health probe; None: no 2xx within PROBE_TIMEOUT_S
    oom_kills: int
    exited_after_s: float | None  # the server's master exited this long into the leak; None: it ran to the end
    exit_code: int | None


def leak_clients(port: int, total: int, clients: int, time_limit_s: float, stop: threading.Event) -> list[Sample]:
    """bench/load.py's `run_clients` on LEAK_PATH, each client pausing RETRY_PAUSE_S after a failed request."""
    return run_clients(
        port,
        LEAK_PATH,
        total,
        clients,
        time_limit_s,
        timeout_s=LEAK_TIMEOUT_S,
        read_pid=True,
        stop=stop,
        retry_pause_s=RETRY_PAUSE_S,
    )


def under_leak(running: Running, leak_s: float) -> LeakRun:
    """2 clients on the leak for `leak_s` (and at most LEAK_MAX_RATE a second), /health probed all along.

    When the server exits, the clients stop; the probes go on to the end and fail: the instance is down.
    """
    probes: list[float | None] = []
    count = round(leak_s / PROBE_EVERY_S)
    server_gone = threading.Event()
    exited_after_s: list[float] = []

    def probe_all() -> None:
        # Bounded by count and by `count * PROBE_EVERY_S + PROBE_TIMEOUT_S`: no longer than the leak and one probe.
        probes.extend(probe_series(running.port, count, PROBE_EVERY_S, PROBE_TIMEOUT_S))

    def watch_server() -> None:
        while not server_gone.wait(0.05) and time.monotonic() - started < leak_s:
            if running.server.process.poll() is not None:
                exited_after_s.append(time.monotonic() - started)
                server_gone.set()

    prober = threading.Thread(target=probe_all, name="health-prober", daemon=True)
    watcher = threading.Thread(target=watch_server, name="server-watcher", daemon=True)
    started = time.monotonic()
    prober.start()
    watcher.start()
    samples = leak_clients(running.port, int(LEAK_MAX_RATE * leak_s), LEAK_CLIENTS, leak_s, server_gone)
    elapsed_s = time.monotonic() - started
    server_gone.set()  # the clients are done: the watcher too
    watcher.join(5)
    prober.join(leak_s + PROBE_TIMEOUT_S + 5)
    return LeakRun(
        samples,
        elapsed_s,
        list(probes),
        running.oom_kills(),
        exited_after_s[0] if exited_after_s else None,
        running.server.process.poll(),
    )


# Granian says so when it respawns a worker for its RSS, and when a worker dies under it.
GRANIAN_EVENTS = {"RSS respawns": "RSS over threshold", "workers lost": "Unexpected exit from"}


# -- the part ------------------------------------------------------------------------------------------------------


def line_up() -> tuple[list[Peer], list[str]]:
    """The three peers (unconstrained; each CPU level replaces `cpus`), and why any is missing."""
    base = [
        peers.fitflix(APP, name="fitflix"),
        peers.plain(APP, workers=1, args=("--max-requests", "100"), name="plain -w 1 --max-requests 100"),
    ]
    problems = []
    problem = peer_problem("granian")
    if problem is None:
        base.append(peers.granian(APP, workers=1, name="granian --workers 1"))
    else:
        problems.append(f"granian not run: {problem}")
    return base, problems


def at(peer: Peer, cpus: float) -> Peer:
    return dataclasses.replace(peer, cpus=cpus, name=f"{peer.name} @ {cpus:g} CPU")


def ms(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def first_health_target(by_peer: dict[str, list[float]], cpu_ms_by_peer: dict[str, list[float]]) -> Target:
    """At 0.1 CPU, FitFlix's median time to the first /health against plain gunicorn's (and their boot CPU)."""
    text = f"at {TARGET_CPUS:g} CPU, FitFlix's time to the first /health is no longer than plain gunicorn's"
    plain_name = next((name for name in by_peer if name.startswith("plain")), None)
    fitflix, plain = by_peer.get("fitflix", []), by_peer.get(plain_name, [])
    if not fitflix or not plain:
        return Target(text, None, "a peer did not boot")
    fitflix_s, plain_s = statistics.median(fitflix), statistics.median(plain)
    fitflix_cpu, plain_cpu = cpu_ms_by_peer.get("fitflix", []), cpu_ms_by_peer.get(plain_name, [])
    cpu_text = (
        f"; boot CPU {statistics.median(fitflix_cpu):,.0f} vs {statistics.median(plain_cpu):,.0f} ms"
        if fitflix_cpu and plain_cpu
        else ""
    )
    return Target(
        text,
        fitflix_s <= plain_s,
        f"medians: FitFlix {fitflix_s:.2f} s ({', '.join(f'{value:.2f}' for value in fitflix)}), plain "
        f"{plain_s:.2f} s ({', '.join(f'{value:.2f}' for value in plain)}), {fitflix_s - plain_s:+.2f} s" + cpu_text,
    )


def worker_init_target(steps_by_peer: dict[str, list[dict[str, StepCost]]]) -> Target:
    """At 0.1 CPU, the worker's init (gunicorn's init_process and post_worker_init) against plain gunicorn's."""
    text = (
        f"at {TARGET_CPUS:g} CPU, the worker's init (init_process, post_worker_init) costs at most plain gunicorn's "
        f"+ {TARGET_WORKER_INIT_EXTRA_MS:g} ms of CPU"
    )
    medians = {name: median_steps(runs).get("worker-init") for name, runs in steps_by_peer.items() if runs}
    fitflix = medians.get("fitflix")
    plain = next((cost for name, cost in medians.items() if name.startswith("plain")), None)
    if fitflix is None or plain is None:
        return Target(text, None, "a peer's boot steps were not stamped")
    return Target(
        text,
        fitflix.cpu_ms <= plain.cpu_ms + TARGET_WORKER_INIT_EXTRA_MS,
        f"median CPU ms: FitFlix {fitflix.cpu_ms:.1f}, plain {plain.cpu_ms:.1f} ({fitflix.cpu_ms - plain.cpu_ms:+.1f})",
    )


def step_notes(steps_by_peer: dict[str, list[dict[str, StepCost]]]) -> list[str]:
    """One line per boot step at 0.1 CPU: each stamped peer's CPU ms / wall ms and the process it ran in."""
    medians = {name: median_steps(runs) for name, runs in steps_by_peer.items() if runs}
    if not medians:
        return []
    counts = ", ".join(f"{name} {len(runs)}" for name, runs in steps_by_peer.items() if runs)
    notes = [
        f"boot steps at {TARGET_CPUS:g} CPU under bench/boot_conf.py (medians over runs: {counts}), "
        "CPU ms / wall ms (process), Popen to the first 200 at the bench:"
    ]
    for key, text in STEPS:
        cells = []
        for name, steps in medians.items():
            cost = steps.get(key)
            cells.append(
                f"{name.split(' ')[0]} "
                + (f"{cost.cpu_ms:,.0f} / {cost.wall_ms:,.0f} ({cost.process})" if cost else "-")
            )
        if any(key in steps for steps in medians.values()):
            notes.append(f"step {text}: " + "; ".join(cells))
    totals = [
        f"{name.split(' ')[0]} {sum(cost.cpu_ms for cost in steps.values()):,.0f} / "
        f"{sum(cost.wall_ms for cost in steps.values()):,.0f}"
        for name, steps in medians.items()
    ]
    notes.append("steps summed (medians summed, so not quite a boot's total): " + "; ".join(totals))
    return notes


def import_notes(knobs: Knobs) -> list[str]:
    runs = [import_run(None) for _ in range(knobs.importtime_runs)]
    imports = [imported for imported, _wall_s in runs]
    notes = [
        f'heaviest imports, `python -X importtime -c "{IMPORTS}"` (what the FitFlix master imports before it '
        f"serves), unconstrained wall time, the least of {len(runs)} runs; cumulative ms (self ms); each CPU ms "
        f"costs about {1 / TARGET_CPUS:.0f} ms of wall at {TARGET_CPUS:g} CPU: "
        + ", ".join(
            f"{module} {cumulative:,.1f} ({self_ms:,.1f})" for module, cumulative, self_ms in heaviest_imports(imports)
        )
    ]
    owners = self_ms_by(imports, lambda item: item.owner)
    notes.append(
        f"import self time by package (a standard-library module counted with the package that imported it), "
        f"{sum(owners.values()):,.0f} ms in all: "
        + ", ".join(f"{owner} {value:,.1f}" for owner, value in owners.items())
    )
    own = {
        module: value
        for module, value in self_ms_by(imports, lambda item: item.importer).items()
        if module.split(".")[0] in ("fitflix", "wsgi")
    }
    notes.append(
        f"FitFlix's own modules, {sum(own.values()):,.0f} ms in all (self ms, with the standard-library modules "
        "each imports first): " + ", ".join(f"{module} {value:,.1f}" for module, value in list(own.items())[:10])
    )
    try:
        _quota_imports, quota_wall_s = import_run(TARGET_CPUS)
        notes.append(
            f"the same imports at {TARGET_CPUS:g} CPU: {quota_wall_s:.2f} s wall "
            f"(unconstrained: {min(wall for _imports, wall in runs):.2f} s, the least)"
        )
    except (subprocess.SubprocessError, OSError) as error:
        notes.append(f"the imports at {TARGET_CPUS:g} CPU could not be timed: {error}")
    return notes


def run(scale: Scale) -> Part:
    knobs = KNOBS[scale.name]
    budget_mb = peers.uwsgi_budget_mb(workers=1)
    part = Part(
        15,
        "A small instance: 512 MB at 0.1 and 0.5 CPU",
        f"`{APP}`, each peer in a {peers.LIMIT_MB} MB memory cgroup of its own with a CPU quota of 0.1 CPU (10 ms "
        "of every 100 ms: Render's free instance) or 0.5 CPU (its Starter). Peers: fitflix = `gunicorn -c "
        "gunicorn.conf.py` with no settings; plain = `gunicorn -w 1 --max-requests 100 -c /dev/null`; granian = "
        f"`granian --interface wsgi --workers 1 --workers-max-rss {budget_mb} --rss-sample-interval 1` (FitFlix's "
        "budget for one worker). 'first /health' = the Popen to the first 200 from /health at the bench, polled "
        f"every 20 ms, each request waiting up to {READY_REQUEST_TIMEOUT_S:g} s for its answer (an abandoned one "
        f"would cost the booting worker CPU); median of {knobs.boots[0.1]} boots at 0.1 CPU and "
        f"{knobs.boots[0.5]} at 0.5, of which one is the leak run's and the others boot and stop (fitflix and "
        "plain under bench/boot_conf.py, which stamps each boot step in the log). 'boot CPU ms' = the cgroup's CPU "
        f"time at that first 200 (median). Then {LEAK_CLIENTS} keep-alive clients on `{LEAK_PATH}` (2 MB kept per "
        f"request) for {knobs.leak_s:g} s (at most {LEAK_MAX_RATE}/s), /health probed from a fresh connection "
        f"every {PROBE_EVERY_S * 1000:.0f} ms, one at a time; a probe without a 2xx within {PROBE_TIMEOUT_S:g} s "
        f"counts as {PROBE_TIMEOUT_S:g} s in p99. Failed = no HTTP answer or a status >= 500 (after one, that client "
        f"pauses {RETRY_PAUSE_S * 1000:.0f} ms before its next request, so a refusing server is not hammered); "
        "when a server exits "
        "during the leak its clients stop there (req/s is over that time) and the probes go on, failing. At 0.1 CPU "
        "a boot that only computes takes 10 x its CPU time in wall time; more is time the machine gave to others. "
        "A recycle is a new "
        "answering pid; 'recycle gap' = the worst latency of the leak requests ending from the old worker's last "
        f"answer to {AFTER_WINDOW_S * 1000:.0f} ms after its replacement's first, less the median latency, median "
        "over recycles (max in brackets).",
        [
            "peer",
            "CPU",
            "first /health s",
            "boots",
            "boot CPU ms",
            "leak req/s (served)",
            "failed",
            "OOM kills",
            "/health p99 ms",
            "probes failed",
            "recycles",
            "recycle gap ms",
        ],
    )
    base, problems = line_up()
    part.notes += problems
    first_health: dict[tuple[str, float], list[float]] = {}
    boot_cpu: dict[tuple[str, float], list[float]] = {}
    boot_texts: dict[tuple[str, float], list[str]] = {}
    steps_by_peer: dict[str, list[dict[str, StepCost]]] = {peer.name: [] for peer in base if peer.kind != "granian"}

    def record(peer: Peer, cpus: float, boot: Boot, how: str) -> None:
        key = (peer.name, cpus)
        first_health.setdefault(key, []).append(boot.first_health_s)
        boot_cpu.setdefault(key, []).append(boot.cpu_ms)
        boot_texts.setdefault(key, []).append(f"{boot.first_health_s:.2f} s / {boot.cpu_ms:,.0f} CPU ms ({how})")
        if boot.steps and cpus == TARGET_CPUS:
            steps_by_peer[peer.name].append(boot.steps)

    for cpus in CPU_LEVELS:
        # Boots alone first, the peers in turn round by round, so the machine's noise falls on each of them.
        for round_number in range(knobs.boots[cpus] - 1):
            for peer in base:
                constrained = at(peer, cpus)
                log.info("part 15: %s, boot %s", constrained.name, round_number + 1)
                try:
                    with timed_serving(constrained, stamped=True) as running:
                        boot = boot_of(running)
                except Exception as error:
                    log.exception("part 15: %s boot failed", constrained.name)
                    part.notes.append(f"{constrained.name}: a boot failed: {str(error).splitlines()[0]}")
                    continue
                record(peer, cpus, boot, "stamped" if peer.kind != "granian" else "boot only")
        for peer in base:
            constrained = at(peer, cpus)
            log.info("part 15: %s, leak", constrained.name)
            key = (peer.name, cpus)
            try:
                with timed_serving(constrained) as running:
                    boot = boot_of(running)
                    record(peer, cpus, boot, "the leak run's")
                    leak = under_leak(running, knobs.leak_s)
                    server_log = running.log()
            except Exception as error:
                log.exception("part 15: %s failed", constrained.name)
                part.add(peer.name, f"{cpus:g}", f"failed: {str(error).splitlines()[0]}", *["-"] * 9)
                continue
            failed = [sample for sample in leak.samples if sample.status is None or sample.status >= 500]
            served = [sample for sample in leak.samples if sample.ok]
            extra_ms = recycle_extra_ms(leak.samples)
            part.add(
                peer.name,
                f"{cpus:g}",
                f"{statistics.median(first_health[key]):.2f}",
                len(first_health[key]),
                ms(statistics.median(boot_cpu[key])),
                f"{len(served) / leak.elapsed_s:.1f} ({len(served):,})" if leak.elapsed_s else "-",
                f"{len(failed)} of {len(leak.samples)}",
                leak.oom_kills,
                ms(probe_p99_ms(leak.probes_s)),
                f"{sum(probe is None for probe in leak.probes_s)} of {len(leak.probes_s)}",
                len(extra_ms),
                f"{statistics.median(extra_ms):,.0f} ({max(extra_ms):,.0f})" if extra_ms else "-",
            )
            if failed:
                part.notes.append(f"{constrained.name}: the leak's clients saw {outcome_counts(leak.samples)}")
            if leak.exited_after_s is not None:
                part.notes.append(
                    f"{constrained.name}: the server exited {leak.exited_after_s:.1f} s into the leak (code "
                    f"{leak.exit_code}); the clients stopped there, the probes went on"
                )
            if peer.kind == "granian":
                events = ", ".join(f"{name} {server_log.count(line)}" for name, line in GRANIAN_EVENTS.items())
                part.notes.append(f"{constrained.name}: granian's log: {events}")
            if len(leak.samples) >= int(LEAK_MAX_RATE * knobs.leak_s):
                part.notes.append(
                    f"{constrained.name}: the leak stopped at its count bound after {leak.elapsed_s:.0f} s "
                    "(quick failures count too)"
                )
    for (name, cpus), texts in boot_texts.items():
        part.notes.append(f"{name} @ {cpus:g} CPU boots: " + "; ".join(texts))
    part.notes += step_notes(steps_by_peer)
    try:
        part.notes += import_notes(knobs)
    except (subprocess.SubprocessError, OSError) as error:
        log.exception("part 15: importtime failed")
        part.notes.append(f"imports not measured: {error}")

    at_target = {name: values for (name, cpus), values in first_health.items() if cpus == TARGET_CPUS}
    cpu_at_target = {name: values for (name, cpus), values in boot_cpu.items() if cpus == TARGET_CPUS}
    part.targets.append(first_health_target(at_target, cpu_at_target))
    part.targets.append(worker_init_target(steps_by_peer))
    if first_health:
        part.pictures.append(first_health_figure(base, first_health, boot_cpu))
    return part


def first_health_figure(
    base: list[Peer], first_health: dict[tuple[str, float], list[float]], boot_cpu: dict[tuple[str, float], list[float]]
) -> plots.Picture:
    names = [peer.name for peer in base]
    series = {
        f"{cpus:g} CPU": [
            statistics.median(first_health[(name, cpus)]) if first_health.get((name, cpus)) else None for name in names
        ]
        for cpus in CPU_LEVELS
    }
    finding = ", ".join(
        f"{name.split(' ')[0]} {statistics.median(first_health[(name, TARGET_CPUS)]):.1f} s "
        f"({statistics.median(boot_cpu[(name, TARGET_CPUS)]):,.0f} CPU ms)"
        for name in names
        if first_health.get((name, TARGET_CPUS))
    )
    return plots.bars(
        "part15-small-instance",
        f"At {TARGET_CPUS:g} CPU the first /health comes once the boot's CPU is paid at {TARGET_CPUS * 100:g} ms a "
        f"100 ms: {finding}",
        plots.Bars(names, series, "seconds from the start to the first 200 from /health (median)", digits=2),
        alt=f"Seconds from each peer's start to its first 200 from /health, at 0.1 and 0.5 CPU in 512 MB (median "
        f"of its boots); at {TARGET_CPUS:g} CPU, with the boot's CPU time: {finding}.",
        series_colours={"0.1 CPU": plots.BLUE, "0.5 CPU": plots.SKY_BLUE},
    )
