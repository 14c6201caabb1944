"""gunicorn glue: the settings gunicorn.conf.py and fitflix.gunicorn_conf give gunicorn, and its hooks.

Each hook is a few lines, says which process runs it, and hands the work to
tested code in `recycle.py`, `recycler.py`, `monitor.py` and `fitflix.memory`. A hook that
runs in a worker before it has booted must never raise: gunicorn treats that
as a boot error (exit code 3) and shuts the whole server down.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fitflix.memory.heap import set_arena_max
from fitflix.memory.reader import PEAK_NOTE, own_private_bytes, own_rss_bytes, self_memory_reader
from fitflix.memory.report import MemoryProbe, measure_container
from fitflix.serving import backstop
from fitflix.serving.drain import Drain
from fitflix.serving.monitor import MemoryMonitor
from fitflix.serving.recycler import CLEANUP_SIGNAL, WorkerRecycler, clean_up
from fitflix.serving.sizing import (
    MIB,
    OWN_WORKER_CLASS,
    WORKER_CLASS,
    Plan,
    PlanError,
    budget_problem,
    budget_summary,
    make_plan,
    own_worker_cannot_serve,
    plan_changes,
    profile_summary,
    resize_plan,
    with_app_baseline,
)
from fitflix.serving.state import RUNTIME, SharedState
from fitflix.serving.surge import Surge, wake_master
from fitflix.serving.warmup import warm_up
from fitflix.settings import (
    RESTART_ONLY,
    Settings,
    SettingsError,
    load_settings,
    reload_settings,
    setting_changes,
)


@dataclass(frozen=True)
class ServerConfig:
    settings: Settings
    plan: Plan
    worker_tmp_dir: str | None


def _worker_tmp_dir() -> str | None:
    # Worker heartbeat files on tmpfs: a disk-backed /tmp can stall on fsync
    # and get healthy workers killed (gunicorn docs, "Blocking OS calls").
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def load_server_config(dotenv_path: Path) -> ServerConfig:
    """Settings and plan for gunicorn.conf.py; a bad environment ends the start here, before any bind.

    gunicorn runs gunicorn.conf.py again in the master on SIGHUP: then the
    environment and .env are read again (`reload_server_config`).
    """
    if RUNTIME.role == "master" and isinstance(RUNTIME.plan, Plan):
        return reload_server_config(dotenv_path, logging.getLogger("gunicorn.error"))
    try:
        settings = load_settings(dotenv_path)
    except SettingsError as error:
        raise SystemExit(str(error)) from None  # the message on stderr, exit code 1, no traceback
    try:
        plan = make_plan(settings, measure_container())
    except PlanError as error:
        raise SystemExit(f"FitFlix cannot start: {error}") from None
    RUNTIME.plan = plan
    # Here, in the master before any thread exists (the app is preloaded after this file runs):
    # every worker's request threads then share at most this many malloc arenas.
    set_arena_max(plan.malloc_arena_max)
    return ServerConfig(settings, plan, _worker_tmp_dir())


def reload_server_config(dotenv_path: Path, log: logging.Logger) -> ServerConfig:
    """Master, on SIGHUP: re-read, re-plan and say what changed; on a bad value keep everything as it runs."""
    running_settings, running_plan = load_settings(), RUNTIME.plan
    try:
        settings = reload_settings(dotenv_path)
    except SettingsError as error:
        log.error("SIGHUP: keeping the running settings and plan. %s", str(error).replace("FitFlix cannot start: ", ""))
        return ServerConfig(running_settings, running_plan, _worker_tmp_dir())
    try:
        plan = with_app_baseline(make_plan(settings, measure_container()), running_plan.app_baseline_mb)
    except PlanError as error:
        log.error("SIGHUP: keeping the running settings and plan: %s", error)
        return ServerConfig(running_settings, running_plan, _worker_tmp_dir())
    problem = budget_problem_now(plan)
    if problem:  # the start would refuse this plan: workers would recycle after every request
        log.error("SIGHUP: keeping the running settings and plan: %s", problem)
        return ServerConfig(running_settings, running_plan, _worker_tmp_dir())
    changes = setting_changes(running_settings, settings)
    for variable, change in changes:
        log.info("SIGHUP: %s %s%s", variable, change, " (needs a restart)" if variable in RESTART_ONLY else "")
    if not changes:
        log.info("SIGHUP: no setting changed; workers are replaced with the same plan")
    later = sorted(variable for variable, _change in changes if variable in RESTART_ONLY)
    if later:
        log.warning(
            "SIGHUP: %s take effect only after a restart: the app and the memory monitor keep the values they "
            "started with (preload_app)",
            ", ".join(later),
        )
    for note in plan_changes(running_plan, plan):
        log.info("SIGHUP: plan %s", note)
    RUNTIME.plan = plan
    set_arena_max(plan.malloc_arena_max)  # arenas made already stay; new workers' threads follow it
    if RUNTIME.shared is not None:
        RUNTIME.shared.set_planned_workers(plan.workers)
    if _monitor is not None:
        _monitor.plan = plan
        _monitor.probe.limit_mb, _monitor.probe.limit_source = plan.limit_mb, plan.limit_source
    return ServerConfig(settings, plan, _worker_tmp_dir())


def app_baseline_mb() -> float | None:
    """Master, app preloaded, before the first fork: its private memory is the app's own size."""
    private = own_private_bytes()
    return private / MIB if private else None


def budget_problem_now(plan: Plan) -> str | None:
    """Master: why `plan` cannot run, measured against what this master holds after loading the app."""
    master_bytes = own_rss_bytes()
    return budget_problem(plan, master_bytes / MIB if master_bytes else 0.0, plan.budget_from_env)


def server_settings(dotenv_path: Path | str) -> dict[str, object]:
    """gunicorn's settings, by gunicorn's own names, for a service whose `.env` is `dotenv_path`.

    What `fitflix.gunicorn_conf` (`gunicorn -c python:fitflix.gunicorn_conf yourapp:app`) and
    this repository's gunicorn.conf.py set: `globals().update(server_settings(...))` in a config
    file of your own, then change what you like. Command-line flags override all of it (gunicorn
    docs, "Configuration Overview"). No `wsgi_app`: the app is the caller's.
    """
    from fitflix.serving.logs import FitflixLogger

    config = load_server_config(Path(dotenv_path))
    settings, plan = config.settings, config.plan
    return {
        "fitflix_config": config,
        # Render and Heroku send traffic to $PORT on every interface.
        # https://render.com/docs/web-services#port-binding
        "bind": f"{settings.host}:{settings.port}",
        # One worker unless clustering is on and the limit holds more (see the plan's notes).
        "workers": plan.workers,
        # Threads let /health answer while a slow request is in flight, at ~0.1 MB each.
        "worker_class": plan.worker_class,
        "threads": plan.threads,
        # A safety net under memory recycling; jitter keeps workers from leaving together.
        "max_requests": plan.max_requests,
        "max_requests_jitter": plan.max_requests_jitter,
        # A request stuck this long gets its worker replaced.
        "timeout": plan.timeout_s,
        # SIGTERM to SIGKILL is 30 s on Render (maxShutdownDelaySeconds), Heroku and
        # Kubernetes (terminationGracePeriodSeconds), by default. Of those 30 s:
        #   DRAIN_S (5)         /health/ready answers 503 while the service still serves,
        #                       so balancers stop sending before anything is refused
        #                       (the hooks replace gunicorn's SIGTERM handler: when_ready);
        #   graceful_timeout    25 - DRAIN_S (20): the listeners close, what waits in the
        #                       backlog is accepted, in-flight requests finish;
        #   5 s                 the master reaps its workers and exits.
        # Raise DRAIN_S for a balancer that checks less often, and the platform's window with it.
        # https://render.com/docs/deploys#zero-downtime-deploys
        "graceful_timeout": plan.graceful_timeout_s,
        # Load the app once in the master and share its pages with every worker
        # (pre_fork freezes the GC so workers do not unshare them): 6 MB per worker, not 15.
        "preload_app": True,
        # Heartbeat files on tmpfs, never a disk that can stall.
        "worker_tmp_dir": config.worker_tmp_dir,
        # gunicorn 27's control socket costs ~2 MB in the master and writes under $HOME.
        "control_socket_disable": not settings.control_socket,
        # Logs to stdout/stderr, where Render and Heroku collect them; LOG_FORMAT=json
        # makes every line one JSON object, ACCESS_LOG_HEALTH=false drops probe lines.
        "loglevel": settings.log_level,
        "accesslog": "-",
        "errorlog": "-",
        "logger_class": FitflixLogger,
        "on_starting": on_starting,
        "on_reload": on_reload,
        "when_ready": when_ready,
        "pre_fork": pre_fork,
        # TTIN/TTOU change the worker count: the per-worker budgets follow it.
        "nworkers_changed": nworkers_changed,
        "post_fork": post_fork,
        "post_worker_init": post_worker_init,
        "pre_request": pre_request,
        "post_request": post_request,
        "worker_exit": worker_exit,
        "child_exit": child_exit,
        "on_exit": on_exit,
    }


# gunicorn imports a `python:` config once and keeps it in sys.modules; on SIGHUP it asks for it
# again and would get the old values. when_ready makes SIGHUP forget it first (`_rereading`).
PACKAGE_CONFIG = "fitflix.gunicorn_conf"


def _rereading(handle_hup):
    def handle_hup_reading_again() -> None:
        sys.modules.pop(PACKAGE_CONFIG, None)
        handle_hup()

    return handle_hup_reading_again


_monitor: MemoryMonitor | None = None
_surge: Surge | None = None
_recycler: WorkerRecycler | None = None
_request_slot: int | None = None


def on_starting(server) -> None:
    """Master, after the app is preloaded and before any port is bound: refuse a plan that cannot run."""
    RUNTIME.role, RUNTIME.master_pid, RUNTIME.started_monotonic = "master", os.getpid(), time.monotonic()
    plan = RUNTIME.plan = with_app_baseline(RUNTIME.plan, app_baseline_mb())
    problem = budget_problem_now(plan)
    if problem:
        server.log.error("FitFlix cannot start: %s", problem)
        raise SystemExit(1)
    RUNTIME.shared = SharedState(server.cfg.worker_tmp_dir)
    RUNTIME.shared.set_planned_workers(plan.workers)
    if server.cfg.preload_app and load_settings().warm_up:  # the app is loaded here: warm it once for every worker
        try:
            warmed = warm_up(server.app.wsgi())
        except Exception:  # a saving, never a reason not to start
            server.log.warning("Warm-up in the master failed; workers warm up on their own", exc_info=True)
        else:
            server.log.debug("Warm-up in the master: %s", ", ".join(f"{path} {status}" for path, status in warmed))
    serve_with_a_worker_that_can(server)
    for note in plan.notes:
        server.log.info("Plan: %s", note)
    for warning in plan.warnings:
        server.log.warning("Plan: %s", warning)


def serve_with_a_worker_that_can(server) -> None:
    """Master: FitFlix's own worker speaks plain HTTP/1 on epoll; anything else gets today's worker, said aloud."""
    if server.cfg.worker_class_str != OWN_WORKER_CLASS:
        return
    cfg = server.cfg
    reason = own_worker_cannot_serve(
        bool(cfg.is_ssl),
        getattr(cfg, "protocol", "http"),
        getattr(cfg, "proxy_protocol", "off"),
        list(getattr(cfg, "http_protocols", ["h1"])),
        hasattr(select, "epoll"),
    )
    if reason is None:
        return
    cfg.set("worker_class", WORKER_CLASS)  # gunicorn's "Using worker:" line, logged next, says it too
    server.worker_class = cfg.worker_class
    server.log.warning(
        "Plan: WORKER=fitflix, but %s: serving with %s (gunicorn's gthread, heads read on its loop) instead",
        reason,
        WORKER_CLASS,
    )


def on_reload(server) -> None:
    """Master, after SIGHUP read the config again: the worker class is chosen again too."""
    serve_with_a_worker_that_can(server)


def when_ready(server) -> None:
    """Master, once the listening sockets exist: the banner (once per start) and the memory monitor."""
    global _monitor
    plan, settings = RUNTIME.plan, load_settings()
    if not settings.memory_recycling:
        server.log.warning("MEMORY_RECYCLING=false: no memory recycling, backstop or memory monitor")
    port = next((listener.sock.getsockname()[1] for listener in server.LISTENERS if _is_tcp(listener)), settings.port)
    master_bytes = own_rss_bytes()
    server.log.info("FitFlix Backend Server running on port %s", port)
    server.log.info(
        "Memory usage: %sMB RSS (Limit: %sMB, %s)",
        round(master_bytes / MIB) if master_bytes else "?",
        plan.limit_mb,
        plan.limit_source,
    )
    reader = self_memory_reader()
    if reader.source == "statm":
        reader.close()  # Linux: the monitor reads smaps; workers open their own statm after fork
        reader = None
    else:
        server.log.warning(
            "Memory figures: no /proc here; each worker reads its memory from %s%s",
            reader.source,
            f" ({PEAK_NOTE})" if reader.is_peak else " (no PSS: totals are the master's RSS plus workers' USS)",
        )
    clustering = f"Enabled ({plan.workers} workers)" if plan.workers > 1 else "Disabled (Memory Optimized)"
    server.log.info("Clustering: %s", clustering)
    server.log.info("Memory profile: %s", profile_summary(plan))
    server.log.info("Worker budget: %s", budget_summary(plan))
    if settings.health_token is None:
        server.log.warning(
            "HEALTH_TOKEN is not set: /health/memory, /metrics and the memory page show figures and pids "
            "to anyone who can reach them"
        )
    # SIGTERM drains first (the arbiter looks its handlers up by name on each signal).
    server.handle_term = Drain(server, lambda: RUNTIME.plan.drain_s, RUNTIME.shared).handle_term
    # SIGHUP reads `python:fitflix.gunicorn_conf` again, as gunicorn does a config file.
    server.handle_hup = _rereading(server.handle_hup)
    global _surge
    if RUNTIME.shared is not None:  # always: a SIGHUP may turn RECYCLE_REPLACE_FIRST on for new workers
        _surge = Surge(server, RUNTIME.shared, _room_for_one_more, lambda: RUNTIME.plan.workers)
        _surge.install()
    if not settings.memory_recycling:
        return
    # The workers are the arbiter's own (server.WORKERS), never every child in /proc:
    # during a SIGUSR2 upgrade the new master is a child of this one.
    shared = RUNTIME.shared
    probe = MemoryProbe(
        (plan.limit_mb, plan.limit_source),
        worker_pids=lambda: list(server.WORKERS),
        published=shared.published_memory if shared is not None else None,
    )
    _monitor = MemoryMonitor(server, plan, probe, shared, settings.memory_log_interval_s, own_reader=reader)
    _monitor.surge = _surge  # the overlap's phases, for the watch
    _monitor.start()


def _room_for_one_more(old_pid: int, boot_s: float, handover_s: float) -> tuple[bool, str]:
    if _monitor is None:
        return False, "no memory monitor runs (MEMORY_RECYCLING=false at the start)"
    return _monitor.room_for_one_more(old_pid, boot_s, handover_s)


def pre_fork(server, worker) -> None:
    """Master, right before each fork: freeze what exists so a worker's GC never touches (and unshares) it.

    Collect the young generations first: garbage frozen here would be kept, unreachable, for the
    life of the server. Not the oldest: at the first fork that full pass walks every object the
    imports made, 17-26 ms of CPU (0.2 s of a boot at 0.1 CPU) to free about 200 objects, a few
    tens of KB that stay frozen and shared; after the freeze, later forks find little to walk.
    """
    unreachable = gc.collect(1)
    gc.freeze()
    # Not gc.get_freeze_count(): it walks every frozen object, 3.3 ms of the master's CPU at each fork
    # (the preloaded service; measured), and was counted for a debug line even when nothing logs it.
    server.log.debug("pre_fork: gc.collect() freed %s unreachable objects; the rest frozen", unreachable)
    if _monitor is not None:
        _monitor.look_after_boot()  # what a fresh worker holds, read while it is one (the guard's yardstick)


def nworkers_changed(server, new_value: int, old_value: int | None) -> None:
    """Master, when TTIN/TTOU (or WINCH) change the worker count: the budgets follow the live count."""
    plan = RUNTIME.plan
    if old_value is None or new_value in (0, old_value) or not isinstance(plan, Plan) or RUNTIME.shared is None:
        return  # the arbiter's own setup (again on SIGHUP), or WINCH stopping every worker: nothing to re-plan
    if _surge is not None:
        planned = _surge.planned_after_change(new_value)
        if planned is None or planned == plan.workers:
            return  # a replacement's own extra worker, or an operator's change it absorbed: the plan stands
        new_value, old_value = planned, plan.workers
    resized = resize_plan(plan, new_value)
    RUNTIME.plan = resized
    RUNTIME.shared.set_planned_workers(new_value)
    if _monitor is not None:
        _monitor.plan = resized
    server.log.info(
        "Plan: %s workers now (was %s): worker budget %sMB, hard cap %sMB",
        new_value,
        old_value,
        resized.worker_budget_mb,
        resized.worker_hard_cap_mb,
    )
    problem = budget_problem_now(resized)
    if problem:
        server.log.warning("Plan: %s", problem)


def post_fork(server, worker) -> None:
    """Worker, right after fork."""
    RUNTIME.role = "worker"
    RUNTIME.forked_monotonic = time.monotonic()


def post_worker_init(worker) -> None:
    """Worker, app loaded, before the first request: the recycler, the backstop, the cleanup signal; then its slot."""
    global _recycler, _request_slot
    RUNTIME.worker = worker
    try:
        if RUNTIME.plan.gc_threshold:  # MEMORY_PROFILE=memory-optimized, or GC_THRESHOLD
            gc.set_threshold(RUNTIME.plan.gc_threshold, *gc.get_threshold()[1:])
        if load_settings().memory_recycling:
            # gthread's pool, sized by gunicorn's own setting (a --threads flag overrides the plan);
            # a sync worker serves on its main thread and has no pool.
            pool = getattr(worker, "tpool", None)
            threads = worker.cfg.threads if pool is not None else 0
            started = backstop.start_pool_threads(pool, threads) if threads else 0
            _recycler = WorkerRecycler(worker, RUNTIME.plan, RUNTIME.shared, unstarted_threads=threads - started)
            worker.wsgi = backstop.guard_wsgi(worker.wsgi)
            backstop.watch_framework_errors()
            signal.signal(CLEANUP_SIGNAL, clean_up)
            signal.siginterrupt(CLEANUP_SIGNAL, False)
    except Exception:  # raising here would halt the whole server (boot error)
        worker.log.exception("Memory recycling is off in worker %s", os.getpid())
    if RUNTIME.shared is None:
        return
    # Last, once the worker is ready to serve: with its slot claimed the master counts it as booted, and
    # the worker it replaces (surge.py) stops accepting. That one serves until this one's loop is about to.
    try:
        if RUNTIME.forked_monotonic is not None:
            # What the master expects a replacement's boot to take, until it has timed one itself.
            RUNTIME.shared.set_last_boot(time.monotonic() - RUNTIME.forked_monotonic)
        boot_bytes = _recycler.boot_uss_bytes if _recycler is not None else 0
        _request_slot = RUNTIME.shared.claim_worker_slot(os.getpid(), boot_bytes)
        if _recycler is not None:
            _recycler.publish_to(_request_slot)
        if RUNTIME.shared.surge_old():  # this may be the replacement the master waits for: it serves now
            wake_master(worker.ppid)
    except Exception:
        worker.log.exception("Worker %s could not claim its slot in the shared state", os.getpid())


def post_request(worker, req, environ, resp) -> None:
    """Worker, after each response is sent."""
    if _request_slot is not None:
        RUNTIME.shared.set_requests(_request_slot, worker.nr)
    if _recycler is not None:
        _recycler.after_request()


def pre_request(worker, req) -> None:
    """Worker, in the thread about to handle the request."""
    if _recycler is not None:
        _recycler.request_started(req.path)


def worker_exit(server, worker) -> None:
    """Worker, after its last request (and, for an already dead worker, the master: nothing to do)."""
    if os.getpid() == worker.pid and _recycler is not None:
        _recycler.finish()


def child_exit(server, worker) -> None:
    """Master, after reaping a worker: free its slots in the shared state."""
    if RUNTIME.shared is not None:
        RUNTIME.shared.release(worker.pid)
    if _surge is not None:
        _surge.on_child_exit(worker.pid)


def on_exit(server) -> None:
    """Master, on the way out."""
    if _monitor is not None:
        _monitor.stop()


def _is_tcp(listener) -> bool:
    try:
        return isinstance(listener.sock.getsockname(), tuple)
    except OSError:
        return False
