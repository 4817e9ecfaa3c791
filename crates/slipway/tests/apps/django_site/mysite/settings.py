"""Slipway integration-test fixture: a small but real Django project, run under gunicorn.

It is here so the test suite deploys an actual third-party framework, not only the hand-written
Python apps of tests/support: a release command (`manage.py migrate`) must run before the new
version turns ready (`/ready` answers 500 until the `notes_note` table exists), the secret
`DJANGO_SECRET_KEY` must be injected (start fails without it), the SQLite file lives under
`data/` (a persistent volume; the working directory is the code snapshot) and must survive
deploys, and `version.txt` shows which code snapshot answers. With DATABASE_URL set (a managed
PostgreSQL, `uses: [db]`), the notes live there instead.
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    # An exception, not sys.exit(): gunicorn then stops at once ("Worker failed to boot", exit
    # code 3) instead of respawning the worker forever, and manage.py exits 1.
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set (it is a secret the platform must inject)"
    )

DEBUG = os.environ.get("DJANGO_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")

ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "notes",
]

MIDDLEWARE = []

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

# Relative paths are taken from the working directory, which the platform sets to the code
# snapshot; `data/` there is the app's persistent volume. SQLite does not make the folder, so
# make it here (a plain local run starts without one).
DB_PATH = Path(os.environ.get("DB_PATH", "data/db.sqlite3")).absolute()
DB_PATH.parent.mkdir(parents=True, exist_ok=True)

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DB_PATH,
        # Old and new versions share the file during a blue-green switch: wait for locks.
        "OPTIONS": {"timeout": 20},
    }
}

# With `uses: [db]` the platform injects DATABASE_URL for its managed PostgreSQL:
# postgresql://user:password@/dbname?host=/socket/folder (a Unix socket, no TCP port).
if os.environ.get("DATABASE_URL"):
    from urllib.parse import parse_qs, unquote, urlsplit

    url = urlsplit(os.environ["DATABASE_URL"])
    query = parse_qs(url.query)
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(url.path.lstrip("/")),
        "USER": unquote(url.username or ""),
        "PASSWORD": unquote(url.password or ""),
        "HOST": query.get("host", [url.hostname or ""])[0],
        "PORT": str(url.port or query.get("port", [""])[0]),
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# Errors (such as the 500 of /ready before migrate) go to stderr, i.e. the platform's logs,
# whether DEBUG is on or not.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
