"""Part 21: a quiet service: the CPU each server spends while nobody asks anything, and FitFlix's wake-ups.

A 0.1-CPU instance has 100 ms of CPU a second: what a server burns idle (timers, heartbeats, monitor
threads) is taken from that all day. Each server runs `bench.apps:app` alone in its own 512 MB
cgroup, which counts its CPU (exited processes included), with one worker (FitFlix also with three);
once it served one request and settled, the cgroup's CPU over a window with no request, in ms a
second. For FitFlix, the wake-ups a second of each process (its threads' voluntary context switches
over the same window, from /proc/PID/task/*/status).
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import statistics
import time
from pathlib import Path

from bench import peers, plots
from bench.report import Part, Target
from bench.scale import Scale
from bench.servers import Peer, Running, peer_problem, serving, uwsgi_problem

log = logging.getLogger("bench")

APP = "bench.apps:app"
SETTLE_S = 3.0  # after the first answer: the boot's own work (first report, first log lines) is done
TARGET_MS_PER_S = 0.3  # plain gunicorn gthread's level (issue 34)
FITFLIX, FITFLIX_THREE = "fitflix", "fitflix, 3 workers"


def thread_switches(pid: int, root: Path = Path("/")) -> dict[int, int]:
    """Each thread's voluntary context switches (one a sleep ended: a wake-up), by thread id; {} once it ended."""
    switches = {}
    try:
        tids = [entry.name for entry in (root / f"proc/{pid}/task").iterdir()]
    except OSError:
        return {}
    for tid in tids:
        try:
            status = (root / f"proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                switches[int(tid)] = int(line.split()[1])
    return switches


def wakeups_per_s(before: dict[int, int], after: dict[int, int], seconds: float) -> float:
    """Wake-ups a second of the threads seen at both ends (a thread born or ended meanwhile is not counted)."""
    return sum(after[tid] - before[tid] for tid in after.keys() & before.keys()) / seconds


@dataclasses.dataclass
class Idle:
    cpu_ms_per_s: float
    wakeups: dict[str, float]  # process ("master", "worker 1", ...) -> wake-ups a second


def idle_once(running: Running, window_s: float) -> Idle:
    processes = {"master": running.master_pid} | {
        f"worker {index}": pid for index, pid in enumerate(sorted(running.worker_pids()), start=1)
    }
    before = {name: thread_switches(pid) for name, pid in processes.items()}
    cpu_before = running.cgroup.cpu_usage_ns()
    started = time.monotonic()
    time.sleep(window_s)  # the measurement window itself
    elapsed_s = time.monotonic() - started
    cpu_ms_per_s = (running.cgroup.cpu_usage_ns() - cpu_before) / 1e6 / elapsed_s
    wakeups = {name: wakeups_per_s(before[name], thread_switches(pid), elapsed_s) for name, pid in processes.items()}
    return Idle(cpu_ms_per_s, wakeups)


def line_up() -> tuple[list[Peer], list[str]]:
    wanted = [
        peers.fitflix(app=APP, name=FITFLIX),
        peers.fitflix(app=APP, env={"WEB_CONCURRENCY": "3"}, name=FITFLIX_THREE),
        peers.plain(
            APP, workers=1, name="plain gthread x8 --preload", args=("-k", "gthread", "--threads", "8", "--preload")
        ),
    ]
    missing = []
    if (reason := uwsgi_problem()) is None:
        wanted.append(peers.uwsgi(APP, workers=1, args=(), name="uwsgi"))
    else:
        missing.append(f"uwsgi: {reason}")
    for kind, make in (
        ("granian", lambda: peers.granian(APP, workers=1, args=(), name="granian")),
        ("waitress", lambda: peers.waitress(APP, threads=8, name="waitress x8")),
    ):
        if (reason := peer_problem(kind)) is None:
            wanted.append(make())
        else:
            missing.append(f"{kind}: {reason}")
    # Accounting needs a CPU controller; the CPUs are not restricted (idle: nothing competes).
    return [dataclasses.replace(peer, cpu_list="0,1") for peer in wanted], missing


def answer_once(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/health")
        connection.getresponse().read()
    finally:
        connection.close()


def run(scale: Scale) -> Part:
    rounds, window_s = scale.idle_rounds, scale.idle_window_s
    part = Part(
        21,
        "A quiet service: CPU while idle",
        __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
        + f" {rounds} round(s) of {window_s:g} s each; the median, and the range.",
        ["server", "workers", "idle CPU ms/s (median)", "range", "% of a 0.1-CPU instance", "wake-ups/s by process"],
    )
    wanted, missing = line_up()
    results: dict[str, list[Idle]] = {}
    workers_of: dict[str, int] = {}
    for peer in wanted:
        with serving(peer) as running:
            if peer.kind != "waitress":  # one process, no workers
                running.wait_for_workers(3 if peer.name == FITFLIX_THREE else 1)
            answer_once(running.port)
            time.sleep(SETTLE_S)  # the boot's tail, not a wait for a state
            workers_of[peer.name] = len(running.worker_pids())
            results[peer.name] = [idle_once(running, window_s) for _ in range(rounds)]
            log.info(
                "part 21: %s idle %.3f ms/s", peer.name, statistics.median(r.cpu_ms_per_s for r in results[peer.name])
            )
    for name, runs in results.items():
        cpu = [run.cpu_ms_per_s for run in runs]
        wakeups = ""
        if name in (FITFLIX, FITFLIX_THREE):
            names = runs[0].wakeups.keys()
            wakeups = ", ".join(
                f"{process} {statistics.median(r.wakeups.get(process, 0.0) for r in runs):.2f}" for process in names
            )
        part.add(
            name,
            workers_of[name] or "one process",
            f"{statistics.median(cpu):.3f}",
            f"{min(cpu):.3f}-{max(cpu):.3f}",
            f"{statistics.median(cpu) / 100 * 100:.2f}%",  # ms/s of 100 ms/s
            wakeups or "-",
        )
    medians = {name: statistics.median(run.cpu_ms_per_s for run in runs) for name, runs in results.items()}
    headline = ", ".join(f"{name} {value:.2f}" for name, value in medians.items())
    part.pictures.append(
        plots.bars(
            "part21-idle-cpu",
            f"CPU each server spends idle, ms a second (median): {headline}",
            plots.Bars(
                list(medians),
                {"idle CPU": list(medians.values())},
                "ms of CPU a second, no request",
                [(TARGET_MS_PER_S, "target for FitFlix (plain gthread's level)")],
                digits=3,
            ),
            alt=f"Idle CPU in ms a second, each server alone in its cgroup: {headline}.",
        )
    )
    part.notes.extend(f"not run: {text}" for text in missing)
    for name in (FITFLIX, FITFLIX_THREE):
        if name in results:
            median = statistics.median(run.cpu_ms_per_s for run in results[name])
            part.targets.append(
                Target(
                    f"{name}: idle CPU at most {TARGET_MS_PER_S} ms a second (plain gthread's level)",
                    median <= TARGET_MS_PER_S,
                    f"{median:.3f} ms/s",
                )
            )
    return part
