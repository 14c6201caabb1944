"""make_plan and budget_problem: how many workers, with what budgets, from which limit."""

from __future__ import annotations

import pytest

from fitflix.serving.sizing import (
    MASTER_RESERVE_MB,
    MIB,
    Container,
    budget_problem,
    make_plan,
    own_worker_cannot_serve,
    plan_changes,
    resize_plan,
    resolve_limit,
)
from fitflix.settings import Settings
from tests.fakes import container

HOST_4GB = 4096


# Each expected figure is worked out by hand from the rules in sizing.py:
#   holds  = floor((limit x critical% - 48) / (WORKER_MAX_MEMORY_MB or 256)), at least 1
#   budget = WORKER_MAX_MEMORY_MB, else floor((limit x warn% - 48) / workers)
#   cap    = budget + floor(limit x (critical% - warn%) / workers)
PLANS = [
    pytest.param(
        container(512, 1),
        {},
        (512, "cgroup v1"),
        1,
        361,
        412,
        "clustering disabled",
        None,
        id="clustering off -> 1 worker",
    ),
    pytest.param(
        container(1024, 2),
        {"ENABLE_CLUSTERING": "true"},
        (1024, "cgroup v2"),
        3,
        257,
        291,
        "min(2 x 2 CPUs + 1 = 5, 3 workers of 256 MB in 922 MB) = 3",
        None,
        id="clustering at 1024 MB, 2 CPUs -> memory-bound 3",
    ),
    pytest.param(
        container(512, 2),
        {"ENABLE_CLUSTERING": "true"},
        (512, "cgroup v2"),
        1,
        361,
        412,
        "the limit 512 MB is below CLUSTER_MIN_MEMORY_MB=1024: one worker",
        None,
        id="clustering at 512 MB -> 1 worker, says why",
    ),
    pytest.param(
        container(512, 2),
        {"ENABLE_CLUSTERING": "true", "CLUSTER_MIN_MEMORY_MB": "512"},
        (512, "cgroup v2"),
        1,
        361,
        412,
        "clustering: min(2 x 2 CPUs + 1 = 5, 1 workers of 256 MB in 461 MB) = 1",
        None,
        id="clustering allowed at 512 MB still fits 1",
    ),
    pytest.param(
        container(4096, 2, cpus=8),
        {"ENABLE_CLUSTERING": "yes"},
        (4096, "cgroup v2"),
        14,
        230,
        259,
        "= 14",
        None,
        id="clustering at 4 GB, 8 CPUs -> memory-bound 14",
    ),
    pytest.param(
        container(2048, 2, cpus=1.5),
        {"ENABLE_CLUSTERING": "1"},
        (2048, "cgroup v2"),
        4,
        397,
        448,
        "2 x 1.5 CPUs + 1 = 4",
        None,
        id="fractional CPU quota 1.5 -> 4 workers",
    ),
    pytest.param(
        container(2048, 1, cpus=0.5),
        {"ENABLE_CLUSTERING": "true"},
        (2048, "cgroup v1"),
        2,
        795,
        897,
        "2 x 0.5 CPUs + 1 = 2",
        None,
        id="fractional CPU quota 0.5 -> 2 workers",
    ),
    pytest.param(
        container(None, cpus=0.25),
        {"ENABLE_CLUSTERING": "true", "MAX_MEMORY_MB": "2048"},
        (2048, "env"),
        1,
        1590,
        1794,
        "2 x 0.25 CPUs + 1 = 1",
        None,
        id="a quarter CPU -> 1 worker",
    ),
    pytest.param(
        container(512, 1),
        {"WEB_CONCURRENCY": "4", "MAX_MEMORY_MB": "512"},
        (512, "env"),
        4,
        90,
        102,
        "WEB_CONCURRENCY=4 sets the worker count",
        "WEB_CONCURRENCY=4 is more workers than 512 MB holds at 256 MB each (1)",
        id="WEB_CONCURRENCY wins past what memory holds, with a warning",
    ),
    pytest.param(
        container(1024, 2),
        {"WEB_CONCURRENCY": "2", "ENABLE_CLUSTERING": "true"},
        (1024, "cgroup v2"),
        2,
        385,
        436,
        "WEB_CONCURRENCY=2 sets the worker count",
        None,
        id="WEB_CONCURRENCY wins over the CPU rule, no warning when it fits",
    ),
    pytest.param(
        container(1024, 2),
        {"WEB_CONCURRENCY": "3"},
        (1024, "cgroup v2"),
        3,
        257,
        291,
        "WEB_CONCURRENCY=3 sets the worker count",
        None,
        id="WEB_CONCURRENCY wins with clustering off",
    ),
    pytest.param(
        container(1024, 2),
        {"ENABLE_CLUSTERING": "true", "WORKER_MAX_MEMORY_MB": "200"},
        (1024, "cgroup v2"),
        4,
        200,
        225,
        "4 workers of 200 MB",
        None,
        id="WORKER_MAX_MEMORY_MB overrides the budget and the sizing",
    ),
    pytest.param(
        container(512, 1),
        {"WORKER_MAX_MEMORY_MB": "300"},
        (512, "cgroup v1"),
        1,
        300,
        351,
        "clustering disabled",
        None,
        id="WORKER_MAX_MEMORY_MB overrides one worker's budget",
    ),
    pytest.param(
        container(512, 1, host_mb=8192),
        {"MAX_MEMORY_MB": "768"},
        (768, "env"),
        1,
        566,
        642,
        "clustering disabled",
        "MAX_MEMORY_MB=768 is above the cgroup's own limit of 512 MB",
        id="MAX_MEMORY_MB wins over the cgroup, with a warning",
    ),
    pytest.param(
        container(1024, 1, host_mb=8192),
        {},
        (1024, "cgroup v1"),
        1,
        771,
        873,
        "clustering disabled",
        None,
        id="the cgroup wins over the host",
    ),
    pytest.param(
        container(None, host_mb=2048),
        {},
        (2048, "host"),
        1,
        1590,
        1794,
        "clustering disabled",
        None,
        id="the host when there is no cgroup limit",
    ),
    pytest.param(
        container(2048, 2, cpus=4),
        {"ENABLE_CLUSTERING": "true", "MEMORY_WARN_PERCENT": "70", "MEMORY_CRITICAL_PERCENT": "95"},
        (2048, "cgroup v2"),
        7,
        197,
        270,
        "= 7",
        None,
        id="other warning and critical levels move budget and cap",
    ),
]


@pytest.mark.parametrize(
    ("measured", "environ", "limit", "workers", "budget_mb", "hard_cap_mb", "note", "warning"), PLANS
)
def test_make_plan(measured, environ, limit, workers, budget_mb, hard_cap_mb, note, warning):
    plan = make_plan(Settings.from_env(environ), measured)

    assert (plan.limit_mb, plan.limit_source) == limit
    assert plan.workers == workers
    assert plan.worker_budget_mb == budget_mb
    assert plan.worker_hard_cap_mb == hard_cap_mb
    assert any(note in line for line in plan.notes), plan.notes
    if warning is None:
        assert plan.warnings == ()
    else:
        assert any(warning in line for line in plan.warnings), plan.warnings


@pytest.mark.parametrize(
    ("cgroup_mb", "version", "environ", "expected"),
    [
        (512, 1, {"MAX_MEMORY_MB": "1024"}, (1024, "env")),
        (512, 1, {}, (512, "cgroup v1")),
        (512, 2, {}, (512, "cgroup v2")),
        (None, None, {}, (HOST_4GB, "host")),
    ],
)
def test_resolve_limit_order(cgroup_mb, version, environ, expected):
    assert resolve_limit(Settings.from_env(environ), container(cgroup_mb, version)) == expected


@pytest.mark.parametrize(
    "environ",
    [{}, {"ENABLE_CLUSTERING": "true"}, {"WEB_CONCURRENCY": "3"}, {"ENABLE_CLUSTERING": "true", "THREADS": "2"}],
)
def test_the_plan_keeps_the_whole_service_under_its_levels(environ):
    plan = make_plan(Settings.from_env(environ), container(1024, 2))

    assert MASTER_RESERVE_MB + plan.workers * plan.worker_budget_mb <= 1024 * 0.8
    assert MASTER_RESERVE_MB + plan.workers * plan.worker_hard_cap_mb <= 1024 * 0.9


@pytest.mark.parametrize(
    "environ",
    [
        {"WORKER_MAX_MEMORY_MB": "2000"},
        {"WORKER_MAX_MEMORY_MB": "2000", "ENABLE_CLUSTERING": "true", "CLUSTER_MIN_MEMORY_MB": "512"},
    ],
)
def test_a_worker_budget_larger_than_the_limit_is_warned_about(environ):
    plan = make_plan(Settings.from_env(environ), container(512, 2))

    assert any("WORKER_MAX_MEMORY_MB=2000" in warning for warning in plan.warnings), plan.warnings


def test_plan_carries_the_settings_it_serves():
    settings = Settings.from_env({"THREADS": "4", "MAX_REQUESTS": "500", "MAX_REQUESTS_JITTER": "50"})

    plan = make_plan(settings, container(512, 2, cpus=1.5))

    assert (plan.threads, plan.max_requests, plan.max_requests_jitter) == (4, 500, 50)
    assert (plan.cpus, plan.cpu_source) == (1.5, "CPU affinity")
    assert (plan.warn_percent, plan.critical_percent) == (80, 90)
    assert plan.worker_class == "fitflix.serving.h1worker.FitflixWorker"
    assert plan.as_dict()["workers"] == plan.workers


def test_worker_gthread_plans_todays_worker():
    plan = make_plan(Settings.from_env({"WORKER": "gthread"}), container(512, 2, cpus=1.5))

    assert plan.worker_class == "fitflix.serving.worker.HeadFirstWorker"


@pytest.mark.parametrize(("drain", "graceful"), [("0", 25), ("5", 20), ("20", 5)])
def test_drain_and_graceful_timeout_share_25_of_the_platforms_30_s(drain, graceful):
    plan = make_plan(Settings.from_env({"DRAIN_S": drain, "HEAD_TIMEOUT_S": "7"}), container(512, 2))

    assert (plan.drain_s, plan.graceful_timeout_s, plan.head_timeout_s) == (int(drain), graceful, 7)
    assert plan.drain_s + plan.graceful_timeout_s == 25


def test_no_jitter_without_max_requests():
    plan = make_plan(Settings.from_env({"MAX_REQUESTS": "0"}), container(512, 2))

    assert (plan.max_requests, plan.max_requests_jitter) == (0, 0)


def test_budget_problem_none_when_the_budget_holds_the_baseline():
    plan = make_plan(Settings(), container(512, 1))  # budget 361 MB

    assert budget_problem(plan, baseline_mb=40.0, budget_from_env=False) is None
    assert budget_problem(plan, baseline_mb=361.0, budget_from_env=False) is None


def test_budget_problem_names_worker_max_memory_mb_when_it_came_from_the_environment():
    plan = make_plan(Settings.from_env({"WORKER_MAX_MEMORY_MB": "20"}), container(512, 1))

    problem = budget_problem(plan, baseline_mb=35.2, budget_from_env=True)

    assert problem is not None
    assert problem.startswith("WORKER_MAX_MEMORY_MB=20: ")
    assert "about 35 MB" in problem
    assert "expected at least 36" in problem


def test_budget_problem_explains_a_limit_too_small_for_the_workers():
    plan = make_plan(Settings.from_env({"WEB_CONCURRENCY": "16"}), container(512, 2))  # 22 MB each

    problem = budget_problem(plan, baseline_mb=30.0, budget_from_env=False)

    assert plan.worker_budget_mb == 22
    assert problem is not None
    assert "512 MB limit (cgroup v2)" in problem
    assert "each of 16 worker(s) 22 MB" in problem
    assert "below the 30 MB" in problem
    assert "WORKER_MAX_MEMORY_MB" not in problem
    assert "MEMORY_PROFILE" not in problem


def test_budget_problem_names_the_profile_when_it_lowered_the_budget():
    # 96 MB: standard leaves one worker 28 MB, memory-optimized (65 %) 14 MB; both below a 33 MB baseline.
    plan = make_plan(Settings.from_env({"MEMORY_PROFILE": "memory-optimized", "MAX_MEMORY_MB": "96"}), container())

    problem = budget_problem(plan, baseline_mb=33.0, budget_from_env=False)

    assert plan.worker_budget_mb == 14
    assert problem.endswith("or raise MEMORY_WARN_PERCENT (65% here: MEMORY_PROFILE=memory-optimized)")


@pytest.mark.parametrize("environ", [{}, {"ENABLE_CLUSTERING": "true"}, {"MEMORY_CRITICAL_PERCENT": "95"}])
@pytest.mark.parametrize("workers", [1, 2, 5, 9])
def test_resized_budgets_are_those_a_plan_for_that_many_workers_would_have(environ, workers):
    plan = make_plan(Settings.from_env(environ), container(1024, 2))
    direct = make_plan(Settings.from_env({**environ, "WEB_CONCURRENCY": str(workers)}), container(1024, 2))

    resized = resize_plan(plan, workers)

    assert (resized.workers, resized.worker_budget_mb, resized.worker_hard_cap_mb) == (
        workers,
        direct.worker_budget_mb,
        direct.worker_hard_cap_mb,
    )
    assert MASTER_RESERVE_MB + workers * resized.worker_hard_cap_mb <= 1024 * resized.critical_percent / 100


def test_a_budget_fixed_by_worker_max_memory_mb_stays_when_workers_change():
    plan = make_plan(Settings.from_env({"WORKER_MAX_MEMORY_MB": "100"}), container(1024, 2))

    resized = resize_plan(plan, 4)

    assert (resized.workers, resized.worker_budget_mb) == (4, 100)
    assert resized.worker_hard_cap_mb == 100 + (1024 * 0.9 - 1024 * 0.8) // 4


def test_resizing_to_no_workers_keeps_the_plan():
    plan = make_plan(Settings(), container(512, 2))
    assert resize_plan(plan, 0) is plan  # WINCH stops every worker; there is nothing to budget


def test_plan_changes_name_each_moved_figure():
    old = make_plan(Settings(), container(512, 2))
    new = make_plan(Settings(threads=4, web_concurrency=2), container(512, 2))
    assert plan_changes(old, new) == [
        "workers 1 -> 2",
        "threads 8 -> 4",
        f"worker_budget_mb {old.worker_budget_mb} -> {new.worker_budget_mb}",
        f"worker_hard_cap_mb {old.worker_hard_cap_mb} -> {new.worker_hard_cap_mb}",
    ]
    assert plan_changes(old, old) == []


def host(memory_mb: int = 24105):
    """A machine with no memory cgroup limit: the host's memory is the limit."""
    from fitflix.memory.container import Container

    return Container(None, 1, memory_mb * 1024 * 1024, 2.0, "CPU affinity")


@pytest.mark.parametrize(
    ("environ", "on_host", "multiple", "source_start"),
    [
        ({}, True, 3, "the default where no memory limit exists"),
        ({}, False, 0, "off: the limit is real (cgroup v1)"),
        ({"MAX_MEMORY_MB": "512"}, True, 0, "off: the limit is real (env)"),
        ({"WORKER_MAX_MEMORY_MB": "200"}, True, 0, "off: WORKER_MAX_MEMORY_MB sets the budget"),
        ({"WORKER_MEMORY_MULTIPLE": "5"}, False, 5, "WORKER_MEMORY_MULTIPLE"),
        ({"WORKER_MEMORY_MULTIPLE": "0"}, True, 0, "off (WORKER_MEMORY_MULTIPLE=0)"),
    ],
)
def test_the_relative_budget_is_on_by_default_only_where_no_limit_or_budget_was_given(
    environ, on_host, multiple, source_start
):
    plan = make_plan(Settings.from_env(environ), host() if on_host else container(512, 1))
    assert plan.memory_multiple == multiple
    assert plan.memory_multiple_source.startswith(source_start)


def test_the_lower_budget_wins_and_says_which():
    from fitflix.serving.sizing import budget_summary, with_app_baseline

    plan = make_plan(Settings(), host())
    assert plan.worker_budget_mb == plan.absolute_budget_mb == 19236 and plan.relative_budget_mb is None
    measured = with_app_baseline(plan, 31.3)
    assert (measured.relative_budget_mb, measured.worker_budget_mb, measured.budget_rule) == (94, 94, "relative")
    assert measured.absolute_budget_mb == 19236 and measured.worker_hard_cap_mb == plan.worker_hard_cap_mb
    assert "relative 94 MB (3 x the app's 31 MB): relative applies" in budget_summary(measured)
    # A big app: 3 x its size is above the absolute budget, which then applies.
    big = with_app_baseline(make_plan(Settings(worker_memory_multiple=3), container(512, 2)), 150.0)
    assert (big.relative_budget_mb, big.worker_budget_mb, big.budget_rule) == (450, 361, "absolute")


def test_ttin_keeps_the_relative_budget_and_resizes_the_absolute_one():
    from fitflix.serving.sizing import resize_plan, with_app_baseline

    measured = with_app_baseline(make_plan(Settings(worker_memory_multiple=2), container(1024, 2)), 100.0)
    assert (measured.workers, measured.worker_budget_mb, measured.budget_rule) == (1, 200, "relative")
    four = resize_plan(measured, 4)
    assert four.absolute_budget_mb == (1024 * 80 // 100 - 48) // 4  # 192: now below the relative 200
    assert (four.worker_budget_mb, four.budget_rule, four.relative_budget_mb) == (192, "absolute", 200)
    assert resize_plan(four, 1).worker_budget_mb == 200


def v2_container(limit_mb: int, limit_file: str, max_mb: int | None = None):
    return Container(
        cgroup_limit_bytes=limit_mb * MIB,
        cgroup_version=2,
        host_memory_bytes=8192 * MIB,
        cpus=1.0,
        cpu_source="CPU affinity",
        cgroup_limit_file=limit_file,
        cgroup_max_bytes=(max_mb or limit_mb) * MIB,
    )


def test_on_v2_the_limit_names_its_file_and_memory_high_sizes_the_plan():
    by_max = make_plan(Settings(), v2_container(512, "memory.max"))
    by_high = make_plan(Settings(), v2_container(384, "memory.high", max_mb=512))

    assert (by_max.limit_mb, by_max.limit_source) == (512, "cgroup v2 memory.max")
    assert (by_high.limit_mb, by_high.limit_source) == (384, "cgroup v2 memory.high")
    assert by_high.worker_budget_mb < by_max.worker_budget_mb
    assert by_high.worker_hard_cap_mb < 384 * by_high.critical_percent / 100


def test_max_memory_mb_above_memory_high_warns_that_the_kernel_throttles_there():
    plan = make_plan(Settings(max_memory_mb=512), v2_container(384, "memory.high", max_mb=512))

    assert (plan.limit_mb, plan.limit_source) == (512, "env")
    assert plan.warnings == (
        "MAX_MEMORY_MB=512 is above the cgroup's own limit of 384 MB: the kernel throttles and reclaims at "
        "memory.high, so usage is judged on the cgroup's working set",
    )


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({}, None),
        ({"is_ssl": True}, "TLS (certfile/keyfile) is on"),
        ({"protocol": "uwsgi"}, "protocol=uwsgi is on"),
        ({"proxy_protocol": "v2"}, "proxy_protocol=v2 is on"),
        ({"http_protocols": ["h2", "h1"]}, "HTTP/2 is among http_protocols"),
        ({"has_epoll": False}, "this host has no epoll"),
    ],
)
def test_what_fitflixs_own_worker_cannot_serve_is_named(options, reason):
    server = {"is_ssl": False, "protocol": "http", "proxy_protocol": "off", "http_protocols": ["h1"], "has_epoll": True}

    assert own_worker_cannot_serve(**{**server, **options}) == reason
