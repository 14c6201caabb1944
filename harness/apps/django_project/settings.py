"""Django settings for the test project: the smallest set that serves views, a redirect and a CSRF cookie."""

SECRET_KEY = "fitflix-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "harness.apps.django_project.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",  # APPEND_SLASH: /hello -> 301 /hello/
    "django.middleware.csrf.CsrfViewMiddleware",
]
DATABASES: dict = {}
USE_TZ = True
LOGGING_CONFIG = None  # Django's own logging setup would reconfigure the root logger gunicorn writes through
