"""bench/leak_sweep.py (part 20) and part 3's small-object rows (bench/leak.py): rows, the share, the targets."""

from __future__ import annotations

import pytest

from bench import __main__ as bench_main
from bench import leak
from bench import leak_sweep as part20
from bench.scale import FULL, QUICK
from bench.servers import Peer
from harness import leak_sweep as sweep
from harness.fitflix_log import SurgeCounts

MIB = 1024 * 1024
CLEAN = SurgeCounts(asked=3, replaced=3, without=1, timed_out=0)
OBJECTS_FAST = sweep.LeakCell("objects", "fast", 8, 1)


def result(
    cell: sweep.LeakCell = OBJECTS_FAST,
    oom_kills: int = 0,
    statuses: dict | None = None,
    peak_mb: float | None = 400,
    counts: SurgeCounts = CLEAN,
    recycles: int = 4,
    oom_group_kills: int | None = None,
) -> sweep.CellResult:
    return sweep.CellResult(
        cell=cell,
        statuses={200: 1200} if statuses is None else statuses,
        oom_kills=oom_kills,
        oom_group_kills=oom_group_kills,
        peak_bytes=None if peak_mb is None else int(peak_mb * MIB),
        limit_bytes=sweep.LIMIT_MB * MIB,
        recycles=recycles,
        counts=counts,
        master_alive=True,
        seconds=7.4,
    )


def fitflix_run(**options) -> part20.Run:
    cell_result = result(**options)
    cell = cell_result.cell
    return part20.Run("fitflix", "fitflix", str(cell.threads), str(cell.workers), cell_result, cell_result.recycles)


def test_part_20_is_a_host_part_and_a_full_run_sweeps_every_cell():
    assert bench_main.PARTS[20] is part20 and 20 in bench_main.HOST_PARTS
    assert FULL.leak_sweep_cells == sweep.FULL and len(FULL.leak_sweep_cells) == 48
    assert QUICK.leak_sweep_cells == sweep.PAIRWISE


def test_the_share_counts_every_recycle_that_asked_whichever_way_the_master_answered():
    counts = [
        SurgeCounts(asked=5, replaced=4, without=2, timed_out=1),
        SurgeCounts(0, 0, 3, 0),
        SurgeCounts(0, 0, 0, 0),
    ]

    assert part20.replaced_first_share(counts) == (4, 10)
    assert part20.share_text(4, 10) == "4 of 10 (40%)"
    assert part20.share_text(0, 0) == "no recycle asked for a replacement"


def test_a_fitflix_row_has_its_masters_figures_and_a_peers_row_dashes():
    counts = SurgeCounts(asked=4, replaced=3, without=2, timed_out=0, retired_early=1, held=5)
    fitflix = fitflix_run(counts=counts, peak_mb=0.876 * 512)
    plain = part20.Run(
        "plain", "plain", "1", "2", result(oom_kills=3, statuses={200: 1197, "RemoteDisconnected": 3}), None
    )

    assert part20.run_row(fitflix) == [
        "fitflix", "objects", "fast", "8", "1", "0", "0", "88%", "4", "3", "2", "1", "5", "7",
    ]  # fmt: skip
    assert part20.run_row(plain) == [
        "plain", "objects", "fast", "1", "2", "3", "3", "78%", "-", "-", "-", "-", "-", "7",
    ]  # fmt: skip
    assert len(part20.run_row(fitflix)) == len(part20.COLUMNS)
    assert len(part20.missing_row("uwsgi", "all four", "fast", "-", "-", "not run")) == len(part20.COLUMNS)


def test_a_clean_sweep_meets_the_three_targets_and_states_the_share():
    runs = [fitflix_run(cell=cell) for cell in sweep.PAIRWISE]

    oom, failed, peak, share = part20.sweep_targets(runs, len(runs), "12 cells")

    assert (oom.met, failed.met, peak.met, share.met) == (True, True, True, None)
    assert oom.measured == "0 in each of 12 runs"
    assert peak.measured.startswith("worst 78% (")
    assert share.measured.startswith("36 of 48 (75%); 48 of 48 recycles asked for a replacement")


def test_one_oom_kill_a_failure_or_a_peak_over_90_percent_misses_its_target_and_names_the_cell():
    cells = sweep.PAIRWISE[:3]
    runs = [
        fitflix_run(cell=cells[0], oom_kills=2),
        fitflix_run(cell=cells[1], statuses={200: 1199, 502: 1}),
        fitflix_run(cell=cells[2], peak_mb=0.93 * 512),
    ]

    oom, failed, peak, _share = part20.sweep_targets(runs, 3, "3 cells")

    assert (oom.met, failed.met, peak.met) == (False, False, False)
    assert oom.measured == f"1 of 3 runs: {cells[0].name} (2)"
    assert failed.measured == f"1 of 3 runs: {cells[1].name} (1)"
    assert f"1 over 90% or unread: {cells[2].name} (93%)" in peak.measured


def test_a_run_that_did_not_happen_is_never_met_by_default():
    runs = [fitflix_run()]

    oom, failed, peak, _share = part20.sweep_targets(runs, 2, "2 cells")

    assert (oom.met, failed.met, peak.met) == (False, False, False)
    assert oom.measured.endswith("1 of 2 did not run")


def test_the_peers_runs_are_left_out_of_fitflixs_targets():
    peer = part20.Run("plain", "plain", "1", "2", result(oom_kills=9), None)

    oom, *_rest = part20.sweep_targets([fitflix_run(), peer], 1, "1 cell")

    assert oom.met is True


def test_the_runs_where_no_recycle_asked_are_named():
    asked_none = fitflix_run(cell=sweep.LeakCell("bytes", "fast", 32, 3), counts=SurgeCounts(0, 0, 0, 0), recycles=12)
    never_recycled = fitflix_run(counts=SurgeCounts(0, 0, 0, 0), recycles=0)

    assert part20.never_asked([asked_none, never_recycled, fitflix_run()]) == ["bytes-fast-t32-w3"]


def test_the_share_by_shape_and_the_peers_finding():
    runs = [
        fitflix_run(cell=sweep.LeakCell("bytes", "fast", 1, 1), counts=SurgeCounts(0, 0, 3, 0)),
        fitflix_run(cell=sweep.LeakCell("objects", "slow", 1, 3)),
        part20.Run("plain", "plain", "1", "2", result(oom_kills=3), None),
        part20.Run("plain", "plain", "1", "2", result(cell=sweep.LeakCell("bytes", "fast", 1, 2), oom_kills=2), None),
    ]

    assert part20.share_by_shape(runs) == "bytes 0 of 3 (0%), objects 3 of 4 (75%)"
    assert (
        part20.peers_finding(runs, ["plain", "uwsgi", "fitflix"]) == "OOM kills over the four leaks: plain 5, fitflix 0"
    )


@pytest.mark.parametrize(
    ("peer", "threads"),
    [
        (Peer("fitflix", "fitflix", env={"THREADS": "32"}), "32"),
        (Peer("fitflix (defaults)", "fitflix"), "8"),
        (Peer("plain", "plain"), "1"),
        (Peer("granian", "granian"), "default pool"),
    ],
)
def test_threads_as_each_peer_runs_them(peer, threads):
    assert part20.peer_threads(peer) == threads


def test_the_cells_methods_say_which_cells_ran():
    assert part20.cells_said(sweep.FULL).startswith("all 48 cells")
    assert part20.cells_said(sweep.PAIRWISE).startswith("12 cells (`harness.leak_sweep.PAIRWISE`")
    assert part20.cells_said(sweep.V2[:1]) == "1 cells (objects-fast-t8-w1)"


# -- part 3's small-object rows, and the v2 cells part 18 adds to part 3's table ------------------------------------

FITFLIX_LOG = """\
[INFO] Replacing worker 11: its replacement boots first (fits)
[INFO] Worker 12 serves; retiring worker 11
[INFO] Recycling worker pid=11 reason=memory rss=400.0MB uss=380.0MB budget=361MB threshold=350.0MB hard_cap=420MB \
requests=300 age=3.1s
[INFO] Retiring worker 12 without a replacement first: no room
[INFO] Recycling worker pid=12 reason=memory rss=400.0MB uss=380.0MB budget=361MB threshold=350.0MB hard_cap=420MB \
requests=300 age=3.1s
"""


@pytest.mark.parametrize(
    ("kind", "text", "recycles", "replaced"),
    [
        ("fitflix", FITFLIX_LOG, 2, 1),
        ("uwsgi", "...The work of process 6216 is done. Seeya!\nworker 1 killed successfully (pid: 6216)\n", 1, None),
        ("granian", "[WARNING] RSS over threshold for worker-1\n[INFO] Respawning worker-1\n", 1, None),
        ("plain", "[INFO] Booting worker with pid: 5\n", None, None),
    ],
)
def test_each_peers_recycles_come_from_its_own_log_lines(kind, text, recycles, replaced):
    assert leak.peer_recycles(kind, text) == recycles
    assert leak.replaced_first(kind, text) == replaced


def test_part_3_runs_the_issues_small_object_leak_after_its_bytearray_leak():
    assert [item.path for item in leak.LEAKS] == ["/leak?mb=2", "/objects?n=3000"]
    assert leak.BYTES.label == ""  # the bytearray rows keep the names part 3 always gave them
    assert leak.OBJECTS.figure.startswith("part3-")  # part 18 renames part3-* figures to its own


def test_a_cell_in_part_3s_table_fills_its_columns():
    cell_result = result(statuses={200: 1198, "RemoteDisconnected": 2}, peak_mb=430, oom_group_kills=0)
    cell_result.unsent = 1

    row = part20.part3_row(cell_result, 4)

    assert len(row) == len(leak.COLUMNS)
    assert row[:7] == [
        "fitflix objects-fast-t8-w1", "512", "0", "3", "200 x1198, RemoteDisconnected x2, not sent x1", "430", "84%",
    ]  # fmt: skip
    assert row[-2:] == ["4", "3"]


def test_the_v2_cells_target_misses_a_cell_that_broke_the_promise_or_did_not_run():
    kept = result(cell=sweep.V2[0], oom_group_kills=0)
    group_killed = result(cell=sweep.V2[1], oom_group_kills=1)

    assert part20.cells_target([kept], sweep.V2[:1]).met is True
    missed = part20.cells_target([kept, group_killed], sweep.V2)
    assert missed.met is False
    assert "thread_cache-fast-t32-w3: 1 OOM group kill(s)" in missed.measured
    assert missed.measured.endswith("did not run: native-fast-t1-w1")
