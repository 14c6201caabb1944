"""What a recycled worker's exit costs: a full interpreter teardown against os._exit, for a heap of small objects.

A worker recycled under a leak of small Python objects holds them until it exits, and its replacement
grows meanwhile (issue 32). Freeing 1.2 million objects one by one buys nothing in a process about to
end; the kernel frees its pages at once. This measures both, in a child process that built the heap:
from the moment it is told to exit to the moment it is reaped.

    .venv/bin/python -m bench.exit_cost [--requests 350] [--runs 5]

`--requests`: how many requests' worth of the issue's leak (3,000 small dicts each, about 1 MB) the heap holds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CHILD = """
import os, sys
def rows():
    return [{{"id": i, "title": f"workout {{i}}", "tags": ["hiit", "core"]}} for i in range(3000)]
kept = [rows() for _ in range({requests})]
sys.stdout.write("built\\n")
sys.stdout.flush()
sys.stdin.readline()
{exit}
"""
EXITS = {"sys.exit (interpreter teardown)": "sys.exit(0)", "os._exit (what a recycled worker does)": "os._exit(0)"}


def exit_once(requests: int, exit_statement: str) -> tuple[float, float]:
    """(RSS in MB when built, seconds from 'exit now' to reaped)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(requests=requests, exit=exit_statement)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child.stdout.readline()
        with open(f"/proc/{child.pid}/statm") as statm:
            rss_mb = int(statm.read().split()[1]) * 4096 / 2**20
        started = time.monotonic()
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=60)
        return rss_mb, time.monotonic() - started
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.exit_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=350)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"| exit | heap (RSS) | median of {args.runs} | min | max |")
    print("| --- | --- | --- | --- | --- |")
    for name, statement in EXITS.items():
        results = [exit_once(args.requests, statement) for _ in range(args.runs)]
        times_ms = [seconds * 1000 for _rss, seconds in results]
        rss_mb = statistics.median(rss for rss, _seconds in results)
        print(
            f"| {name} | {rss_mb:.0f} MB | {statistics.median(times_ms):.0f} ms | "
            f"{min(times_ms):.0f} ms | {max(times_ms):.0f} ms |"
        )


if __name__ == "__main__":
    main()
