"""One blueprint of one's own, served three ways under gunicorn.conf.py (gunicorn calls the factory named).

- `in_create_app()`: the FitFlix app with the blueprint passed to create_app;
- `with_init_app()`: another Flask app that calls fitflix.init_app;
- `without_init_app()`: another Flask app that does not (recycled, but no /health).

GET /api/hello answers; GET /api/leak?mb=N keeps N MiB (touched, so resident)
for the life of the worker; GET /api/spike?mb=N allocates N MiB at once and drops it.
"""

from __future__ import annotations

import os

from flask import Blueprint, Flask, jsonify, request

import fitflix

MIB = 1024 * 1024
_kept: list[bytearray] = []

api = Blueprint("api", __name__, url_prefix="/api")


def _touched(megabytes: int) -> bytearray:
    block = bytearray(megabytes * MIB)
    block[::4096] = b"x" * (len(block) // 4096)  # one write per page: resident, not just reserved
    return block


@api.get("/hello")
def hello():
    return jsonify(pid=os.getpid())


@api.get("/leak")
def leak():
    _kept.append(_touched(request.args.get("mb", 2, type=int)))
    return jsonify(pid=os.getpid(), kept_mb=sum(len(block) for block in _kept) // MIB)


@api.get("/spike")
def spike():
    block = _touched(request.args.get("mb", 700, type=int))
    del block
    return jsonify(pid=os.getpid())


def in_create_app() -> Flask:
    return fitflix.create_app(blueprints=[api])


def with_init_app() -> Flask:
    app = Flask(__name__)
    app.register_blueprint(api)
    return fitflix.init_app(app)


def without_init_app() -> Flask:
    app = Flask(__name__)
    app.register_blueprint(api)
    return app
