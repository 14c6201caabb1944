"""The project's WSGI entry points, as a Django project's own wsgi.py has them, plus FitFlix's wrapper.

`application`: Django with FitFlix's endpoints in front (`fitflix.wrap`), what a project's
wsgi.py becomes; `plain`: Django alone, for the tests and benchmarks that compare the two.
"""

import os

from django.core.wsgi import get_wsgi_application

import fitflix

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harness.apps.django_project.settings")

plain = get_wsgi_application()
application = fitflix.wrap(plain)
