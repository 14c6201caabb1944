"""Run every benchmark: `.venv/bin/python -m bench` (about 45 min on 2 cores), `--quick` (about 4).

Refresh some parts of BENCHMARKS.md: `.venv/bin/python -m bench --update --parts 1,3`.

Prints one table per part as it goes and, for a full run of every part,
writes BENCHMARKS.md (the command, the date, the core count, each target met
or missed) and each part's figures, as SVG and CSV, in figures/ beside it.
`--quick` and `--parts` write their markdown and figures only where `--output`
says, so a smoke run never replaces the reference numbers or pictures.
`--update` runs `--parts` at full scale and replaces just those parts'
sections (and their figures) in the existing file, every other part's
section kept as it is (bench/report.py `merge_update`).

Peers run on 127.0.0.1 only, each in a memory cgroup of its own; every
process we start is ended by its pid and every cgroup we create is removed,
also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from bench import (
    cgroup_v2,
    concurrency,
    cpu,
    footprint,
    growth,
    health_cost,
    leak,
    leak_sweep,
    neighbours,
    no_limit,
    overhead,
    plots,
    portable,
    profiles,
    quiet,
    recycle,
    rolling,
    slow_clients,
    small_instance,
    spike,
    spike_sweep,
)
from bench.load import wrk_path
from bench.report import (
    TARGETS_HEADING,
    Part,
    markdown,
    merge_update,
    parts_label,
    split_parts,
    text_table,
    written_by_hand,
)
from bench.scale import FULL, QUICK
from bench.servers import install_signal_handlers, stop_everything, uwsgi_problem
from harness.cgroups import CgroupUnavailable, MemoryCgroup
from harness.server import PROJECT

PARTS = {
    1: footprint,
    2: overhead,
    3: leak,
    4: spike,
    5: recycle,
    6: concurrency,
    7: health_cost,
    8: spike_sweep,
    9: neighbours,
    10: slow_clients,
    11: rolling,
    12: portable,
    13: profiles,
    14: cpu,
    15: small_instance,
    16: no_limit,
    17: growth,
    18: cgroup_v2.LEAK,  # in a cgroup v2 guest: bash scripts/test-v2 --bench
    19: cgroup_v2.SPIKE_SWEEP,
    20: leak_sweep,
    21: quiet,
}
# Parts run only where the process's cgroup is v2: in the guest that `bash scripts/test-v2 --bench` boots.
GUEST_PARTS = (18, 19)
HOST_PARTS = tuple(number for number in PARTS if number not in GUEST_PARTS)
log = logging.getLogger("bench")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about 4 minutes)")
    parser.add_argument(
        "--parts",
        default=",".join(map(str, HOST_PARTS)),
        help=f"comma-separated part numbers (default: all but {parts_label(GUEST_PARTS)}, which run on cgroup v2)",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="run --parts at full scale and replace only their sections (and figures) in the existing markdown "
        "(--output, default BENCHMARKS.md), keeping every other part's",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="write the markdown here (default: BENCHMARKS.md on a full run); with --update, the file to update",
    )
    args = parser.parse_args(argv)
    # Checked before the run: an unknown part used to end a long run at its turn, with nothing written.
    unknown = [text.strip() for text in args.parts.split(",") if text.strip() and text.strip() not in map(str, PARTS)]
    if unknown:
        parser.error(f"--parts: no part {', '.join(unknown)} here (the parts: {', '.join(map(str, PARTS))})")
    guest = [number for number in GUEST_PARTS if str(number) in args.parts.replace(" ", "").split(",")]
    if guest and cgroup_v2.v2_problem():
        parser.error(
            f"--parts: {parts_label(guest)}: cgroup v2 only, and {cgroup_v2.v2_problem()}; its guest runs them: "
            f"bash scripts/test-v2 --bench --update --parts {','.join(map(str, guest))}"
        )
    if args.update and args.quick:
        parser.error("--update writes reference numbers: it runs at full scale, not with --quick")
    if args.update and not (args.output or PROJECT / "BENCHMARKS.md").is_file():
        parser.error(f"--update: {args.output or PROJECT / 'BENCHMARKS.md'} does not exist (a full run writes it)")
    return args


def host_bullets(existing: str) -> list[str]:
    """The header's bullets (the machine, the tools) of an existing BENCHMARKS.md: a run of the guest's parts alone
    keeps them, since every other part ran on that machine; the guest's parts say their kernel themselves."""
    head = split_parts(existing)[0].partition(TARGETS_HEADING[0])[0]
    return [line for line in head.splitlines() if line.startswith("- ")]


def check_cgroups() -> str | None:
    try:
        MemoryCgroup.create(64, prefix="fitflix-bench-probe").remove()
    except CgroupUnavailable as error:
        return str(error)
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    install_signal_handlers()
    scale = QUICK if args.quick else FULL
    numbers = [int(text) for text in args.parts.split(",") if text.strip()]
    problem = check_cgroups()
    if problem:
        print(
            f"The benchmarks need child memory cgroups (run as root on cgroup v1, or v2 with memory delegated): "
            f"{problem}",
            file=sys.stderr,
        )
        return 2
    wrk = wrk_path()
    all_parts = set(numbers) >= set(HOST_PARTS)
    output = args.output or (PROJECT / "BENCHMARKS.md" if args.update or (not args.quick and all_parts) else None)
    # The figures go beside the markdown (figures/, linked from it); a run that writes none keeps them apart.
    figures = plots.use_directory(
        output.parent / "figures" if output else Path(tempfile.mkdtemp(prefix="fitflix-bench-figures-"))
    )
    log.info("figures and their CSVs go to %s", figures)
    started_at = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    parts: list[Part] = []
    try:
        for number in numbers:
            part_started = time.monotonic()
            log.info("part %s: starting", number)
            try:
                part = PARTS[number].run(scale)
            except Exception as error:
                log.exception("part %s failed", number)
                part = Part(
                    number,
                    f"{PARTS[number].__doc__.splitlines()[0]} (FAILED)",
                    str(error),
                    ["error"],
                    [[str(error).splitlines()[0] if str(error) else type(error).__name__]],
                )
            part.seconds = time.monotonic() - part_started
            parts.append(part)
            print("\n" + text_table(part) + "\n", flush=True)
    finally:
        stop_everything()
    total_s = time.monotonic() - started

    command = ".venv/bin/python -m bench" + ("".join(f" {shlex.quote(arg)}" for arg in (argv or sys.argv[1:])))
    affinity = len(os.sched_getaffinity(0))
    # --update keeps a failed part's earlier section instead of writing the failure over it.
    written = [part for part in parts if not (args.update and part.title.endswith("(FAILED)"))]
    written_by = f"{parts_label([part.number for part in written])} written" if args.update else "Written"
    header = [
        f"{written_by} by `{command}` on {started_at:%Y-%m-%d %H:%M} UTC ({scale.name} run, {total_s / 60:.1f} min).",
        "",
        f"- Machine: {os.cpu_count()} cores ({affinity} usable by this process), {platform.machine()}, "
        f"Linux {platform.release()}, Python {platform.python_version()}.",
        f"- Load generator: {'wrk (' + wrk + ')' if wrk else 'Python http.client clients (wrk not available)'} "
        "for requests/s; Python http.client threads where per-request detail is needed.",
        f"- uWSGI: {uwsgi_problem() or 'installed from requirements-bench.txt'}.",
        "- The machine is shared and noisy: read medians and ratios, not single figures. Regenerate with the command "
        "above; nothing here is asserted by the tests.",
        f"- Each part's picture sits above its table; the numbers behind every picture are a CSV beside it in "
        f"`{figures.name}/`. Memory over time (parts 3 and 4) is the cgroup usage the OOM killer acts on "
        "(`memory.usage_in_bytes`, v2 `memory.current`), sampled every 20 ms.",
    ]
    if output is not None and args.update:
        existing = output.read_text()
        if set(numbers) <= set(GUEST_PARTS):
            header = header[:2] + host_bullets(existing)
        earlier = split_parts(existing)[1]
        for part in parts:
            if part not in written:
                log.warning("part %s failed: its section in %s stays as it was", part.number, output)
            elif written_by_hand(earlier.get(part.number, "")):
                log.warning("part %s: the text added by hand below its old table is gone with it", part.number)
        if written:
            output.write_text(merge_update(existing, markdown(written, header, figures.name)))
            print(f"updated {parts_label([part.number for part in written])} in {output} (figures in {figures})")
    elif output is not None:
        fresh = markdown(parts, header, figures.name)
        # A full run on this machine keeps the sections of the parts only the v2 guest runs.
        output.write_text(merge_update(output.read_text(), fresh) if output.is_file() else fresh)
        print(f"wrote {output} (figures in {figures})")
    missed = [(part.number, target.text) for part in parts for target in part.targets if target.met is False]
    print(f"done in {total_s / 60:.1f} min; targets missed: {missed or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
