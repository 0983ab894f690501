"""Django settings of {{ project }}.

`es build` replaces the ${...} placeholders with the version it builds, the git
commit and the build time. The profile comes from ES_PROFILE, which the
supervisord config sets from `es deploy`'s PROFILE argument.
"""

import os
from pathlib import Path

VERSION = "${version}"
GIT_VERSION = "${git_version}"
RELEASE_TIME = "${release_time}"

PROFILE = os.environ.get("ES_PROFILE", "dev")
DEBUG = PROFILE in ("dev", "debug", "test")

BASE_DIR = Path(__file__).resolve().parent

# Set DJANGO_SECRET_KEY in the environment of production hosts (for example
# with `environment=` in conf/supervisord.conf); the key below is for dev only.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "{{ secret_key }}")

# Behind nginx: restrict this to your host names when you know them.
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "{{ project }}.urls"
WSGI_APPLICATION = "{{ project }}.wsgi.application"

# No database yet: add one here (and to INSTALLED_APPS what needs it) when the
# service needs it; never put a SQLite file inside the virtualenv.
DATABASES = {}

USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": "DEBUG" if DEBUG else "INFO"},
}
