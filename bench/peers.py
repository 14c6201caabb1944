"""The peers every part compares, built from the same plan FitFlix would make."""

from __future__ import annotations

from bench.servers import Peer, uwsgi_problem
from fitflix.memory.report import measure_container
from fitflix.serving.sizing import Plan, make_plan
from fitflix.settings import Settings

LIMIT_MB = 512  # Render's 512 MB instance, the reference container
CLUSTER_LIMIT_MB = 1024
PLAIN_WORKERS = 2  # Heroku's WEB_CONCURRENCY for a 512 MB dyno


def plan_for(limit_mb: int, **settings) -> Plan:
    """The plan FitFlix makes in a `limit_mb` container (CPU count measured here)."""
    return make_plan(Settings(max_memory_mb=limit_mb, **settings), measure_container())


def uwsgi_budget_mb(limit_mb: int = LIMIT_MB, workers: int = PLAIN_WORKERS) -> int:
    """The per-worker budget FitFlix gives `workers` workers in `limit_mb`: uWSGI's --reload-on-rss."""
    return plan_for(limit_mb, web_concurrency=workers).worker_budget_mb


def cluster_workers() -> int:
    return plan_for(CLUSTER_LIMIT_MB, enable_clustering=True).workers


def plain(
    app: str = "wsgi:app",
    workers: int = PLAIN_WORKERS,
    limit_mb: int = LIMIT_MB,
    name: str = "plain",
    args: tuple[str, ...] = (),
) -> Peer:
    return Peer(name, "plain", app=app, workers=workers, limit_mb=limit_mb, args=args)


def uwsgi(
    app: str = "wsgi:app",
    workers: int = PLAIN_WORKERS,
    limit_mb: int = LIMIT_MB,
    name: str = "uwsgi",
    args: tuple[str, ...] | None = None,
) -> Peer:
    if args is None:
        args = ("--reload-on-rss", str(uwsgi_budget_mb(limit_mb, workers)))
    return Peer(name, "uwsgi", app=app, workers=workers, limit_mb=limit_mb, args=args)


def granian(
    app: str = "wsgi:app",
    workers: int = PLAIN_WORKERS,
    limit_mb: int = LIMIT_MB,
    name: str = "granian",
    args: tuple[str, ...] | None = None,
) -> Peer:
    """granian's own memory recycling at its fastest: --workers-max-rss at FitFlix's budget, sampled every second."""
    if args is None:
        args = ("--workers-max-rss", str(uwsgi_budget_mb(limit_mb, workers)), "--rss-sample-interval", "1")
    return Peer(name, "granian", app=app, workers=workers, limit_mb=limit_mb, args=args)


def waitress(app: str = "wsgi:app", limit_mb: int = LIMIT_MB, name: str = "waitress", threads: int = 4) -> Peer:
    """waitress: one process with `threads` threads (its default 4); it has no worker recycling."""
    return Peer(name, "waitress", app=app, workers=1, limit_mb=limit_mb, args=(f"--threads={threads}",))


def fitflix(
    app: str = "wsgi:app",
    env: dict[str, str] | None = None,
    limit_mb: int = LIMIT_MB,
    name: str = "fitflix",
    prefix: tuple[str, ...] = (),
) -> Peer:
    return Peer(name, "fitflix", app=app, env=dict(env or {}), limit_mb=limit_mb, prefix=prefix)


def fitflix_cluster(app: str = "wsgi:app", env: dict[str, str] | None = None) -> Peer:
    return fitflix(app, {"ENABLE_CLUSTERING": "true", **(env or {})}, CLUSTER_LIMIT_MB, "fitflix-cluster")


def uwsgi_or_reason() -> str | None:
    return uwsgi_problem()


def all_four(app: str) -> tuple[list[Peer], str | None]:
    """plain, uwsgi (when it is installed), fitflix and fitflix-cluster on `app`; and why uwsgi is missing."""
    reason = uwsgi_or_reason()
    line_up = [plain(app)] + ([uwsgi(app)] if reason is None else []) + [fitflix(app), fitflix_cluster(app)]
    return line_up, reason
