"""App variants for the benchmarks: the real FitFlix app plus a few bench-only routes.

`bench.apps:app` is `wsgi:app` (same blueprints, same error handlers) with:
GET /bench/wait?ms=N   waits N ms (an I/O-bound request), answers the pid;
GET /bench/pid         answers the pid of the worker that served it;
GET /bench/leak?mb=N   keeps N MiB (touched, so resident) for the life of the worker;
GET /api/workouts      the examples' workouts blueprint: a plain JSON API route (part 14).
"""

from __future__ import annotations

import os
import time

from flask import jsonify, request

from examples.workouts import workouts
from wsgi import app

MIB = 1024 * 1024
_kept: list[bytearray] = []


def _touched(megabytes: int) -> bytearray:
    block = bytearray(megabytes * MIB)
    block[::4096] = b"x" * (len(block) // 4096)  # one write per page: resident, not just reserved
    return block


def wait():
    time.sleep(request.args.get("ms", 50, type=int) / 1000)
    return jsonify(pid=os.getpid())


def worker_pid():
    return jsonify(pid=os.getpid())


def leak():
    _kept.append(_touched(request.args.get("mb", 2, type=int)))
    return jsonify(pid=os.getpid(), kept_mb=sum(len(block) for block in _kept) // MIB)


app.add_url_rule("/bench/wait", view_func=wait)
app.add_url_rule("/bench/pid", view_func=worker_pid)
app.add_url_rule("/bench/leak", view_func=leak)
# An app's own JSON route, as a FitFlix user adds it (examples/wsgi_with_api.py): what part 14 costs besides /health.
app.register_blueprint(workouts)
