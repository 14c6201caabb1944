"""What `fitflix.wrap` costs a Django service: CPU per request, and memory under preload.

`.venv/bin/python -m bench.django [--rounds N] [--seconds S]` (about 2 minutes). Both servers
run the test project (harness/apps/django_project) under the package's configuration,
`gunicorn -c python:fitflix.gunicorn_conf`, one worker, pinned to CPU 0 (taskset); wrk,
pinned to CPU 1, loads one route at a time with `-t1 -c8`. The two alternate in rounds so the
machine's noise falls on both:

- wrapped: `harness.apps.django_project.wsgi:application` (fitflix.wrap in front of Django);
- plain: `harness.apps.django_plain:application` (Django alone: Flask is never imported).

CPU per request is the server's CPU (utime + stime of the master and its worker, from
/proc/PID/stat) over a run, divided by the answers wrk counted. Memory is each process's RSS,
PSS and USS (Private_Clean + Private_Dirty) from /proc/PID/smaps_rollup after the last round:
the master holds what preload loaded, the worker shares it and keeps its own.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

from bench.load import wrk_path
from fitflix.memory.process import children_of
from harness.server import LiveServer

APPS = {
    "wrapped": "harness.apps.django_project.wsgi:application",
    "plain": "harness.apps.django_plain:application",
}
# MAX_REQUESTS=0: no worker leaves mid-run (its CPU would leave the count with it).
ENV = {"DRAIN_S": "0", "THREADS": "4", "MAX_REQUESTS": "0", "MAX_REQUESTS_JITTER": "0"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REQUESTS = re.compile(r"(\d+) requests in")


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total


def memory_mb(pid: int) -> dict[str, float]:
    figures = {}
    with open(f"/proc/{pid}/smaps_rollup") as file:
        for line in file:
            name, _colon, rest = line.partition(":")
            if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                figures[name] = int(rest.split()[0]) / 1024
    return {"RSS": figures["Rss"], "PSS": figures["Pss"], "USS": figures["Private_Clean"] + figures["Private_Dirty"]}


def cpu_per_request_us(server: LiveServer, path: str, seconds: int) -> float:
    """One wrk run against `path`: the server's CPU per answer, in us."""
    pids = [server.master_pid, *children_of(server.master_pid)]
    before = cpu_ticks(pids)
    url = f"http://127.0.0.1:{server.port}{path}"
    done = subprocess.run(
        ["taskset", "-c", "1", wrk_path(), "-t1", "-c8", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    )
    if [server.master_pid, *children_of(server.master_pid)] != pids:
        raise SystemExit(f"bench.django: a worker was replaced during the run against {path}")
    used = cpu_ticks(pids) - before
    answers = int(REQUESTS.search(done.stdout).group(1))
    if "Non-2xx" in done.stdout:
        raise SystemExit(f"bench.django: {path} answered errors:\n{done.stdout}")
    return used / CLOCK_TICKS / answers * 1e6


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.django")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5, help="each wrk run's length")
    args = parser.parse_args(argv)
    if wrk_path() is None:
        sys.stderr.write("bench.django: needs wrk (apt-get install wrk)\n")
        return 2

    servers = {
        name: LiveServer(
            ENV, app=app, config="python:fitflix.gunicorn_conf", prefix=("taskset", "-c", "0"), ready_path="/hello/"
        )
        for name, app in APPS.items()
    }
    runs: dict[str, list[float]] = {"wrapped /hello/": [], "plain /hello/": [], "wrapped /health": []}
    try:
        for server in servers.values():
            server.start()
        for _round in range(args.rounds):
            runs["plain /hello/"].append(cpu_per_request_us(servers["plain"], "/hello/", args.seconds))
            runs["wrapped /hello/"].append(cpu_per_request_us(servers["wrapped"], "/hello/", args.seconds))
            runs["wrapped /health"].append(cpu_per_request_us(servers["wrapped"], "/health", args.seconds))
        memory = {
            name: {
                "master": memory_mb(server.master_pid),
                "worker": memory_mb(children_of(server.master_pid)[0]),
            }
            for name, server in servers.items()
        }
    finally:
        for server in servers.values():
            server.close()

    print(f"CPU per request, us: median (min-max) of {args.rounds} rounds of {args.seconds} s, 1 worker on CPU 0")
    for name, values in runs.items():
        print(f"  {name:<16} {spread(values)}")
    wrapped, plain = statistics.median(runs["wrapped /hello/"]), statistics.median(runs["plain /hello/"])
    print(f"  the wrapper adds {wrapped - plain:+.0f} us to a Django request ({wrapped / plain:.3f} x plain)")
    print("Memory after the last round, MB (plain never imports Flask; wrapped loads it with the endpoints)")
    print(f"  {'':<16} {'RSS':>7} {'PSS':>7} {'USS':>7}")
    for process in ("master", "worker"):
        for name in APPS:
            figures = memory[name][process]
            print(f"  {name + ' ' + process:<16} " + " ".join(f"{figures[key]:7.1f}" for key in ("RSS", "PSS", "USS")))
        difference = {
            key: memory["wrapped"][process][key] - memory["plain"][process][key] for key in ("RSS", "PSS", "USS")
        }
        print(f"  {'wrapped - plain':<16} " + " ".join(f"{difference[key]:+7.1f}" for key in ("RSS", "PSS", "USS")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
