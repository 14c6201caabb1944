"""FitFlix backend: gunicorn that knows the memory of the container it runs in, and the endpoints that show it.

Three ways in, one code path underneath (`fitflix/web/flask_app.py`):

- `wrap(application)`: FitFlix's endpoints in front of any WSGI app (a Django
  project's `application`, a Flask app, a bare callable), every other request
  passed through untouched (`fitflix/web/wrapper.py`);
- `create_app(settings, blueprints=[...])`: the FitFlix app, with your own
  blueprints (your API) served beside the health endpoints;
- `init_app(app, settings)`: what FitFlix adds to any other Flask app, in one
  call (the health endpoints, /metrics, /openapi.json, JSON errors, the
  response headers). `create_app` is a Flask app plus this call.

The names load Flask when first used, not when `fitflix` is imported: the
gunicorn hooks (`fitflix.serving.hooks`) import this package, and a service
that never asks for the endpoints keeps Flask's 6 MB out of its master.
"""

from __future__ import annotations

# The package's version, read by pyproject.toml (setuptools' `attr:`, without importing the package).
__version__ = "1.0.0"

# What `from fitflix import ...` offers, each looked up on first use (PEP 562): wrap in web.wrapper, the rest
# in web.flask_app.
# The import is a plain statement, so import-linter sees this package import the web layer.
__all__ = ["DEFAULT_HEADERS", "FITFLIX_BLUEPRINTS", "FITFLIX_PATHS", "create_app", "init_app", "wrap"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'fitflix' has no attribute {name!r}")
    from fitflix.web import flask_app, wrapper

    value = getattr(wrapper if name == "wrap" else flask_app, name)
    globals()[name] = value  # once: later lookups find it without this function
    return value
