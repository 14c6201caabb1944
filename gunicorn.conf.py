"""gunicorn settings for FitFlix, this repository's deployment: `gunicorn -c gunicorn.conf.py`, no flags.

The same settings as the package's `fitflix.gunicorn_conf` (each one, and why, is in
`fitflix.serving.hooks.server_settings`), with this folder's `.env` and app. The plan comes
from the environment and the container this runs in; `python -m fitflix plan` prints it,
and `gunicorn -c gunicorn.conf.py --print-config` shows the result. Command-line flags
override this file (gunicorn docs, "Configuration Overview").
"""

import sys
from pathlib import Path

# gunicorn reads this file before it puts the working folder on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fitflix.serving.hooks import server_settings  # noqa: E402

globals().update(server_settings(Path(__file__).resolve().with_name(".env")))
wsgi_app = "wsgi:app"
