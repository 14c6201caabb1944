"""The leak sweep on this host's cgroup (v1 here; the v2 cells are in test_cgroup_v2.py), issue 32.

Twelve cells cover every pair of leak shape, speed, THREADS and worker count (`harness.leak_sweep`).
Each must keep the promise: no OOM kill, no failed request, the cgroup's peak at most 90% of its
512 MB, the master alive. A leak of small Python objects is the case replace-then-retire once failed
(three OOM kills a run): pymalloc keeps its arenas until the process exits, so old worker and
replacement overlap at full size.
"""

from __future__ import annotations

import pytest

from harness.leak_sweep import APP, LIMIT_MB, PAIRWISE, LeakCell, run_cell
from harness.wait import poll_until

pytestmark = pytest.mark.cgroup


@pytest.mark.parametrize("cell", PAIRWISE, ids=lambda cell: cell.name)
def test_every_leak_shape_speed_and_size_keeps_the_promise(live_server, memory_cgroup, cell: LeakCell):
    cgroup = memory_cgroup(LIMIT_MB)
    server = live_server(cell.env(), app=APP, cgroup=cgroup)
    poll_until(lambda: len(server.worker_pids()) == cell.workers, 10, f"{cell.workers} worker(s)")

    result = run_cell(cell, cgroup, server)

    print(result.row())
    assert result.problems() == [], f"{result.row()}\n--- server log (end) ---\n{server.log()[-4000:]}"
    assert result.recycles >= 2, f"the leak did not recycle: {result.row()}"  # 800 MB or more through 512
