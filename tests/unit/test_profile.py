"""MEMORY_PROFILE: the plan of each profile, every field, and what an explicit variable keeps."""

from __future__ import annotations

import pytest

from fitflix.serving.sizing import SHUTDOWN_BUDGET_S, make_plan, profile_summary
from fitflix.settings import PROFILE_DEFAULTS, Settings, SettingsError
from tests.fakes import container

BOTH = {
    # field: (standard, memory-optimized), at 512 MB (cgroup v1), one worker, 2 CPUs
    # (a default the profiles leave alone is the settings table's, not a copy of it)
    "limit_mb": (512, 512),
    "limit_source": ("cgroup v1", "cgroup v1"),
    "cpus": (2.0, 2.0),
    "cpu_source": ("CPU affinity", "CPU affinity"),
    "clustering": (False, False),
    "workers": (1, 1),
    "workers_memory_holds": (1, 1),
    "worker_class": ("fitflix.serving.h1worker.FitflixWorker",) * 2,
    "threads": (8, 2),
    "worker_budget_mb": (361, 284),  # (512 x 80% - 48) and (512 x 65% - 48)
    "worker_hard_cap_mb": (412, 335),  # + 512 x 10%
    "master_reserve_mb": (48, 48),
    "max_requests": (Settings.max_requests,) * 2,
    "max_requests_jitter": (Settings.max_requests_jitter,) * 2,
    "timeout_s": (Settings.worker_timeout_s,) * 2,
    "graceful_timeout_s": (SHUTDOWN_BUDGET_S - Settings.drain_s,) * 2,
    "head_timeout_s": (Settings.head_timeout_s,) * 2,
    "drain_s": (Settings.drain_s,) * 2,
    "warn_percent": (80, 65),
    "critical_percent": (90, 75),
    "memory_profile": ("standard", "memory-optimized"),
    "gc_threshold": (Settings.gc_threshold,) * 2,
    "heap_trim_mb": (Settings.heap_trim_mb,) * 2,
    "malloc_arena_max": (Settings.malloc_arena_max,) * 2,
    "budget_from_env": (False, False),
    "replace_first": (True, True),
    "memory_multiple": (0, 0),  # a real limit: no relative budget unless WORKER_MEMORY_MULTIPLE is set
    "memory_multiple_source": ("off: the limit is real (cgroup v1); set WORKER_MEMORY_MULTIPLE to add it",) * 2,
    "app_baseline_mb": (None, None),  # measured by the master once the app is loaded
    "absolute_budget_mb": (361, 284),
    "relative_budget_mb": (None, None),
    "budget_rule": ("absolute", "absolute"),
}


@pytest.mark.parametrize(("index", "profile"), [(0, "standard"), (1, "memory-optimized")])
def test_every_field_of_each_profiles_plan(index, profile):
    plan = make_plan(Settings.from_env({"MEMORY_PROFILE": profile}), container(512, 1))
    fields = plan.as_dict()
    assert set(fields) - {"notes", "warnings"} == set(BOTH)
    assert {name: fields[name] for name in BOTH} == {name: values[index] for name, values in BOTH.items()}


def test_memory_optimized_leaves_more_room_below_the_limit():
    standard = make_plan(Settings.from_env({}), container(512, 1))
    optimized = make_plan(Settings.from_env({"MEMORY_PROFILE": "memory-optimized"}), container(512, 1))
    # The seed's ratio went from 400 to 350 of 512 (0.875); ours goes further, since a Python worker's
    # heap grows past its threshold between two reads.
    assert optimized.worker_budget_mb / standard.worker_budget_mb < 0.8
    assert optimized.worker_hard_cap_mb / standard.worker_hard_cap_mb < 0.85


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("THREADS", "8", "threads", 8),
        ("MEMORY_WARN_PERCENT", "70", "warn_percent", 70),
        ("MEMORY_CRITICAL_PERCENT", "90", "critical_percent", 90),
    ],
)
def test_a_variable_set_on_its_own_wins_over_the_profile(variable, value, field, expected):
    plan = make_plan(Settings.from_env({"MEMORY_PROFILE": "memory-optimized", variable: value}), container(512, 1))
    assert getattr(plan, field) == expected
    assert plan.memory_profile == "memory-optimized"


def test_the_knobs_no_profile_sets_work_on_their_own_in_either():
    environ = {"GC_THRESHOLD": "100", "HEAP_TRIM_MB": "4", "MALLOC_ARENA_MAX": "2", "MAX_REQUESTS": "5000"}
    for profile in ("standard", "memory-optimized"):
        plan = make_plan(Settings.from_env({"MEMORY_PROFILE": profile, **environ}), container(512, 1))
        assert (plan.gc_threshold, plan.heap_trim_mb, plan.malloc_arena_max, plan.max_requests) == (100, 4, 2, 5000)


def test_the_profile_names_are_case_insensitive_and_anything_else_is_refused():
    assert Settings.from_env({"MEMORY_PROFILE": "Memory-Optimized"}).memory_profile == "memory-optimized"
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"MEMORY_PROFILE": "lean"})
    assert refused.value.problems == ["MEMORY_PROFILE='lean': expected one of standard, memory-optimized"]


def test_every_profile_default_is_a_variable_the_settings_read():
    from tests.unit.test_deploy_files import variables_read_by_settings

    assert set(PROFILE_DEFAULTS["memory-optimized"]) <= variables_read_by_settings()


def test_the_summary_says_what_the_profile_set():
    plan = make_plan(Settings.from_env({"MEMORY_PROFILE": "memory-optimized"}), container(512, 1))
    assert profile_summary(plan) == (
        "memory-optimized (recycle at 284 MB, cap 335 MB, 2 threads, max_requests 10000, Python's GC, "
        "no trim, glibc's arenas)"
    )
