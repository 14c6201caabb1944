"""`python -m fitflix plan [--json] [APP]`: the serving plan and its inputs, as gunicorn's config would use them.

Run it where gunicorn runs (the `.env` read is the working folder's), with the app gunicorn
serves: `python -m fitflix plan myproject.wsgi:application`; this repository's `wsgi:app` when
none is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fitflix.memory.reader import own_private_bytes, own_rss_bytes
from fitflix.memory.report import measure_container
from fitflix.serving.sizing import (
    FRESH_WORKER_ALLOWANCE_MB,
    MIB,
    PlanError,
    budget_problem,
    cgroup_source,
    make_plan,
    with_app_baseline,
)
from fitflix.settings import OPTIMIZED, PROFILE_DEFAULTS, SettingsError, load_settings, setting_origins

DEFAULT_APP = "wsgi:app"  # this repository's entry point, as gunicorn.conf.py names it


def cgroup_limit_origin(container) -> str:
    """Where the cgroup's limit came from, with the file; memory.high says what it is below."""
    if not container.cgroup_version:
        return "no memory cgroup"
    origin = cgroup_source(container.cgroup_version, container.cgroup_limit_file)
    if container.cgroup_limit_file == "memory.high":
        below = f"memory.max {container.cgroup_max_bytes // MIB} MB" if container.cgroup_max_bytes else "no memory.max"
        origin += f", below {below}: the kernel throttles there, so the plan is made for it"
    return origin


def plan_rows(plan, container, origins: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(name, value, where it came from) for every input and derived value.

    `origins` (settings.setting_origins) says for each variable named whether it was set, came from .env
    or is a (profile's) default.
    """

    def var(*names: str) -> str:
        return ", ".join(f"{name} ({origins[name]})" if origins else name for name in names)

    return [
        ("limit", f"{plan.limit_mb} MB", plan.limit_source),
        (
            "host memory",
            "unknown" if container.host_memory_bytes is None else f"{container.host_memory_bytes // MIB} MB",
            container.host_memory_source,
        ),
        (
            "cgroup limit",
            f"{container.cgroup_limit_bytes // MIB} MB" if container.cgroup_limit_bytes else "none",
            cgroup_limit_origin(container),
        ),
        ("CPUs", f"{plan.cpus:g}", plan.cpu_source),
        ("clustering", "enabled" if plan.clustering else "disabled", var("ENABLE_CLUSTERING")),
        ("workers", str(plan.workers), "; ".join(plan.notes)),
        ("workers the memory holds", str(plan.workers_memory_holds), "critical level less the master, per worker"),
        ("worker class", f"{plan.worker_class} x {plan.threads} threads", var("THREADS")),
        ("worker budget", f"{plan.worker_budget_mb} MB", f"the lower of the two below: {plan.budget_rule} applies"),
        (
            "absolute budget",
            f"{plan.absolute_budget_mb} MB",
            f"{var('WORKER_MAX_MEMORY_MB')} or (warn level - master) / workers",
        ),
        (
            "relative budget",
            "off"
            if not plan.memory_multiple
            else f"{plan.relative_budget_mb} MB"
            if plan.relative_budget_mb is not None
            else f"{plan.memory_multiple} x the app's size",
            f"{plan.memory_multiple} x the app's size at start ({plan.app_baseline_mb:.0f} MB here): "
            f"{plan.memory_multiple_source}"
            if plan.memory_multiple and plan.app_baseline_mb
            else plan.memory_multiple_source,
        ),
        (
            "recycle order",
            "replace, then retire" if plan.replace_first else "retire, then replace",
            f"{var('RECYCLE_REPLACE_FIRST')}; the replacement boots first where a fresh worker "
            f"({FRESH_WORKER_ALLOWANCE_MB} MB) and both workers' growth until the old one is gone fit under the "
            "critical level",
        ),
        ("worker hard cap", f"{plan.worker_hard_cap_mb} MB", "budget + (critical - warn level) / workers"),
        ("master reserve", f"{plan.master_reserve_mb} MB", "measured master + shared pages"),
        (
            "max_requests",
            f"{plan.max_requests} (+0..{plan.max_requests_jitter} jitter)",
            var("MAX_REQUESTS", "MAX_REQUESTS_JITTER"),
        ),
        ("request timeout", f"{plan.timeout_s} s", var("WORKER_TIMEOUT_S")),
        (
            "drain / graceful",
            f"{plan.drain_s} s / {plan.graceful_timeout_s} s",
            f"{var('DRAIN_S')}; on SIGTERM, ready answers 503 while serving, "
            "then in-flight requests get the rest of 25 s",
        ),
        (
            "request head timeout",
            f"{plan.head_timeout_s} s",
            f"{var('HEAD_TIMEOUT_S')}; slow heads never hold a thread",
        ),
        (
            "thresholds",
            f"warn {plan.warn_percent}%, critical {plan.critical_percent}%",
            var("MEMORY_WARN_PERCENT", "MEMORY_CRITICAL_PERCENT"),
        ),
        (
            "memory profile",
            plan.memory_profile,
            f"{var('MEMORY_PROFILE')}: the defaults of {', '.join(PROFILE_DEFAULTS[OPTIMIZED])}",
        ),
        ("worker GC", f"gen-0 at {plan.gc_threshold}" if plan.gc_threshold else "Python's own", var("GC_THRESHOLD")),
        ("heap trim", f"after {plan.heap_trim_mb} MB of growth" if plan.heap_trim_mb else "never", var("HEAP_TRIM_MB")),
        (
            "malloc arenas",
            str(plan.malloc_arena_max) if plan.malloc_arena_max else "glibc's own (8 x cores)",
            var("MALLOC_ARENA_MAX"),
        ),
    ]


def load_app(name: str) -> str | None:
    """Import the app as gunicorn does (`module:callable`, or a factory call); why it cannot be, or None."""
    from gunicorn.errors import AppImportError
    from gunicorn.util import import_app

    sys.path.insert(0, str(Path.cwd()))  # where gunicorn looks for it too
    try:
        import_app(name)
    except (AppImportError, ImportError) as error:
        return (
            f"python -m fitflix plan: cannot load the app {name!r} ({error}); give the one gunicorn serves, "
            "as gunicorn names it: python -m fitflix plan myproject.wsgi:application"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fitflix")
    commands = parser.add_subparsers(dest="command", required=True)
    plan_command = commands.add_parser("plan", help="print the serving plan and its inputs")
    plan_command.add_argument("--json", action="store_true", help="one JSON object, for machines")
    plan_command.add_argument(
        "app",
        nargs="?",
        default=DEFAULT_APP,
        help=f"the app as gunicorn names it, loaded as the master preloads it (default: {DEFAULT_APP})",
    )
    args = parser.parse_args(argv)

    try:
        settings = load_settings(Path.cwd() / ".env")
    except SettingsError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    container = measure_container()
    try:
        plan = make_plan(settings, container)
    except PlanError as error:
        sys.stderr.write(f"FitFlix cannot start: {error}\n")
        return 2
    problem = load_app(args.app)  # as the master preloads it, for a real baseline
    if problem:
        sys.stderr.write(f"{problem}\n")
        return 2

    private = own_private_bytes()
    plan = with_app_baseline(plan, private / MIB if private else None)
    baseline = own_rss_bytes()
    baseline_mb = baseline / MIB if baseline else 0.0
    problem = budget_problem(plan, baseline_mb, settings.worker_max_memory_mb is not None)
    if args.json:
        document = {
            "plan": plan.as_dict(),
            "container": container.__dict__,
            "workerBaselineMb": round(baseline_mb, 1),
            "problem": problem,
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        rows = plan_rows(plan, container, setting_origins()) + [
            ("worker baseline", f"{baseline_mb:.0f} MB", "this process after loading the app")
        ]
        width = max(len(name) for name, _value, _source in rows)
        value_width = max(len(value) for _name, value, _source in rows)
        lines = [f"{name:<{width}}  {value:<{value_width}}  {source}" for name, value, source in rows]
        lines += [f"warning: {warning}" for warning in plan.warnings]
        if problem:
            lines.append(f"refused: {problem}")
        sys.stdout.write("\n".join(lines) + "\n")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
