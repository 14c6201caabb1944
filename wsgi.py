"""The WSGI entry point: `wsgi:app`."""

from pathlib import Path

from fitflix import create_app
from fitflix.settings import load_settings

app = create_app(load_settings(Path(__file__).resolve().with_name(".env")))
