"""Part 17: what grew: does a worker recycled for memory name its leak right, and what does asking cost?

Three sections, one table (its `section` column says which):

1. known leaks (bench/growth_app.py), each tried live in a fresh FitFlix server (a 150 MB budget,
   MAX_REQUESTS=0, LOG_FORMAT=json), leaking until the worker is recycled for memory and its report
   is in the log; the report's top site, top type, verdict and Python share against the answer known
   from the source;
2. the cost: /health/ready requests/s of one worker before tracing is armed and after (a ratio), and
   each live report's own time and CPU (reportMs, reportCpuMs);
3. the report's peak memory with 40,000 and 400,000 live traced blocks, measured in this process
   (GrowthWatch here, the peak RSS reset through /proc/self/clear_refs and read back from VmHWM).

The parsing and the judgement are pure functions (tests/unit/test_bench_growth.py); `run` is the shell.
"""

from __future__ import annotations

import gc
import inspect
import json
import json.decoder
import logging
import re
import statistics
import sysconfig
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

from bench import peers, plots
from bench.load import Sample, run_clients, throughput
from bench.overhead import worker_cpu_s
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import Running, serving
from fitflix.memory.container import MIB
from fitflix.memory.growth import (
    ARM_FRACTION,
    DEFAULT_MAX_TRACEMALLOC_BYTES,
    DEFAULT_REPORT_TIME_LIMIT_S,
    NATIVE_SHARE_PERCENT,
    GrowthWatch,
)
from fitflix.memory.process import read_smaps_rollup
from fitflix.serving.recycler import REPORT_MAX_TRACE_BYTES, REPORT_ROOM_SHARE
from harness.fitflix_log import Recycle, parse_recycles
from harness.server import PROJECT
from harness.wait import Timeout, poll_until

log = logging.getLogger("bench")

APP = "bench.growth_app:app"
APP_SOURCE = PROJECT / "bench" / "growth_app.py"
BUDGET_MB = 150
LIMIT_MB = 1024  # the cgroup: far above the budget, so only the budget decides
ENV = {
    "WORKER_MAX_MEMORY_MB": str(BUDGET_MB),
    "MAX_REQUESTS": "0",
    "LOG_FORMAT": "json",
    "ACCESS_LOG_HEALTH": "false",  # the throughput runs send /health/ready by the hundred thousand
}
CLIENTS = 2
BATCH = 40  # leak requests between two looks at the log
PACE_MS = 20  # each leak request sleeps this long, so that tracing sees several requests before the recycle
REPORT_WAIT_S = 20.0  # after the last batch: the recycled worker reports after its last request
COST_PATH = "/health/ready"
COST_CONNECTIONS = 8  # the default thread count
ARM_STEP_PATH = "/grow/list?kb=64&n=16"  # 1 MiB a request, one at a time, until the worker arms
# Held before the untraced rounds too, so the two differ by tracing and not by the memory held: 20 MB under the
# lowest USS tracing can start at (ARM_FRACTION of the lowest threshold, 0.9 x the budget).
PRE_LEAK_MB = int(BUDGET_MB * 0.9 * ARM_FRACTION) - 20
ARM_STEP_LIMIT = 400  # requests (the threshold is at most 150 MB: 1 MiB steps reach 90% of it well before)
ARM_TIME_LIMIT_S = 60.0
IN_PROCESS_BLOCKS = (40_000, 400_000)

# The judgement: what counts as naming a leak right.
MAIN_TYPE_SHARE = 0.25  # the top type's growth must be at least this share of the USS growth since boot
SMALL_SHARE_PERCENT = 25.0  # fragmentation: a Python share this small says "not Python objects"
BIG_SITE_SHARE = 0.25  # fragmentation: a site holding this share of the growth since arming is a big live site

ARMED = re.compile(r"Worker (\d+): past \d+% of its threshold; tracing allocations")


@dataclass(frozen=True)
class Knobs:
    leak_time_limit_s: float  # one leak's live run
    leak_max_requests: int
    cost_rounds: int
    cost_run_s: float


KNOBS = {"full": Knobs(120, 4000, 5, 5), "quick": Knobs(60, 2000, 2, 2)}


# -- what the answer is --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What a right report names: kind is site (file:line), type (a type name), native or fragmentation."""

    kind: str
    value: str = ""

    def text(self) -> str:
        if self.kind == "site":
            return f"top site {self.value}"
        if self.kind == "type":
            return f"top type {self.value}, most of the growth"
        if self.kind == "site-or-type":
            site, kind = self.value.split("|")
            return f"top site {site}, or top type {kind} with most of the growth"
        if self.kind == "native":
            return "verdict native"
        return f"verdict native, or Python <= {SMALL_SHARE_PERCENT:.0f}% and no big live site"


@dataclass(frozen=True)
class Leak:
    name: str
    path: str  # the route and its knobs; the pace is added by `leak_path`
    expected: Expected
    how: str  # one phrase for the method paragraph


def marked_line(source: str, marker: str) -> int:
    """The number of the one line of `source` that holds `marker`; ValueError unless exactly one does."""
    numbers = [number for number, text in enumerate(source.splitlines(), start=1) if marker in text]
    if len(numbers) != 1:
        raise ValueError(f"{marker!r} is on {len(numbers)} lines, not one")
    return numbers[0]


def app_site(marker: str, source: str | None = None, where: str = "bench/growth_app.py") -> str:
    """bench/growth_app.py:N, N the line marked `# leak: <marker>` (read from the file, not written here)."""
    text = APP_SOURCE.read_text() if source is None else source
    return f"{where}:{marked_line(text, f'# leak: {marker}')}"


def json_decoder_site() -> str:
    """<stdlib>/json/decoder.py:N, N the raw_decode line that calls the C scanner (which makes the strings)."""
    source, first = inspect.getsourcelines(json.decoder.JSONDecoder.raw_decode)
    line = first + marked_line("".join(source), "self.scan_once(") - 1
    relative = Path(json.decoder.__file__).relative_to(sysconfig.get_paths()["stdlib"])
    return f"<stdlib>/{relative.as_posix()}:{line}"


def known_leaks() -> list[Leak]:
    return [
        Leak(
            "list of bytes",
            "/grow/list?kb=64&n=16",
            Expected("site", app_site("list")),
            "`/grow/list` appends 16 bytes of 64 KiB to a list",
        ),
        Leak(
            "dict cache of str",
            "/grow/cache?entries=250&chars=4000",
            # The bar: the right line or the right type. The dict is made before the fork and holds
            # only str, so gc never tracks it and the census cannot see its strings: the line names it.
            Expected("site-or-type", f"{app_site('cache')}|str"),
            "`/grow/cache` puts 250 str(uuid4()) keys to 4,000-character str values in a module-level dict",
        ),
        Leak(
            "C malloc (ctypes)",
            "/grow/native?mb=1",
            Expected("native"),
            "`/grow/native` keeps 1 MiB from C's malloc, touched with memset",
        ),
        Leak(
            "fragmentation",
            "/grow/fragment?objects=30000&every=64",
            Expected("fragmentation"),
            "`/grow/fragment` makes 30,000 small bytes at once, one pymalloc size class a request (28 in turn), "
            "and keeps every 64th",
        ),
        Leak(
            "in a library frame",
            "/grow/library?items=1000&chars=1000",
            Expected("site", json_decoder_site()),
            "`/grow/library` keeps json.loads of a list of 1,000 strings of 1,000 characters",
        ),
    ]


def leak_path(path: str, pace_ms: int = PACE_MS) -> str:
    return f"{path}{'&' if '?' in path else '?'}ms={pace_ms}"


# -- what the log said ---------------------------------------------------------------------------------------------


def json_records(log_text: str) -> list[dict]:
    """Every line of a LOG_FORMAT=json log that is a JSON object; other lines (a traceback's) are left out."""
    records = []
    for line in log_text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def growth_reports(records: list[dict]) -> list[dict]:
    """The `growth` field of each record that has one (a recycled worker's report), in log order."""
    return [record["growth"] for record in records if isinstance(record.get("growth"), dict)]


def armed_pids(records: list[dict]) -> list[int]:
    """The workers that logged 'past 90% of its threshold; tracing allocations', in log order."""
    return [int(match.group(1)) for record in records if (match := ARMED.search(str(record.get("message", ""))))]


def recycles(records: list[dict]) -> list[Recycle]:
    """Each 'Recycling worker' line (fitflix/serving/recycler.py), in log order."""
    return parse_recycles("\n".join(str(record.get("message", "")) for record in records))


# -- whether it is right -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    right: bool
    why: str


def _mb_of_kb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB" if kb >= 1024 else f"{kb:.1f} KB"


def _mb(value_bytes: float | None) -> str:
    return "?" if value_bytes is None else f"{value_bytes / MIB:.1f} MB"


def judge(expected: Expected, report: dict) -> Judgement:
    """Whether `report` (the JSON a worker logged) names the leak `expected` describes."""
    sites, types = report.get("sites") or [], report.get("types") or []
    verdict, share = report.get("verdict"), report.get("pythonSharePercent")
    if expected.kind == "site":
        if not sites:
            why = (report.get("unavailable") or {}).get("sites", "none named")
            return Judgement(False, f"no sites: {why}")
        where = sites[0]["where"]
        return Judgement(where == expected.value, f"top site {where}")
    if expected.kind == "type":
        if not types:
            return Judgement(False, "no types named")
        top = types[0]
        grown_bytes = report.get("growthSinceBootBytes") or 0
        if top["type"] != expected.value:
            return Judgement(False, f"top type {top['type']}")
        if grown_bytes > 0 and top["kbGrowth"] * 1024 < MAIN_TYPE_SHARE * grown_bytes:
            return Judgement(
                False,
                f"top type {top['type']}, but +{_mb_of_kb(top['kbGrowth'])} of the {_mb(grown_bytes)} grown since "
                f"boot (under {MAIN_TYPE_SHARE:.0%}): not the leak",
            )
        return Judgement(True, f"top type {top['type']} +{_mb_of_kb(top['kbGrowth'])}")
    if expected.kind == "site-or-type":
        site, kind = expected.value.split("|")
        by_site = judge(Expected("site", site), report)
        return by_site if by_site.right else judge(Expected("type", kind), report)
    if expected.kind == "native":
        return Judgement(verdict == "native", f"verdict {verdict}")
    if expected.kind == "fragmentation":
        if verdict == "native":
            return Judgement(True, "verdict native")
        since_arm = report.get("growthSinceArmBytes") or 0
        big = [site for site in sites if since_arm > 0 and site["kb"] * 1024 >= BIG_SITE_SHARE * since_arm]
        if share is None:
            return Judgement(False, f"verdict {verdict}, no Python share")
        if share > SMALL_SHARE_PERCENT:
            return Judgement(False, f"verdict {verdict}, Python {share:.0f}% (over {SMALL_SHARE_PERCENT:.0f}%)")
        if big:
            return Judgement(False, f"verdict {verdict}, a big live site named: {big[0]['where']}")
        return Judgement(True, f"verdict {verdict}, Python {share:.0f}%, no big live site")
    raise ValueError(f"unknown kind of answer {expected.kind!r}")


def describe(report: dict) -> str:
    """'site F:L 33.0 MB x529; type str +1445 (101.3 KB); python, Python 96%': what the report said."""
    sites, types = report.get("sites") or [], report.get("types") or []
    if sites:
        site = f"site {sites[0]['where']} {_mb_of_kb(sites[0]['kb'])} x{sites[0]['count']}"
    else:
        site = f"no sites ({(report.get('unavailable') or {}).get('sites', 'none named')})"
    kind = (
        f"type {types[0]['type']} {types[0]['countGrowth']:+d} ({_mb_of_kb(types[0]['kbGrowth'])})"
        if types
        else "no types"
    )
    share = report.get("pythonSharePercent")
    return f"{site}; {kind}; {report.get('verdict')}, Python {'?' if share is None else f'{share:.0f}%'}"


def ratio(after: float | None, before: float | None) -> float | None:
    return after / before if after is not None and before else None


# -- section 1 and 2b: the leaks, live -----------------------------------------------------------------------------


@dataclass
class LeakRun:
    samples: list[Sample] = field(default_factory=list)
    elapsed_s: float = 0.0
    records: list[dict] = field(default_factory=list)
    oom_kills: int = 0
    log_tail: str = ""

    @property
    def failed(self) -> int:
        return sum(1 for sample in self.samples if sample.status is None or sample.status >= 500)


def run_leak(leak: Leak, knobs: Knobs) -> LeakRun:
    """One fresh server; leak at a pace until a worker's report of what grew is in the log (bounded)."""
    peer = peers.fitflix(APP, ENV, limit_mb=LIMIT_MB, name=f"fitflix ({leak.name})")
    result = LeakRun()
    with serving(peer) as running:
        running.wait_for_workers(1)
        started = time.monotonic()
        path = leak_path(leak.path)
        while (
            not growth_reports(json_records(running.log()))
            and len(result.samples) < knobs.leak_max_requests
            and time.monotonic() - started < knobs.leak_time_limit_s
        ):
            left_s = max(1.0, knobs.leak_time_limit_s - (time.monotonic() - started))
            result.samples += run_clients(running.port, path, BATCH, CLIENTS, left_s, timeout_s=30)
        try:
            poll_until(lambda: growth_reports(json_records(running.log())), REPORT_WAIT_S, "a report of what grew")
        except Timeout:
            log.warning("part 17: %s: no report of what grew in %s s", leak.name, REPORT_WAIT_S)
        result.elapsed_s = time.monotonic() - started
        text = running.log()
        result.records = json_records(text)
        result.oom_kills = running.oom_kills()
        result.log_tail = text[-3000:]
    return result


# -- section 2a: requests/s before and after arming ----------------------------------------------------------------


@dataclass
class Rounds:
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # the worker's CPU per request
    errors: int = 0

    def median_rps(self) -> float | None:
        return statistics.median(self.rps) if self.rps else None

    def median_cpu_us(self) -> float | None:
        return statistics.median(self.cpu_us) if self.cpu_us else None

    def text(self) -> str:
        if not self.rps:
            return "not measured"
        cpu = self.median_cpu_us()
        return (
            f"{self.median_rps():.0f} req/s (rounds {min(self.rps):.0f}-{max(self.rps):.0f}), "
            f"{'-' if cpu is None else f'{cpu:.0f}'} us worker CPU/req"
        )


def measure_rounds(running: Running, worker: int, knobs: Knobs) -> Rounds:
    rounds = Rounds()
    for _round in range(knobs.cost_rounds):
        cpu_before = worker_cpu_s(worker)
        result = throughput(
            running.port, COST_PATH, COST_CONNECTIONS, knobs.cost_run_s, int(knobs.cost_run_s * 100_000)
        )
        rounds.rps.append(result.rps)
        rounds.errors += result.errors
        if result.requests:
            rounds.cpu_us.append((worker_cpu_s(worker) - cpu_before) / result.requests * 1e6)
    return rounds


@dataclass
class CostRun:
    before: Rounds
    after: Rounds
    armed: bool
    held_before_mb: int  # leaked before the untraced rounds
    leaked_mb: int  # leaked when the worker armed
    same_worker: bool  # the worker measured after arming is the one measured before, never recycled between
    tool: str
    note: str = ""


def tracing_cost(knobs: Knobs) -> CostRun:
    peer = peers.fitflix(APP, ENV, limit_mb=LIMIT_MB, name="fitflix (tracing cost)")
    with serving(peer) as running:
        running.wait_for_workers(1)
        [worker] = running.worker_pids()
        tool = throughput(running.port, COST_PATH, COST_CONNECTIONS, 1, 100_000).tool  # warm-up
        started = time.monotonic()

        def leak_until(done, limit_mb: int) -> None:
            nonlocal leaked_mb
            while not done() and leaked_mb < limit_mb and time.monotonic() - started < ARM_TIME_LIMIT_S:
                leaked_mb += running.server.request("GET", ARM_STEP_PATH, timeout_s=30)[0] == 200

        leaked_mb = 0
        leak_until(lambda: worker in armed_pids(json_records(running.log())), PRE_LEAK_MB)
        held_before_mb = leaked_mb
        armed_early = worker in armed_pids(json_records(running.log()))
        before = measure_rounds(running, worker, knobs) if not armed_early else Rounds()
        leak_until(lambda: worker in armed_pids(json_records(running.log())), ARM_STEP_LIMIT)
        records = json_records(running.log())
        armed = worker in armed_pids(records)
        after = measure_rounds(running, worker, knobs) if armed else Rounds()
        records = json_records(running.log())
        same = worker in running.worker_pids() and not growth_reports(records) and not recycles(records)
    if armed_early:
        note = f"the worker armed within the first {held_before_mb} MiB: no untraced rounds"
    elif not armed:
        note = f"the worker did not arm after {leaked_mb} MiB in {time.monotonic() - started:.0f} s"
    else:
        note = ""
    return CostRun(before, after, armed, held_before_mb, leaked_mb, same, tool, note)


# -- section 3: the report's peak memory, in this process ----------------------------------------------------------


def own_uss_bytes() -> int:
    memory = read_smaps_rollup("self")
    return memory.uss_bytes if memory else 0


def peak_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Set VmHWM back to the current RSS (`echo 5 > /proc/self/clear_refs`, Linux 4.0 on); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class InProcess:
    blocks: int
    cap_bytes: int
    tracemalloc_bytes: int  # what tracemalloc held when the report began
    report: dict
    peak_bytes: int | None  # peak RSS during the report over the RSS when it began; None: no VmHWM reset here


def report_in_process(blocks: int, cap_bytes: int) -> InProcess:
    """GrowthWatch in this process: armed at once, `blocks` small bytes kept, then its report, peak RSS around it."""
    gc.collect()
    started_tracing = not tracemalloc.is_tracing()
    try:
        watch = GrowthWatch(own_uss_bytes(), PROJECT)
        watch.maybe_arm(own_uss_bytes(), 1)  # a threshold of one byte: armed now
        kept = [bytes(100 + index % 7) for index in range(blocks)]
        held = tracemalloc.get_tracemalloc_memory()
        uss = own_uss_bytes()
        reset = reset_peak_rss()
        peak_before = peak_rss_bytes()
        report = watch.report(uss, "memory", max_tracemalloc_bytes=cap_bytes)
        peak_after = peak_rss_bytes()
        del kept
    finally:
        if started_tracing and tracemalloc.is_tracing():
            tracemalloc.stop()
    peak = peak_after - peak_before if reset and peak_before is not None and peak_after is not None else None
    return InProcess(blocks, cap_bytes, held, report.as_dict(), peak)


def signed_mb(value_bytes: int | None) -> str:
    return "not measured (no VmHWM reset here)" if value_bytes is None else f"{value_bytes / MIB:+.1f} MB"


def snapshot_text(report: dict) -> str:
    if report.get("snapshotBlocks") is not None:
        return f"snapshot taken ({report['snapshotBlocks']:,} blocks copied)"
    # The service's own reason reads 'snapshot skipped: tracemalloc holds X, over the Y cap'.
    return (report.get("unavailable") or {}).get("sites") or "no snapshot, no reason given"


# -- the part ------------------------------------------------------------------------------------------------------


def run(scale: Scale) -> Part:
    knobs = KNOBS[scale.name]
    leaks = known_leaks()
    part = Part(
        17,
        "What grew",
        f"`{APP}` (wsgi:app with leak routes in front). Section `leak`: each leak in a fresh FitFlix server "
        f"(WORKER_MAX_MEMORY_MB={BUDGET_MB}, so a threshold drawn in {BUDGET_MB * 0.9:.0f}-{BUDGET_MB} MB; "
        f"MAX_REQUESTS=0; LOG_FORMAT=json; its own {LIMIT_MB} MB cgroup), {CLIENTS} Python client threads, each "
        f"request sleeping {PACE_MS} ms, in batches of {BATCH} until the worker recycled for memory has logged its "
        f"report (at most {knobs.leak_max_requests:,} requests, {knobs.leak_time_limit_s:g} s): "
        + "; ".join(leak.how for leak in leaks)
        + ". Expected: the line marked in bench/growth_app.py's source; the json/decoder.py line that calls the C "
        "scanner (found with inspect); for the cache, `str` as the top type with at least "
        f"{MAIN_TYPE_SHARE:.0%} of the USS growth since boot; `native` for malloc; for fragmentation, `native`, or "
        f"a Python share <= {SMALL_SHARE_PERCENT:.0f}% with no site holding {BIG_SITE_SHARE:.0%} of the growth "
        "since tracing began. The figures are the first report's JSON (`growth`), its reportMs and reportCpuMs "
        f"included. Section `cost`: one worker, {COST_PATH} under `throughput` ({COST_CONNECTIONS} keep-alive "
        f"connections, {knobs.cost_rounds} rounds of {knobs.cost_run_s:g} s; worker CPU per request from "
        "/proc/PID/stat), before tracing and after: 1 MiB requests one at a time until the worker logs 'tracing "
        f"allocations' (past {ARM_FRACTION:.0%} of its threshold, still under it). Section `report memory`: "
        "GrowthWatch in the bench process, armed at once, N small bytes kept, then its report; peak = VmHWM "
        "after the report less VmHWM just after resetting it (`echo 5 > /proc/self/clear_refs`).",
        ["section", "case", "expected", "reported", "judged", "cost and run"],
    )

    # Section 3 first: no server running, so no log-reading thread of ours allocates while this process traces.
    caps = [
        (DEFAULT_MAX_TRACEMALLOC_BYTES, "the default cap"),
        (REPORT_MAX_TRACE_BYTES, "the service's largest cap"),
    ]
    in_process: list[InProcess] = []
    for blocks in IN_PROCESS_BLOCKS:
        for cap, cap_name in caps if blocks == max(IN_PROCESS_BLOCKS) else caps[:1]:
            log.info("part 17: report in process, %s blocks, cap %s", blocks, _mb(cap))
            measured = report_in_process(blocks, cap)
            in_process.append(measured)
            report = measured.report
            part.add(
                "report memory",
                f"{blocks:,} live blocks, {cap_name} ({_mb(cap)})",
                "-",
                f"tracemalloc held {_mb(measured.tracemalloc_bytes)}; {snapshot_text(report)}",
                "-",
                f"report {report['reportMs']:.0f} ms (CPU {report['reportCpuMs']:.0f} ms), peak RSS "
                f"{signed_mb(measured.peak_bytes)}"
                f"{', census cut short' if report['censusCutShort'] else ''}",
            )

    judged: list[tuple[Leak, Judgement | None]] = []
    python_shares: list[tuple[Leak, float]] = []
    report_ms: list[float] = []
    failed = oom_kills = 0
    for leak in leaks:
        log.info("part 17: leak %s", leak.name)
        try:
            result = run_leak(leak, knobs)
        except Exception as error:
            log.exception("part 17: %s failed", leak.name)
            part.add("leak", leak.name, leak.expected.text(), f"failed: {str(error).splitlines()[0]}", "-", "-")
            judged.append((leak, None))
            continue
        failed += result.failed
        oom_kills += result.oom_kills
        reports = growth_reports(result.records)
        run_text = f"{len(result.samples)} requests in {result.elapsed_s:.0f} s, {result.failed} failed"
        if not reports:
            part.add("leak", leak.name, leak.expected.text(), "no report in the log", "WRONG: no report", run_text)
            part.notes.append(f"{leak.name}: no report; the log ended: {result.log_tail[-400:]!r}")
            judged.append((leak, None))
            continue
        report = reports[0]
        python_shares.append((leak, report.get("pythonSharePercent") or 0.0))
        judgement = judge(leak.expected, report)
        judged.append((leak, judgement))
        report_ms.append(report["reportMs"])
        recycled = next((r for r in recycles(result.records) if r.pid == report["pid"]), None)
        armed = report["pid"] in armed_pids(result.records)
        recycle_text = (
            f"recycled at USS {recycled.uss_mb:.0f} MB (threshold {recycled.threshold_mb:.0f} MB)" if recycled else ""
        )
        part.add(
            "leak",
            leak.name,
            leak.expected.text(),
            describe(report),
            f"{'right' if judgement.right else 'WRONG'}: {judgement.why}",
            f"report {report['reportMs']:.0f} ms (CPU {report['reportCpuMs']:.0f} ms), "
            f"{'-' if report['snapshotBlocks'] is None else format(report['snapshotBlocks'], ',')} blocks copied; "
            f"{run_text}; {recycle_text}",
        )
        if not armed:
            part.notes.append(f"{leak.name}: worker {report['pid']} reported without its 'tracing allocations' line")
        if len(reports) > 1:
            part.notes.append(f"{leak.name}: {len(reports)} reports in the log (the first one is shown)")
        for note in report.get("notes") or []:
            part.notes.append(f"{leak.name}: the report's note: {note}")
        if leak.expected.kind != "fragmentation" and report["verdict"] == "native" and leak.expected.kind != "native":
            part.notes.append(
                f"{leak.name}: verdict native: Python holds {_mb(report['tracedBytes'])} of the "
                f"{_mb(report['growthSinceArmBytes'])} grown since tracing began"
            )

    shares = [(leak.name, report_share) for leak, report_share in python_shares]
    if shares:
        part.pictures.append(
            plots.bars(
                "part17-growth",
                "What each report found: the share of the growth since tracing began that Python objects hold",
                plots.Bars(
                    [name for name, _share in shares],
                    {"Python holds": [share for _name, share in shares]},
                    "% of the USS growth since tracing began",
                    references=[(100 - NATIVE_SHARE_PERCENT, "below: native memory or fragmentation")],
                    digits=0,
                ),
                alt="For each known leak, the share of its worker's USS growth since tracing began that Python "
                "objects hold: high for the list, the cache and the library leak, near zero for the C malloc "
                "leak and for fragmentation.",
            )
        )

    log.info("part 17: tracing cost")
    try:
        cost = tracing_cost(knobs)
    except Exception as error:
        log.exception("part 17: the tracing cost failed")
        part.add("cost", f"{COST_PATH}, 1 worker", "-", f"failed: {str(error).splitlines()[0]}", "-", "-")
        cost = None
    if cost is not None:
        rps_ratio = ratio(cost.after.median_rps(), cost.before.median_rps())
        cpu_ratio = ratio(cost.after.median_cpu_us(), cost.before.median_cpu_us())
        part.add(
            "cost",
            f"{COST_PATH}, 1 worker, untraced",
            "-",
            cost.before.text() if cost.before.rps else cost.note,
            "-",
            f"holding {cost.held_before_mb} MiB leaked; load: {cost.tool}",
        )
        part.add(
            "cost",
            f"{COST_PATH}, 1 worker, tracing",
            "-",
            cost.after.text() if cost.armed else cost.note,
            "-",
            f"armed after {cost.leaked_mb} MiB leaked; "
            f"{'the same worker throughout' if cost.same_worker else 'the worker was RECYCLED or replaced'}",
        )
        part.add(
            "cost",
            "tracing / untraced",
            "-",
            f"req/s x{rps_ratio:.2f}" if rps_ratio else "-",
            "-",
            f"worker CPU/req x{cpu_ratio:.2f}" if cpu_ratio else "-",
        )
        if cost.before.errors or cost.after.errors:
            part.notes.append(f"cost: errors before {cost.before.errors}, after {cost.after.errors}")

    right = [leak.name for leak, judgement in judged if judgement and judgement.right]
    wrong = [leak.name for leak, judgement in judged if not (judgement and judgement.right)]
    part.targets.append(
        Target(
            "every leak named right (its line, its type, or native)",
            not wrong if judged else None,
            f"{len(right)} of {len(judged)} right" + (f"; wrong: {', '.join(wrong)}" if wrong else ""),
        )
    )
    part.targets.append(
        Target(
            "no request failed and no OOM kill while leaking",
            failed == 0 and oom_kills == 0,
            f"{failed} failed, {oom_kills} OOM kills",
        )
    )
    limit_ms = DEFAULT_REPORT_TIME_LIMIT_S * 1000
    part.targets.append(
        Target(
            f"each live report within the service's own report time limit ({limit_ms:.0f} ms)",
            (max(report_ms) <= limit_ms) if report_ms else None,
            f"slowest {max(report_ms):.0f} ms" if report_ms else "no reports",
        )
    )
    room_bytes = (peers.plan_for(LIMIT_MB, worker_max_memory_mb=BUDGET_MB).worker_hard_cap_mb - BUDGET_MB) * MIB
    worker_cap_bytes = min(int(room_bytes * REPORT_ROOM_SHARE), REPORT_MAX_TRACE_BYTES)
    part.notes.append(
        f"the cap a worker here gives its snapshot (recycler.py): {REPORT_ROOM_SHARE:.0%} of the room left under "
        f"its hard cap, at most {_mb(REPORT_MAX_TRACE_BYTES)}: {_mb(worker_cap_bytes)} at the {BUDGET_MB} MB "
        f"threshold ({_mb(room_bytes)} of room); {_mb(DEFAULT_MAX_TRACEMALLOC_BYTES)} is GrowthWatch's own default"
    )
    for measured in in_process:
        if measured.report.get("snapshotBlocks") is not None and measured.peak_bytes is not None:
            taken = "would be taken" if measured.tracemalloc_bytes <= worker_cap_bytes else "would be skipped"
            part.notes.append(
                f"{measured.blocks:,} blocks: tracemalloc held {_mb(measured.tracemalloc_bytes)}, so in a worker here "
                f"the snapshot {taken}; with it the report's peak was {signed_mb(measured.peak_bytes)} "
                f"({measured.peak_bytes / room_bytes:.0%} of that room), {measured.report['reportMs']:.0f} ms"
            )
    part.notes.append(
        "the in-process reports walk the bench process's own objects (nothing frozen, unlike a worker's): their "
        "census is dearer than a worker's and may be cut short at the report's time limit"
    )
    return part
