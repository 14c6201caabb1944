"""A minimal Django project the live tests and the benchmarks serve under gunicorn with FitFlix's configuration.

`harness.apps.django_project.wsgi:application` is the project wrapped by `fitflix.wrap` (its
endpoints in front, Django's own routes untouched); `...wsgi:plain` is the same project unwrapped.
No database, no templates folder: settings.py, urls.py (the views) and wsgi.py.
"""
