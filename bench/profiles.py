"""Part 13: memory profiles: standard against memory-optimized, each knob alone, the allocators, a busy worker.

MEMORY_PROFILE=memory-optimized changes the defaults of six knobs at once
(fitflix.settings.PROFILE_DEFAULTS), each an environment variable: "alone" is
standard plus that one variable. Allocators are tried on standard: glibc as
is (standard itself), an arena cap, `PYTHONMALLOC=mimalloc` where the
interpreter has it, jemalloc preloaded from Debian's package. Each
configuration runs three servers of its own, one after the other, each in its
own 512 MB memory cgroup:

1. `harness.apps.service_with_leaks:app` at the configuration's own worker
   count: /health requests/s over 8 keep-alive clients (wrk), then one
   /spike of 1.5 x the limit and the first 200 after it;
2. the same app, fresh: 2 MB kept per request until twice the limit has been
   kept; the cgroup's peak and the recycles;
3. `wsgi:app` (the service itself, the app the master warms up) with
   WEB_CONCURRENCY=2 and MAX_REQUESTS=0: N requests to /health over 8
   keep-alive clients, then each worker's USS, the tree's PSS, and where one
   worker's private memory is, mapping by mapping (/proc/PID/smaps).
Plain `gunicorn -w 2` runs 3 too, for the tree PSS at equal worker counts.
"""

from __future__ import annotations

import glob
import logging
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from bench import peers, plots
from bench.footprint import SETTLE_S, TARGET_PSS_RATIO
from bench.leak import outcome_counts
from bench.load import requests_until, run_clients, throughput
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import Peer, Running, mb, serving
from bench.spike import first_fresh_answer
from fitflix.memory.container import MIB
from fitflix.memory.process import read_smaps_rollup
from fitflix.memory.report import measure_container
from fitflix.serving.sizing import make_plan
from fitflix.settings import PROFILE_DEFAULTS, Settings
from harness.fitflix_log import parse_recycles

log = logging.getLogger("bench")

LIMIT_MB = peers.LIMIT_MB
LEAK_APP = "harness.apps.service_with_leaks:app"
BUSY_APP = "wsgi:app"
CONNECTIONS = 8  # keep-alive clients on /health: the standard profile's thread count
LEAK_MB = 2
LEAK_CLIENTS = 8
SPIKE_MB = LIMIT_MB * 3 // 2  # as part 4
BUSY_WORKERS = 2
# Nothing here measures the drain: without it every server would take DRAIN_S (5 s) to stop.
STOP_AT_ONCE = {"DRAIN_S": "0"}
TARGET_LEAK_PEAK_RATIO = 0.85
TARGET_BUSY_USS_MB = 6.0
TOP_MAPPINGS = 6  # mappings shown per busy worker, by private memory

OPTIMIZED = "memory-optimized"
# Knobs measured together: the budget and the hard cap both derive from these two percents.
KNOBS_TOGETHER = (("MEMORY_WARN_PERCENT", "MEMORY_CRITICAL_PERCENT"),)
# Knobs a busy /health worker cannot show: the budget acts at hundreds of MB, and the busy
# servers run MAX_REQUESTS=0 so no worker is replaced while they are counted.
NOT_FOR_BUSY = frozenset({"MEMORY_WARN_PERCENT", "MAX_REQUESTS"})

JEMALLOC_PACKAGE = "libjemalloc2"  # Debian's; `apt-get install -y libjemalloc2`
JEMALLOC_GLOB = "/usr/lib/*/libjemalloc.so.2"
SMAPS_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S{4} ")
MALLOC_HEAP_ALIGN_BYTES = 64 * 1024 * 1024  # glibc's HEAP_MAX_SIZE on 64-bit: thread arenas' heaps are aligned to it
GUARD_MAX_BYTES = 64 * 1024  # a thread stack's guard page(s)


@dataclass(frozen=True)
class Bounds:
    rps_rounds: int  # wrk runs on /health per configuration; the median is reported
    rps_run_s: float
    leak_requests: int
    leak_time_limit_s: float
    spike_time_limit_s: float
    busy_requests: int
    busy_time_limit_s: float
    part_time_limit_s: float  # no configuration starts after this; the rest are reported as not run
    every_configuration: bool  # quick: the two profiles and plain only


BOUNDS = {
    "full": Bounds(3, 5, 2 * LIMIT_MB // LEAK_MB, 90, 30, 20_000, 90, 720, True),
    "quick": Bounds(1, 2, 200, 30, 20, 3_000, 20, 180, False),
}


@dataclass(frozen=True)
class Config:
    name: str
    kind: str  # profile, knob alone, allocator, or peer (plain gunicorn)
    env: dict[str, str] = field(default_factory=dict)
    busy: bool = True  # measure the busy worker too
    served: bool = True  # measure requests/s, the spike and the leak (plain: only the busy worker)


STANDARD = Config("standard", "profile")
PLAIN = Config(f"plain -w {BUSY_WORKERS}", "peer", served=False)


# The seed's start:memory-optimized in Python terms, every candidate measured alone before it is kept;
# fitflix.settings.PROFILE_DEFAULTS holds the ones kept. WARM_UP=false: the warm-up both profiles do, off.
CANDIDATES = {
    "MEMORY_WARN_PERCENT": 65,
    "MEMORY_CRITICAL_PERCENT": 75,
    "THREADS": 2,
    "GC_THRESHOLD": 100,
    "HEAP_TRIM_MB": 4,
    "MALLOC_ARENA_MAX": 2,
    "MAX_REQUESTS": 5000,
}


def knob_configs(profile_defaults: Mapping[str, int]) -> list[Config]:
    """Standard plus one candidate knob each; the knobs in KNOBS_TOGETHER as one; whether the profile kept it."""
    configs, done = [], set()
    for name in profile_defaults:
        if name in done:
            continue
        together = next((group for group in KNOBS_TOGETHER if name in group), (name,))
        done.update(together)
        env = {variable: str(profile_defaults[variable]) for variable in together if variable in profile_defaults}
        label = " + ".join(f"{variable}={value}" for variable, value in env.items())
        kept = set(together) <= set(PROFILE_DEFAULTS[OPTIMIZED])
        kind = "knob alone, kept" if kept else "knob alone, not kept"
        configs.append(Config(label, kind, env, busy=not NOT_FOR_BUSY & set(together)))
    configs.append(Config("WARM_UP=false", "warm-up off", {"WARM_UP": "false"}, served=False))
    return configs


def mimalloc_problem(python: str = sys.executable) -> str | None:
    """Why `PYTHONMALLOC=mimalloc` cannot be used with `python`, or None."""
    try:
        probe = subprocess.run(
            [python, "-c", "pass"], env={"PYTHONMALLOC": "mimalloc"}, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"the probe did not run: {error}"
    if probe.returncode == 0:
        return None
    first = next((line for line in probe.stderr.splitlines() if line.strip()), f"exit {probe.returncode}")
    return f"not available on {platform.python_version()}: the interpreter refuses it ({first.strip()})"


def jemalloc_path() -> tuple[str | None, str]:
    """(the library to preload, how it was found); installs Debian's package once when it is missing."""
    found = sorted(glob.glob(JEMALLOC_GLOB))
    if found:
        return found[0], f"{found[0]} (already installed)"
    if shutil.which("apt-get") is None:
        return None, f"{JEMALLOC_GLOB} missing and no apt-get to install {JEMALLOC_PACKAGE}"
    log.info("part 13: jemalloc is not installed: apt-get install -y %s", JEMALLOC_PACKAGE)
    try:
        installed = subprocess.run(
            ["apt-get", "install", "-y", JEMALLOC_PACKAGE], capture_output=True, text=True, timeout=180, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"apt-get install -y {JEMALLOC_PACKAGE} did not finish: {error}"
    found = sorted(glob.glob(JEMALLOC_GLOB))
    if found:
        return found[0], f"{found[0]} (installed now: apt-get install -y {JEMALLOC_PACKAGE})"
    last = (installed.stderr or installed.stdout).strip().splitlines()[-1:] or [f"exit {installed.returncode}"]
    return None, f"apt-get install -y {JEMALLOC_PACKAGE} failed: {last[0]}"


def allocator_configs(part: Part) -> list[Config]:
    """The allocators beside glibc as is (standard) and the arena cap (a knob row); why any is missing."""
    configs = []
    problem = mimalloc_problem()
    if problem is None:
        configs.append(Config("PYTHONMALLOC=mimalloc", "allocator", {"PYTHONMALLOC": "mimalloc"}))
    else:
        part.notes.append(f"PYTHONMALLOC=mimalloc: not run: {problem}")
    library, how = jemalloc_path()
    if library is None:
        part.notes.append(f"jemalloc: not run: {how}")
    else:
        configs.append(Config("jemalloc (LD_PRELOAD)", "allocator", {"LD_PRELOAD": library}))
        part.notes.append(f"jemalloc: LD_PRELOAD={how}")
    return configs


# --- what /proc says -------------------------------------------------------


@dataclass(frozen=True)
class MemoryArea:
    """One line of /proc/PID/maps with its private memory from smaps."""

    start: int
    end: int
    perms: str
    name: str  # a file's base name, [heap], [stack], or "" for anonymous memory
    private_bytes: int


def parse_smaps(smaps_text: str) -> list[MemoryArea]:
    """/proc/PID/smaps as mappings in address order; private = Private_Clean + Private_Dirty."""
    mappings: list[MemoryArea] = []
    header: list[str] | None = None
    private = 0

    def close() -> None:
        if header is not None:
            start, end = (int(address, 16) for address in header[0].split("-"))
            path = header[5].strip() if len(header) > 5 else ""
            name = path if path.startswith("[") or not path else path.rsplit("/", 1)[-1]
            mappings.append(MemoryArea(start, end, header[1], name, private))

    for line in smaps_text.splitlines():
        if SMAPS_HEADER.match(line):
            close()
            header, private = line.split(maxsplit=5), 0
        elif header is not None and line.startswith(("Private_Clean:", "Private_Dirty:")):
            private += int(line.split()[1]) * 1024
    close()
    return mappings


def mapping_group(mapping: MemoryArea, before: MemoryArea | None, glibc_malloc: bool = True) -> str:
    """The name a mapping is counted under; anonymous memory split by what glibc makes of it.

    glibc puts each thread's malloc arena in a heap aligned to 64 MiB (HEAP_MAX_SIZE) and each
    thread's stack right after a guard page (no access); the rest of the anonymous memory is mostly
    pymalloc's arenas and large objects. Under another malloc (jemalloc, mimalloc) an aligned area
    is not a glibc arena: `glibc_malloc` False counts it as [anon].
    """
    if mapping.name:
        return mapping.name
    if glibc_malloc and mapping.start % MALLOC_HEAP_ALIGN_BYTES == 0 and mapping.perms.startswith("rw"):
        return "[anon: malloc thread arenas]"
    if (
        before is not None
        and not before.name
        and before.end == mapping.start
        and before.perms.startswith("---")
        and before.end - before.start <= GUARD_MAX_BYTES
    ):
        return "[anon: thread stacks]"
    return "[anon]"


def private_by_mapping(smaps_text: str, glibc_malloc: bool = True) -> dict[str, tuple[int, int]]:
    """name -> (private bytes, mappings) from /proc/PID/smaps."""
    totals: dict[str, list[int]] = {}
    mappings = parse_smaps(smaps_text)
    for before, mapping in zip([None, *mappings], mappings, strict=False):
        total = totals.setdefault(mapping_group(mapping, before, glibc_malloc), [0, 0])
        total[0] += mapping.private_bytes
        total[1] += 1
    return {name: (private, count) for name, (private, count) in totals.items()}


def top_mappings(by_mapping: Mapping[str, tuple[int, int]], count: int = TOP_MAPPINGS) -> str:
    """'[anon] 4.20 (12), [heap] 1.90 (1), ..., other 0.40': MB (mappings), largest first."""
    ranked = sorted(by_mapping.items(), key=lambda item: item[1][0], reverse=True)
    shown = [f"{name} {private / MIB:.2f} ({mappings})" for name, (private, mappings) in ranked[:count]]
    rest = sum(private for _name, (private, _mappings) in ranked[count:])
    return ", ".join(shown + [f"other {rest / MIB:.2f}"])


def read_private_by_mapping(pid: int, glibc_malloc: bool = True) -> dict[str, tuple[int, int]]:
    try:
        with open(f"/proc/{pid}/smaps") as smaps:
            return private_by_mapping(smaps.read(), glibc_malloc)
    except OSError:  # it ended
        return {}


def maps_library(pid: int, library: str) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return any(library in line for line in maps)
    except OSError:
        return False


# --- the three measurements ------------------------------------------------


@dataclass(frozen=True)
class Served:
    rates: tuple[float, ...]
    errors: int
    tool: str
    spike_seen: str
    answers_again_s: float | None
    oom_kills: int
    recycles: Counter


@dataclass(frozen=True)
class Leaked:
    sent: int
    failed: int
    seen: str
    peak_bytes: int | None
    oom_kills: int
    recycles: Counter
    recycle_uss_mb: tuple[float, ...]  # each memory recycle's USS, from its log line
    budget_mb: int | None  # the budget those lines name
    elapsed_s: float


@dataclass(frozen=True)
class Busy:
    sent: int
    errors: int
    duration_s: float
    replaced: int  # workers that were not there before the count
    worker_uss: tuple[int, ...]
    master_uss: int
    tree_pss: int
    shown_pid: int  # the worker whose mappings are shown: the one with the larger USS
    mappings: dict[str, tuple[int, int]]
    preloaded_in: int | None  # processes with the LD_PRELOAD library mapped; None without one


def recycles_in(running: Running) -> Counter:
    return Counter(recycle.reason for recycle in parse_recycles(running.log()))


def fitflix_peer(config: Config, app: str, name: str, extra: Mapping[str, str] | None = None) -> Peer:
    return peers.fitflix(app, {**STOP_AT_ONCE, **config.env, **(extra or {})}, name=name)


def measure_served(config: Config, bounds: Bounds) -> Served:
    """requests/s on /health at the configuration's own worker count, then one spike."""
    with serving(fitflix_peer(config, LEAK_APP, f"{config.name} (served)")) as running:
        running.wait_for_workers(1)
        throughput(running.port, "/health", CONNECTIONS, 1, 100_000)  # warm-up: lazy imports, first requests
        rates, errors, tool = [], 0, ""
        for _round in range(bounds.rps_rounds):
            result = throughput(running.port, "/health", CONNECTIONS, bounds.rps_run_s, int(bounds.rps_run_s * 100_000))
            rates.append(result.rps)
            errors, tool = errors + result.errors, result.tool
            time.sleep(0.5)  # a breath between runs, so one run's tail does not overlap the next
        spike = run_clients(
            running.port, f"/spike?mb={SPIKE_MB}", 1, 1, bounds.spike_time_limit_s, timeout_s=bounds.spike_time_limit_s
        )
        answers_again = first_fresh_answer(running.port, bounds.spike_time_limit_s)
        return Served(
            rates=tuple(rates),
            errors=errors,
            tool=tool,
            spike_seen=outcome_counts(spike) if spike else "nothing",
            answers_again_s=answers_again,
            oom_kills=running.oom_kills(),
            recycles=recycles_in(running),
        )


def measure_leak(config: Config, bounds: Bounds) -> Leaked:
    with serving(fitflix_peer(config, LEAK_APP, f"{config.name} (leak)")) as running:
        started = time.monotonic()
        samples = run_clients(
            running.port,
            f"/leak?mb={LEAK_MB}",
            bounds.leak_requests,
            LEAK_CLIENTS,
            bounds.leak_time_limit_s,
            timeout_s=30,
        )
        elapsed = time.monotonic() - started
        memory_recycles = parse_recycles(running.log(), "memory")
        return Leaked(
            sent=len(samples),
            failed=sum(sample.status is None or sample.status >= 500 for sample in samples),
            seen=outcome_counts(samples),
            peak_bytes=running.peak_bytes(),
            oom_kills=running.oom_kills(),
            recycles=recycles_in(running),
            recycle_uss_mb=tuple(recycle.uss_mb for recycle in memory_recycles),
            budget_mb=next((recycle.budget_mb for recycle in memory_recycles), None),
            elapsed_s=elapsed,
        )


def measure_busy(config: Config, bounds: Bounds) -> Busy:
    """N requests to /health over two workers that are never replaced, then what each holds."""
    if config is PLAIN:
        peer = peers.plain(BUSY_APP, workers=BUSY_WORKERS, name=PLAIN.name)
    else:
        extra = {"WEB_CONCURRENCY": str(BUSY_WORKERS), "MAX_REQUESTS": "0"}
        peer = fitflix_peer(config, BUSY_APP, f"{config.name} (busy)", extra)
    with serving(peer) as running:
        running.wait_for_workers(BUSY_WORKERS)
        time.sleep(SETTLE_S)  # a measurement protocol, not a wait for a state
        before = set(running.worker_pids())
        sent = requests_until(running.port, "/health", bounds.busy_requests, CONNECTIONS, bounds.busy_time_limit_s)
        running.wait_for_workers(BUSY_WORKERS)
        time.sleep(SETTLE_S)
        workers = running.worker_pids()
        memories = {pid: memory for pid in workers if (memory := read_smaps_rollup(pid)) is not None}
        master = read_smaps_rollup(running.master_pid)
        if master is None or not memories:
            raise RuntimeError(f"{peer.name}: its processes could not be read\n{running.log()}")
        shown = max(memories, key=lambda pid: memories[pid].uss_bytes)
        preload = config.env.get("LD_PRELOAD")
        return Busy(
            sent=sent.requests,
            errors=sent.errors,
            duration_s=sent.duration_s,
            replaced=len(set(workers) - before),
            worker_uss=tuple(memories[pid].uss_bytes for pid in sorted(memories)),
            master_uss=master.uss_bytes,
            tree_pss=master.pss_bytes + sum(memory.pss_bytes for memory in memories.values()),
            shown_pid=shown,
            mappings=read_private_by_mapping(shown, glibc_malloc=not {"LD_PRELOAD", "PYTHONMALLOC"} & set(config.env)),
            preloaded_in=None
            if preload is None
            else sum(maps_library(pid, preload.rsplit("/", 1)[-1]) for pid in [running.master_pid, *workers]),
        )


# --- the table -------------------------------------------------------------


@dataclass
class Measured:
    config: Config
    served: Served | None = None
    leaked: Leaked | None = None
    busy: Busy | None = None
    problems: list[str] = field(default_factory=list)
    later_rates: tuple[float, ...] = ()  # standard only: its /health runs again after every other configuration


def plan_cell(config: Config) -> str:
    """The recycle budget / hard cap, threads and max_requests this configuration plans at 512 MB, one worker."""
    if config.kind == "peer":
        return "-"
    settings = Settings.from_env({**config.env, "MAX_MEMORY_MB": str(LIMIT_MB)})
    plan = make_plan(settings, measure_container())
    return f"{plan.worker_budget_mb}/{plan.worker_hard_cap_mb} MB, {plan.threads} thr, max_req {plan.max_requests}"


def ratio_cell(value: float | None, base: float | None, digits: int = 2) -> str:
    return f"{value / base:.{digits}f}" if value is not None and base else "-"


def median_rps(measured: Measured | None) -> float | None:
    """The median /health req/s; standard's over its first and its last runs together."""
    if measured is None or measured.served is None:
        return None
    return statistics.median(measured.served.rates + measured.later_rates)


def peak(measured: Measured | None) -> int | None:
    return measured.leaked.peak_bytes if measured and measured.leaked else None


def max_uss(measured: Measured | None) -> int | None:
    return max(measured.busy.worker_uss) if measured and measured.busy else None


def recycles_cell(recycles: Counter) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in recycles.most_common()) or "0"


def row(measured: Measured, standard: Measured | None, plain: Measured | None) -> list[object]:
    served, leaked, busy = measured.served, measured.leaked, measured.busy
    leak_cells = ["-"] * 6
    if leaked is not None:
        leak_cells = [
            mb(leaked.peak_bytes, 0),
            f"{100 * leaked.peak_bytes / (LIMIT_MB * MIB):.0f}%" if leaked.peak_bytes else "-",
            ratio_cell(leaked.peak_bytes, peak(standard)),
            leaked.recycles.get("memory", 0),
            f"{leaked.failed} of {leaked.sent}",
            leaked.oom_kills,
        ]
    served_cells = ["-"] * 5
    if served is not None:
        again = "never" if served.answers_again_s is None else f"{served.answers_again_s * 1000:.0f}"
        served_cells = [
            served.spike_seen,
            again,
            served.oom_kills,
            f"{median_rps(measured):.0f}",
            ratio_cell(median_rps(measured), median_rps(standard), 3),
        ]
    busy_cells = ["-"] * 4
    if busy is not None:
        busy_cells = [
            " / ".join(mb(uss, 2) for uss in busy.worker_uss),
            mb(busy.master_uss, 2),
            mb(busy.tree_pss),
            ratio_cell(busy.tree_pss, plain.busy.tree_pss if plain and plain.busy else None),
        ]
    return [
        measured.config.name,
        measured.config.kind,
        plan_cell(measured.config),
        *leak_cells,
        *served_cells,
        *busy_cells,
    ]


COLUMNS = [
    "configuration",
    "kind",
    "plan at 512 MB (recycle/cap)",
    "leak peak MB",
    "peak % of 512",
    "peak / standard",
    "memory recycles",
    "leak failed",
    "leak OOM kills",
    "spike saw",
    "answers again ms",
    "spike OOM kills",
    "/health req/s",
    "req/s / standard",
    "busy worker USS MB",
    "busy master USS MB",
    "busy tree PSS MB",
    "tree PSS / plain -w 2",
]


def measure(config: Config, bounds: Bounds) -> Measured:
    measured = Measured(config)
    steps = [("busy", measure_busy)] if not config.served else [("served", measure_served), ("leaked", measure_leak)]
    if config.served and config.busy:
        steps.append(("busy", measure_busy))
    for attribute, step in steps:
        log.info("part 13: %s: %s", config.name, attribute)
        try:
            setattr(measured, attribute, step(config, bounds))
        except Exception as error:  # the other measurements of this configuration still run
            log.exception("part 13: %s: %s failed", config.name, attribute)
            measured.problems.append(f"{attribute}: {str(error).splitlines()[0] if str(error) else type(error)}")
    return measured


def run(scale: Scale) -> Part:
    bounds = BOUNDS[scale.name]
    part = Part(
        13,
        "Memory profiles: standard vs memory-optimized, each knob alone, the allocators, and a busy worker",
        f"Every candidate for MEMORY_PROFILE={OPTIMIZED} (the Node.js seed's start:memory-optimized in Python "
        "terms) is an environment variable: 'knob alone' = standard plus that one variable (the warn and critical "
        "percents together: the recycle budget and the hard cap derive from them), and 'kept' = the profile sets "
        "it; 'warm-up off' = standard with WARM_UP=false; 'allocator' = standard with another malloc. "
        "Each configuration runs three gunicorn.conf.py servers "
        f"one after the other, each in its own {LIMIT_MB} MB memory cgroup, with DRAIN_S=0 (so each stops at once) "
        "and the worker count its profile plans (one). (1) `harness.apps.service_with_leaks:app`: /health "
        f"requests/s over {CONNECTIONS} keep-alive connections (wrk, {bounds.rps_run_s:g} s x {bounds.rps_rounds} "
        f"after a 1 s warm-up, median), then one `/spike?mb={SPIKE_MB}` (1.5 x the limit, as part 4): what it "
        "got, and the time from its answer to the first 200 from /health on a fresh connection. (2) A fresh server "
        f"of the same app: `/leak?mb={LEAK_MB}` (kept for the life of the worker) {bounds.leak_requests} times over "
        f"{LEAK_CLIENTS} Python clients (at most {bounds.leak_time_limit_s:g} s): "
        f"{bounds.leak_requests * LEAK_MB} MB kept in all; the cgroup's peak (`memory.max_usage_in_bytes`), "
        "'Recycling worker ... reason=memory' log lines, failed = no answer or a status >= 500. (3) `wsgi:app` "
        "(the service itself: the master warms it up before the first fork; the leaky wrapper is a plain function "
        f"it leaves alone) with WEB_CONCURRENCY={BUSY_WORKERS} and MAX_REQUESTS=0, so no worker is replaced while "
        f"they are counted: {bounds.busy_requests:,} "
        f"requests to /health over {CONNECTIONS} keep-alive connections (wrk), {SETTLE_S} s, then each worker's "
        "USS (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup), the master's, and the tree's PSS; the "
        "worker with the larger USS is broken down by mapping from /proc/PID/smaps in the notes (private MB, and "
        "how many mappings): files by name; [anon: malloc thread arenas] = anonymous areas at 64 MiB-aligned "
        "addresses (glibc's per-thread heaps; counted as [anon] under another malloc), [anon: thread stacks] = "
        "anonymous areas right after a guard page, [anon] = the rest (pymalloc's arenas, large objects, pages "
        f"written since the fork). `{PLAIN.name}` "
        f"(`gunicorn -w {BUSY_WORKERS} -c /dev/null {BUSY_APP}`) runs (3) alone for the tree PSS at equal worker "
        "counts. Busy rows are skipped for the knobs a /health worker cannot show (the budget acts at hundreds of "
        "MB; MAX_REQUESTS is 0 there).",
        COLUMNS,
    )
    part.notes.append(
        f"Python {platform.python_version()} ({sys.executable}); the configurations run one after the other on a "
        "shared machine: requests/s move by several percent from run to run, read the ratios loosely"
    )
    optimized = Config(OPTIMIZED, "profile", {"MEMORY_PROFILE": OPTIMIZED})
    knobs: list[Config] = []
    allocators: list[Config] = []
    if bounds.every_configuration:
        knobs, allocators = knob_configs(CANDIDATES), allocator_configs(part)
    else:
        part.notes.append("quick run: the knobs alone and the allocators are not run")
    # Measured with the targets' configurations first, so a time bound cuts the rest; shown in reading order.
    configs = [STANDARD, optimized, PLAIN, *allocators, *knobs]
    shown = [STANDARD, optimized, *knobs, *allocators, PLAIN]

    started = time.monotonic()
    results: dict[str, Measured] = {}
    for config in configs:
        if time.monotonic() - started > bounds.part_time_limit_s:
            part.notes.append(f"{config.name}: not run: the part's {bounds.part_time_limit_s:g} s bound was reached")
            continue
        results[config.name] = measure(config, bounds)
    standard = results.get(STANDARD.name)
    if standard is not None and standard.served is not None and len(results) > 3:
        # Standard once more at the end: the drift over the part, and a baseline for the ratios from both ends.
        log.info("part 13: standard: /health again, last")
        try:
            again = measure_served(STANDARD, bounds)
        except Exception as error:
            log.exception("part 13: standard again failed")
            part.notes.append(f"standard, /health again at the end: failed: {str(error).splitlines()[0]}")
        else:
            standard.later_rates = again.rates
            first, last = statistics.median(standard.served.rates), statistics.median(again.rates)
            part.notes.append(
                f"standard's /health req/s: {first:.0f} first, {last:.0f} again after every other configuration "
                f"({100 * (last / first - 1):+.1f}%); its row and the ratios use the median of all "
                f"{len(standard.served.rates) + len(again.rates)} runs"
            )

    standard, plain = results.get(STANDARD.name), results.get(PLAIN.name)
    results = {config.name: results[config.name] for config in shown if config.name in results}
    for measured in results.values():
        part.add(*row(measured, standard, plain))
    add_notes(part, results, standard)
    add_allocator_note(
        part, results, [STANDARD, *(knob for knob in knobs if "MALLOC_ARENA_MAX" in knob.env), *allocators]
    )
    add_targets(part, results.get(STANDARD.name), results.get(OPTIMIZED), plain)
    part.pictures += figures(results, standard)
    return part


def figures(results: dict[str, Measured], standard: Measured | None) -> list[plots.Picture]:
    """The leak peak and a busy worker's USS per configuration, each against its target."""
    pictures = []
    peaks = {name: value for name, measured in results.items() if (value := peak(measured)) is not None}
    if any(value is not None for value in peaks.values()):
        standard_peak = peak(standard)
        optimized = peaks.get(OPTIMIZED)
        finding = (
            f"memory-optimized peaks at {optimized / standard_peak:.2f} x standard"
            if optimized and standard_peak
            else "per configuration"
        )
        references = [(LIMIT_MB, f"limit {LIMIT_MB} MB")]
        if standard_peak:
            references.append(
                (TARGET_LEAK_PEAK_RATIO * standard_peak / MIB, f"target {TARGET_LEAK_PEAK_RATIO:g} x standard")
            )
        pictures.append(
            plots.bars(
                "part13-profiles-leak",
                f"The leak's peak in {LIMIT_MB} MB under each configuration: {finding}",
                plots.Bars(
                    list(peaks),
                    {"leak peak": [None if value is None else value / MIB for value in peaks.values()]},
                    "cgroup peak during the leak, MB",
                    references=references,
                    digits=0,
                ),
                alt=f"The cgroup's peak memory under the leak for each configuration, against the {LIMIT_MB} MB "
                f"limit and the target of {TARGET_LEAK_PEAK_RATIO:g} x standard: {finding}.",
            )
        )
    uss = {name: max_uss(measured) for name, measured in results.items()}
    if any(value is not None for value in uss.values()):
        shown = {name: value for name, value in uss.items() if value is not None}
        finding = ", ".join(
            f"{name} {value / MIB:.2f} MB" for name, value in shown.items() if name in (STANDARD.name, OPTIMIZED)
        )
        pictures.append(
            plots.bars(
                "part13-profiles-busy-worker",
                f"A busy worker's private memory (USS) after the /health load: {finding or 'per configuration'}",
                plots.Bars(
                    list(uss),
                    {"busy worker USS": [None if value is None else value / MIB for value in uss.values()]},
                    "the larger worker's USS after the load, MB",
                    references=[(TARGET_BUSY_USS_MB, f"target {TARGET_BUSY_USS_MB:g} MB")],
                    digits=2,
                ),
                alt="The larger worker's USS after the /health load for each configuration, against the "
                f"{TARGET_BUSY_USS_MB:g} MB target: {finding}.",
            )
        )
    return pictures


def add_notes(part: Part, results: dict[str, Measured], standard: Measured | None) -> None:
    for measured in results.values():
        name = measured.config.name
        for problem in measured.problems:
            part.notes.append(f"{name}: failed: {problem}")
        if measured.leaked and measured.leaked.sent:
            leaked = measured.leaked
            at = ""
            if leaked.recycle_uss_mb:
                at = (
                    f"; memory recycles at USS {min(leaked.recycle_uss_mb):.0f}-{max(leaked.recycle_uss_mb):.0f} MB "
                    f"(budget {leaked.budget_mb} MB)"
                )
            part.notes.append(
                f"{name}, leak: {leaked.sent} requests in {leaked.elapsed_s:.0f} s, clients saw {leaked.seen}; "
                f"recycles by reason: {recycles_cell(leaked.recycles)}{at}"
            )
        if measured.served and (measured.served.errors or measured.served.recycles):
            served = measured.served
            part.notes.append(
                f"{name}, /health and spike: {served.errors} wrk errors; recycles by reason: "
                f"{recycles_cell(served.recycles)}"
            )
        if measured.busy:
            busy = measured.busy
            preloaded = (
                ""
                if busy.preloaded_in is None
                else f"; the preloaded library mapped in {busy.preloaded_in} of {1 + len(busy.worker_uss)} processes"
            )
            part.notes.append(
                f"{name}, busy worker {busy.shown_pid} (USS {mb(max(busy.worker_uss), 2)} MB) by mapping, private MB "
                f"(mappings): {top_mappings(busy.mappings)}; {busy.sent:,} requests in {busy.duration_s:.0f} s, "
                f"{busy.errors} errors, {busy.replaced} workers replaced{preloaded}"
            )
    if standard is None:
        return
    effects = []
    for measured in results.values():
        if (
            not measured.config.kind.startswith(("knob alone", "allocator", "profile", "warm-up"))
            or measured is standard
        ):
            continue
        figures = []
        if peak(measured) and peak(standard):
            figures.append(f"leak peak {(peak(measured) - peak(standard)) / MIB:+.0f} MB")
        if max_uss(measured) and max_uss(standard):
            figures.append(f"busy USS {(max_uss(measured) - max_uss(standard)) / MIB:+.2f} MB")
        if median_rps(measured) and median_rps(standard):
            figures.append(f"req/s x{median_rps(measured) / median_rps(standard):.3f}")
        if figures:
            effects.append(f"{measured.config.name}: {', '.join(figures)}")
    if effects:
        part.notes.append("against standard (busy USS: the larger worker): " + "; ".join(effects))


def add_allocator_note(part: Part, results: dict[str, Measured], allocators: list[Config]) -> None:
    """The allocators side by side: leak peak, the larger busy worker's USS, /health req/s."""
    cells = []
    for config in allocators:
        measured = results.get(config.name)
        if measured is None:
            continue
        label = "glibc as is (standard)" if config is STANDARD else config.name
        rps = median_rps(measured)
        cells.append(
            f"{label} {mb(peak(measured), 0)} MB / {mb(max_uss(measured), 2)} MB / "
            f"{'-' if rps is None else f'{rps:.0f}'} req/s"
        )
    if len(cells) > 1:
        part.notes.append(
            "allocators on standard (leak peak / busy worker USS, the larger / req/s): " + "; ".join(cells)
        )


def add_targets(part: Part, standard: Measured | None, optimized: Measured | None, plain: Measured | None) -> None:
    text = f"{OPTIMIZED} leak peak <= {TARGET_LEAK_PEAK_RATIO} x standard's (512 MB, 2 MB/request)"
    if peak(standard) and peak(optimized):
        ratio = peak(optimized) / peak(standard)
        part.targets.append(
            Target(
                text,
                ratio <= TARGET_LEAK_PEAK_RATIO and optimized.leaked.oom_kills == 0 and optimized.leaked.failed == 0,
                f"{ratio:.2f} ({mb(peak(optimized), 0)} / {mb(peak(standard), 0)} MB); {OPTIMIZED}: "
                f"{optimized.leaked.failed} failed, {optimized.leaked.oom_kills} OOM kills",
            )
        )
    else:
        part.targets.append(Target(text, None, "a leak run failed"))
    for measured, name in ((standard, STANDARD.name), (optimized, OPTIMIZED)):
        text = f"{name}: a busy worker's USS <= {TARGET_BUSY_USS_MB:g} MB after the /health load (each worker)"
        if max_uss(measured) is None:
            part.targets.append(Target(text, None, "the busy run failed"))
        else:
            largest = max_uss(measured) / MIB
            part.targets.append(
                Target(
                    text,
                    largest <= TARGET_BUSY_USS_MB,
                    f"{' and '.join(mb(uss, 2) for uss in measured.busy.worker_uss)} MB "
                    f"({largest - TARGET_BUSY_USS_MB:+.2f} MB from the target)",
                )
            )
    for measured, name in ((standard, STANDARD.name), (optimized, OPTIMIZED)):
        text = f"{name} tree PSS <= {TARGET_PSS_RATIO} x {PLAIN.name}'s at {BUSY_WORKERS} workers"
        if measured is None or measured.busy is None or plain is None or plain.busy is None:
            part.targets.append(Target(text, None, "a busy run failed"))
        else:
            ratio = measured.busy.tree_pss / plain.busy.tree_pss
            part.targets.append(
                Target(
                    text,
                    ratio <= TARGET_PSS_RATIO,
                    f"{ratio:.2f} ({mb(measured.busy.tree_pss)} vs {mb(plain.busy.tree_pss)} MB)",
                )
            )
