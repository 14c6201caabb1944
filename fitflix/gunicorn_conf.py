"""FitFlix's gunicorn configuration, for any app: `gunicorn -c python:fitflix.gunicorn_conf yourapp.wsgi:application`.

The plan comes from the environment, `.env` in the working folder, and the
container this runs in; `python -m fitflix plan` prints it. Every value and hook
is set by `fitflix.serving.hooks.server_settings`, which says why; flags on
gunicorn's command line override them. To keep a `gunicorn.conf.py` of your
own, start it with `from fitflix.gunicorn_conf import *` and change what you like.
"""

from pathlib import Path

from fitflix.serving.hooks import server_settings

globals().update(server_settings(Path.cwd() / ".env"))
