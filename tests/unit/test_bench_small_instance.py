"""Part 15's arithmetic: boot-step lines, the steps they add up to, the recycle gap, -X importtime (no servers)."""

from __future__ import annotations

import pytest

from bench import small_instance
from bench.load import Sample
from bench.small_instance import (
    STARTUP,
    Stamp,
    StepCost,
    boot_steps,
    first_health_target,
    heaviest_imports,
    median_steps,
    parse_importtime,
    parse_stamps,
    probe_p99_ms,
    recycle_extra_ms,
    self_ms_by,
    worker_init_target,
)


def stamp(step: str, pid: int, cpu_s: float, monotonic_s: float) -> Stamp:
    return Stamp(step, pid, cpu_s, monotonic_s)


# A FitFlix boot (preload in the master) and a plain one (the app imported in the worker), from a Popen at 100.0.
FITFLIX = [
    stamp("config-top", 10, 0.100, 101.0),
    stamp("fitflix-imported", 10, 0.250, 102.5),
    stamp("config-done", 10, 0.252, 102.6),
    stamp("app-import-start", 10, 0.260, 102.7),
    stamp("app-import-end", 10, 0.280, 102.9),
    stamp("on-starting-start", 10, 0.281, 103.0),
    stamp("warm-up-start", 10, 0.282, 103.1),
    stamp("warm-up-end", 10, 0.296, 103.2),
    stamp("on-starting-end", 10, 0.297, 103.3),
    stamp("when-ready-start", 10, 0.298, 103.4),
    stamp("when-ready-end", 10, 0.300, 103.5),
    stamp("pre-fork-start", 10, 0.301, 103.6),
    stamp("pre-fork-end", 10, 0.320, 103.8),
    stamp("post-fork", 11, 0.002, 103.9),
    stamp("post-worker-init-start", 11, 0.004, 104.0),
    stamp("post-worker-init-end", 11, 0.010, 104.1),
    stamp("first-request-done", 11, 0.014, 104.2),
]
PLAIN = [
    stamp("config-top", 20, 0.120, 101.2),
    stamp("on-starting-start", 20, 0.140, 101.4),
    stamp("on-starting-end", 20, 0.140, 101.4),
    stamp("when-ready-start", 20, 0.141, 101.4),
    stamp("when-ready-end", 20, 0.141, 101.4),
    stamp("pre-fork-start", 20, 0.142, 101.5),
    stamp("pre-fork-end", 20, 0.142, 101.5),
    stamp("post-fork", 21, 0.002, 101.6),
    stamp("app-import-start", 21, 0.003, 101.6),
    stamp("app-import-end", 21, 0.160, 103.4),
    stamp("post-worker-init-start", 21, 0.160, 103.4),
    stamp("post-worker-init-end", 21, 0.160, 103.4),
    stamp("first-request-done", 21, 0.168, 103.5),
]


def test_boot_step_lines_are_read_from_any_log_format():
    text = (
        "[2026-12-01 23:05:13 +0000] [11295] [INFO] boot-step step=config-top pid=11295 cpu_s=0.103186 "
        "monotonic_s=2985.470374\n"
        '{"level": "info", "message": "boot-step step=post-fork pid=11298 cpu_s=0.002230 monotonic_s=2987.570600"}\n'
        "[INFO] Booting worker with pid: 11298\n"
    )
    assert parse_stamps(text) == [
        Stamp("config-top", 11295, 0.103186, 2985.470374),
        Stamp("post-fork", 11298, 0.002230, 2987.570600),
    ]


@pytest.mark.parametrize(
    ("stamps", "step", "process", "cpu_ms", "wall_ms"),
    [
        (FITFLIX, "start", "master", 100, 1000),
        (FITFLIX, "import-fitflix", "master", 150, 1500),
        (FITFLIX, "plan", "master", 2, 100),
        (FITFLIX, "setup", "master", 8, 100),
        (FITFLIX, "import-app", "master", 20, 200),
        (FITFLIX, "on-starting", "master", 3, 300),  # after the import, before and after the warm-up
        (FITFLIX, "warm-up", "master", 14, 100),
        (FITFLIX, "bind", "master", 4, 300),
        (FITFLIX, "freeze", "master", 19, 200),
        (FITFLIX, "fork", "worker", 2, 100),  # the worker's CPU starts from 0 at the fork
        (FITFLIX, "worker-init", "worker", 8, 200),
        (FITFLIX, "first-request", "worker", 4, 400),  # to the bench's answer at 104.5
        (PLAIN, "setup", "master", 20, 200),  # no base config, no preload
        (PLAIN, "import-app", "worker", 157, 1800),
        (PLAIN, "worker-init", "worker", 1, 0),
    ],
)
def test_each_span_between_stamps_goes_to_its_step(stamps, step, process, cpu_ms, wall_ms):
    cost = boot_steps(stamps, 100.0, 104.5)[step]
    assert cost.process == process
    assert cost.cpu_ms == pytest.approx(cpu_ms, abs=1e-6)
    assert cost.wall_ms == pytest.approx(wall_ms, abs=1e-6)


@pytest.mark.parametrize("stamps", [FITFLIX, PLAIN])
def test_the_steps_walls_add_up_to_popen_to_answer_and_the_cpu_to_both_processes(stamps):
    steps = boot_steps(stamps, 100.0, 104.5)
    assert "other" not in steps
    assert sum(cost.wall_ms for cost in steps.values()) == pytest.approx(4500)
    master_cpu_s = max(item.cpu_s for item in stamps if item.pid == stamps[0].pid)
    worker_cpu_s = max(item.cpu_s for item in stamps if item.pid != stamps[0].pid)
    assert sum(cost.cpu_ms for cost in steps.values()) == pytest.approx(1000 * (master_cpu_s + worker_cpu_s))


def test_only_the_first_worker_counts_and_log_order_does_not_matter():
    recycled = [stamp("post-fork", 12, 0.001, 110.0), stamp("first-request-done", 12, 0.005, 110.1)]
    steps = boot_steps(list(reversed(FITFLIX)) + recycled, 100.0, 104.5)
    assert steps == boot_steps(FITFLIX, 100.0, 104.5)


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        ([], {}),
        ([stamp("post-fork", 11, 0.0, 1.0)], {}),  # no master line: nothing to line the worker up with
        (
            [stamp("config-top", 10, 0.1, 101.0), stamp("pre-fork-start", 10, 0.2, 102.0)],
            # Neither span is one SPAN_STEPS knows: both go to "other", the walls still add up.
            {"start": StepCost("master", 100, 1000), "other": StepCost("master", 100, 3500)},
        ),
    ],
)
def test_missing_or_unknown_stamps(stamps, expected):
    steps = boot_steps(stamps, 100.0, 104.5)
    assert steps.keys() == expected.keys()
    for key, cost in expected.items():
        assert steps[key].process == cost.process
        assert steps[key].cpu_ms == pytest.approx(cost.cpu_ms)
        assert steps[key].wall_ms == pytest.approx(cost.wall_ms)


def test_median_steps_takes_each_figure_on_its_own_over_the_runs_that_have_the_step():
    runs = [
        {"start": StepCost("master", 100, 900), "warm-up": StepCost("master", 10, 100)},
        {"start": StepCost("master", 110, 1200)},
        {"start": StepCost("master", 90, 1000), "warm-up": StepCost("master", 14, 90)},
    ]
    assert median_steps(runs) == {"start": StepCost("master", 100, 1000), "warm-up": StepCost("master", 12, 95)}


def sample(end_s: float, latency_s: float, pid: int | None, status: int | None = 200) -> Sample:
    return Sample(end_s - latency_s, end_s, status, None if status else "ConnectionResetError", False, pid)


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([], []),
        ([sample(1.0, 0.01, 7), sample(2.0, 0.01, 7)], []),  # no recycle
        # One recycle: the old worker's last answer at 1.0, the new one's first (0.5 s) at 1.5; median 0.01 s.
        (
            [sample(0.9, 0.01, 7), sample(1.0, 0.01, 7), sample(1.5, 0.5, 8), sample(1.6, 0.01, 8)]
            + [sample(2.0 + index, 0.01, 8) for index in range(5)],
            [490],
        ),
        # The worst request is another client's, still within 250 ms after the new worker's first answer.
        (
            [sample(1.0, 0.01, 7), sample(1.2, 0.1, 8), sample(1.4, 0.3, 8)]
            + [sample(2.0 + index, 0.01, 8) for index in range(5)],
            [290],
        ),
        # Two recycles; a failed request (no pid) inside the window counts with its latency.
        (
            [sample(1.0, 0.01, 7), sample(1.1, 0.2, None, None), sample(1.3, 0.05, 8)]
            + [sample(2.0 + index, 0.01, 8) for index in range(5)]
            + [sample(8.0, 0.11, 9)],
            [190, 100],
        ),
    ],
)
def test_the_recycle_gap_is_the_worst_latency_around_each_recycle_over_the_median(samples, expected):
    assert recycle_extra_ms(samples) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("latencies_s", "expected_ms"),
    [([], None), ([0.01] * 99 + [0.5], 10.0), ([0.01] * 98 + [None, None], 5000.0)],
)
def test_a_failed_probe_counts_as_the_whole_timeout(latencies_s, expected_ms):
    assert probe_p99_ms(latencies_s) == (None if expected_ms is None else pytest.approx(expected_ms))


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       300 |        300 |   _io
import time:       500 |        800 | encodings
import time:      2000 |       2000 |       email.utils
import time:       100 |       2100 |     gunicorn.util
import time:       400 |       2500 |   gunicorn.app
import time:      1000 |       3500 | gunicorn
import time:      4000 |       4000 |         jinja2
import time:      3000 |       3000 |         ctypes
import time:       500 |       7500 |       flask
import time:       200 |       7700 |     fitflix
import time:      1500 |       1500 |     dataclasses
import time:       600 |       9800 |   fitflix.memory
import time:       100 |       9900 | wsgi
"""
STDLIB = frozenset({"_io", "encodings", "email", "ctypes", "dataclasses"})


def test_importtime_lines_keep_their_depth_and_give_stdlib_modules_to_their_importer():
    imports = {item.module: item for item in parse_importtime(IMPORTTIME, STDLIB)}
    assert len(imports) == 13
    assert (imports["gunicorn.util"].self_us, imports["gunicorn.util"].cumulative_us) == (100, 2100)
    assert [imports[name].depth for name in ("encodings", "_io", "gunicorn.util", "jinja2")] == [0, 1, 2, 4]
    expected = {
        "_io": STARTUP,  # under encodings, which Python's startup imports
        "encodings": STARTUP,
        "email.utils": "gunicorn.util",
        "jinja2": "jinja2",  # a package of its own, whoever imports it
        "ctypes": "flask",  # the nearest importer that is not the standard library's
        "dataclasses": "fitflix.memory",
        "fitflix": "fitflix",
    }
    assert {name: imports[name].importer for name in expected} == expected
    assert imports["email.utils"].owner == "gunicorn"
    assert imports["_io"].owner == STARTUP


def test_heaviest_and_by_owner_take_the_least_over_the_runs():
    """Wall times on a shared machine: interference only adds, so the least of the runs is the cost."""
    first = parse_importtime(IMPORTTIME.replace("|       9900 | wsgi", "|      12900 | wsgi"), STDLIB)
    second = parse_importtime(IMPORTTIME.replace("  4000 |       4000 |", " 9000 |       9000 |"), STDLIB)
    third = parse_importtime(IMPORTTIME.replace("|       9900 | wsgi", "|      11900 | wsgi"), STDLIB)
    assert heaviest_imports([first, second, third], 2) == [("wsgi", 9.9, 0.1), ("fitflix.memory", 9.8, 0.6)]
    owners = self_ms_by([first, second], lambda item: item.owner)
    assert owners == pytest.approx(
        {"jinja2": 4.0, "gunicorn": 3.5, "flask": 3.5, "fitflix": 2.3, STARTUP: 0.8, "wsgi": 0.1}
    )
    assert list(owners)[0] == "jinja2"  # heaviest first


@pytest.mark.parametrize(
    ("fitflix_s", "plain_s", "met"),
    [([3.1, 3.2, 3.3], [3.0, 3.3, 3.4], True), ([3.2, 3.3], [3.1, 3.2], False), ([], [3.1], None)],
)
def test_the_target_compares_medians(fitflix_s, plain_s, met):
    by_peer = {"fitflix": fitflix_s, "plain -w 1 --max-requests 100": plain_s}
    target = first_health_target(by_peer, {"fitflix": [320.0], "plain -w 1 --max-requests 100": [318.0]})
    assert target.met is met


@pytest.mark.parametrize(("fitflix_ms", "met"), [([1.9, 2.0, 2.6], True), ([2.4, 2.5], False)])
def test_the_worker_init_target_is_plain_gunicorns_cpu_plus_a_millisecond(fitflix_ms, met):
    def runs(cpu_ms: list[float]) -> list[dict[str, StepCost]]:
        return [{"worker-init": StepCost("worker", value, value * 10)} for value in cpu_ms]

    target = worker_init_target({"fitflix": runs(fitflix_ms), "plain -w 1 --max-requests 100": runs([1.0, 1.2])})
    assert target.met is met and "plain 1.1" in target.measured
    assert worker_init_target({"fitflix": runs([2.0]), "plain -w 1": []}).met is None


def test_the_bench_and_the_boot_config_agree_on_the_switch_that_drops_the_base_config():
    source = small_instance.BOOT_CONF.read_text()  # read, not imported: importing it would run gunicorn.conf.py
    assert f'BASE_VARIABLE = "{small_instance.BOOT_BASE_VARIABLE}"' in source
    for hook in ("on_starting", "when_ready", "pre_fork", "post_fork", "post_worker_init", "post_request"):
        assert f"def {hook}(" in source
