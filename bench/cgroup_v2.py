"""Parts 18 and 19: the leak (part 3) and the spike sweep (part 8) again, on cgroup v2, in a Linux guest.

These machines mount memory on cgroup v1 only; Render and Kubernetes run v2. `bash scripts/test-v2
--bench` boots a guest kernel that mounts v2 (scripts/test-v2 says how) and runs
`python -m bench --update --parts 18,19` there, which writes these two parts into BENCHMARKS.md
beside the v1 ones. The same code as parts 3 and 8, on the same peers (part 18 adds FitFlix in the
leak sweep's three v2 cells, part 20's `harness.leak_sweep.V2`), each peer's cgroup with
memory.oom.group=1 as Kubernetes 1.28+ sets it (one OOM kill takes every process in it), at a short
scale: the guest runs under qemu's software emulation, many times slower than this machine, so
counts matter here (OOM kills, failed requests, peaks as % of the limit), not times.
"""

from __future__ import annotations

import collections
import platform
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from bench import leak, leak_sweep, plots, servers, spike_sweep
from bench.report import Part
from bench.scale import QUICK, Scale
from harness import leak_sweep as sweep
from harness.cgroups import v2_problem

# Short: software emulation runs Python 10-20x slower. The time bounds are generous so every peer runs.
GUEST = replace(
    QUICK,
    name="cgroup v2 guest",
    leak_requests=600,
    leak_time_limit_s=300,
    spike_time_limit_s=120,
    spike_sweep_threads=(8,),
    spike_sweep_time_limit_s=1800,
)
# A sweep cell's bound in the guest: its 1,200 requests take minutes under emulation (tests/live/test_cgroup_v2.py).
GUEST_CELL_TIME_LIMIT_S = 900.0


def readings_note(readings: list[tuple[str, dict[str, int], dict | None]]) -> list[str]:
    """One line per peer: its cgroups' memory.events and memory.pressure, summed over its runs."""
    events: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    stalled: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, counts, pressure in readings:
        events[name].update({key: counts.get(key, 0) for key in ("high", "max", "oom", "oom_kill", "oom_group_kill")})
        for kind, line in (pressure or {}).items():
            stalled[name][kind] += line.total_us
    lines = []
    for name, counts in events.items():
        pressure = stalled.get(name)
        psi = (
            f"memory.pressure: some {pressure['some'] / 1e6:.2f} s, full {pressure['full'] / 1e6:.2f} s stalled"
            if pressure
            else "no memory.pressure"
        )
        lines.append(
            f"{name}: memory.events over its runs: max {counts['max']} (reached memory.max), oom {counts['oom']}, "
            f"oom_kill {counts['oom_kill']}, oom_group_kill {counts['oom_group_kill']}; {psi}"
        )
    return lines


class GuestPart:
    """Part `number`: `module`'s part run on cgroup v2 with memory.oom.group=1, renumbered and renamed."""

    def __init__(self, number: int, module, source: int, title: str) -> None:
        self.number, self.module, self.source, self.title = number, module, source, title
        self.__doc__ = f"Part {number}: {title}, on cgroup v2 in a guest"

    def run(self, scale: Scale) -> Part:
        kernel = f"Linux {platform.release()}"
        title = f"{self.title} on cgroup v2 ({kernel}, in a qemu guest)"
        problem = v2_problem()
        if problem is not None:
            raise RuntimeError(f"part {self.number} runs on cgroup v2 only: {problem}")
        servers.CGROUP_OPTIONS["oom_group"] = True
        servers.V2_READINGS.clear()
        figures = plots.directory()
        # The v1 part's figure has the same name: draw into a folder of our own, then move it in renamed.
        plots.use_directory(Path(tempfile.mkdtemp(prefix="fitflix-v2-figures-")))
        try:
            part = self.module.run(GUEST if scale.name == "full" else scale)
        finally:
            servers.CGROUP_OPTIONS.pop("oom_group", None)
            plots.use_directory(figures)
        part.number, part.title = self.number, title
        part.method = (
            f"Part {self.source}'s run on cgroup v2: a {kernel} guest "
            "(Debian's kernel, booted by `bash scripts/test-v2 --bench` under qemu's software emulation, 2 vCPUs, "
            "4 GB), every peer's cgroup a child of the guest's root with `memory.max` and `memory.oom.group=1`. "
            f"Short ({GUEST.leak_requests} leak requests; the sweep at THREADS={GUEST.spike_sweep_threads[0]}) and "
            "slow: read the counts, not the times. A peak there is v2's `memory.peak`, the cgroup's running peak. "
            + part.method
        )
        part.notes += readings_note(servers.V2_READINGS)
        part.pictures = [self._moved(picture, figures) for picture in part.pictures]
        return part

    def _moved(self, picture: plots.Picture, figures: Path) -> plots.Picture:
        """partN-x.svg in the run's own folder -> figures/part18-x.svg: the v1 part's figure stays as it is."""
        moved = []
        for path in (picture.svg, picture.csv):
            target = figures / f"part{self.number}-{path.name.split('-', 1)[1]}"
            shutil.move(path, target)
            moved.append(target)
        return plots.Picture(moved[0], moved[1], picture.alt)


class LeakAndCells:
    """Part 3 (both its leaks), then FitFlix in the leak sweep's v2 cells (`harness.leak_sweep.V2`, part 20's
    cells that the guest runs): a row each in part 3's table, and one target over them."""

    def run(self, scale: Scale) -> Part:
        part = leak.run(scale)
        cells = sweep.V2  # at any scale: the sweep's other cells would take hours under emulation
        part.method += (
            f" Then FitFlix (gunicorn.conf.py with the cell's THREADS and WEB_CONCURRENCY) in {len(cells)} cells of "
            f"the leak sweep (part 20), each a fresh {sweep.LIMIT_MB} MB cgroup: "
            f"{', '.join(f'{cell.name} ({cell.path})' for cell in cells)}, judged by `harness.leak_sweep.run_cell` "
            f"(rows 'fitflix CELL'; up to {GUEST_CELL_TIME_LIMIT_S:.0f} s each)."
        )
        leak_sweep.cells_into_part3(part, cells, GUEST_CELL_TIME_LIMIT_S)
        return part


LEAK = GuestPart(18, LeakAndCells(), 3, "Leak survival")
SPIKE_SWEEP = GuestPart(19, spike_sweep, 8, "Spike sweep")
