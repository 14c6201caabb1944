"""The test Django project alone, never wrapped: this module imports neither fitflix's endpoints nor Flask.

`harness.apps.django_project.wsgi` builds the wrapped and the plain app together (so Flask is
loaded for both); bench/django.py measures Django without the wrapper from this one.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harness.apps.django_project.settings")

application = get_wsgi_application()
