"""The FitFlix app with the leaky test routes in front: a user's own routes beside /health.

/leak, /native, /spike, /sleep and /pid go to `harness.apps.leaky`; everything else (the
health endpoints, /metrics) to the FitFlix app from `wsgi.py`.
"""

from __future__ import annotations

from harness.apps import leaky
from wsgi import app as service

LEAKY_PATHS = frozenset({"/leak", "/native", "/objects", "/thread_cache", "/spike", "/sleep", "/pid"})


def app(environ, start_response):
    if environ.get("PATH_INFO") in LEAKY_PATHS:
        return leaky.app(environ, start_response)
    return service(environ, start_response)
