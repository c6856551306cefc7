"""Settings of the test project; the database file and the Redis URL come from the test."""

from __future__ import annotations

import os

SECRET_KEY = "tests-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
INSTALLED_APPS = ["orbiter_sync.contrib.django", "django_project.notes"]
MIDDLEWARE = ["django.middleware.csrf.CsrfViewMiddleware"]
ROOT_URLCONF = "django_project.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("ORBITER_TEST_DB", ":memory:"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True

# Not the worker's own $ORBITER_REDIS_URL: the tests show the setting is what is used.
ORBITER_REDIS_URL = os.environ.get("TEST_PROJECT_REDIS_URL")
ORBITER_AGENTS = {
    "words": {"entrypoint": "sample_agents:words"},
    "note": {"entrypoint": "django_project.notes.agents:read_note"},
}
ORBITER_SSE_KEEPALIVE = 0.5
