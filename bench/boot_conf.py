"""A bench-only gunicorn config: the project's gunicorn.conf.py, with each boot step stamped in the log.

`gunicorn -c bench/boot_conf.py` runs the project's gunicorn.conf.py in a
namespace of its own and re-exports every name it sets, so gunicorn sees the
same settings and hooks. Around them it records, per process,
`time.process_time()` (the CPU the process used so far, all its threads) and
`time.monotonic()` (one clock for every process on the machine, so the bench
lines them up with its own Popen) at each step of the boot, and logs one line
per step:

    boot-step step=<name> pid=<pid> cpu_s=<seconds> monotonic_s=<seconds>

`FITFLIX_BENCH_BOOT_BASE=none` runs no base config at all: plain gunicorn's
defaults (the same as `-c /dev/null`) with only the stamping hooks, for plain
gunicorn's boot. Part 15 (bench/small_instance.py) reads the lines; nothing
else uses this file.
"""

import time

# First: before anything of ours is imported. Interpreter start, gunicorn's
# own imports and its command-line parsing are all before this line.
_CONFIG_TOP = (time.process_time(), time.monotonic())

import os  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import gunicorn.util  # noqa: E402  (already imported by gunicorn: free)

PROJECT = Path(__file__).resolve().parents[1]
BASE_VARIABLE = "FITFLIX_BENCH_BOOT_BASE"
HOOKS = ("on_starting", "when_ready", "pre_fork", "post_fork", "post_worker_init", "post_request")

_stamps: list[tuple[str, int, float, float]] = []  # (step, pid, cpu_s, monotonic_s), not yet logged
_first_request_logged = False


def _stamp(step: str) -> None:
    _stamps.append((step, os.getpid(), time.process_time(), time.monotonic()))


def _flush(log) -> None:
    """Log this process's stamps (a fork inherits its master's list: those are the master's to log)."""
    global _stamps
    pid = os.getpid()
    for step, stamp_pid, cpu_s, monotonic_s in _stamps:
        if stamp_pid == pid:
            log.info("boot-step step=%s pid=%s cpu_s=%.6f monotonic_s=%.6f", step, stamp_pid, cpu_s, monotonic_s)
    _stamps = []


def _noop(*_args) -> None:
    """gunicorn's default for a hook the base config leaves alone."""


_stamps.append(("config-top", os.getpid(), *_CONFIG_TOP))

_base = os.environ.get(BASE_VARIABLE, str(PROJECT / "gunicorn.conf.py"))
_namespace: dict = {}
if _base != "none":
    # gunicorn reads a config before it puts the working folder on sys.path.
    sys.path.insert(0, str(PROJECT))
    # The config's own imports first, so the step after them is its plan alone.
    import fitflix.serving.hooks  # noqa: E402
    import fitflix.serving.logs  # noqa: E402, F401

    _stamp("fitflix-imported")
    _namespace = runpy.run_path(_base, run_name="__config__")
    _stamp("config-done")

    # on_starting calls warm_up by its module-level name: time it from inside the hook.
    _warm_up = fitflix.serving.hooks.warm_up

    def _timed_warm_up(app):
        _stamp("warm-up-start")
        try:
            return _warm_up(app)
        finally:
            _stamp("warm-up-end")

    fitflix.serving.hooks.warm_up = _timed_warm_up

globals().update({name: value for name, value in _namespace.items() if not name.startswith("__")})
_original = {name: _namespace.get(name, _noop) for name in HOOKS}

# Where the app is imported: the master under preload_app (FitFlix), each worker without it (plain).
_import_app = gunicorn.util.import_app


def _timed_import_app(module):
    _stamp("app-import-start")
    try:
        return _import_app(module)
    finally:
        _stamp("app-import-end")


gunicorn.util.import_app = _timed_import_app


def on_starting(server) -> None:
    """Master, after the app is loaded: the steps so far, then the base config's hook, timed."""
    _stamp("on-starting-start")
    _original["on_starting"](server)
    _stamp("on-starting-end")
    _flush(server.log)


def when_ready(server) -> None:
    """Master, once the port is bound (right after the `Listening at` line)."""
    _stamp("when-ready-start")
    _original["when_ready"](server)
    _stamp("when-ready-end")
    _flush(server.log)


def pre_fork(server, worker) -> None:
    """Master, right before each fork (FitFlix's gc.collect + gc.freeze)."""
    _stamp("pre-fork-start")
    _original["pre_fork"](server, worker)
    _stamp("pre-fork-end")
    _flush(server.log)


def post_fork(server, worker) -> None:
    """Worker, right after fork: its CPU time starts again from 0 here."""
    global _first_request_logged
    _first_request_logged = False
    _stamp("post-fork")
    _original["post_fork"](server, worker)


def post_worker_init(worker) -> None:
    """Worker, app loaded, before its first request."""
    _stamp("post-worker-init-start")
    _original["post_worker_init"](worker)
    _stamp("post-worker-init-end")
    _flush(worker.log)


def post_request(worker, req, environ, resp) -> None:
    """Worker, after each response: the first one of each worker is its last boot step."""
    global _first_request_logged
    _original["post_request"](worker, req, environ, resp)
    if not _first_request_logged:
        _first_request_logged = True
        _stamp("first-request-done")
        _flush(worker.log)
