"""gunicorn settings for FitFlix: plain gunicorn names, each value from the plan.

Start it with `gunicorn -c gunicorn.conf.py` and no flags: command-line flags
override this file (gunicorn docs, "Configuration Overview"). The plan comes
from the environment and the container this runs in; `python -m fitflix plan`
prints it, and `gunicorn -c gunicorn.conf.py --print-config` shows the result.
"""

import sys
from pathlib import Path

# gunicorn reads this file before it puts the working folder on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fitflix.serving import hooks  # noqa: E402
from fitflix.serving.logs import FitflixLogger  # noqa: E402

fitflix_config = hooks.load_server_config(Path(__file__).resolve().with_name(".env"))
settings, plan = fitflix_config.settings, fitflix_config.plan

# Render and Heroku send traffic to $PORT on every interface.
# https://render.com/docs/web-services#port-binding
bind = f"{settings.host}:{settings.port}"
wsgi_app = "wsgi:app"

# One worker unless clustering is on and the limit holds more (see the plan's notes).
workers = plan.workers
# Threads let /health answer while a slow request is in flight, at ~0.1 MB each.
worker_class = plan.worker_class
threads = plan.threads

# A safety net under memory recycling; jitter keeps workers from leaving together.
max_requests = plan.max_requests
max_requests_jitter = plan.max_requests_jitter

# A request stuck this long gets its worker replaced.
timeout = plan.timeout_s
# SIGTERM to SIGKILL is 30 s on Render (maxShutdownDelaySeconds), Heroku and
# Kubernetes (terminationGracePeriodSeconds), by default. Of those 30 s:
#   DRAIN_S (5)         /health/ready answers 503 while the service still serves,
#                       so balancers stop sending before anything is refused
#                       (the hooks replace gunicorn's SIGTERM handler: hooks.when_ready);
#   graceful_timeout    25 - DRAIN_S (20): the listeners close, what waits in the
#                       backlog is accepted, in-flight requests finish;
#   5 s                 the master reaps its workers and exits.
# Raise DRAIN_S for a balancer that checks less often, and the platform's window with it.
# https://render.com/docs/deploys#zero-downtime-deploys
graceful_timeout = plan.graceful_timeout_s

# Load the app once in the master and share its pages with every worker
# (pre_fork freezes the GC so workers do not unshare them): 6 MB per worker, not 15.
preload_app = True
# Heartbeat files on tmpfs, never a disk that can stall.
worker_tmp_dir = fitflix_config.worker_tmp_dir
# gunicorn 27's control socket costs ~2 MB in the master and writes under $HOME.
control_socket_disable = not settings.control_socket

# Logs to stdout/stderr, where Render and Heroku collect them; LOG_FORMAT=json
# makes every line one JSON object, ACCESS_LOG_HEALTH=false drops probe lines.
loglevel = settings.log_level
accesslog = "-"
errorlog = "-"
logger_class = FitflixLogger

on_starting = hooks.on_starting
when_ready = hooks.when_ready
pre_fork = hooks.pre_fork
# TTIN/TTOU change the worker count: the per-worker budgets follow it.
nworkers_changed = hooks.nworkers_changed
post_fork = hooks.post_fork
post_worker_init = hooks.post_worker_init
pre_request = hooks.pre_request
post_request = hooks.post_request
worker_exit = hooks.worker_exit
child_exit = hooks.child_exit
on_exit = hooks.on_exit
