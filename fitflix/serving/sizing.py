"""The serving plan: pure functions from Settings and the measured container.

Nothing here reads files or the environment; `gunicorn.conf.py` and
`python -m fitflix plan` feed it what `fitflix.memory` measured.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from fitflix.memory.container import MIB, Container
from fitflix.settings import Settings

# Resident memory of the gunicorn master after preloading the app, plus the
# pages it shares with every worker (they appear once in the service's PSS).
# Measured here at 30-35 MiB RSS (`python -m bench --parts 1`); rounded up.
MASTER_RESERVE_MB = 48

# What one worker is sized for when the plan decides how many fit: the same
# 256 MB per worker that Heroku's Python buildpack assumes.
DEFAULT_WORKER_MB = 256

# Render, Heroku and Kubernetes send SIGKILL 30 s after SIGTERM (by default).
# The drain (DRAIN_S, still serving while balancers notice /health/ready's 503)
# and then the graceful timeout (in-flight requests finish) share 25 s of it,
# which leaves the master 5 s to reap its workers and exit.
SHUTDOWN_BUDGET_S = 25

# gunicorn's gthread worker with request heads read on its event loop, so a
# slow client never holds a request thread (fitflix/serving/worker.py).
WORKER_CLASS = "fitflix.serving.worker.HeadFirstWorker"
# FitFlix's own worker: httptools, an epoll loop and app threads (fitflix/serving/h1worker.py).
OWN_WORKER_CLASS = "fitflix.serving.h1worker.FitflixWorker"
WORKER_CLASSES = {"fitflix": OWN_WORKER_CLASS, "gthread": WORKER_CLASS}


def own_worker_cannot_serve(
    is_ssl: bool, protocol: str, proxy_protocol: object, http_protocols: list[str], has_epoll: bool
) -> str | None:
    """Why FitFlix's own worker cannot serve a server configured so (it speaks plain HTTP/1 on epoll); None: it can."""
    if is_ssl:
        return "TLS (certfile/keyfile) is on"
    if protocol != "http":
        return f"protocol={protocol} is on"
    if proxy_protocol not in ("off", False, None):
        return f"proxy_protocol={proxy_protocol} is on"
    if "h2" in http_protocols:
        return "HTTP/2 is among http_protocols"
    if not has_epoll:
        return "this host has no epoll"
    return None


# A worker younger than this is not recycled for memory below its hard cap:
# a fresh worker that inherits a big heap must not flap.
MIN_WORKER_LIFETIME_S = 2.0

# What one more worker costs while it replaces another, when no worker has been measured yet: a fresh
# worker under preload_app holds 5-8 MB of private memory (BENCHMARKS.md, part 1); twice that.
FRESH_WORKER_ALLOWANCE_MB = 16

# The relative budget's multiple where no memory limit exists (the limit is the host's): a worker is
# recycled once its private memory passes this many times the app's own size at start (the master's
# USS after preloading, before the first fork: 31 MB for this service). A busy worker of this service
# holds 9 MB (0.3 x; BENCHMARKS.md, part 13), so 3 x leaves it ten times that before it counts as a
# leak. GitLab's Puma watchdog recycles at 3 x the primary's unique memory (UniqueMemoryGrowth).
DEFAULT_MEMORY_MULTIPLE = 3

# Each worker draws its own recycle threshold in [budget x this, budget], so
# workers that leak alike do not recycle at the same moment.
THRESHOLD_JITTER_FRACTION = 0.10


class PlanError(ValueError):
    """The plan cannot be made from what was measured; the message says what to set."""


@dataclass(frozen=True)
class Plan:
    limit_mb: int
    limit_source: str
    cpus: float
    cpu_source: str
    clustering: bool
    workers: int
    workers_memory_holds: int
    worker_class: str
    threads: int
    worker_budget_mb: int
    worker_hard_cap_mb: int
    master_reserve_mb: int
    max_requests: int
    max_requests_jitter: int
    timeout_s: int
    graceful_timeout_s: int
    head_timeout_s: int
    drain_s: int
    warn_percent: int
    critical_percent: int
    memory_profile: str = "standard"
    gc_threshold: int = 0  # workers' gen-0 GC threshold; 0: Python's own
    heap_trim_mb: int = 0  # malloc_trim after a request that grew a worker this much; 0: never
    malloc_arena_max: int = 0  # glibc's M_ARENA_MAX, set in the master before any thread; 0: glibc's own
    budget_from_env: bool = False  # WORKER_MAX_MEMORY_MB fixed the budget; it stays when workers change
    replace_first: bool = True  # a recycled worker leaves once its replacement serves, where one more fits
    # The relative budget: memory_multiple x the app's size at start (0: off). Until the master has
    # measured the app (app_baseline_mb None) only the absolute budget is known.
    memory_multiple: int = 0
    memory_multiple_source: str = "off"
    app_baseline_mb: float | None = None
    absolute_budget_mb: int | None = None  # from the limit or WORKER_MAX_MEMORY_MB; None: worker_budget_mb
    relative_budget_mb: int | None = None
    budget_rule: str = "absolute"  # which of the two worker_budget_mb is: the lower wins
    notes: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.absolute_budget_mb is None:
            object.__setattr__(self, "absolute_budget_mb", self.worker_budget_mb)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def resolve_limit(settings: Settings, container: Container) -> tuple[int, str]:
    """The memory limit in MB and where it came from: env, cgroup v1/v2, or host."""
    if settings.max_memory_mb is not None:
        return settings.max_memory_mb, "env"
    if container.cgroup_limit_bytes is not None:
        return container.cgroup_limit_bytes // MIB, cgroup_source(container.cgroup_version, container.cgroup_limit_file)
    if container.host_memory_bytes is None:
        raise PlanError(
            f"no memory limit could be found: no memory cgroup, and the host's memory is "
            f"{container.host_memory_source}; set MAX_MEMORY_MB (whole MB, at least 64)"
        )
    return container.host_memory_bytes // MIB, "host"


def cgroup_source(version: int | None, limit_file: str | None) -> str:
    """How a cgroup limit is named: "cgroup v1", or on v2 with its file ("cgroup v2 memory.high")."""
    if version == 2 and limit_file:
        return f"cgroup v2 {limit_file}"
    return f"cgroup v{version}"


def make_plan(settings: Settings, container: Container) -> Plan:
    """Workers, threads, recycling limits and budgets for this container."""
    limit_mb, limit_source = resolve_limit(settings, container)
    critical_mb = limit_mb * settings.memory_critical_percent / 100
    sizing_worker_mb = settings.worker_max_memory_mb or DEFAULT_WORKER_MB
    holds = max(1, math.floor((critical_mb - MASTER_RESERVE_MB) / sizing_worker_mb))
    cpu_rule = max(1, math.floor(2 * container.cpus + 1))
    notes: list[str] = []
    warnings: list[str] = []
    cgroup_limit_mb = container.cgroup_limit_bytes // MIB if container.cgroup_limit_bytes is not None else None
    if settings.max_memory_mb is not None and cgroup_limit_mb is not None and settings.max_memory_mb > cgroup_limit_mb:
        acts = (
            "the kernel throttles and reclaims at memory.high"
            if container.cgroup_limit_file == "memory.high"
            else "the kernel's OOM killer acts at the cgroup's limit"
        )
        warnings.append(
            f"MAX_MEMORY_MB={settings.max_memory_mb} is above the cgroup's own limit of {cgroup_limit_mb} MB: "
            f"{acts}, so usage is judged on the cgroup's working set"
        )

    if settings.web_concurrency is not None:
        workers = settings.web_concurrency
        notes.append(f"WEB_CONCURRENCY={workers} sets the worker count")
        if workers > holds:
            warnings.append(
                f"WEB_CONCURRENCY={workers} is more workers than {limit_mb} MB holds "
                f"at {sizing_worker_mb} MB each ({holds}); each gets a smaller budget"
            )
    elif not settings.enable_clustering:
        workers = 1
        notes.append("clustering disabled: one worker process, memory optimized")
    elif limit_mb < settings.cluster_min_memory_mb:
        workers = 1
        notes.append(
            f"clustering enabled but the limit {limit_mb} MB is below "
            f"CLUSTER_MIN_MEMORY_MB={settings.cluster_min_memory_mb}: one worker"
        )
    else:
        workers = min(cpu_rule, holds)
        notes.append(
            f"clustering: min(2 x {container.cpus:g} CPUs + 1 = {cpu_rule}, "
            f"{holds} workers of {sizing_worker_mb} MB in {critical_mb:.0f} MB) = {workers}"
        )

    budget_mb, hard_cap_mb = worker_budgets(
        limit_mb, settings.memory_warn_percent, settings.memory_critical_percent, workers, settings.worker_max_memory_mb
    )
    room_mb = critical_mb - MASTER_RESERVE_MB
    if settings.worker_max_memory_mb is not None and workers * budget_mb > room_mb:
        warnings.append(
            f"WORKER_MAX_MEMORY_MB={budget_mb} x {workers} worker(s) is more than the {room_mb:.0f} MB "
            f"below the critical level of {limit_mb} MB: workers may reach it before they are recycled, "
            "leaving the master's guard as the only protection"
        )

    multiple, multiple_source = memory_multiple(
        settings.worker_memory_multiple, limit_source, settings.worker_max_memory_mb is not None
    )
    return Plan(
        limit_mb=limit_mb,
        limit_source=limit_source,
        cpus=container.cpus,
        cpu_source=container.cpu_source,
        clustering=settings.enable_clustering,
        workers=workers,
        workers_memory_holds=holds,
        worker_class=WORKER_CLASSES[settings.worker],
        threads=settings.threads,
        worker_budget_mb=budget_mb,
        worker_hard_cap_mb=hard_cap_mb,
        master_reserve_mb=MASTER_RESERVE_MB,
        max_requests=settings.max_requests,
        max_requests_jitter=settings.max_requests_jitter if settings.max_requests else 0,
        timeout_s=settings.worker_timeout_s,
        graceful_timeout_s=SHUTDOWN_BUDGET_S - settings.drain_s,
        head_timeout_s=settings.head_timeout_s,
        drain_s=settings.drain_s,
        warn_percent=settings.memory_warn_percent,
        critical_percent=settings.memory_critical_percent,
        memory_profile=settings.memory_profile,
        gc_threshold=settings.gc_threshold,
        heap_trim_mb=settings.heap_trim_mb,
        malloc_arena_max=settings.malloc_arena_max,
        budget_from_env=settings.worker_max_memory_mb is not None,
        replace_first=settings.recycle_replace_first,
        memory_multiple=multiple,
        memory_multiple_source=multiple_source,
        absolute_budget_mb=budget_mb,
        notes=tuple(notes),
        warnings=tuple(warnings),
    )


def worker_budgets(
    limit_mb: int, warn_percent: int, critical_percent: int, workers: int, fixed_budget_mb: int | None
) -> tuple[int, int]:
    """(budget, hard cap) of each of `workers` workers, in MB.

    Recycle gracefully before the service reaches the warning level; the hard
    cap (where the one-at-a-time rule and the backstop apply) is the worker's
    share of the room up to the critical level, so the master's reserve plus
    every worker at its hard cap stays at the critical level, under the limit.
    """
    critical_mb = limit_mb * critical_percent / 100
    warn_mb = limit_mb * warn_percent / 100
    budget_mb = fixed_budget_mb if fixed_budget_mb is not None else math.floor((warn_mb - MASTER_RESERVE_MB) / workers)
    return budget_mb, budget_mb + math.floor((critical_mb - warn_mb) / workers)


def memory_multiple(setting: int | None, limit_source: str, budget_from_env: bool) -> tuple[int, str]:
    """The relative budget's multiple in force, and why.

    Set, it applies everywhere (0: off). Unset, it applies only where no
    memory limit and no budget was given: there the absolute budget is a
    share of the host's whole memory (19 GB a worker on a 24 GB machine) and
    a leak would grow until the machine swaps. Under a real limit the
    absolute budget is derived from what the kernel enforces, and recycling
    a worker with a big but steady cache at 3 x would cost recycles and buy
    no safety; WORKER_MAX_MEMORY_MB is the operator's own budget.
    """
    if setting is not None:
        return setting, "WORKER_MEMORY_MULTIPLE" if setting else "off (WORKER_MEMORY_MULTIPLE=0)"
    if budget_from_env:
        return 0, "off: WORKER_MAX_MEMORY_MB sets the budget; set WORKER_MEMORY_MULTIPLE to add it"
    if limit_source == "host":
        return DEFAULT_MEMORY_MULTIPLE, "the default where no memory limit exists"
    return 0, f"off: the limit is real ({limit_source}); set WORKER_MEMORY_MULTIPLE to add it"


def with_app_baseline(plan: Plan, app_baseline_mb: float | None) -> Plan:
    """The plan once the app's size at start is measured: the relative budget, and the lower budget in force."""
    relative_mb = (
        math.ceil(plan.memory_multiple * app_baseline_mb) if plan.memory_multiple and app_baseline_mb else None
    )
    relative_wins = relative_mb is not None and relative_mb < plan.absolute_budget_mb
    return replace(
        plan,
        app_baseline_mb=app_baseline_mb,
        relative_budget_mb=relative_mb,
        worker_budget_mb=relative_mb if relative_wins else plan.absolute_budget_mb,
        budget_rule="relative" if relative_wins else "absolute",
    )


def resize_plan(plan: Plan, workers: int) -> Plan:
    """The plan for `workers` live workers (after TTIN/TTOU): budgets follow the count, nothing else moves."""
    if workers < 1 or workers == plan.workers:
        return plan
    budget_mb, hard_cap_mb = worker_budgets(
        plan.limit_mb,
        plan.warn_percent,
        plan.critical_percent,
        workers,
        plan.absolute_budget_mb if plan.budget_from_env else None,
    )
    resized = replace(plan, workers=workers, absolute_budget_mb=budget_mb, worker_hard_cap_mb=hard_cap_mb)
    return with_app_baseline(resized, plan.app_baseline_mb)


PLAN_FIELDS_SHOWN = (
    "limit_mb",
    "workers",
    "threads",
    "worker_budget_mb",
    "worker_hard_cap_mb",
    "max_requests",
    "memory_profile",
)


def plan_changes(old: Plan, new: Plan) -> list[str]:
    """'workers 1 -> 2' for each figure of the plan that moved."""
    return [
        f"{name} {getattr(old, name)} -> {getattr(new, name)}"
        for name in PLAN_FIELDS_SHOWN
        if getattr(old, name) != getattr(new, name)
    ]


def budget_problem(plan: Plan, baseline_mb: float, budget_from_env: bool) -> str | None:
    """Why the plan cannot run, when a worker's budget is below its baseline."""
    if plan.worker_budget_mb >= baseline_mb:
        return None
    if budget_from_env:
        return (
            f"WORKER_MAX_MEMORY_MB={plan.worker_budget_mb}: a worker holds about "
            f"{baseline_mb:.0f} MB at start (measured), so it would be recycled after every "
            f"request; expected at least {math.ceil(baseline_mb)}"
        )
    return (
        f"a {plan.limit_mb} MB limit ({plan.limit_source}) leaves each of {plan.workers} worker(s) "
        f"{plan.worker_budget_mb} MB, below the {baseline_mb:.0f} MB a worker holds at start "
        "(measured); raise MAX_MEMORY_MB or the container's memory, or lower WEB_CONCURRENCY"
        + (
            f", or raise MEMORY_WARN_PERCENT ({plan.warn_percent}% here: MEMORY_PROFILE={plan.memory_profile})"
            if plan.memory_profile != "standard"
            else ""
        )
    )


def budget_summary(plan: Plan) -> str:
    """Both budgets and which applies, for the banner and `python -m fitflix plan`."""
    absolute = f"absolute {plan.absolute_budget_mb} MB"
    if not plan.memory_multiple:
        return f"{absolute} applies; relative {plan.memory_multiple_source}"
    if plan.relative_budget_mb is None:
        relative = f"relative {plan.memory_multiple} x the app's size at start (not measured yet)"
    else:
        relative = (
            f"relative {plan.relative_budget_mb} MB ({plan.memory_multiple} x the app's {plan.app_baseline_mb:.0f} MB)"
        )
    return f"{absolute}, {relative}: {plan.budget_rule} applies ({plan.memory_multiple_source})"


def profile_summary(plan: Plan) -> str:
    """The profile and what it set, for the banner and `python -m fitflix plan`."""
    gc_text = f"GC at {plan.gc_threshold}" if plan.gc_threshold else "Python's GC"
    trim = f"trim after {plan.heap_trim_mb} MB" if plan.heap_trim_mb else "no trim"
    arenas = f"{plan.malloc_arena_max} malloc arenas" if plan.malloc_arena_max else "glibc's arenas"
    return (
        f"{plan.memory_profile} (recycle at {plan.worker_budget_mb} MB, cap {plan.worker_hard_cap_mb} MB, "
        f"{plan.threads} threads, max_requests {plan.max_requests}, {gc_text}, {trim}, {arenas})"
    )


# A process with nothing to do (the arbiter's loop, a worker's loop) waits a quarter of the worker
# timeout, at most this long and at least gunicorn's own second: its heartbeat and hang checks need no more.
IDLE_WAIT_MAX_S = 10.0


def idle_wait_s(timeout_s: float) -> float:
    """How long an idle loop waits (BENCHMARKS part 21); a signal or an event still ends the wait at once."""
    return max(1.0, min(IDLE_WAIT_MAX_S, (timeout_s or 0) / 4))
