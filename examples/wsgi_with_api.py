"""wsgi.py with a FitFlix API of your own: `gunicorn -c gunicorn.conf.py examples.wsgi_with_api:app`.

The same line as the project's wsgi.py, plus `blueprints=`: the routes are
served beside /health, by the same workers, and recycled like the rest.
"""

from pathlib import Path

from examples.workouts import workouts
from fitflix import create_app
from fitflix.settings import load_settings

app = create_app(load_settings(Path(__file__).resolve().parents[1] / ".env"), blueprints=[workouts])
