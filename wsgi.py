"""The WSGI entry point: `wsgi:app`.

Your own routes go in as blueprints: `create_app(settings, blueprints=[your_api])`
(examples/wsgi_with_api.py; docs/endpoints.md, "Your own routes").
"""

from pathlib import Path

from fitflix import create_app
from fitflix.settings import load_settings

app = create_app(load_settings(Path(__file__).resolve().with_name(".env")))
